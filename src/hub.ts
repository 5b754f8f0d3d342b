import { performance } from 'node:perf_hooks';
import { CLOSE, type CloseCode } from './close-codes.js';
import type { Config } from './config.js';
import type { LeaseKeeper } from './lease-keeper.js';
import type { Lease } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics, ReleaseReason } from './metrics.js';
import type { Pending } from './pending.js';
import { KeyedLimiter } from './rate-limit.js';
import type { Region } from './regions.js';
import type { Ending, Session } from './session.js';

/** A device of a user, the key of {@link Hub}'s released sessions. */
const releasedKey = (session: Session): string => `${session.userId}\n${session.deviceId}`;

/** Releases a drain keeps in flight at most: enough for the store's pace, few enough not to queue behind it. */
const DRAIN_RELEASES_IN_FLIGHT = 64;

/** Where a revocation came from, as `sigma_revocations_total{path}` books it. */
export type RevocationPath = 'local' | 'mailbox' | 'reconcile' | 'handoff';

/** The close reason of a 4403 for a stop (REST kick), on the socket that held the lease or at its hand-off return. */
export const STOPPED_TEXT = 'revoked: playback was stopped from another device or by support';

/** How a socket whose lease was taken away is told, by the close code the taker asked for. */
const TAKEN_AWAY = new Map<number, { close: CloseCode; text: string; reason: ReleaseReason }>([
  [CLOSE.REPLACED.code, { close: CLOSE.REPLACED, text: 'replaced: this device connected again elsewhere', reason: 'replaced' }],
  [CLOSE.REVOKED.code, { close: CLOSE.REVOKED, text: STOPPED_TEXT, reason: 'revoked' }],
  [CLOSE.LEASE_LOST.code, { close: CLOSE.LEASE_LOST, text: 'lease lost', reason: 'lost' }],
]);
/** The close reason of a 4403 for an eviction (`evict_oldest`), on the socket that held the lease or at its hand-off return. */
export const EVICTED_TEXT = 'revoked: another device started playing (your plan stops the longest-playing one)';
/** Why words a mailbox note may carry, for a close reason more precise than the code's. */
const EVICTED = { close: CLOSE.REVOKED, text: EVICTED_TEXT, reason: 'revoked' as const };
const takenAway = (code: number, why?: string) =>
  why === 'evicted' ? EVICTED : (TAKEN_AWAY.get(code) ?? TAKEN_AWAY.get(CLOSE.REVOKED.code)!);

/**
 * Notes for replaced leases (4409) that one instance's mailbox gets from this gateway: a burst, then a rate.
 * Each note rewrites the instance item with its whole mailbox, so one per device of a gateway that died (whose
 * devices all come back at once, each replacing its own entry) would grow the item past DynamoDB's 400 KB and
 * stall every write to it. Beyond the budget the replaced sockets are left to their gateway's reconcile, which
 * closes a socket whose entry is gone (4409); a gateway that died has none left to close. Stops and takeovers
 * (4403) are always sent.
 */
const REPLACED_NOTES = { burst: 100, ratePerSec: 10, blockAfter: Infinity, blockMs: 0, maxKeys: 1000 };

/** Revocations remembered for grants not processed yet: at most this many, each for two admission deadlines. */
const EARLY_MAX = 10_000;

/**
 * The live sessions of this gateway: the registry, revocation routing (close
 * locally, or a note in the owning instance's mailbox), revocations that
 * arrive before the grant they name, and bulk close for drain and fencing.
 * Sessions report their end here; the lease goes back through the keeper.
 */
export class Hub {
  readonly #sessions = new Set<Session>();
  readonly #byLease = new Map<string, Session>();
  /**
   * Paused sockets whose lease went back (open, holding nothing), by user and device: the same device granted
   * again here replaces them, or a stale one could later `resume` and take the slot from the new socket.
   */
  readonly #released = new Map<string, Session>();
  /** Revocations that arrived before the admission they name was granted, on any path. */
  readonly #early = new Map<string, { code: number; path: RevocationPath; why?: string; until: number }>();
  /** The session a grant is closing because its revocation came first (its release is then uncertain). */
  #revokedBeforeGrant: Session | undefined;
  readonly #keeper: LeaseKeeper;
  readonly #cfg: Config;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #pending: Pending;
  /** Budget of 4409 notes per instance ({@link REPLACED_NOTES}). */
  readonly #replacedNotes = new KeyedLimiter(REPLACED_NOTES);
  /** Instances told once that their notes went over the budget (cleared with the limiter's keys). */
  readonly #overBudget = new Set<string>();

