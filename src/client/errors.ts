/**
 * Every error the SDK raises: one catalog, each with a stable `.code` to
 * branch on and a `.viewerMessage` a player may show as it is.
 */
import { viewerMessage } from './messages.js';
import type { ActiveStream, DenialReason } from './protocol.js';

export type StreamLeaseErrorCode =
  'ERR_INVALID_OPTION' | 'ERR_STREAM_LIMIT' | 'ERR_UNAUTHORIZED' | 'ERR_TERMINAL_CLOSE' | 'ERR_STOPPED' | 'ERR_HTTP';

export class StreamLeaseError extends Error {
  constructor(
    readonly code: StreamLeaseErrorCode,
    message: string,
    readonly viewerMessage: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A bad constructor or method argument; the message names the option and quotes the value. */
export class InvalidOptionError extends StreamLeaseError {
  constructor(option: string, expected: string, value: unknown) {
    super(
      'ERR_INVALID_OPTION',
      `StreamLease: ${option} must be ${expected}, got ${JSON.stringify(value) ?? String(value)}`,
      viewerMessage({ kind: 'error' }),
    );
  }
}

/**
 * A cap of the viewer's plan is reached: `reason` says which (`limit`,
 * `content_limit`, `class_limit`), `mustStop` how many devices must stop, and
 * `active` lists every device playing (for a "stop one" dialog).
 */
export class StreamLimitError extends StreamLeaseError {
  readonly closeCode = 4429;
  constructor(
    readonly limit: number,
    readonly active: readonly ActiveStream[],
    readonly reason: DenialReason = 'limit',
    readonly mustStop = 1,
    /** The cap that denied (`limit` for the total). */
    readonly cap = limit,
    readonly deviceClass?: string,
  ) {
    super(
      'ERR_STREAM_LIMIT',
      `${reason === 'limit' ? 'stream limit' : reason.replace('_', ' ')} reached (${cap})`,
      viewerMessage({ kind: 'limit', limit, reason, cap, deviceClass, mustStop }),
    );
  }
}

/** The gateway refused the token (4401) and again after one refresh through `getToken`. */
export class UnauthorizedError extends StreamLeaseError {
  readonly closeCode = 4401;
  constructor(readonly reason: string) {
    super('ERR_UNAUTHORIZED', `unauthorized: ${reason}`, viewerMessage({ kind: 'close', code: 4401 }));
  }
}

/** The gateway closed with a code after which the SDK does not reconnect (4403, 4409, 1008, ...). */
export class TerminalCloseError extends StreamLeaseError {
  constructor(
    readonly closeCode: number,
    readonly reason: string,
  ) {
    super('ERR_TERMINAL_CLOSE', `closed ${closeCode}${reason ? `: ${reason}` : ''}`, viewerMessage({ kind: 'close', code: closeCode }));
  }
}

/** `stop()` was called while `start()` or `takeover()` was still waiting. */
export class LeaseStoppedError extends StreamLeaseError {
  constructor() {
    super('ERR_STOPPED', 'stopped before the lease was granted', viewerMessage({ kind: 'stopped' }));
  }
}

/** A REST call (`listStreams`, `stopDevice`) answered with an unexpected status. */
export class HttpError extends StreamLeaseError {
  constructor(
    readonly status: number,
    readonly errorCode: string | undefined,
    message: string,
  ) {
    super('ERR_HTTP', `HTTP ${status}: ${message}`, viewerMessage({ kind: status === 401 ? 'close' : 'error', code: 4401 }));
  }
}
