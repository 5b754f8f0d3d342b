/**
 * hls.js: the playback token on every manifest, segment, key and licence
 * request, and CMCD's session id set to the lease id.
 *
 * ```ts
 * import Hls from 'hls.js';
 * import { hlsPlaybackConfig } from '@sigma-stream/client/adapters/hls';
 * await lease.start();                        // the lease id is known once granted
 * const hls = new Hls({ ...hlsPlaybackConfig(lease), maxBufferLength: 10 });
 * ```
 *
 * Both loaders are covered: `xhrSetup` (the default XHR loader, also used for
 * AES-128 keys) and `fetchSetup` (the fetch loader), plus `licenseXhrSetup`
 * for EME licence requests. While the lease reconnects a request waits for
 * the next token (up to 10 s); when the lease has ended it goes out without
 * one, and the media path refuses it.
 */
import { bearerSoon, PLAYBACK_HEADER, type PlaybackSource } from '../playback-source.js';

/** The slice of hls.js's config this adapter sets (structural: no dependency on hls.js). hls.js awaits all three. */
export interface HlsPlaybackConfig {
  xhrSetup(xhr: XMLHttpRequest, url: string): Promise<void>;
  fetchSetup(context: { url: string }, initParams: RequestInit): Promise<Request>;
  licenseXhrSetup(xhr: XMLHttpRequest, url: string): Promise<void>;
  cmcd?: { sessionId?: string; contentId?: string };
}

export interface HlsPlaybackOptions {
  /** Turn on CMCD with the lease id as session id. @default true */
  readonly cmcd?: boolean;
  /** CMCD content id. */
  readonly contentId?: string;
}

async function onXhr(source: PlaybackSource, xhr: XMLHttpRequest, url: string, method: 'GET' | 'POST'): Promise<void> {
  const value = await bearerSoon(source);
  if (value === undefined) return;
  // setRequestHeader needs an opened request; hls.js opens it only if we did not.
  if (xhr.readyState === 0) xhr.open(method, url, true);
  xhr.setRequestHeader(PLAYBACK_HEADER, value);
}

export function hlsPlaybackConfig(source: PlaybackSource, options: HlsPlaybackOptions = {}): HlsPlaybackConfig {
  const config: HlsPlaybackConfig = {
    xhrSetup: (xhr, url) => onXhr(source, xhr, url, 'GET'),
    licenseXhrSetup: (xhr, url) => onXhr(source, xhr, url, 'POST'),
    fetchSetup: async (context, initParams) => {
      const headers = new Headers(initParams.headers);
      const value = await bearerSoon(source);
      if (value === undefined) headers.delete(PLAYBACK_HEADER);
      else headers.set(PLAYBACK_HEADER, value);
      return new Request(context.url, { ...initParams, headers });
    },
  };
  if (options.cmcd !== false)
    config.cmcd = { sessionId: source.grant?.leaseId, ...(options.contentId !== undefined && { contentId: options.contentId }) };
  return config;
}
