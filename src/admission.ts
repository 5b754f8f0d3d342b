import { performance } from 'node:perf_hooks';
import { v4 as uuidv4 } from 'uuid';
import { asAuthError, AuthError, type Authenticator, type Principal } from './auth.js';
import type { DeniedFrame, GrantedFrame } from './client/protocol.js';
import { CLOSE } from './close-codes.js';
import type { Config } from './config.js';
import { Deadline } from './deadline.js';
import { EVICTED_TEXT, STOPPED_TEXT, type Hub } from './hub.js';
import type { LeaseKeeper } from './lease-keeper.js';
import type { Lease } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { DenialReason, Plan } from './plan.js';
import type { PlaybackRefresh } from './playback-refresh.js';
import type { KeyedLimiter } from './rate-limit.js';
import type { Regions } from './regions.js';
import type { Session } from './session.js';

export interface AdmissionDeps {
  readonly config: Config;
  readonly auth: Authenticator;
  readonly userLimiter: KeyedLimiter;
  /** The user's home region gives the store and the instance lease the lease is judged by. */
  readonly regions: Regions;
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
  return {
    deviceId: l.deviceId,
    contentId: l.contentId ?? null,
    class: l.deviceClass ?? null,
    since: new Date(l.acquiredAt).toISOString(),
  };
}

/** The close reason of a denial: what the viewer's plan allows, and how many devices must stop. */
function denialText(reason: DenialReason, cap: number, deviceClass: string | undefined, mustStop: number): string {
  const what =
    reason === 'content_limit'
      ? `this content plays on at most ${cap} of your devices`
      : reason === 'class_limit'
        ? `your plan allows ${cap} ${deviceClass ?? 'device'} at a time`
        : `stream limit reached (${cap})`;
  return mustStop > 1 ? `${what}: stop ${mustStop} devices to play here` : what;
}

/** The configured plan, built once per configuration: most tokens carry no plan claims, and each session keeps its plan. */
const defaultPlans = new WeakMap<Config, Plan>();

/** The plan a principal plays under: its token's claims over the configured defaults. */
function planOf(cfg: Config, principal: Principal): Plan {
  const { maxStreams } = principal;
  const { policy, perContent, byClass } = principal.plan;
  if (maxStreams === undefined && policy === undefined && perContent === undefined && byClass === undefined) {
    let plan = defaultPlans.get(cfg);
    if (plan === undefined) {
      plan = Object.freeze({
        limit: cfg.maxStreams,
        policy: cfg.streamPolicy,
        perContent: cfg.maxStreamsPerContent,
        byClass: cfg.maxStreamsByClass,
      });
      defaultPlans.set(cfg, plan);
    }
    return plan;
  }
  return {
    limit: maxStreams ?? cfg.maxStreams,
    policy: policy ?? cfg.streamPolicy,
    perContent: perContent ?? cfg.maxStreamsPerContent,
    byClass: byClass ?? cfg.maxStreamsByClass,
  };
}

/**
 * One admission, as a run of guard steps under one deadline that covers them
 * all (token check included): authenticate, resolve the plan and the device
 * class, rate-limit the user, then take the lease ({@link acquireAndGrant}).
 * Every step that refuses closes the socket with a code from the catalog and
 * a reason, and returns.
 */
