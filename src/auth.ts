import { createPublicKey, type KeyObject } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { BEARER_PROTOCOL_PREFIX } from './client/protocol.js';
import type { AuthConfig } from './config.js';
import type { Logger } from './log.js';
import { planClaimsOf, type PlanClaims } from './plan.js';

/** Who is connecting, as proven by the token. */
export interface Principal {
  readonly userId: string;
  /** From the `max_streams` claim (plans); undefined means the configured default. */
  readonly maxStreams?: number;
  readonly scopes: ReadonlySet<string>;
  /** Token expiry, seconds since the epoch. */
  readonly exp: number;
  /** From the optional `device_id` claim: the token is only good for this device. */
  readonly deviceId?: string;
  /** The plan claims (`stream_policy`, `max_streams_per_content`, `max_streams_by_class`, `device_class`). */
  readonly plan: PlanClaims;
}

/** Bounded reasons, safe as a metric label and shown to the player in the 4401 close reason. */
export type AuthFailure =
  | 'missing'
  | 'malformed'
  | 'too_large'
  | 'bad_signature'
  | 'algorithm'
  | 'expired'
  | 'not_yet_valid'
  | 'claim'
  | 'unknown_key'
  | 'keys_unavailable';

export class AuthError extends Error {
  readonly code = 'ERR_AUTH';
  readonly reason: AuthFailure;
  constructor(reason: AuthFailure, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** Any failure as an AuthError (verify() only throws AuthErrors; this guards the callers anyway). */
export function asAuthError(err: unknown): AuthError {
  return err instanceof AuthError ? err : new AuthError('malformed', 'token rejected');
}

/** Larger tokens are refused before any crypto. */
export const MAX_TOKEN_BYTES = 8192;
const MAX_STREAMS_CLAIM_MAX = 1000;

/**
 * The bearer token of a request: `Authorization: Bearer <jwt>` (native
 * players) or the `bearer.<jwt>` subprotocol (browsers, which cannot set
 * headers on a WebSocket). Query strings are never read: they end up in logs.
 */
export function tokenFromRequest(headers: IncomingHttpHeaders): string | undefined {
  const authorization = headers.authorization;
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    return match ? match[1] : '';
  }
  const protocols = headers['sec-websocket-protocol'];
  if (protocols !== undefined) {
    for (const p of protocols.split(',')) {
      const trimmed = p.trim();
      if (trimmed.startsWith(BEARER_PROTOCOL_PREFIX)) return trimmed.slice(BEARER_PROTOCOL_PREFIX.length);
    }
  }
  return undefined;
}

/** jose error codes mapped to our reasons. */
const JOSE_REASONS: Record<string, AuthFailure> = {
  ERR_JWT_EXPIRED: 'expired',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'bad_signature',
  ERR_JOSE_ALG_NOT_ALLOWED: 'algorithm',
  ERR_JOSE_NOT_SUPPORTED: 'algorithm',
  ERR_JWS_INVALID: 'malformed',
  ERR_JWT_INVALID: 'malformed',
  ERR_JWKS_NO_MATCHING_KEY: 'unknown_key',
  ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'unknown_key',
  ERR_JWKS_TIMEOUT: 'keys_unavailable',
  ERR_JWKS_INVALID: 'keys_unavailable',
};

type Key = Uint8Array | KeyObject | JWTVerifyGetKey;

export interface JwksTimings {
  /** Background refresh period. */
  readonly refreshMs: number;
  /** The last good key set is used at most this long after it was fetched. */
  readonly maxStaleMs: number;
  /** At most one refetch per this period for tokens naming an unknown `kid`. */
  readonly cooldownMs: number;
  /** Timeout of one fetch. @default 2000 */
  readonly fetchTimeoutMs?: number;
}

/**
 * A JSON Web Key Set kept in memory. Unlike fetching on demand, an outage of
 * the JWKS endpoint does not fail logins: the last good set stays in use for
 * up to `maxStaleMs`, refreshed in the background. A token with an unknown
 * `kid` (key rotation) triggers at most one refetch per `cooldownMs`, so a
 * flood of made-up kids cannot turn into a flood of fetches.
 */
export class JwksKeys {
  readonly #url: URL;
  readonly #t: JwksTimings;
  readonly #log?: Logger;
  #resolve: JWTVerifyGetKey | undefined;
  #fetchedAt = 0;
  #lastAttempt = Number.NEGATIVE_INFINITY;
  #inflight: Promise<boolean> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(url: string, timings: JwksTimings, log?: Logger) {
    this.#url = new URL(url);
    this.#t = timings;
    this.#log = log;
  }

  /** True while a key set younger than `maxStaleMs` is loaded. */
  get ready(): boolean {
    return this.#resolve !== undefined && Date.now() - this.#fetchedAt <= this.#t.maxStaleMs;
  }

  /** First fetch (not awaited by callers: readiness waits for it), then background refreshes. */
  start(): void {
    const loop = (): void => {
      void this.refresh().then((ok) => {
        const next = ok ? this.#t.refreshMs : Math.min(this.#t.refreshMs, 1000);
        this.#timer = setTimeout(loop, next);
        this.#timer.unref();
      });
    };
    loop();
  }