  constructor(deps: { keeper: LeaseKeeper; config: Config; metrics: Metrics; log: Logger; pending: Pending }) {
    this.#keeper = deps.keeper;
    this.#cfg = deps.config;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#pending = deps.pending;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Every open socket, admitted or not. */
  sessions(): IterableIterator<Session> {
    return this.#sessions.values();
  }

  /** The leased session holding `leaseId` on this gateway, if any. */
  holder(leaseId: string): Session | undefined {
    const session = this.#byLease.get(leaseId);
    return session?.state === 'leased' ? session : undefined;
  }

  add(session: Session): void {
    this.#sessions.add(session);
    this.#metrics.wsConnections.inc();
  }

  /** When the socket holding `lease` here was paused (0: playing, or not held here). */
  pausedSince(lease: Lease): number {
    return this.#byLease.get(lease.leaseId)?.pausedAt ?? 0;
  }

  /**
   * The admission of `session` was granted `lease`. Returns false when a
   * revocation for that lease came first: the socket is then closed with the
   * code the revoker asked for and the lease given back. The session's
   * region (the user's home) is set before its admission takes a lease.
   */
  grant(session: Session, lease: Lease): boolean {
    // Empty unless PAUSE_RELEASE_MS released someone: no key is built on the usual grant.
    const key = this.#released.size > 0 ? releasedKey(session) : undefined;
    const stale = key === undefined ? undefined : this.#released.get(key);
    if (stale !== undefined) {
      this.#released.delete(key!);
      const { close, text, reason } = takenAway(CLOSE.REPLACED.code);
      if (stale !== session) stale.close(close, text, reason);
    }
    session.grant(lease);
    this.#byLease.set(lease.leaseId, session);
    this.#keeper.granted(session.region!, session.userId, lease);
    this.#metrics.streamsActive.inc();
    const early = this.#early.get(lease.leaseId);
    if (early === undefined) return true;
    this.#early.delete(lease.leaseId);
    this.#revokedBeforeGrant = session;
    try {
      this.revoke(lease.leaseId, early.code, early.path, early.why);
    } finally {
      this.#revokedBeforeGrant = undefined;
    }
    return false;
  }

  /** A paused stream's time is up: its lease goes back, its socket stays open and is told. */
  releasePaused(session: Session): void {
    const lease = this.#unlease(session, 'paused');
    if (lease === undefined) return;
    this.#released.set(releasedKey(session), session);
    this.#keeper.release(session.region!, session.userId, lease);
    session.send({ type: 'released', reason: 'paused' });
  }

  /** Takes a leased session's lease off it and books that; the socket stays open. */
  #unlease(session: Session, reason: 'paused' | 'shutdown'): Lease | undefined {
    const lease = session.unlease();
    if (lease === undefined) return undefined;
    this.#byLease.delete(lease.leaseId);
    this.#metrics.streamsActive.dec();
    this.#metrics.releaseTotal.inc({ reason });
    this.#log.info('released', { userId: session.userId, deviceId: session.deviceId, reason });
    return lease;
  }

