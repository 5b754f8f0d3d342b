import { createHash, createHmac, createPublicKey, timingSafeEqual, type KeyObject } from 'node:crypto';
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
  /** From the optional `home_region` claim: the region whose table holds this user's leases (src/regions.ts). */
  readonly homeRegion?: string;
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
  /** The key set last loaded, as fetched: a different one bumps {@link version}. */
  #keysJson: string | undefined;
  #version = 0;
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

  /** Changes whenever a fetch loads a key set that differs from the last one (rotation, a key withdrawn). */
  get version(): number {
    return this.#version;
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
      const res = await fetch(this.#url, {
        signal: AbortSignal.timeout(this.#t.fetchTimeoutMs ?? 2000),
        headers: { accept: 'application/json' },
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = (await res.json()) as JSONWebKeySet;
      if (!Array.isArray(body?.keys)) throw new Error('no "keys" array');
      this.#resolve = createLocalJWKSet(body);
      const keysJson = JSON.stringify(body.keys);
      if (keysJson !== this.#keysJson) this.#version++;
      this.#keysJson = keysJson;
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

export interface AuthOptions {
  /**
   * Verified tokens remembered, so a reconnect storm (every device of a
   * restarted gateway coming back with the token it already had) costs one
   * hash per token instead of a signature check. 0 turns the cache off.
   * Only for keys jose checks (RS256, ES256, JWKS): the synchronous HS256
   * check costs 5-6 CPU-µs, a hit 2.6 and a miss 7 more, and an entry
   * ~250 B for as long as its socket stays (test/bench/auth-cost.ts,
   * docs/bench/notes.md), so for HS256 a cache would cost more than it saves.
   * @default 20000
   */
  readonly cacheSize?: number;
  /**
   * Check HS256 tokens with node:crypto before asking jose (false: jose
   * only, as before; the tests compare the two on every kind of bad token).
   * @default true
   */
  readonly syncHs256?: boolean;
}

/** One verified token: what it proved, and until when (checked again on every hit). */
interface CacheEntry {
  readonly principal: Principal;
  readonly exp: number;
  readonly nbf: number | undefined;
  /** The key set it was verified against ({@link JwksKeys.version}; 0 for a static key). */
  readonly keys: number;
}

/**
 * Verifies tokens against the configured key, with the algorithm pinned to that key's type.
 *
 * HS256 tokens are checked synchronously with node:crypto (HMAC and a
 * constant-time compare: about a tenth of jose's CPU, and no WebCrypto
 * thread-pool round trip). That path accepts only what jose would accept;
 * anything it is not sure of (a `crit` header, an odd encoding, any failed
 * check) goes to jose, whose verdict and error reason stand. Successes of
 * jose's checks are cached by the SHA-256 of the token (see
 * {@link AuthOptions.cacheSize}).
 */
export class Authenticator {
  readonly #key: Key;
  readonly #algorithms: string[];
  readonly #issuer?: string;
  readonly #audience?: string;
  readonly #jwks?: JwksKeys;
  /** The HS256 secret, for the synchronous path; undefined for asymmetric keys. */
  readonly #hmacSecret?: Buffer;
  /** Map order is recency order: a hit moves its entry to the end, the first entry is evicted first. */
  readonly #cache = new Map<string, CacheEntry>();
  readonly #cacheSize: number;

  constructor(
    cfg: AuthConfig,
    jwks: JwksTimings = { refreshMs: 300_000, maxStaleMs: 3_600_000, cooldownMs: 30_000 },
    log?: Logger,
    opts: AuthOptions = {},
  ) {
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
      // jose (WebCrypto) refuses an empty HMAC key: so must we, by leaving such tokens to it.
      if (this.#key.length > 0 && opts.syncHs256 !== false) this.#hmacSecret = Buffer.from(this.#key);
    }
    this.#cacheSize = this.#hmacSecret === undefined ? (opts.cacheSize ?? 20_000) : 0;
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
    const nowSec = Math.floor(Date.now() / 1000);
    const cacheKey = this.#cacheSize > 0 ? createHash('sha256').update(token).digest('base64url') : '';
    const hit = this.#cacheSize > 0 ? this.#fromCache(cacheKey, nowSec) : undefined;
    if (hit) return hit;
    const payload =
      (this.#hmacSecret && verifyHs256(token, this.#hmacSecret, nowSec, this.#issuer, this.#audience)) ||
      (await this.#verifyWithJose(token));
    // Throws on bad claims: only a principal that passed every check is remembered.
    const principal = principalOf(payload);
    if (this.#cacheSize > 0) this.#remember(cacheKey, principal, payload);
    return principal;
  }

  /** The cached principal, if the token is still within its `nbf`/`exp` now and its key set is unchanged. */
  #fromCache(cacheKey: string, nowSec: number): Principal | undefined {
    const entry = this.#cache.get(cacheKey);
    if (entry === undefined) return undefined;
    // The same comparisons as jose (clock tolerance 0). A stale key set (JWKS outage past maxStale) is no hit:
    // the full path answers for it.
    const keys = this.#jwks?.version ?? 0;
    if (entry.exp <= nowSec || (entry.nbf !== undefined && entry.nbf > nowSec) || entry.keys !== keys || !this.ready) {
      this.#cache.delete(cacheKey);
      return undefined;
    }
    this.#cache.delete(cacheKey);
    this.#cache.set(cacheKey, entry);
    return entry.principal;
  }

  #remember(cacheKey: string, principal: Principal, payload: JWTPayload): void {
    if (this.#cache.size >= this.#cacheSize) {
      // Expired entries first would need a scan; the oldest-used entry goes instead (they expire on their next hit).
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(cacheKey, { principal, exp: payload.exp as number, nbf: payload.nbf, keys: this.#jwks?.version ?? 0 });
  }

  async #verifyWithJose(token: string): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, this.#key as never, {
        algorithms: this.#algorithms,
        issuer: this.#issuer,
        audience: this.#audience,
        requiredClaims: ['exp', 'sub'],
      });
      return payload;
    } catch (err) {
      if (err instanceof AuthError) throw err;
      throw toAuthError(err);
    }
  }
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** base64url (no padding, nothing else) to JSON, as jose decodes it; undefined when jose might disagree. */
function jsonPart(part: string): unknown {
  if (!BASE64URL.test(part) || part.length % 4 === 1) return undefined;
  try {
    return JSON.parse(strictUtf8.decode(Buffer.from(part, 'base64url')));
  } catch {
    return undefined;
  }
}

/** jose's isObject: a plain object (not an array, not null). */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Object.prototype.toString.call(value) !== '[object Object]') return false;
  const proto = Object.getPrototypeOf(value) as object | null;
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/**
 * The common case of jose's `jwtVerify(token, secret, { algorithms: ['HS256'],
 * issuer, audience, requiredClaims: ['exp', 'sub'] })`, synchronously: returns
 * the payload when every check jose makes passes (compact form, protected
 * header a JSON object with `alg` HS256 and no `crit`, the HMAC, a JSON object
 * payload with `exp` and `sub`, `iss`/`aud` when configured, numeric
 * `iat`/`nbf`/`exp`, `nbf` ≤ now < `exp`), and undefined otherwise, so the
 * caller asks jose for the exact verdict and reason.
 */
export function verifyHs256(token: string, secret: Buffer, nowSec: number, issuer?: string, audience?: string): JWTPayload | undefined {
  const dot1 = token.indexOf('.');
  const dot2 = token.indexOf('.', dot1 + 1);
  if (dot1 < 0 || dot2 < 0 || token.indexOf('.', dot2 + 1) >= 0) return undefined;
  const signature = token.slice(dot2 + 1);
  if (!BASE64URL.test(signature) || signature.length % 4 === 1) return undefined;
  const header = jsonPart(token.slice(0, dot1));
  if (!isPlainObject(header) || header.alg !== 'HS256' || header.crit !== undefined) return undefined;
  const given = Buffer.from(signature, 'base64url');
  const expected = createHmac('sha256', secret).update(token.slice(0, dot2), 'latin1').digest();
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  const payload = jsonPart(token.slice(dot1 + 1, dot2));
  if (!isPlainObject(payload) || !Object.hasOwn(payload, 'exp') || !Object.hasOwn(payload, 'sub')) return undefined;
  if (issuer !== undefined && (!Object.hasOwn(payload, 'iss') || payload.iss !== issuer)) return undefined;
  if (audience !== undefined) {
    const aud = payload.aud;
    if (!Object.hasOwn(payload, 'aud') || !(typeof aud === 'string' ? aud === audience : Array.isArray(aud) && aud.includes(audience)))
      return undefined;
  }
  const { iat, nbf, exp } = payload;
  if (iat !== undefined && typeof iat !== 'number') return undefined;
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > nowSec)) return undefined;
  if (typeof exp !== 'number' || exp <= nowSec) return undefined;
  return payload;
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
  const homeRegion = payload.home_region;
  if (homeRegion !== undefined && typeof homeRegion !== 'string') throw new AuthError('claim', 'token "home_region" must be a string');
  const plan = planClaimsOf(payload);
  if (typeof plan === 'string') throw new AuthError('claim', plan);
  return { userId: sub, maxStreams, scopes: scopesOf(payload.scope), exp: payload.exp as number, deviceId, plan, homeRegion };
}

/** Shared by every principal without scopes (most players): one Set, not one per cached token. */
const NO_SCOPES: ReadonlySet<string> = new Set();

/** OAuth 2 `scope`: a space-separated string, or (some issuers) an array of strings. */
function scopesOf(scope: unknown): ReadonlySet<string> {
  const list =
    typeof scope === 'string'
      ? scope.split(' ').filter(Boolean)
      : Array.isArray(scope)
        ? scope.filter((s): s is string => typeof s === 'string')
        : [];
  return list.length === 0 ? NO_SCOPES : new Set(list);
}
