/**
 * The REST routes a player needs next to its socket: list the user's streams,
 * stop one of them. Same base URL and bearer token as the lease.
 */
import { HttpError } from './errors.js';
import { STREAMS_PATH, type ActiveStream } from './protocol.js';

export interface StreamsList {
  readonly userId: string;
  readonly limit: number;
  readonly streams: ReadonlyArray<ActiveStream & { readonly leaseId: string }>;
}

/** `wss://host/base` -> `https://host/base` (no trailing slash). */
export function httpBase(url: string): string {
  return url.replace(/^ws(s?):/i, 'http$1:').replace(/\/+$/, '');
}

async function call(url: string, token: string, method: 'GET' | 'DELETE'): Promise<Response> {
  return fetch(url, { method, headers: { Authorization: `Bearer ${token}` } });
}

async function fail(res: Response): Promise<never> {
  let body: { error?: { code?: string; message?: string } } = {};
  try {
    body = (await res.json()) as typeof body;
  } catch {
    /* not JSON */
  }
  throw new HttpError(res.status, body.error?.code, body.error?.message ?? res.statusText);
}

/** `GET /v1/streams`: the streams of the token's user, playing now anywhere. */
export async function listStreams(baseUrl: string, token: string): Promise<StreamsList> {
  const res = await call(`${httpBase(baseUrl)}${STREAMS_PATH}`, token, 'GET');
  if (res.status !== 200) return fail(res);
  return (await res.json()) as StreamsList;
}

/** `DELETE /v1/streams/<deviceId>`: true when stopped (its socket gets 4403), false when it had no stream. */
export async function stopStream(baseUrl: string, token: string, deviceId: string): Promise<boolean> {
  const res = await call(`${httpBase(baseUrl)}${STREAMS_PATH}/${encodeURIComponent(deviceId)}`, token, 'DELETE');
  if (res.status === 204) return true;
  if (res.status === 404) {
    await res.body?.cancel();
    return false;
  }
  return fail(res);
}