export async function admit(
  deps: AdmissionDeps,
  session: Session,
  token: string | undefined,
  query: { readonly takeover?: string; readonly deviceClass?: string } & Returning,
): Promise<void> {
  const { takeover, deviceClass: queryClass } = query;
  const { config: cfg, metrics } = deps;
  const deadline = new Deadline(cfg.admissionTimeoutMs);
  try {
    const verified = await deadline.run(deps.auth.verify(token));
    if (verified.kind === 'gave-up') {
      metrics.acquireTotal.inc({ result: 'error' });
      session.close(CLOSE.TRY_LATER, 'token check took too long, try again later', 'client_close');
      return;
    }
    const principal = verified.kind === 'done' ? verified.value : undefined;
    const region = principal && deps.regions.forUser(principal.userId, principal.homeRegion);
    if (principal === undefined || (principal.deviceId !== undefined && principal.deviceId !== session.deviceId) || region === undefined) {
      const failure =
        principal === undefined
          ? asAuthError(verified.kind === 'failed' ? verified.error : undefined)
          : region === undefined
            ? new AuthError('claim', deps.regions.unknownClaim(principal.homeRegion ?? ''))
            : new AuthError('claim', 'token is bound to another device');
      metrics.authFailures.inc({ reason: failure.reason });
      deps.log.info('unauthorized', { deviceId: session.deviceId, reason: failure.reason });
      session.close(CLOSE.UNAUTHORIZED, failure.message, 'client_close');
      return;
    }
    session.userId = principal.userId;
    session.region = region;
    session.exp = principal.exp;
    if (session.closed) return;

    const claimClass = principal.plan.deviceClass;
    if (claimClass !== undefined && queryClass !== undefined && claimClass !== queryClass) {
      metrics.rejections.inc({ reason: 'bad_request' });
      session.close(CLOSE.POLICY, `class "${queryClass}" differs from the token's device_class "${claimClass}"`, 'client_close');
      return;
    }
    session.deviceClass = claimClass ?? queryClass;
    session.plan = planOf(cfg, principal);

    // Per-user attempt limit, after the token (we need the user) and before the store.
    const verdict = deps.userLimiter.check(principal.userId);
    if (!verdict.ok) {
      const reason = verdict.blocked ? 'user_blocked' : 'user_rate';
      metrics.rejections.inc({ reason });
      if (verdict.blocked)
        deps.log.warn('user blocked: too many connection attempts', { userId: principal.userId, retryAfterSec: verdict.retryAfterSec });
      session.close(CLOSE.TRY_LATER, `too many connection attempts for this account, retry in ${verdict.retryAfterSec} s`, 'client_close');
      return;
    }
    await acquireAndGrant(deps, session, deadline, { takeover, handoff: query.handoff, previous: query.previous });
  } finally {
    deadline.clear();
  }
}

/**
 * `{"type":"resume"}` on a socket whose paused stream gave its slot back:
 * admit again under the plan it was admitted with (the token was checked at
 * the upgrade, and token expiry still closes the socket).
 */
export async function resume(deps: AdmissionDeps, session: Session): Promise<void> {
  // A draining gateway closes every socket with 1012, a released one included: the device plays again elsewhere.
  // Asking the store for a lease here (the drain's own release still on its way) would put one back that the
  // device's return through another gateway then finds in its way, or evict another device for it.
  if (deps.gateway.state !== 'running') return;
  if (!session.readmit()) return;
  const deadline = new Deadline(deps.config.admissionTimeoutMs);
  try {
    await acquireAndGrant(deps, session, deadline);
  } finally {
    deadline.clear();
  }
}

/** The lease a returning device held before its socket ended, as its query names it. */
interface Returning {
  /** Its entry was kept for it (a drain's 1012, a fence's 4408, a token-refresh socket): take it over in one write. */
  readonly handoff?: string;
  /** Its socket was lost (1006): the entry may be there or given back; refused (4403) only if that lease was stopped. */
  readonly previous?: string;
}

