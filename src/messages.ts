import { performance } from 'node:perf_hooks';
import type { RawData } from 'ws';
import { resume, type AdmissionDeps } from './admission.js';
import { asAuthError, AuthError, type Authenticator } from './auth.js';
import type { ErrorFrame, ErrorFrameCode } from './client/protocol.js';
import { CLOSE } from './close-codes.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { take } from './rate-limit.js';
import type { Session } from './session.js';

/** A socket may re-authenticate at most once per this period. */
const REAUTH_MIN_GAP_MS = 1000;

function errorFrame(session: Session, code: ErrorFrameCode, message: string): void {
  const frame: ErrorFrame = { type: 'error', code, message };
  session.send(frame);
}

/**
 * Frames a player sends on an open socket: `ping` (answered `pong`), `reauth`,
 * `pause` and `resume`. Every message counts against the socket's rate; a
 * message the gateway does not understand gets an error frame and the socket
 * stays open.
 */
export class Messages {
  readonly #cfg: Config;
  readonly #auth: Authenticator;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #admission: AdmissionDeps;

  constructor(deps: { config: Config; auth: Authenticator; metrics: Metrics; log: Logger; admission: AdmissionDeps }) {
    this.#cfg = deps.config;
    this.#auth = deps.auth;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#admission = deps.admission;
  }

  handle(session: Session, data: RawData, isBinary: boolean): void {
    if (session.closed) return;
    if (!take(session.messages, this.#cfg.messageRatePerSocket, this.#cfg.messageBurstPerSocket)) {
      this.#metrics.rejections.inc({ reason: 'message_rate' });
      session.close(CLOSE.POLICY, 'message rate exceeded', 'policy');
      return;
    }
    if (isBinary) {
      this.#metrics.rejections.inc({ reason: 'bad_message' });
      session.close(CLOSE.POLICY, 'binary frames are not part of the protocol', 'policy');
      return;
    }
    let message: { type?: unknown; token?: unknown } | null;
    try {
      // A text frame: ws hands it over as a Buffer (we never ask for fragments or array buffers).
      message = JSON.parse((data as Buffer).toString('utf8')) as typeof message;
    } catch {
      message = null;
    }
    if (message === null || typeof message !== 'object') {
      this.#metrics.rejections.inc({ reason: 'bad_message' });
      errorFrame(session, 'bad_json', 'messages must be JSON objects');
      return;
    }
    if (message.type === 'ping') {
      session.send({ type: 'pong' });
      return;
    }
    if (message.type === 'reauth') {
      void this.#reauth(session, typeof message.token === 'string' ? message.token : undefined);
      return;
    }
    if (message.type === 'pause') {
      // With PAUSE_RELEASE_MS the liveness sweep gives the slot back once the pause has lasted that long.
      if (session.state === 'leased' && session.pausedAt === 0) session.pausedAt = performance.now();
      return;
    }
    if (message.type === 'resume') {
      session.pausedAt = 0;
      if (session.state === 'released') {
        resume(this.#admission, session).catch((err: unknown) => {
          this.#log.error('resume crashed', { err });
          session.close(CLOSE.INTERNAL, 'internal error, try again', 'client_close');
        });
      }
      return;
    }
    this.#metrics.rejections.inc({ reason: 'bad_message' });
    errorFrame(session, 'unknown_type', 'unknown message type');
  }

  /** ws refused a frame (too big, bad UTF-8, unmasked, reserved opcode) and is closing the socket. */
  protocolError(session: Session, err: Error & { code?: string }): void {
    const tooBig = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
    this.#metrics.rejections.inc({ reason: tooBig ? 'message_too_big' : 'bad_message' });
    this.#log.info('protocol error from client', { userId: session.userId, deviceId: session.deviceId, code: err.code });
  }

  /**
   * `{"type":"reauth","token":"..."}`: a fresh token for the same user (and
   * device, if bound) extends the socket past the old token's expiry.
   * Answers `{"type":"reauthed","exp":...}` or an error frame; the socket
   * keeps its old expiry on failure.
   */
  async #reauth(session: Session, token: string | undefined): Promise<void> {
    const now = performance.now();
    if (now - session.reauthAt < REAUTH_MIN_GAP_MS) {
      errorFrame(session, 'reauth_rate', 'one re-authentication per second at most');
      return;
    }
    session.reauthAt = now;
    try {
      const principal = await this.#auth.verify(token);
      if (principal.userId !== session.userId) throw new AuthError('claim', 'token is for another user');
      if (principal.deviceId !== undefined && principal.deviceId !== session.deviceId) {
        throw new AuthError('claim', 'token is bound to another device');
      }
      if (session.closed) return;
      session.exp = principal.exp;
      session.send({ type: 'reauthed', exp: principal.exp });
    } catch (err) {
      const failure = asAuthError(err);
      this.#metrics.authFailures.inc({ reason: failure.reason });
      errorFrame(session, 'reauth_failed', failure.message);
    }
  }
}
