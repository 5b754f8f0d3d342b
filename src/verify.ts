/**
 * `sigma-stream/verify`: checks a playback token where the media is served
 * or the licence is issued (a licence server, an edge function, a proxy),
 * without asking the gateway. Node, on jose.
 *
 * ```ts
 * import { createPlaybackVerifier, playbackTokenFrom } from 'sigma-stream/verify';
 * const verify = createPlaybackVerifier({ jwksUrl: 'https://streams.example.com/.well-known/jwks.json', audience: 'media' });
 * const claims = await verify(playbackTokenFrom(req.headers)); // throws PlaybackTokenError (.code)
 * ```
 *
 * A token is good when its signature is by a published key (ES256 or EdDSA,
 * `typ` sigma-playback+jwt), its issuer (and audience, when configured)
 * match, and it has not expired. Keep `clockToleranceSec` small: the token's
 * expiry is what bounds a player that ignores the lease ending, and it is
 * capped by the gateway's fencing deadline; every second of tolerance is a
 * second more for a cheating player and eats into the fencing margin.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { PLAYBACK_TYP, publicJwk, type PlaybackClaims } from './playback.js';

export { PLAYBACK_TYP, type PlaybackClaims };

/** Stable reasons a token is refused: `missing`, `invalid`, `expired`, and `keys_unavailable` (the JWKS could not be fetched). */
export type PlaybackTokenErrorCode = 'missing' | 'invalid' | 'expired' | 'keys_unavailable';

export class PlaybackTokenError extends Error {
  readonly code: PlaybackTokenErrorCode;
  constructor(code: PlaybackTokenErrorCode, message: string) {
    super(message);
    this.name = 'PlaybackTokenError';
    this.code = code;
  }
}

export interface PlaybackVerifierOptions {
  /** The gateway's `/.well-known/jwks.json` (fetched and cached; an unknown `kid` refetches, at most every 30 s). */
  readonly jwksUrl?: string | URL;
  /** A key set given inline, e.g. a copy of the JWKS. */
  readonly jwks?: { readonly keys: readonly object[] };
  /** PEM public keys (or KeyObjects): the current one and any still valid during a rotation. */
  readonly keys?: string | KeyObject | ReadonlyArray<string | KeyObject>;
  /** Expected `iss`. @default 'sigma-stream' */
  readonly issuer?: string;
  /** Expected `aud`; tokens without it are refused when set. */
  readonly audience?: string;
  /** Seconds of clock skew forgiven on `exp` and `iat`. @default 0 */
  readonly clockToleranceSec?: number;
}

/** Tokens larger than this are refused before any crypto. */
export const MAX_PLAYBACK_TOKEN_BYTES = 4096;

/** The playback token of a request: `Authorization: Bearer <token>`, else the `sigma_playback` cookie. */
export function playbackTokenFrom(headers: Record<string, string | string[] | undefined>): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match) return match[1];
  }
  const cookie = headers.cookie;
  if (typeof cookie === 'string') {
    for (const part of cookie.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === 'sigma_playback') return part.slice(eq + 1).trim() || undefined;
    }
  }
  return undefined;
}

function keySet(opts: PlaybackVerifierOptions): JWTVerifyGetKey {
  if (opts.jwksUrl !== undefined) {
    return createRemoteJWKSet(new URL(opts.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 600_000 });
  }
  if (opts.jwks !== undefined) return createLocalJWKSet(opts.jwks as JSONWebKeySet);
  if (opts.keys !== undefined) {
    const given: string | KeyObject | ReadonlyArray<string | KeyObject> = opts.keys;
    const list: ReadonlyArray<string | KeyObject> =
      typeof given === 'string' || !Array.isArray(given) ? [given as string | KeyObject] : given;
    const keys = list.map((k) => publicJwk(typeof k === 'string' ? createPublicKey(k) : k));
    return createLocalJWKSet({ keys });
  }
  throw new TypeError('createPlaybackVerifier needs jwksUrl, jwks or keys');
}

const CLAIM_STRING = ['sub', 'sid', 'dev'] as const;

/**
 * A verifier: resolves with the token's claims, or rejects with a
 * {@link PlaybackTokenError} whose `.code` says why.
 */
export function createPlaybackVerifier(opts: PlaybackVerifierOptions): (token: string | undefined) => Promise<PlaybackClaims> {
  const getKey = keySet(opts);
  const issuer = opts.issuer ?? 'sigma-stream';
  const tolerance = opts.clockToleranceSec ?? 0;
  if (!Number.isFinite(tolerance) || tolerance < 0)
    throw new TypeError(`clockToleranceSec must be a number of seconds >= 0, got ${String(tolerance)}`);
  return async (token) => {
    if (token === undefined || token === '')
      throw new PlaybackTokenError('missing', 'no playback token (Authorization: Bearer or cookie sigma_playback)');
    if (token.length > MAX_PLAYBACK_TOKEN_BYTES) throw new PlaybackTokenError('invalid', 'playback token too large');
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        algorithms: ['ES256', 'EdDSA'],
        typ: PLAYBACK_TYP,
        issuer,
        audience: opts.audience,
        clockTolerance: tolerance,
        requiredClaims: ['exp', 'iat', 'sub', 'sid', 'dev'],
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_JWT_EXPIRED') throw new PlaybackTokenError('expired', 'playback token expired');
      if (code === 'ERR_JWKS_TIMEOUT' || (opts.jwksUrl !== undefined && (code === 'ERR_JOSE_GENERIC' || code === undefined))) {
        throw new PlaybackTokenError('keys_unavailable', 'the playback key set could not be fetched');
      }
      throw new PlaybackTokenError('invalid', `playback token invalid (${code ?? 'malformed'})`);
    }
    for (const name of CLAIM_STRING) {
      if (typeof payload[name] !== 'string' || payload[name] === '')
        throw new PlaybackTokenError('invalid', `playback token claim ${name} must be a string`);
    }
    return payload as unknown as PlaybackClaims;
  };
}