/** Takes the lease for an authenticated session under its plan, then grants or denies. */
async function acquireAndGrant(
  deps: AdmissionDeps,
  session: Session,
  deadline: Deadline,
  { takeover, handoff, previous }: Returning & { readonly takeover?: string } = {},
): Promise<void> {
  const { metrics, hub } = deps;
  const plan = session.plan!;
  const started = performance.now();
  // The lease hangs on our instance in the user's home region: it is judged there, wherever we are.
  const region = session.region!;
  const instance = region.instance;
  const instanceId = instance.id;
  if (!instance.live) {
    metrics.acquireTotal.inc({ result: 'error' });
    session.close(CLOSE.TRY_LATER, STORE_UNAVAILABLE, 'client_close');
    return;
  }

  const leaseId = uuidv4();
  const { deviceClass, contentId } = session;
  const request = {
    userId: session.userId,
    deviceId: session.deviceId,
    contentId,
    deviceClass,
    leaseId,
    instanceId,
    limit: plan.limit,
    contentCap: contentId === undefined ? undefined : plan.perContent,
    // Own properties only: a class named "constructor" or "toString" must not find Object.prototype's.
    classCap:
      deviceClass !== undefined && plan.byClass !== undefined && Object.hasOwn(plan.byClass, deviceClass)
        ? plan.byClass[deviceClass]
        : undefined,
    policy: plan.policy,
    takeover,
    handoff,
    previous,
  };
  const settled = await deps.keeper.acquire(region, request, deadline);
  if (settled.kind !== 'done') {
    metrics.acquireTotal.inc({ result: 'error' });
    const afterMs = Math.round(performance.now() - started);
    const log = deps.log.child({ userId: request.userId, deviceId: request.deviceId, leaseId });
    if (settled.kind === 'gave-up') log.warn('admission failed: deadline passed', { afterMs });
    else if ((settled.error as { code?: string })?.code === 'ERR_STORE_UNAVAILABLE')
      log.warn('admission failed: lease store unavailable', { afterMs, err: settled.error });
    else log.error('admission failed', { afterMs, err: settled.error });
    session.close(CLOSE.TRY_LATER, STORE_UNAVAILABLE, 'client_close');
    return;
  }
  metrics.acquireDuration.observe((performance.now() - started) / 1000);
  const outcome = settled.value;

  if (outcome.kind === 'denied') {
    metrics.acquireTotal.inc({ result: 'denied' });
    metrics.denialsTotal.inc({ reason: outcome.reason });
    const cap =
      outcome.reason === 'content_limit' ? request.contentCap! : outcome.reason === 'class_limit' ? request.classCap! : plan.limit;
    deps.log.info('denied', {
      userId: request.userId,
      deviceId: request.deviceId,
      reason: outcome.reason,
      cap,
      active: outcome.active.length,
    });
    const frame: DeniedFrame = {
      type: 'denied',
      reason: outcome.reason,
      limit: plan.limit,
      cap,
      ...(deviceClass === undefined ? {} : { class: deviceClass }),
      active: outcome.active.map(activeView),
      mustStop: outcome.mustStop,
    };
    session.send(frame);
    session.close(CLOSE.LIMIT, denialText(outcome.reason, cap, deviceClass, outcome.mustStop), 'client_close');
    return;
  }
  if (outcome.kind === 'stopped') {
    // Stopped over REST, taken over or evicted since its lease id was handed out (while it was away after a 1012,
    // a 4408 or a lost socket, or before a refresh socket): told now, as its old socket would have been.
    metrics.revocationsTotal.inc({ code: String(CLOSE.REVOKED.code), path: 'handoff' });
    deps.log.info('stopped before its return', { userId: request.userId, deviceId: request.deviceId, handoff, previous });
    session.close(CLOSE.REVOKED, outcome.evicted ? EVICTED_TEXT : STOPPED_TEXT, 'revoked');
    return;
  }

  metrics.acquireTotal.inc({ result: 'granted' });
  // The same device again on this gateway (a token refresh swaps sockets): a pause carries over, or its clock
  // would restart with every refresh and a paused player would never give its slot back.
  const pausedAt = outcome.displaced ? hub.pausedSince(outcome.displaced) : 0;
  if (outcome.displaced) hub.takeAway(region, outcome.displaced, CLOSE.REPLACED.code);
  if (outcome.revoked) hub.takeAway(region, outcome.revoked, CLOSE.REVOKED.code);
  if (outcome.evicted) hub.takeAway(region, outcome.evicted, CLOSE.REVOKED.code, 'local', 'evicted');
  // Devices of a draining gateway that gave way: stopped now, not at their 1012 (or the user plays one more).
  for (const l of outcome.gaveWay ?? []) hub.takeAway(region, l, CLOSE.REVOKED.code);

  // The socket may have gone, the gateway may be draining, or fenced, while we waited.
  const draining = deps.gateway.state !== 'running';
  if (session.closed || draining || instance.id !== instanceId || !instance.live) {
    deps.keeper.release(region, request.userId, outcome.lease);
    if (draining) session.close(CLOSE.RESTART, 'gateway restarting', 'shutdown');
    else session.close(CLOSE.LEASE_LOST, 'lease lost', 'lost');
    return;
  }
  if (!hub.grant(session, outcome.lease)) return;
  if (pausedAt > 0) session.pausedAt = pausedAt;
  const playback = deps.playback?.issueFor(session);
  const frame: GrantedFrame = {
    type: 'granted',
    leaseId,
    userId: request.userId,
    deviceId: request.deviceId,
    limit: plan.limit,
    active: outcome.active,
    ...(playback && { playback }),
  };
  session.send(frame);
  session.decided();
  deps.log.info('granted', { userId: request.userId, deviceId: request.deviceId, leaseId, active: outcome.active });
}
