import { performance } from 'node:perf_hooks';
import type { PlaybackFrame } from './client/protocol.js';
import type { Config } from './config.js';
import type { Hub } from './hub.js';
import { SWEEP_SLICE_MS } from './liveness.js';
import { refreshDueAt, type Playback, type PlaybackGrant } from './playback.js';
import type { Session } from './session.js';

/**
 * Keeps every held lease's playback token fresh with ONE sweep timer over the
 * hub's sessions (as src/liveness.ts does for pings): no timer per socket.
 * Each tick serves the leased sessions whose token is past its refresh point
 * (half its lifetime minus two ticks, so the new token arrives before half
 * the old one's lifetime has passed), in slices of SWEEP_SLICE_MS with a yield
 * between them.
 *
 * Only `state === 'leased'` sessions are served, and a session leaves that
 * state synchronously in its one close path (release, 4403, 4409, 4408, 1012,
 * 4401): so no token is ever sent after the lease ended. A frozen gateway
 * sends nothing, and its last token dies by the fencing deadline.
 */
export class PlaybackRefresh {
  readonly playback: Playback;
  /** Sweep period: at most 1 s, a tenth of the token lifetime and a tenth of the fencing window. */
  readonly tickMs: number;
  readonly #hub: Hub;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(deps: { playback: Playback; hub: Hub; config: Config }) {
    this.playback = deps.playback;
    this.#hub = deps.hub;
    const { instanceTtlMs, fencingMarginMs } = deps.config;
    this.tickMs = Math.max(20, Math.floor(Math.min(1000, deps.playback.config.ttlMs / 10, (instanceTtlMs - fencingMarginMs) / 10)));
  }

  /**
   * A token for `session`'s lease now (the `granted` frame and each refresh),
   * and the time its successor is due. Undefined when none can be issued: the
   * next sweep tries again. The cap is the fencing deadline of our instance
   * in the user's home region: the one the lease hangs on (src/regions.ts).
   */
  issueFor(session: Session, nowMs = Date.now()): PlaybackGrant | undefined {
    const lease = session.lease;
    if (lease === undefined || session.region === undefined) return undefined;
    const grant = this.playback.issue(
      { userId: session.userId, deviceId: session.deviceId, leaseId: lease.leaseId, contentId: session.contentId },
      session.region.instance.fencingDeadline,
      session.exp,
      nowMs,
    );
    session.playbackDueAt = grant === undefined ? 0 : refreshDueAt(grant, nowMs, this.tickMs);
    return grant;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule();
  }

  /** Safe to call twice. */
  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (!this.#running) return;
    this.#timer = setTimeout(() => this.#sweep(), this.tickMs);
    this.#timer.unref();
  }

  #sweep(): void {
    const sessions = [...this.#hub.sessions()];
    const slice = (from: number): void => {
      if (!this.#running) return;
      const until = performance.now() + SWEEP_SLICE_MS;
      const now = Date.now();
      let to = from;
      while (to < sessions.length) {
        const session = sessions[to++];
        if (session.state === 'leased' && session.playbackDueAt <= now) this.#refresh(session, now);
        // A signature costs tens of µs: read the clock every few sockets, yield when the slice is used up.
        if ((to - from) % 8 === 0 && performance.now() >= until) break;
      }
      if (to < sessions.length) setImmediate(slice, to);
      else this.#schedule();
    };
    slice(0);
  }

  #refresh(session: Session, now: number): void {
    const grant = this.issueFor(session, now);
    if (grant === undefined) return;
    const frame: PlaybackFrame = { type: 'playback', token: grant.token, exp: grant.exp };
    session.send(frame);
  }
}
