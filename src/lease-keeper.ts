import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { CLOSE } from './close-codes.js';
import type { Config } from './config.js';
import type { Deadline, Settled } from './deadline.js';
import type { Item } from './dynamo.js';
import { leasesOf, type AcquireOutcome, type AcquireRequest, type Lease, type LeaseRef, type WriteTrace } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { Pending } from './pending.js';
import type { Region } from './regions.js';

/** What the keeper asks the hub to do. */
export interface KeeperEvents {
  /**
   * A lease this instance holds is no longer in the store (the reconcile
   * backstop found it removed or replaced): close its socket with `code`.
   */
  lost: [leaseId: string, code: number];
  /**
   * A write whose outcome was unknown meant to revoke `lease`, and a read now
   * shows that lease gone: its socket, wherever it is, must be told.
   */
  taken: [lease: Lease, code: number, why: 'evicted' | undefined, region: Region];
}

/** A lease id that may be in the store although no socket here holds it. */
interface Doubt {
  readonly region: Region;
  readonly userId: string;
  /** Monotonic ms after which no late copy can land any more. */
  until: number;
  /**
   * Its write's outcome was unknown (retried, timed out, abandoned, revoked before its grant). The others
   * are every lease given back or refused here: a copy the SDK never sent (a retrying proxy or sidecar on
   * the path to DynamoDB) can bring those back just the same, but only these count as uncertain.
   */
  uncertain: boolean;
}

/** The victim of a write whose outcome is unknown. */
interface Victim {
  readonly region: Region;
  readonly userId: string;
  readonly lease: Lease;
  readonly code: number;
  /** Revoked by `evict_oldest`: the close reason says another device started playing. */
  readonly why: 'evicted' | undefined;
  readonly until: number;
  /**
   * A hand-off's victim, whose instance (empty in `lease`) the write did not know: the entry of this lease id,
   * once the write landed, names it (`handedFrom`).
   */
  readonly via?: string;
}

interface Held {
  readonly region: Region;
  readonly userId: string;
  readonly lease: Lease;
  readonly retried: boolean;
}

interface Admitting {
  readonly region: Region;
  readonly userId: string;
  readonly trace: WriteTrace;
}

/** A user in its home region: "<region>\n<userId>". */
const userKey = (region: Region, userId: string): string => `${region.name}\n${userId}`;

/** Users read per BatchGetItem, batches in flight at once in a reconcile round. */
const BATCH = 100;
const BATCHES_IN_FLIGHT = 4;
/** Retries of one release while the store is unreachable: 100 ms doubling to 5 s. */
const RELEASE_BACKOFF_MAX_MS = 5000;

/**
 * The one owner of this instance's leases: the only code that gives a lease
 * back, and the one that remembers every lease id whose write was uncertain.
 *
 * A conditional write has three outcomes: committed, refused, unknown. An
 * unknown one (retried, timed out, abandoned, revoked before its grant was
 * processed) can still commit later, when a delayed copy reaches DynamoDB.
 * Such ids are *doubts*: re-checked with strongly consistent reads until no
 * copy can land any more (`UNCERTAIN_WRITE_HORIZON_MS`), and released whenever
 * one is found in the store with no socket here holding it. So is every lease
 * id given back or refused here, whatever its write's outcome: something on
 * the path to DynamoDB other than the SDK may have copied the request. Victims of an
 * unknown write that meant to revoke someone are told once a read shows them
 * gone. The reconcile loop does those checks, closes sockets whose lease was
 * removed without a mailbox note, removes orphans of this instance and
 * repairs a count that differs from its entries.
 *
 * Every lease lives in its user's home region: each record carries that
 * region, whose store every write and read for it goes to, and whose
 * instance lease its `instanceId` belongs to.
 */
