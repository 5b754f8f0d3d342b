import { performance } from 'node:perf_hooks';
import { v4 as uuidv4 } from 'uuid';
import { asAuthError, AuthError, type Authenticator } from './auth.js';
import type { DeniedFrame, GrantedFrame } from './client/protocol.js';
import { CLOSE } from './close-codes.js';
import type { Config } from './config.js';
import { Deadline } from './deadline.js';
import type { Hub } from './hub.js';
import type { InstanceLease } from './instance.js';
import type { LeaseKeeper } from './lease-keeper.js';
import type { Lease } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { PlaybackRefresh } from './playback-refresh.js';
import type { KeyedLimiter } from './rate-limit.js';
import type { Session } from './session.js';

export interface AdmissionDeps {
  readonly config: Config;
  readonly auth: Authenticator;
  readonly userLimiter: KeyedLimiter;
  readonly instance: InstanceLease;
  readonly keeper: LeaseKeeper;
  readonly hub: Hub;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Playback tokens, when a signing key is configured. */
  readonly playback?: PlaybackRefresh;
  /** The gateway: new grants only while it runs. */
  readonly gateway: { readonly state: 'running' | 'draining' | 'closed' };
}

const STORE_UNAVAILABLE = 'lease store unavailable, try again later';

function activeView(l: Lease): DeniedFrame['active'][number] {
  return { deviceId: l.deviceId, contentId: l.contentId ?? null, since: new Date(l.acquiredAt).toISOString() };
}

/**
 * One admission, as a run of guard steps under one deadline that covers them
 * all (token check included): authenticate, rate-limit the user, take the
 * lease, then grant or deny. Every step that refuses closes the socket with a
 * code from the catalog and a reason, and returns.
 */
export async function admit(deps: AdmissionDeps, session: Session, token: string | undefined, takeover: string | undefined): Promise<void> {
  const { config: cfg, metrics, hub } = deps;
  const started = performance.now();
  const deadline = new Deadline(cfg.admissionTimeoutMs);
  try {
    const verified = await deadline.run(deps.auth.verify(token));
    if (verified.kind === 'gave-up') {
      metrics.acquireTotal.inc({ result: 'error' });
      session.close(CLOSE.TRY_LATER, 'token check took too long, try again later', 'client_close');
      return;
    }
    const principal = verified.kind === 'done' ? verified.value : undefined;
    if (principal === undefined || (principal.deviceId !== undefined && principal.deviceId !== session.deviceId)) {
      const failure = principal === undefined ? asAuthError(verified.kind === 'failed' ? verified.error : undefined) : new AuthError('claim', 'token is bound to another device');
      metrics.authFailures.inc({ reason: failure.reason });
      deps.log.info('unauthorized', { deviceId: session.deviceId, reason: failure.reason });
      session.close(CLOSE.UNAUTHORIZED, failure.message, 'client_close');
      return;
    }
    session.userId = principal.userId;
    session.exp = principal.exp;
    if (session.closed) return;

    // Per-user attempt limit, after the token (we need the user) and before the store.
    const verdict = deps.userLimiter.check(principal.userId);
    if (!verdict.ok) {
      const reason = verdict.blocked ? 'user_blocked' : 'user_rate';
      metrics.rejections.inc({ reason });
      if (verdict.blocked) deps.log.warn('user blocked: too many connection attempts', { userId: principal.userId, retryAfterSec: verdict.retryAfterSec });
      session.close(CLOSE.TRY_LATER, `too many connection attempts for this account, retry in ${verdict.retryAfterSec} s`, 'client_close');
      return;
    }

    const instanceId = deps.instance.id;
    if (!deps.instance.live) {
      metrics.acquireTotal.inc({ result: 'error' });
      session.close(CLOSE.TRY_LATER, STORE_UNAVAILABLE, 'client_close');
      return;
    }

    const limit = principal.maxStreams ?? cfg.maxStreams;
    const leaseId = uuidv4();
    const request = { userId: principal.userId, deviceId: session.deviceId, contentId: session.contentId, leaseId, instanceId, limit, takeover };
    const settled = await deps.keeper.acquire(request, deadline);
    if (settled.kind !== 'done') {
      metrics.acquireTotal.inc({ result: 'error' });
      const afterMs = Math.round(performance.now() - started);
      const log = deps.log.child({ userId: request.userId, deviceId: request.deviceId, leaseId });
      if (settled.kind === 'gave-up') log.warn('admission failed: deadline passed', { afterMs });
      else if ((settled.error as { code?: string })?.code === 'ERR_STORE_UNAVAILABLE') log.warn('admission failed: lease store unavailable', { afterMs, err: settled.error });
      else log.error('admission failed', { afterMs, err: settled.error });
      session.close(CLOSE.TRY_LATER, STORE_UNAVAILABLE, 'client_close');
      return;
    }
    metrics.acquireDuration.observe((performance.now() - started) / 1000);
    const outcome = settled.value;

    if (outcome.kind === 'denied') {
      metrics.acquireTotal.inc({ result: 'denied' });
      deps.log.info('denied: stream limit reached', { userId: request.userId, deviceId: request.deviceId, limit, active: outcome.active.length });
      const frame: DeniedFrame = { type: 'denied', reason: 'limit', limit, active: outcome.active.map(activeView), mustStop: outcome.mustStop };
      session.send(frame);
      const stop = outcome.mustStop > 1 ? `: stop ${outcome.mustStop} devices to play here` : '';
      session.close(CLOSE.LIMIT, `stream limit reached (${limit})${stop}`, 'client_close');
      return;
    }

    metrics.acquireTotal.inc({ result: 'granted' });
    if (outcome.displaced) hub.takeAway(outcome.displaced, CLOSE.REPLACED.code);
    if (outcome.revoked) hub.takeAway(outcome.revoked, CLOSE.REVOKED.code);

    // The socket may have gone, the gateway may be draining, or fenced, while we waited.
    const draining = deps.gateway.state !== 'running';
    if (session.closed || draining || deps.instance.id !== instanceId || !deps.instance.live) {
      deps.keeper.release(request.userId, outcome.lease);
      if (draining) session.close(CLOSE.RESTART, 'gateway restarting', 'shutdown');
      else session.close(CLOSE.LEASE_LOST, 'lease lost', 'lost');
      return;
    }
    if (!hub.grant(session, outcome.lease)) return;
    const playback = deps.playback?.issueFor(session);
    const frame: GrantedFrame = { type: 'granted', leaseId, userId: request.userId, deviceId: request.deviceId, limit, active: outcome.active, ...(playback && { playback }) };
    session.send(frame);
    deps.log.info('granted', { userId: request.userId, deviceId: request.deviceId, leaseId, active: outcome.active });
  } finally {
    deadline.clear();
  }
}
