/**
 * Shaka Player: a request filter puts the playback token on every request
 * the networking engine makes (manifest, segment, key, licence), and CMCD's
 * session id is set to the lease id.
 *
 * ```ts
 * import { attachShakaPlayback } from '@sigma-stream/client/adapters/shaka';
 * await lease.start();
 * const detach = attachShakaPlayback(player, lease);
 * ```
 */
import { bearerSoon, PLAYBACK_HEADER, type PlaybackSource } from '../playback-source.js';

/** The request Shaka passes to a request filter: `headers` is a plain object. */
export interface ShakaRequest {
  headers: Record<string, string>;
}

/** The slice of shaka.Player this adapter uses (structural: no dependency on shaka-player). */
export interface ShakaPlayerLike {
  getNetworkingEngine(): {
    registerRequestFilter(filter: (type: number, request: ShakaRequest) => Promise<void>): void;
    unregisterRequestFilter(filter: (type: number, request: ShakaRequest) => Promise<void>): void;
  } | null;
  configure(config: object): unknown;
}

export interface ShakaPlaybackOptions {
  /** Turn on CMCD with the lease id as session id. @default true */
  readonly cmcd?: boolean;
}

/** Registers the filter; returns the function that removes it. */
export function attachShakaPlayback(player: ShakaPlayerLike, source: PlaybackSource, options: ShakaPlaybackOptions = {}): () => void {
  const engine = player.getNetworkingEngine();
  if (engine === null) throw new Error('attachShakaPlayback: the player has no networking engine (call it after attach/load set-up)');
  // Shaka waits for a filter's promise: a request during a reconnect goes out with the next token.
  const filter = async (_type: number, request: ShakaRequest): Promise<void> => {
    const value = await bearerSoon(source);
    if (value === undefined) delete request.headers[PLAYBACK_HEADER];
    else request.headers[PLAYBACK_HEADER] = value;
  };
  engine.registerRequestFilter(filter);
  if (options.cmcd !== false && source.grant) player.configure({ cmcd: { enabled: true, sessionId: source.grant.leaseId } });
  return () => engine.unregisterRequestFilter(filter);
}