  /**
   * A lease was taken away (takeover, kick, same device elsewhere): close
   * its socket here, or drop a note in the owning instance's mailbox. Both
   * are judged in `region`, the user's home: the lease's `instanceId` is the
   * owner's instance there, whose item holds the mailbox.
   */
  takeAway(region: Region, lease: Lease, code: number, path: RevocationPath = 'local', why?: 'evicted'): void {
    if (lease.instanceId === region.instance.id) {
      this.revoke(lease.leaseId, code, path, why);
      return;
    }
    // Each request its own deadline: a note after a read that failed slowly still gets its full time.
    const within = () => AbortSignal.timeout(this.#cfg.admissionTimeoutMs);
    const note = () => region.store.notify(lease.instanceId, lease.leaseId, code, within(), why);
    const replacedNote = (): Promise<unknown> => {
      if (this.#replacedNotes.check(lease.instanceId).ok) return note();
      this.#metrics.mailboxNotesSkipped.inc();
      if (this.#overBudget.size >= REPLACED_NOTES.maxKeys) this.#overBudget.clear();
      if (!this.#overBudget.has(lease.instanceId)) {
        this.#overBudget.add(lease.instanceId);
        this.#log.warn('mailbox notes to one instance over its budget: its replaced sockets are left to its reconcile', {
          instanceId: lease.instanceId,
          burst: REPLACED_NOTES.burst,
          perSec: REPLACED_NOTES.ratePerSec,
        });
      }
      return Promise.resolve();
    };
    // The same device back from a drain: its old gateway is closing that socket anyway (a revocation is still
    // told, or the device would come back with a hand-off and take the slot again). Not known: the note goes.
    const told =
      code === CLOSE.REPLACED.code
        ? region.store.closesOnItsOwn(lease.instanceId, within()).then(
            (itself) => itself || replacedNote(),
            () => replacedNote(),
          )
        : note();
    this.#pending.add(
      told.catch((err: unknown) =>
        this.#log.warn('mailbox write failed; the owner finds out on its next reconcile', { err, instanceId: lease.instanceId }),
      ),
    );
  }

  /**
   * Closes the socket holding `leaseId` here with the taker's code, and gives
   * its lease id back (conditionally: a no-op when the entry is gone or
   * belongs to a successor, but it removes the entry if the socket's own
   * retried write brought it back). A revocation for a lease not granted yet
   * is remembered, so the grant closes the socket the moment it arrives.
   */
  revoke(leaseId: string, code: number, path: RevocationPath, why?: string): boolean {
    const session = this.#byLease.get(leaseId);
    if (session === undefined) {
      this.#rememberEarly(leaseId, code, path, why);
      return false;
    }
    const { close, text, reason } = takenAway(code, why);
    this.#metrics.revocationsTotal.inc({ code: String(close.code), path });
    session.close(close, text, reason);
    return true;
  }

  #rememberEarly(leaseId: string, code: number, path: RevocationPath, why: string | undefined): void {
    const now = performance.now();
    if (this.#early.size >= EARLY_MAX) {
      for (const [id, e] of this.#early) if (e.until < now) this.#early.delete(id);
      if (this.#early.size >= EARLY_MAX) this.#early.delete(this.#early.keys().next().value!);
    }
    this.#early.set(leaseId, { code, path, why, until: now + 2 * this.#cfg.admissionTimeoutMs });
  }

  /** SessionOwner: books the end of a session and gives its lease back through the keeper. */
  ended(session: Session, { close, reason, lease, release }: Ending): void {
    if (close !== undefined && close !== 'terminate') this.#metrics.closesTotal.inc({ code: String(close.code) });
    if (this.#released.size > 0 && this.#released.get(releasedKey(session)) === session) this.#released.delete(releasedKey(session));
    if (lease === undefined) return;
    this.#byLease.delete(lease.leaseId);
    this.#metrics.streamsActive.dec();
    this.#metrics.releaseTotal.inc({ reason });
    this.#log.info('released', {
      userId: session.userId,
      deviceId: session.deviceId,
      reason,
      code: typeof close === 'object' ? close.code : undefined,
    });
    // Every lease id released stays a doubt (a late copy of its admission may bring it back); an uncertain one
    // when its revocation came before its grant was processed. One revoked after its grant is not: the keeper
    // knows whether its own admission was retried.
    if (release) this.#keeper.release(session.region!, session.userId, lease, session === this.#revokedBeforeGrant);
    else this.#keeper.forget(lease);
  }