export class LeaseKeeper extends EventEmitter<KeeperEvents> {
  readonly #cfg: Config;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #pending: Pending;
  /** Admissions whose write is in flight or whose grant is not processed yet, by lease id. */
  readonly #admitting = new Map<string, Admitting>();
  /** Leases held by a socket here, by lease id. */
  readonly #held = new Map<string, Held>();
  /**
   * The same leases by user: a reconcile batch looks up its 100 users, not every lease here.
   * Arrays, not Sets: almost every user holds one lease here, and a Set of one costs ~190 B
   * (its hash table) where an array of one costs ~40 B, per idle socket.
   */
  readonly #heldByUser = new Map<string, Held[]>();
  readonly #doubts = new Map<string, Doubt>();
  readonly #victims = new Map<string, Victim>();
  #reconcileTimer: NodeJS.Timeout | undefined;
  /** Where the last unfinished round stopped: the next one starts after this user id. */
  #resumeAfter: string | undefined;
  #reconciling = false;
  #closed = false;
  /** Bound once: the store asks it for entries of our own instance. */
  readonly #holds = (leaseId: string): boolean => this.#admitting.has(leaseId) || this.#held.has(leaseId);

  constructor(deps: { config: Config; metrics: Metrics; log: Logger; pending: Pending }) {
    super();
    this.#cfg = deps.config;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#pending = deps.pending;
    this.#metrics.uncertainLeasesSource = () => {
      let uncertain = this.#victims.size;
      for (const d of this.#doubts.values()) if (d.uncertain) uncertain++;
      return uncertain;
    };
  }

  start(): void {
    this.#reconciling = true;
    this.#scheduleReconcile();
  }

