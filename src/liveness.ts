import { performance } from 'node:perf_hooks';
import { CLOSE } from './close-codes.js';
import type { Config } from './config.js';
import type { Hub } from './hub.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { Session } from './session.js';

/** Resolution of token expiry on open sockets. */
const EXPIRY_CHECK_MS = 1000;
/**
 * Time one slice of a sweep may take before it yields to the event loop, ms:
 * pongs and admissions never wait behind a sweep of the whole population. By
 * time rather than by count, so a slow machine yields as often as a fast one.
 */
export const SWEEP_SLICE_MS = 2;
/** Sockets between two clock reads within a slice. */
const CLOCK_EVERY = 32;

/**
 * Finds dead devices and expired tokens. One timer drives the ping sweep,
 * which alternates two phases: `ping` sends a protocol ping to every socket;
 * `check`, PONG_TIMEOUT_MS after the ping phase finished, terminates the
 * sockets that did not answer. Each phase runs in slices of SWEEP_SLICE_MS
 * with a yield between them (setImmediate: no extra timer). A dead
 * device is thus freed within PING_INTERVAL_MS + PONG_TIMEOUT_MS plus the
 * time of one sweep. A second timer closes sockets whose token expired (4401)
 * and gives back the slots of streams paused for PAUSE_RELEASE_MS.
 */
export class Liveness {
  readonly #hub: Hub;
  readonly #cfg: Config;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  #sweepTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(deps: { hub: Hub; config: Config; metrics: Metrics; log: Logger }) {
    this.#hub = deps.hub;
    this.#cfg = deps.config;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule('ping', this.#cfg.pingIntervalMs);
    // Paused streams are checked on the same timer, often enough for a short PAUSE_RELEASE_MS.
    const every = this.#cfg.pauseReleaseMs > 0 ? Math.max(100, Math.min(EXPIRY_CHECK_MS, this.#cfg.pauseReleaseMs / 2)) : EXPIRY_CHECK_MS;
    this.#expiryTimer = setInterval(() => this.#expire(), every);
    this.#expiryTimer.unref();
  }

  /** Safe to call twice. */
  stop(): void {
    this.#running = false;
    clearTimeout(this.#sweepTimer);
    clearInterval(this.#expiryTimer);
  }

  #schedule(phase: 'ping' | 'check', inMs: number): void {
    if (!this.#running) return;
    this.#sweepTimer = setTimeout(() => this.#sweep(phase), inMs);
    this.#sweepTimer.unref();
  }

  #sweep(phase: 'ping' | 'check'): void {
    const sessions = [...this.#hub.sessions()];
    const each = phase === 'ping' ? ping : (s: Session) => this.#checkPong(s);
    const slice = (from: number): void => {
      if (!this.#running) return;
      const until = performance.now() + SWEEP_SLICE_MS;
      let to = from;
      while (to < sessions.length) {
        if (!sessions[to].closed) each(sessions[to]);
        to++;
        if ((to - from) % CLOCK_EVERY === 0 && performance.now() >= until) break;
      }
      if (to < sessions.length) {
        setImmediate(slice, to);
      } else if (phase === 'ping') {
        this.#schedule('check', this.#cfg.pongTimeoutMs);
      } else {
        this.#schedule('ping', Math.max(0, this.#cfg.pingIntervalMs - this.#cfg.pongTimeoutMs));
      }
    };
    slice(0);
  }

  #checkPong(session: Session): void {
    if (!session.awaitingPong) return;
    this.#log.info('ping timeout', { userId: session.userId, deviceId: session.deviceId });
    session.close('terminate', '', 'ping_timeout');
  }

  /**
   * Closes sockets whose token has expired (4401), unless they re-authenticated
   * in time, and gives back the slots of streams paused for PAUSE_RELEASE_MS.
   */
  #expire(): void {
    const nowSec = Date.now() / 1000;
    const pausedBefore = this.#cfg.pauseReleaseMs > 0 ? performance.now() - this.#cfg.pauseReleaseMs : Number.NEGATIVE_INFINITY;
    for (const session of this.#hub.sessions()) {
      if (session.closed) continue;
      if (session.exp > 0 && session.exp <= nowSec) {
        this.#metrics.authFailures.inc({ reason: 'expired' });
        session.close(CLOSE.UNAUTHORIZED, 'token expired: reconnect or re-authenticate with a fresh token', 'token_expired');
      } else if (session.pausedAt > 0 && session.pausedAt <= pausedBefore && session.state === 'leased') {
        this.#hub.releasePaused(session);
      }
    }
  }
}

function ping(session: Session): void {
  // An admission ends within ADMISSION_TIMEOUT_MS on its own, and its socket holds the 101 until then
  // (src/gateway.ts holdHandshake): a ping would wait there too, unanswered.
  if (session.state === 'admitting') return;
  session.awaitingPong = true;
  session.ws.ping();
}
