/**
 * Every `error.code` the gateway answers over HTTP, with its status: the
 * upgrade refusals (before a WebSocket exists, so a plain HTTP answer) and the
 * REST API's errors. Bodies are `{"error":{"code","message"}}`. Written once
 * here; docs.test.ts checks the README against it.
 */
export interface HttpErrorCode {
  readonly status: number;
  readonly meaning: string;
}

function define<const T extends Record<string, HttpErrorCode>>(codes: T): T {
  return Object.freeze(codes);
}

export const HTTP_ERRORS = define({
  bad_request: { status: 400, meaning: 'the request target is not a valid URL' },
  bad_path: { status: 400, meaning: 'the path is not valid percent-encoding' },
  bad_device: { status: 400, meaning: 'the device id breaks the id rule' },
  bad_region: { status: 400, meaning: 'the region query parameter names no configured region' },
  unauthorized: { status: 401, meaning: 'token missing, invalid or expired' },
  missing: { status: 401, meaning: 'playback authorize: no playback token (Authorization: Bearer or cookie sigma_playback)' },
  invalid: { status: 401, meaning: 'playback authorize: the playback token is malformed, badly signed, or for another issuer or audience' },
  expired: { status: 401, meaning: 'playback authorize: the playback token has expired' },
  forbidden: { status: 403, meaning: 'the route needs the sigma:admin scope' },
  lease_gone: { status: 403, meaning: 'playback authorize with live=1: the stream lease is no longer held' },
  origin_not_allowed: { status: 403, meaning: 'the Origin is not in ALLOWED_ORIGINS' },
  not_found: { status: 404, meaning: 'no route or WebSocket endpoint at this path' },
  no_stream: { status: 404, meaning: 'the device has no live stream' },
  method_not_allowed: { status: 405, meaning: 'the route does not allow this method' },
  body_too_large: { status: 413, meaning: 'these routes take no request body' },
  upgrade_required: {
    status: 426,
    meaning: 'the lease path is a WebSocket upgrade: the request had no `Upgrade: websocket` (a proxy may have dropped it)',
  },
  ip_rate: { status: 429, meaning: 'too many connection attempts from this address' },
  ip_blocked: { status: 429, meaning: 'this address is blocked for a while after too many attempts' },
  internal: { status: 500, meaning: 'unexpected gateway error' },
  draining: { status: 503, meaning: 'this gateway is shutting down' },
  max_connections: { status: 503, meaning: 'this gateway holds MAX_CONNECTIONS sockets' },
  store_unavailable: { status: 503, meaning: 'the lease store did not answer in time' },
});

export type HttpErrorName = keyof typeof HTTP_ERRORS;