  /** Stops the reconcile loop (drain); releases in flight keep retrying until {@link close}. */
  stop(): void {
    this.#reconciling = false;
    clearTimeout(this.#reconcileTimer);
  }

  /** Stops everything: a release that fails from now on gives up (its id stays a doubt). */
  close(): void {
    this.stop();
    this.#closed = true;
  }

  // ---- acquire ------------------------------------------------------------

  /**
   * Takes a lease under the admission's deadline. A 'done' grant stays
   * "admitting" until the caller either {@link granted} or {@link release}s
   * it; anything else leaves nothing for the caller to clean up.
   */
  async acquire(region: Region, req: Omit<AcquireRequest, 'holds' | 'trace'>, deadline: Deadline): Promise<Settled<AcquireOutcome>> {
    const trace: WriteTrace = { retried: false, victims: [] };
    this.#admitting.set(req.leaseId, { region, userId: req.userId, trace });
    const attempt = region.store.acquire({ ...req, holds: this.#holds, trace }, deadline.signal);
    this.#metrics.admissionsInFlight.inc();
    this.#pending.add(attempt.finally(() => this.#metrics.admissionsInFlight.dec()));
    const settled = await deadline.run(attempt);
    if (settled.kind === 'done' && settled.value.kind === 'granted') return settled;
    this.#admitting.delete(req.leaseId);
    if (settled.kind === 'done') {
      // Denied. A copy of the request may still be in the network, and land once a slot frees.
      this.#doubt(region, req.userId, req.leaseId, trace.retried);
      return settled;
    }
    // Gave up or failed: the write may have committed, or may still. Check as soon as our own attempt
    // has settled (no more SDK retries after that), then on every reconcile round until the horizon.
    this.#doubt(region, req.userId, req.leaseId, true);
    for (const victim of trace.victims) {
      if (victim.deviceId === req.deviceId) this.#suspectVictim(region, req.userId, victim, CLOSE.REPLACED.code, undefined, req.leaseId);
      // Without a takeover, another lease a write revokes is the one evict_oldest chose, or a draining one that gave way.
      else
        this.#suspectVictim(
          region,
          req.userId,
          victim,
          CLOSE.REVOKED.code,
          req.takeover === undefined && req.policy === 'evict_oldest' ? 'evicted' : undefined,
        );
    }
    const check = (): void => this.#pending.add(this.#checkUsers(region, [req.userId]));
    attempt.then(check, check);
    return settled;
  }

  /** The admission's grant was processed: a socket here holds `lease`. */
  granted(region: Region, userId: string, lease: Lease): void {
    const admitting = this.#admitting.get(lease.leaseId);
    this.#admitting.delete(lease.leaseId);
    const held: Held = { region, userId, lease, retried: admitting?.trace.retried ?? false };
    this.#held.set(lease.leaseId, held);
    const mine = this.#heldByUser.get(userId);
    if (mine === undefined) this.#heldByUser.set(userId, [held]);
    else mine.push(held);
  }

  // ---- release: the one way back ------------------------------------------

  /**
   * Gives a lease back, retrying while the store is unreachable, until the
   * answer is definite (removed, or already gone) or the instance it belongs
   * to has been replaced (then it is dead anyway). The lease id stays a doubt
   * after the release, for a late copy of its admission may bring it back; an
   * uncertain one when `doubtful` (revoked before its grant was processed) or
   * its admission was retried.
   */
  release(region: Region, userId: string, lease: Lease, doubtful = false): void {
    void this.handBack(region, userId, lease, doubtful);
  }

  /** {@link release}, for a caller that waits for the answer (drain: the lease goes before its socket does). */
  handBack(region: Region, userId: string, lease: Lease, doubtful = false): Promise<void> {
    const held = this.#unhold(lease.leaseId);
    const admitting = this.#admitting.get(lease.leaseId);
    this.#admitting.delete(lease.leaseId);
    this.#doubt(region, userId, lease.leaseId, doubtful || held?.retried === true || admitting?.trace.retried === true);
    const released = this.#releaseEventually(region, userId, lease, lease.instanceId);
    this.#pending.add(released);
    return released;
  }

  /** The instance fenced: its leases die with its instance item, nothing to give back. */
  forget(lease: Lease): void {
    this.#unhold(lease.leaseId);
    this.#admitting.delete(lease.leaseId);
  }

  #unhold(leaseId: string): Held | undefined {
    const held = this.#held.get(leaseId);
    if (held === undefined) return undefined;
    this.#held.delete(leaseId);
    const mine = this.#heldByUser.get(held.userId);
    const at = mine?.indexOf(held) ?? -1;
    if (at >= 0) mine!.splice(at, 1);
    if (mine?.length === 0) this.#heldByUser.delete(held.userId);
    return held;
  }

  async #releaseEventually(region: Region, userId: string, lease: LeaseRef, instanceId: string): Promise<void> {
    const { deviceId, leaseId } = lease;
    for (let delay = 100; ; delay = Math.min(delay * 2, RELEASE_BACKOFF_MAX_MS)) {
      try {
        await region.store.release(userId, lease, AbortSignal.timeout(this.#cfg.admissionTimeoutMs));
        return;
      } catch (err) {
        // A replaced instance's leases are dead anyway; a closed gateway has no client left. Either way the
        // id stays a doubt, so a later round still removes the entry if the instance comes back to life.
        if (this.#closed || region.instance.id !== instanceId) {
          this.#doubt(region, userId, leaseId, true);
          return;
        }
        this.#log.warn('release failed, retrying', { userId, deviceId, leaseId, region: region.name, err, retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  // ---- revoke over REST ---------------------------------------------------

  /**
   * Removes a device's live lease (REST kick) and returns it, so the caller
   * tells its socket. When the write's outcome is unknown the victim is told
   * later, once a read shows its entry gone.
   */
  async revoke(region: Region, userId: string, deviceId: string, signal: AbortSignal): Promise<Lease | undefined> {
    const trace: WriteTrace = { retried: false, victims: [] };
    try {
      return await region.store.revoke(userId, deviceId, signal, trace);
    } catch (err) {
      for (const victim of trace.victims) this.#suspectVictim(region, userId, victim, CLOSE.REVOKED.code);
      if (trace.victims.length > 0) this.#pending.add(this.#checkUsers(region, [userId]));
      throw err;
    }
  }

  // ---- suspicion ----------------------------------------------------------

  #doubt(region: Region, userId: string, leaseId: string, uncertain: boolean): void {
    const until = performance.now() + this.#cfg.uncertainWriteHorizonMs;
    const known = this.#doubts.get(leaseId);
    if (known) {
      known.until = until;
      known.uncertain ||= uncertain;
    } else this.#doubts.set(leaseId, { region, userId, until, uncertain });
  }

  #suspectVictim(region: Region, userId: string, lease: Lease, code: number, why?: 'evicted', via?: string): void {
    const until = performance.now() + this.#cfg.uncertainWriteHorizonMs;
    this.#victims.set(lease.leaseId, { region, userId, lease, code, why, until, ...(lease.instanceId === '' ? { via } : {}) });
  }

  // ---- reconcile ----------------------------------------------------------

  #scheduleReconcile(): void {
    if (!this.#reconciling) return;
    this.#reconcileTimer = setTimeout(() => {
      this.reconcile()
        .catch((err: unknown) => this.#log.warn('reconcile failed; next round retries', { err }))
        .finally(() => this.#scheduleReconcile());
    }, this.#cfg.reconcileIntervalMs);
    this.#reconcileTimer.unref();
  }

  /**
   * One round: reads every user with a lease, a doubt or a suspected victim
   * here (strongly consistent, 100 users a request, a few requests at once,
   * each under its own deadline, a batch never spanning two regions) and
   * acts on what each home region's store holds. A round
   * that runs out of time (one interval) stops, says so, and the next round
   * starts where it stopped. Returns the sockets it closed.
   */
  async reconcile(): Promise<number> {
    // Doubts and victims past their horizon are forgotten at the end of the round, after a read that began
    // once the horizon had passed: dropping them here would miss a copy that landed since the previous read.
    // Only those that could not be read for a whole second horizon (the store refusing reads) go unread,
    // so a long outage cannot grow them without bound.
    const now = performance.now();
    const giveUpBefore = now - this.#cfg.uncertainWriteHorizonMs;
    let abandoned = 0;
    for (const [id, d] of this.#doubts) if (d.until < giveUpBefore && !this.#held.has(id) && this.#doubts.delete(id)) abandoned++;
    for (const [id, v] of this.#victims) if (v.until < giveUpBefore && this.#victims.delete(id)) abandoned++;
    if (abandoned > 0) this.#log.warn('reconcile: forgot lease ids that could not be re-checked for two horizons', { abandoned });
    const users = [...this.#users().values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (users.length === 0) return 0;
    // Start after where the last unfinished round stopped, then wrap around.
    const from = this.#resumeAfter === undefined ? 0 : users.findIndex((u) => u.key > this.#resumeAfter!);
    const order = from <= 0 ? users : [...users.slice(from), ...users.slice(0, from)];
    const budgetUntil = now + this.#cfg.reconcileIntervalMs;
    let next = 0;
    let closed = 0;
    let failed = 0;
    /** When each user's read began, by the key of #users. */
    const readAt = new Map<string, number>();
    const worker = async (): Promise<void> => {
      while (next < order.length && performance.now() < budgetUntil && !this.#closed) {
        const { region } = order[next];
        const batch: string[] = [];
        while (next < order.length && batch.length < BATCH && order[next].region === region) batch.push(order[next++].userId);
        try {
          closed += await this.#checkUsers(region, batch, readAt);
        } catch (err) {
          failed++;
          this.#log.warn('reconcile batch failed', { users: batch.length, region: region.name, err });
        }
      }
    };
    await Promise.all(Array.from({ length: BATCHES_IN_FLIGHT }, worker));
    this.#forgetSettled(readAt);
    if (next < order.length) {
      // Every batch started has finished (we awaited the workers): resume after the last one started.
      this.#resumeAfter = order[next - 1].key;
      this.#metrics.reconcileRounds.inc({ result: 'partial' });
      this.#log.warn('reconcile round did not finish in one interval; the next round continues', {
        users: order.length,
        read: next,
        intervalMs: this.#cfg.reconcileIntervalMs,
      });
    } else {
      this.#resumeAfter = undefined;
      this.#metrics.reconcileRounds.inc({ result: failed > 0 ? 'failed' : 'complete' });
    }
    return closed;
  }

  /** Users to read, each with its home region, keyed "<region>\n<userId>" (sorted: grouped by region). */
  #users(): Map<string, { readonly key: string; readonly region: Region; readonly userId: string }> {
    const users = new Map<string, { readonly key: string; readonly region: Region; readonly userId: string }>();
    const add = ({ region, userId }: { readonly region: Region; readonly userId: string }): void => {
      const key = userKey(region, userId);
      if (!users.has(key)) users.set(key, { key, region, userId });
    };
    for (const held of this.#heldByUser.values()) for (const h of held) add(h);
    for (const d of this.#doubts.values()) add(d);
    for (const v of this.#victims.values()) add(v);
    return users;
  }

  /**
   * Reads up to 100 users of one region and acts on their items; returns the sockets it closed. A round
   * passes `readAt`, which learns when each user's read began.
   */
  async #checkUsers(region: Region, userIds: readonly string[], readAt?: Map<string, number>): Promise<number> {
    // Snapshot before the read: a lease granted after it began may not be in what the read returns.
    const heldBefore = userIds.flatMap((userId) => (this.#heldByUser.get(userId) ?? []).filter((h) => h.region === region));
    const began = performance.now();
    const items = await region.store.readUsers(userIds, AbortSignal.timeout(this.#cfg.admissionTimeoutMs));
    if (readAt) for (const userId of userIds) readAt.set(userKey(region, userId), began);
    let closed = 0;
    for (const h of heldBefore) {
      const { leaseId } = h.lease;
      const entry = leasesOf(items.get(h.userId)).get(h.lease.deviceId);
      if (entry?.leaseId === leaseId || !this.#held.has(leaseId)) continue;
      const code = entry === undefined ? CLOSE.REVOKED.code : CLOSE.REPLACED.code;
      this.#log.warn('reconcile: socket has no lease in the store', { userId: h.userId, deviceId: h.lease.deviceId, code });
      this.emit('lost', leaseId, code);
      closed++;
    }
    for (const userId of userIds) {
      const item = items.get(userId);
      this.#settleDoubts(region, userId, item);
      this.#settleVictims(region, userId, item);
      if (item && (await region.store.repairCount(userId, item, AbortSignal.timeout(this.#cfg.admissionTimeoutMs)))) {
        this.#metrics.leaseRepairs.inc({ kind: 'count' });
        this.#log.warn('reconcile: repaired a user count that differed from its entries', { userId });
      }
    }
    return closed;
  }

  /**
   * Forgets the doubts and victims whose user a read that began after their horizon has seen, in their home
   * region: no copy can land any more. Once a round, not once a batch: doubts grow with the releases of one
   * horizon, and a pass over all of them per batch of 100 users would grow with their square.
   */
  #forgetSettled(readAt: ReadonlyMap<string, number>): void {
    const settled = (d: { readonly region: Region; readonly userId: string; readonly until: number }): boolean =>
      d.until < (readAt.get(userKey(d.region, d.userId)) ?? Number.NEGATIVE_INFINITY);
    for (const [id, d] of this.#doubts) if (!this.#held.has(id) && settled(d)) this.#doubts.delete(id);
    for (const [id, v] of this.#victims) if (settled(v)) this.#victims.delete(id);
  }

  /** Releases entries no socket here holds: late copies of uncertain writes, and orphans of this instance. */
  #settleDoubts(region: Region, userId: string, item: Item | undefined): void {
    for (const [deviceId, entry] of leasesOf(item)) {
      if (this.#holds(entry.leaseId)) continue;
      const doubted = this.#doubts.has(entry.leaseId);
      if (!doubted && entry.instanceId !== region.instance.id) continue;
      this.#metrics.leaseRepairs.inc({ kind: 'orphan' });
      this.#log.warn('reconcile: releasing an entry no socket holds (a late copy of a write)', {
        userId,
        deviceId,
        leaseId: entry.leaseId,
      });
      this.#pending.add(this.#releaseEventually(region, userId, entry, region.instance.id));
    }
  }

  /** Tells the victims of uncertain writes whose entries are gone. */
  #settleVictims(region: Region, userId: string, item: Item | undefined): void {
    const entries = leasesOf(item);
    for (const [leaseId, v] of this.#victims) {
      const entry = entries.get(v.lease.deviceId);
      if (v.region !== region || v.userId !== userId || entry?.leaseId === leaseId) continue;
      this.#victims.delete(leaseId);
      let lease = v.lease;
      if (lease.instanceId === '') {
        // A hand-off's victim: told only if that hand-off is what replaced it (else whoever did told it).
        if (entry === undefined || entry.leaseId !== v.via || entry.handedFrom === undefined) continue;
        lease = { ...lease, instanceId: entry.handedFrom };
      }
      this.#metrics.leaseRepairs.inc({ kind: 'victim' });
      this.emit('taken', lease, v.code, v.why, region);
    }
  }
}
