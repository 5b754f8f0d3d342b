import type { IncomingMessage, ServerResponse } from 'node:http';
import { asAuthError, tokenFromRequest, type Authenticator, type Principal } from './auth.js';
import type { Config } from './config.js';
import { StoreUnavailableError } from './dynamo.js';
import { ID_PATTERN, ID_RULE, LEASE_PATH } from './client/protocol.js';
import type { Gateway } from './gateway.js';
import type { HttpErrorName } from './http-errors.js';
import { HTTP_ERRORS } from './http-errors.js';
import type { Lease } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { createPlaybackHandler } from './playback-api.js';
import type { Playback } from './playback.js';
import type { Region, Regions } from './regions.js';

/**
 * REST on the public port, with the same bearer token as the socket:
 *
 *   GET    /v1/streams                            the caller's live streams
 *   DELETE /v1/streams/<deviceId>                 stop one of the caller's devices (4403 on its socket)
 *   GET    /v1/users/<userId>/streams             operators (scope sigma:admin)
 *   DELETE /v1/users/<userId>/streams/<deviceId>  operators (scope sigma:admin)
 *
 * With several regions a user's streams are in the user's home region: the
 * caller's own from its token's `home_region` (or the hash), an operator's
 * target from `?region=<name>`, else from every region, the hashed home first.
 *
 * Errors are `{"error":{"code","message"}}` with a fitting status; never a stack trace.
 */
export const ADMIN_SCOPE = 'sigma:admin';
const MAX_BODY_BYTES = 1024;

export interface ApiDeps {
  readonly config: Config;
  readonly auth: Authenticator;
  readonly regions: Regions;
  readonly gateway: Gateway;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Playback tokens (JWKS and the media-path authorize check), when a signing key is configured. */
  readonly playback?: Playback;
  /** Extra routes served before the API (the demo page in development). */
  readonly fallback?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

/** A refusal from the catalog (src/http-errors.ts): the status comes with the code. */
class HttpError extends Error {
  readonly status: number;
  constructor(
    readonly code: HttpErrorName,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = HTTP_ERRORS[code].status;
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(text)),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function streamView(l: Lease): { deviceId: string; contentId: string | null; class: string | null; since: string; leaseId: string } {
  return {
    deviceId: l.deviceId,
    contentId: l.contentId ?? null,
    class: l.deviceClass ?? null,
    since: new Date(l.acquiredAt).toISOString(),
    leaseId: l.leaseId,
  };
}

type Route = { kind: 'list'; userId?: string } | { kind: 'stop'; userId?: string; deviceId: string };

/** Matches a path to a route and the methods it allows; undefined when no route has that path. */
function match(path: string): { route: Route; method: 'GET' | 'DELETE' } | undefined {
  const parts = path
    .split('/')
    .slice(1)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        throw new HttpError('bad_path', 'path is not valid percent-encoding');
      }
    });
  if (parts[0] !== 'v1') return undefined;
  if (parts.length === 2 && parts[1] === 'streams') return { route: { kind: 'list' }, method: 'GET' };
  if (parts.length === 3 && parts[1] === 'streams') return { route: { kind: 'stop', deviceId: parts[2] }, method: 'DELETE' };
  if (parts[1] === 'users' && parts.length >= 4 && parts[3] === 'streams') {
    if (parts.length === 4) return { route: { kind: 'list', userId: parts[2] }, method: 'GET' };
    if (parts.length === 5) return { route: { kind: 'stop', userId: parts[2], deviceId: parts[4] }, method: 'DELETE' };
  }
  return undefined;
}

export function createApiHandler(deps: ApiDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const playback = createPlaybackHandler({ ...deps, storesFor: (userId) => deps.regions.likeliestFor(userId).map((r) => r.store) });
  return (req, res) => {
    // The media path's routes come first: asked by proxies for every segment, with the player's Origin
    // forwarded, answered while draining (they hold no state), and public (the key set).
    if (playback(req, res, (req.url ?? '/').split('?')[0])) return;
    handle(deps, req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        sendJson(res, err.status, { error: { code: err.code, message: err.message } }, err.headers);
        return;
      }
      if (err instanceof StoreUnavailableError) {
        const { status } = HTTP_ERRORS.store_unavailable;
        sendJson(
          res,
          status,
          { error: { code: 'store_unavailable', message: 'lease store unavailable, try again later' } },
          { 'Retry-After': '1' },
        );
        return;
      }
      deps.log.error('api error', { err, path: req.url?.split('?')[0] });
      if (!res.headersSent) sendJson(res, HTTP_ERRORS.internal.status, { error: { code: 'internal', message: 'internal error' } });
      else res.end();
    });
  };
}