  stop(): void {
    clearTimeout(this.#timer);
  }

  /** Fetches the key set once (concurrent callers share the fetch); false when it failed. */
  refresh(): Promise<boolean> {
    this.#inflight ??= this.#fetch().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  async #fetch(): Promise<boolean> {
    this.#lastAttempt = performance.now();
    try {
      const res = await fetch(this.#url, { signal: AbortSignal.timeout(this.#t.fetchTimeoutMs ?? 2000), headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = (await res.json()) as JSONWebKeySet;
      if (!Array.isArray(body?.keys)) throw new Error('no "keys" array');
      this.#resolve = createLocalJWKSet(body);
      this.#fetchedAt = Date.now();
      return true;
    } catch (err) {
      this.#log?.warn('JWKS fetch failed; keeping the last good key set', {
        url: this.#url.origin + this.#url.pathname,
        err,
        staleForMs: this.#resolve ? Date.now() - this.#fetchedAt : undefined,
      });
      return false;
    }
  }

  /** The key resolver handed to jwtVerify. */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    if (!this.ready) throw new AuthError('keys_unavailable', 'signing keys unavailable');
    try {
      return await this.#resolve!(header, token);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_JWKS_NO_MATCHING_KEY') throw err;
      if (performance.now() - this.#lastAttempt < this.#t.cooldownMs) throw err;
      await this.refresh();
      return this.#resolve!(header, token);
    }
  };
}

/** Verifies tokens against the configured key, with the algorithm pinned to that key's type. */
export class Authenticator {
  readonly #key: Key;
  readonly #algorithms: string[];
  readonly #issuer?: string;
  readonly #audience?: string;
  readonly #jwks?: JwksKeys;

  constructor(cfg: AuthConfig, jwks: JwksTimings = { refreshMs: 300_000, maxStaleMs: 3_600_000, cooldownMs: 30_000 }, log?: Logger) {
    this.#issuer = cfg.issuer;
    this.#audience = cfg.audience;
    if (cfg.publicKeyPem !== undefined) {
      // config.ts has checked it is an RSA or a P-256 key.
      const key = createPublicKey(cfg.publicKeyPem);
      this.#key = key;
      this.#algorithms = [key.asymmetricKeyType === 'rsa' ? 'RS256' : 'ES256'];
    } else if (cfg.jwksUrl !== undefined) {
      this.#jwks = new JwksKeys(cfg.jwksUrl, jwks, log);
      this.#key = this.#jwks.getKey;
      this.#algorithms = ['RS256', 'ES256'];
    } else {
      this.#key = new TextEncoder().encode(cfg.secret);
      this.#algorithms = ['HS256'];
    }
  }

  /** False until a JWKS key set is loaded (always true for static keys). */
  get ready(): boolean {
    return this.#jwks?.ready ?? true;
  }

  start(): void {
    this.#jwks?.start();
  }

  stop(): void {
    this.#jwks?.stop();
  }

  /** Verifies a token and returns the principal, or throws {@link AuthError}. */
  async verify(token: string | undefined): Promise<Principal> {
    if (token === undefined || token === '') throw new AuthError('missing', 'token missing');
    if (token.length > MAX_TOKEN_BYTES) throw new AuthError('too_large', 'token too large');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.#key as never, {
        algorithms: this.#algorithms,
        issuer: this.#issuer,
        audience: this.#audience,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      if (err instanceof AuthError) throw err;
      throw toAuthError(err);
    }
    return principalOf(payload);
  }
}

function toAuthError(err: unknown): AuthError {
  const { code, claim, reason } = err as { code?: string; claim?: string; reason?: string };
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
    if (claim === 'nbf' || claim === 'iat') return new AuthError('not_yet_valid', 'token not yet valid');
    const missing = reason === 'missing';
    return new AuthError('claim', missing ? `token has no "${claim}" claim` : `token "${claim}" claim is not accepted`);
  }
  const mapped: AuthFailure = (code !== undefined ? JOSE_REASONS[code] : undefined) ?? 'malformed';
  const messages: Record<AuthFailure, string> = {
    missing: 'token missing',
    malformed: 'token malformed',
    too_large: 'token too large',
    bad_signature: 'token signature invalid',
    algorithm: 'token algorithm not accepted',
    expired: 'token expired',
    not_yet_valid: 'token not yet valid',
    claim: 'token claim not accepted',
    unknown_key: 'token signed with an unknown key',
    keys_unavailable: 'signing keys unavailable',
  };
  return new AuthError(mapped, messages[mapped]);
}

function principalOf(payload: JWTPayload): Principal {
  const sub = payload.sub;
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) {
    throw new AuthError('claim', 'token "sub" must be a non-empty string of at most 256 characters');
  }
  const raw = payload.max_streams;
  let maxStreams: number | undefined;
  if (raw !== undefined) {
    if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 1 || raw > MAX_STREAMS_CLAIM_MAX) {
      throw new AuthError('claim', `token "max_streams" must be an integer from 1 to ${MAX_STREAMS_CLAIM_MAX}`);
    }
    maxStreams = raw;
  }
  const deviceId = payload.device_id;
  if (deviceId !== undefined && typeof deviceId !== 'string') throw new AuthError('claim', 'token "device_id" must be a string');
  const plan = planClaimsOf(payload);
  if (typeof plan === 'string') throw new AuthError('claim', plan);
  return { userId: sub, maxStreams, scopes: scopesOf(payload.scope), exp: payload.exp as number, deviceId, plan };
}

/** OAuth 2 `scope`: a space-separated string, or (some issuers) an array of strings. */
function scopesOf(scope: unknown): ReadonlySet<string> {
  if (typeof scope === 'string') return new Set(scope.split(' ').filter(Boolean));
  if (Array.isArray(scope)) return new Set(scope.filter((s): s is string => typeof s === 'string'));
  return new Set();
}
