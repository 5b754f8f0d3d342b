/**
 * dash.js: a request interceptor (dash.js 5) puts the playback token on every
 * manifest, segment and licence request, and CMCD's session id (`sid`) is set
 * to the lease id. On dash.js 4, which has no interceptors, the licence
 * request filter is used for licences (segments need a RequestModifier there).
 *
 * ```ts
 * import { attachDashjsPlayback } from '@sigma-stream/client/adapters/dashjs';
 * await lease.start();
 * const detach = attachDashjsPlayback(player, lease);
 * ```
 */
import { bearerSoon, PLAYBACK_HEADER, type PlaybackSource } from '../playback-source.js';

/** The request dash.js passes to interceptors and licence filters. */
export interface DashRequest {
  headers?: Record<string, string>;
}

type Interceptor = (request: DashRequest) => Promise<DashRequest>;

/** The slice of dashjs.MediaPlayer this adapter uses (structural: no dependency on dashjs). */
export interface DashPlayerLike {
  addRequestInterceptor?(interceptor: Interceptor): void;
  removeRequestInterceptor?(interceptor: Interceptor): void;
  registerLicenseRequestFilter?(filter: Interceptor): void;
  unregisterLicenseRequestFilter?(filter: Interceptor): void;
  updateSettings(settings: object): void;
}

export interface DashPlaybackOptions {
  /** Turn on CMCD with the lease id as session id. @default true */
  readonly cmcd?: boolean;
}

/** Installs the interceptor; returns the function that removes it. */
export function attachDashjsPlayback(player: DashPlayerLike, source: PlaybackSource, options: DashPlaybackOptions = {}): () => void {
  const withToken: Interceptor = async (request) => {
    const headers = { ...request.headers };
    const value = await bearerSoon(source);
    if (value === undefined) delete headers[PLAYBACK_HEADER];
    else headers[PLAYBACK_HEADER] = value;
    request.headers = headers;
    return request;
  };
  const interceptors = typeof player.addRequestInterceptor === 'function';
  if (interceptors) player.addRequestInterceptor!(withToken);
  else if (typeof player.registerLicenseRequestFilter === 'function') player.registerLicenseRequestFilter(withToken);
  else throw new Error('attachDashjsPlayback: this dash.js has neither addRequestInterceptor (v5) nor registerLicenseRequestFilter');
  if (options.cmcd !== false && source.grant) player.updateSettings({ streaming: { cmcd: { enabled: true, sid: source.grant.leaseId } } });
  return () => {
    if (interceptors) player.removeRequestInterceptor?.(withToken);
    else player.unregisterLicenseRequestFilter?.(withToken);
  };
}
