import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from './config.js';
import { StoreUnavailableError } from './dynamo.js';
import { HTTP_ERRORS, type HttpErrorName } from './http-errors.js';
import { leasesOf, type LeaseStore } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics, PlaybackResult } from './metrics.js';
import type { Playback } from './playback.js';
import { createPlaybackVerifier, playbackTokenFrom, PlaybackTokenError, type PlaybackClaims } from './verify.js';

/**
 * The media path's side of the gateway, on the public port:
 *
 *   GET /.well-known/jwks.json    the keys playback tokens are signed with (current and previous)
 *   *   /v1/playback/authorize    nginx auth_request, Envoy ext_authz (any method; Envoy's path_prefix
 *                                 `/v1/playback/authorize?path=` puts the original path in the query),
 *                                 licence proxies: 204 with X-Sigma-User/-Device/-Lease, 401 missing /
 *                                 invalid / expired; with ?live=1 (or X-Sigma-Live: 1) also 403
 *                                 lease_gone when the lease is no longer held
 *
 * The stateless check (signature, issuer, audience, expiry) makes no store
 * request: it is cheap enough for every segment. The live check answers from
 * this gateway's own sessions when one holds the lease, else with one strongly
 * consistent GetItem: for licence and key requests, which are rare. With
 * several regions the token does not say the user's home: the hashed home is
 * read first, the other regions only when the lease is not there (a user
 * homed by claim elsewhere); a lease id is unique, so finding it anywhere is
 * finding it.
 */
export const JWKS_PATH = '/.well-known/jwks.json';
export const AUTHORIZE_PATH = '/v1/playback/authorize';
/** How long caches may keep the key set: a rotation publishes the next key at least this long before using it. */
export const JWKS_MAX_AGE_S = 300;
/**
 * Verified tokens remembered until their `exp`: a player sends the same token with every request until
 * the next refresh (several segments), and the signature check is most of the cost of a check.
 * Bounded; the oldest entry goes first.
 */
export const VERIFIED_CACHE_MAX = 10_000;

export interface PlaybackApiDeps {
  readonly config: Config;
  readonly playback?: Playback;
  /** The stores that may hold a user's leases, the likeliest first (one with a single region). */
  readonly storesFor: (userId: string) => ReadonlyArray<Pick<LeaseStore, 'readUser'>>;
  readonly gateway: { holdsLease(leaseId: string): boolean };
  readonly metrics: Metrics;
  readonly log: Logger;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(text && { 'Content-Type': 'application/json; charset=utf-8' }),
    'Content-Length': String(Buffer.byteLength(text)),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/** User ids are any string the identity provider chose: percent-encode what a header cannot carry. */
function headerSafe(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : encodeURIComponent(value);
}

function refuse(res: ServerResponse, code: HttpErrorName, message: string, headers: Record<string, string> = {}): void {
  send(res, HTTP_ERRORS[code].status, { error: { code, message } }, headers);
}

/** Returns the handler for the two routes; it answers true when the request was one of them. */
export function createPlaybackHandler(deps: PlaybackApiDeps): (req: IncomingMessage, res: ServerResponse, path: string) => boolean {
  const { playback, metrics } = deps;
  const verify =
    playback &&
    createPlaybackVerifier({
      jwks: playback.jwks,
      issuer: playback.config.issuer,
      audience: playback.config.audience,
      clockToleranceSec: 0,
    });
  const jwksBody = playback && JSON.stringify(playback.jwks);
  const verified = new Map<string, PlaybackClaims>();
  async function check(token: string | undefined): Promise<PlaybackClaims> {
    if (token !== undefined) {
      const hit = verified.get(token);
      // Same rule as the verifier's (clock tolerance 0): valid while the current second is before exp.
      if (hit !== undefined && Math.floor(Date.now() / 1000) < hit.exp) return hit;
      if (hit !== undefined) verified.delete(token);
    }
    const claims = await verify!(token);
    if (verified.size >= VERIFIED_CACHE_MAX) verified.delete(verified.keys().next().value!);
    verified.set(token!, claims);
    return claims;
  }
  const off = 'playback tokens are off: this gateway has no PLAYBACK_SIGNING_KEY';

  const answer = (res: ServerResponse, result: PlaybackResult, message: string): void => {
    metrics.playbackAuthorize.inc({ result });
    const code = result as Exclude<PlaybackResult, 'ok'>;
    refuse(res, code, message, HTTP_ERRORS[code].status === 401 ? { 'WWW-Authenticate': `Bearer error="invalid_token"` } : {});
  };

  async function authorize(req: IncomingMessage, res: ServerResponse, live: boolean): Promise<void> {
    let claims: PlaybackClaims;
    try {
      claims = await check(playbackTokenFrom(req.headers));
    } catch (err) {
      const code = err instanceof PlaybackTokenError ? err.code : 'invalid';
      answer(res, code === 'keys_unavailable' ? 'invalid' : code, err instanceof Error ? err.message : 'playback token invalid');
      return;
    }
    if (live && !deps.gateway.holdsLease(claims.sid)) {
      const signal = AbortSignal.timeout(deps.config.admissionTimeoutMs);
      let held = false;
      for (const store of deps.storesFor(claims.sub)) {
        held = leasesOf(await store.readUser(claims.sub, signal)).get(claims.dev)?.leaseId === claims.sid;
        if (held) break;
      }
      if (!held) {
        answer(res, 'lease_gone', 'the stream lease of this playback token is no longer held');
        return;
      }
    }
    metrics.playbackAuthorize.inc({ result: 'ok' });
    res.writeHead(204, {
      'Cache-Control': 'no-store',
      'X-Sigma-User': headerSafe(claims.sub),
      'X-Sigma-Device': headerSafe(claims.dev),
      'X-Sigma-Lease': headerSafe(claims.sid),
    });
    res.end();
  }

  return (req, res, path) => {
    if (path === JWKS_PATH) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        refuse(res, 'method_not_allowed', `${JWKS_PATH} allows GET`, { Allow: 'GET, HEAD' });
      } else if (jwksBody === undefined) {
        refuse(res, 'not_found', off);
      } else {
        res.writeHead(200, {
          'Content-Type': 'application/json',
          'Content-Length': String(Buffer.byteLength(jwksBody)),
          'Cache-Control': `public, max-age=${JWKS_MAX_AGE_S}`,
          'Access-Control-Allow-Origin': '*',
        });
        res.end(req.method === 'HEAD' ? undefined : jwksBody);
      }
      return true;
    }
    if (path !== AUTHORIZE_PATH) return false;
    if (verify === undefined) {
      refuse(res, 'not_found', off);
      return true;
    }
    const query = (req.url ?? '').split('?')[1] ?? '';
    const live = new URLSearchParams(query).get('live') === '1' || req.headers['x-sigma-live'] === '1';
    authorize(req, res, live).catch((err: unknown) => {
      if (res.headersSent) return void res.end();
      if (err instanceof StoreUnavailableError || (err as { name?: string }).name === 'TimeoutError') {
        refuse(res, 'store_unavailable', 'lease store unavailable, try again later', { 'Retry-After': '1' });
        return;
      }
      deps.log.error('playback authorize error', { err });
      refuse(res, 'internal', 'internal error');
    });
    return true;
  };
}
