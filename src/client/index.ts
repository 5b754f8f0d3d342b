/**
 * `sigma-stream/client`: the player SDK. Holds one stream lease (a WebSocket
 * to the gateway) per playing device, in browsers and in Node. No
 * dependencies; nothing here imports Node modules, so it bundles for browsers.
 */
export {
  StreamLease,
  type Grant,
  type LeaseState,
  type StreamLeaseEvents,
  type StreamLeaseOptions,
  type CloseEvent,
  type PlaybackEvent,
} from './stream-lease.js';
export {
  StreamLeaseError,
  InvalidOptionError,
  StreamLimitError,
  UnauthorizedError,
  TerminalCloseError,
  LeaseStoppedError,
  HttpError,
  type StreamLeaseErrorCode,
} from './errors.js';
export { listStreams, stopStream, type StreamsList } from './rest.js';
export { viewerMessage, type Outcome } from './messages.js';
export { reconnectRule, type ActiveStream, type PlaybackToken } from './protocol.js';
export { backoffDelayMs, backoffCapMs, BACKOFF_DEFAULTS, type BackoffOptions } from './backoff.js';
export { tokenExpiryMs } from './token.js';
export { DEVICE_ID_KEY, type KeyValueStorage } from './device-id.js';
export type { WebSocketConstructor, WebSocketLike, TokenCarriage } from './connection.js';
// Player adapters are separate entry points (src/client/adapters/*, `@sigma-stream/client/adapters/<name>`), so a
// player bundles only its own; what they read from a lease is this interface.
export { PLAYBACK_HEADER, type PlaybackSource } from './playback-source.js';