async function handle(deps: ApiDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (deps.fallback?.(req, res)) return;
  // CORS for browser players on the origins ALLOWED_ORIGINS lists (tokens travel in a header, never cookies).
  const origin = req.headers.origin;
  if (origin !== undefined) {
    if (!deps.gateway.originAllowed(origin)) throw new HttpError('origin_not_allowed', 'this origin may not call the API');
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Vary', 'Origin');
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'Access-Control-Allow-Methods': 'GET, DELETE',
        'Access-Control-Allow-Headers': 'Authorization',
        'Access-Control-Max-Age': '600',
      });
      res.end();
      return;
    }
  }
  const found = match(path);
  if (!found && path === LEASE_PATH) {
    // The upgrade never reached us as one: say what is missing, since an ingress that drops Upgrade looks exactly like this.
    throw new HttpError(
      'upgrade_required',
      `${LEASE_PATH} is a WebSocket upgrade: send Connection: Upgrade and Upgrade: websocket (a proxy in between may have dropped them)`,
      {
        Upgrade: 'websocket',
        Connection: 'Upgrade',
      },
    );
  }
  if (!found) throw new HttpError('not_found', `no route for ${path.slice(0, 100)}`);
  if (req.method !== found.method) {
    throw new HttpError('method_not_allowed', `${path.slice(0, 100)} allows ${found.method}`, { Allow: found.method });
  }
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES || req.headers['transfer-encoding'] !== undefined) {
    throw new HttpError('body_too_large', 'these routes take no request body');
  }
  if (deps.gateway.draining) {
    throw new HttpError('draining', 'this gateway is shutting down; retry', { 'Retry-After': '1' });
  }
  const principal = await authenticate(deps.auth, req);
  const { route } = found;
  const userId = route.userId ?? principal.userId;
  if (route.userId !== undefined && !principal.scopes.has(ADMIN_SCOPE)) {
    throw new HttpError('forbidden', `this route needs the ${ADMIN_SCOPE} scope`);
  }
  const regions = route.userId === undefined ? [ownRegion(deps.regions, principal)] : targetRegions(deps.regions, req, userId);
  const signal = AbortSignal.timeout(deps.config.admissionTimeoutMs);
  if (route.kind === 'list') {
    const leases = (await Promise.all(regions.map((r) => r.store.listLive(userId, signal)))).flat();
    const limit = route.userId === undefined ? (principal.maxStreams ?? deps.config.maxStreams) : deps.config.maxStreams;
    sendJson(res, 200, { userId, limit, streams: leases.map(streamView) });
    return;
  }
  if (!ID_PATTERN.test(route.deviceId)) {
    throw new HttpError('bad_device', `device must be ${ID_RULE}`);
  }
  let lease: Lease | undefined;
  for (const region of regions) {
    lease = await deps.gateway.revokeDevice(region, userId, route.deviceId, signal);
    if (lease) break;
  }
  if (!lease) throw new HttpError('no_stream', `device ${route.deviceId} has no live stream`);
  deps.log.info('stream stopped over REST', { userId, deviceId: route.deviceId, by: principal.userId });
  res.writeHead(204, { 'Cache-Control': 'no-store' });
  res.end();
}

/** The region holding the caller's own leases: its token's `home_region`, else the hash. */
function ownRegion(regions: Regions, principal: Principal): Region {
  const region = regions.forUser(principal.userId, principal.homeRegion);
  if (region === undefined)
    throw new HttpError('unauthorized', regions.unknownClaim(principal.homeRegion ?? ''), { 'WWW-Authenticate': 'Bearer' });
  return region;
}

/**
 * Where to look for another user's leases, for an operator: the region `?region=<name>` names, else every
 * region, the hashed home first (support staff know a user id, not the `home_region` its tokens claim).
 */
function targetRegions(regions: Regions, req: IncomingMessage, userId: string): Region[] {
  const named = new URL(req.url ?? '/', 'http://localhost').searchParams.get('region') ?? undefined;
  if (named === undefined) return regions.likeliestFor(userId);
  const region = regions.forUser(userId, named);
  if (region === undefined) throw new HttpError('bad_region', `region must be one of ${[...regions].map((r) => r.name).join(', ')}`);
  return [region];
}

async function authenticate(auth: Authenticator, req: IncomingMessage): Promise<Principal> {
  try {
    return await auth.verify(tokenFromRequest(req.headers));
  } catch (err) {
    throw new HttpError('unauthorized', asAuthError(err).message, { 'WWW-Authenticate': 'Bearer' });
  }
}