  /** SessionOwner: the socket is gone. */
  gone(session: Session): void {
    if (this.#sessions.delete(session)) this.#metrics.wsConnections.dec();
  }

  /**
   * Fencing of this gateway's instance in `region`: every socket whose lease
   * hangs on `oldInstanceId`, and every admission for a user homed there,
   * goes now; leases die with the instance item, so none is released one by
   * one. Users of other regions keep playing (with one region: everyone goes).
   */
  fence(oldInstanceId: string, region: string): void {
    let closed = 0;
    for (const session of [...this.#sessions]) {
      if (session.state === 'leased' && session.lease?.instanceId === oldInstanceId) {
        session.close(CLOSE.LEASE_LOST, 'lease lost: gateway lost contact with the lease store', 'fenced', false);
        closed++;
      } else if (
        session.state === 'admitting' &&
        (session.region === undefined ? !this.#cfg.multiRegion : session.region.name === region)
      ) {
        // With several regions an admission still checking its token is left alone: it then checks its own
        // home region's instance lease before it writes.
        session.close(CLOSE.TRY_LATER, 'lease store unavailable, try again later', 'fenced');
        closed++;
      }
    }
    this.#log.warn('fenced sessions closed', { instanceId: oldInstanceId, region, sessions: closed });
  }

  /**
   * Drain: close every socket with 1012, spread evenly over `windowMs` so
   * clients do not reconnect in one storm, and hand each lease over rather
   * than give it back. The instance item is marked draining first; the SDK
   * comes back through another gateway with `handoff=<its lease id>`, and
   * that gateway replaces the entry in its one write. The store does no work
   * here, nor for the devices that do not come back: their entries give way to
   * any device of theirs that needs a slot, and die with the instance item at
   * the end of shutdown.
   *
   * When the mark cannot be written (the store slow or away, waited for at
   * most `releaseWaitMs`), each lease goes back before its socket closes, as
   * a device returning with its old entry in place would otherwise cost the
   * other gateway a failed write, a read and a same-device replacement. At
   * most {@link DRAIN_RELEASES_IN_FLIGHT} releases go at once, so when the
   * store falls behind the closes slow down to its pace instead of queueing
   * releases that have not landed when their devices come back. Either way no
   * close comes later than `windowMs + max(windowMs, releaseWaitMs)` after the
   * start. Resolves when every socket is closed.
   */
  async drain(windowMs: number, releaseWaitMs: number): Promise<void> {
    const sessions = [...this.#sessions].filter((s) => !s.closed);
    const start = performance.now();
    const lastCloseAt = start + windowMs + Math.max(windowMs, releaseWaitMs);
    const handingOver = this.#cfg.drainHandoff ? await this.#markDraining(sessions, releaseWaitMs) : new Set<string>();
    this.#log.info('draining', { sessions: sessions.length, windowMs, handOver: handingOver.size > 0 });
    const spreadFrom = performance.now();
    const spacingMs = sessions.length > 0 ? windowMs / sessions.length : 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < sessions.length) {
        const i = next++;
        const dueMs = spreadFrom + i * spacingMs - performance.now();
        if (dueMs >= 1) await new Promise((r) => setTimeout(r, dueMs));
        const session = sessions[i];
        if (session.lease !== undefined && handingOver.has(session.lease.instanceId)) {
          session.close(CLOSE.RESTART, 'gateway restarting, reconnect', 'shutdown', false);
          continue;
        }
        const leftMs = Math.max(0, lastCloseAt - performance.now());
        await this.#handBackThenClose(session, Math.min(releaseWaitMs, leftMs));
      }
    };
    await Promise.all(Array.from({ length: Math.min(DRAIN_RELEASES_IN_FLIGHT, sessions.length) }, worker));
  }

  /** Marks the instance of every region these sessions hold leases in draining; returns the instance ids marked. */
  async #markDraining(sessions: readonly Session[], waitMs: number): Promise<Set<string>> {
    const regions = new Set<Region>();
    for (const s of sessions) if (s.lease !== undefined && s.region !== undefined) regions.add(s.region);
    const marked = new Set<string>();
    await Promise.all(
      [...regions].map(async ({ name, store, instance }) => {
        const instanceId = instance.id;
        try {
          await store.markDraining(instanceId, AbortSignal.timeout(waitMs));
          marked.add(instanceId);
        } catch (err) {
          this.#log.warn('could not mark the instance draining; leases go back one by one', { region: name, instanceId, err });
        }
      }),
    );
    return marked;
  }

  async #handBackThenClose(session: Session, waitMs: number): Promise<void> {
    const lease = this.#unlease(session, 'shutdown');
    if (lease !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.#keeper.handBack(session.region!, session.userId, lease),
        new Promise((r) => (timer = setTimeout(r, waitMs))),
      ]);
      clearTimeout(timer);
    }
    session.close(CLOSE.RESTART, 'gateway restarting, reconnect', 'shutdown');
  }

  /** Cuts whatever is still connected (the end of shutdown). */
  terminateAll(): void {
    for (const session of this.#sessions) session.ws.terminate();
  }
}
