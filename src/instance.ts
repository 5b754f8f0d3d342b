import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { v7 as uuidv7 } from 'uuid';
import { isConditionFailure } from './dynamo.js';
import type { LeaseStore } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export interface InstanceTimings {
  readonly instanceHeartbeatMs: number;
  readonly instanceTtlMs: number;
  readonly fencingMarginMs: number;
}

/** What the instance lease tells its listeners. */
export interface InstanceEvents {
  /** A lease of ours was taken away elsewhere (a mailbox entry). */
  revoked: [leaseId: string, code: number, why: string | undefined];
  /**
   * We could not keep the instance item alive in `region`: every lease of `oldInstanceId` must go now.
   * With several regions each has its own instance lease, so only that region's users are affected.
   */
  fenced: [oldInstanceId: string, reason: string, region: string];
}

/**
 * This gateway's instance lease (etcd-style): one item that every stream
 * lease of this process is attached to, beaten every `instanceHeartbeatMs`.
 *
 * Fencing ("danger zone", as in amazon-dynamodb-lock-client): others consider
 * us dead once `expiresAt` = send time of our last successful beat + TTL has
 * passed on their clock. We measure the same span on our monotonic clock and
 * step down `fencingMarginMs` earlier, so our sockets are closed before any
 * other gateway may hand their slots out. The margin absorbs clock skew.
 */
/** Which region an instance lease beats in; `labelled` when metrics carry a region label (several regions). */
export interface InstanceRegion {
  readonly name: string;
  readonly labelled: boolean;
}

export class InstanceLease extends EventEmitter<InstanceEvents> {
  #id = uuidv7();
  #registered = false;
  #stopped = false;
  /** Monotonic send time of the last beat (or registration) the store acknowledged. */
  #lastOkSentAt = Number.NEGATIVE_INFINITY;
  #beatTimer: NodeJS.Timeout | undefined;
  #watchTimer: NodeJS.Timeout | undefined;
  #beatInFlight = false;
  /** Mailbox entries handled since the last beat: deleted by the next one. */
  #ack: string[] = [];
  readonly #store: LeaseStore;
  readonly #t: InstanceTimings;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #host = `${hostname()}:${process.pid}`;
  /** The region whose table holds this instance item (one instance lease per region). */
  readonly region: string;

  constructor(
    store: LeaseStore,
    timings: InstanceTimings,
    log: Logger,
    metrics: Metrics,
    region: InstanceRegion = { name: 'local', labelled: false },
  ) {
    super();
    this.#store = store;
    this.#t = timings;
    this.region = region.name;
    this.#log = region.labelled ? log.child({ region: region.name }) : log;
    this.#metrics = metrics;
    const age = (): number => (Number.isFinite(this.#lastOkSentAt) ? this.heartbeatAgeMs() / 1000 : 0);
    if (region.labelled) metrics.heartbeatAgeByRegion.set(region.name, age);
    else metrics.heartbeatAgeSeconds = age;
  }

  get id(): string {
    return this.#id;
  }

  /** Milliseconds since the last acknowledged beat was sent (monotonic). */
  heartbeatAgeMs(): number {
    return performance.now() - this.#lastOkSentAt;
  }

  /**
   * Wall-clock time (ms since the epoch) at which this gateway fences unless
   * another beat is acknowledged: the send time of the last acknowledged beat
   * + INSTANCE_TTL_MS - FENCING_MARGIN_MS. Other gateways count our leases
   * live until at least FENCING_MARGIN_MS later, so anything that expires by
   * then (a playback token) is dead before our slots can be handed out.
   * Measured on the monotonic clock, converted at the moment of the call.
   * Undefined while not live.
   */
  get fencingDeadline(): number | undefined {
    if (!this.live) return undefined;
    return Date.now() + (this.#lastOkSentAt + this.#dangerAfterMs - performance.now());
  }

  /** True while leases attached to this instance are certainly live everywhere. */
  get live(): boolean {
    return this.#registered && !this.#stopped && this.heartbeatAgeMs() < this.#dangerAfterMs;
  }

  /** The store answered recently enough that new admissions are worth trying. */
  get healthy(): boolean {
    const hb = this.#t.instanceHeartbeatMs;
    return this.live && this.heartbeatAgeMs() <= Math.min(2 * hb + 1000, this.#dangerAfterMs - hb);
  }

  get #dangerAfterMs(): number {
    return this.#t.instanceTtlMs - this.#t.fencingMarginMs;
  }

  /**
   * Registers the instance item and starts beating. Resolves once registered
   * or after `waitMs`, whichever comes first: registration keeps retrying in
   * the background while readiness says the store is not answering.
   */
  async start(waitMs = Number.POSITIVE_INFINITY): Promise<void> {
    const watchEveryMs = Math.max(10, Math.min(this.#t.instanceHeartbeatMs, this.#t.fencingMarginMs || 1000) / 4);
    this.#watchTimer = setInterval(() => this.#watch(), watchEveryMs);
    this.#watchTimer.unref();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#register(),
      new Promise<void>((r) => {
        if (Number.isFinite(waitMs)) timer = setTimeout(r, waitMs);
      }),
    ]);
    clearTimeout(timer);
  }

  async #register(): Promise<void> {
    for (let delay = 100; !this.#stopped; delay = Math.min(delay * 2, this.#t.instanceHeartbeatMs)) {
      const sentAt = performance.now();
      try {
        // A slow store gets until the fencing deadline (not one heartbeat): an item acknowledged later than
        // that would be too close to its expiry to hand out leases on, and the watchdog would fence at once.
        await this.#store.registerInstance(this.#id, this.#t.instanceTtlMs, this.#host, AbortSignal.timeout(this.#dangerAfterMs));
        this.#lastOkSentAt = sentAt;
        this.#registered = true;
        this.#log.info('instance registered', { instanceId: this.#id });
        this.#scheduleBeat();
        return;
      } catch (err) {
        // The item exists: a retry of our own PutItem whose reply was lost, or (vanishingly) a clash.
        // Either way that id is spoiled; start over with a new one rather than wait for TTL cleanup.
        if (isConditionFailure(err)) this.#id = uuidv7();
        this.#log.warn('instance registration failed, retrying', { instanceId: this.#id, err, retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  #scheduleBeat(): void {
    if (this.#stopped || !this.#registered) return;
    const due = this.#lastOkSentAt + this.#t.instanceHeartbeatMs - performance.now();
    clearTimeout(this.#beatTimer);
    this.#beatTimer = setTimeout(() => void this.#beat(), Math.max(0, Math.min(due, this.#t.instanceHeartbeatMs)));
  }

  async #beat(): Promise<void> {
    if (this.#stopped || !this.#registered || this.#beatInFlight) return;
    this.#beatInFlight = true;
    const id = this.#id;
    const sentAt = performance.now();
    // Give up on this beat (and its SDK retries) at the danger point: an acknowledgement after it fences
    // anyway. Whole milliseconds: AbortSignal.timeout() refuses fractions (ERR_OUT_OF_RANGE), which once
    // meant no beat at all was sent in the last interval before the deadline.
    const budgetMs = Math.max(1, Math.floor(Math.min(this.#t.instanceHeartbeatMs, this.#lastOkSentAt + this.#dangerAfterMs - sentAt)));
    const ack = this.#ack;
    let ok = false;
    try {
      const mailbox = await this.#store.heartbeat(id, Date.now(), this.#t.instanceTtlMs, ack, AbortSignal.timeout(budgetMs));
      if (id !== this.#id) return; // fenced while the beat was in flight
      if (performance.now() - this.#lastOkSentAt >= this.#dangerAfterMs) {
        // Acknowledged too late: we may already count as dead elsewhere.
        this.#fence(`heartbeat acknowledged after the fencing deadline`);
        return;
      }
      ok = true;
      this.#lastOkSentAt = sentAt;
      this.#ack = mailbox.map((m) => m.entry);
      for (const { leaseId, code, why } of mailbox) this.emit('revoked', leaseId, code, why);
    } catch (err) {
      if (id !== this.#id) return;
      if (isConditionFailure(err)) {
        this.#fence('instance item expired, deleted or marked dead by another gateway');
        return;
      }
      this.#log.warn('heartbeat failed', { instanceId: id, err, ageMs: Math.round(this.heartbeatAgeMs()) });
    } finally {
      this.#beatInFlight = false;
      this.#watch();
      if (id === this.#id && this.#registered) {
        if (ok) {
          this.#scheduleBeat();
        } else {
          // After a failure, try again soon rather than a whole interval later.
          clearTimeout(this.#beatTimer);
          this.#beatTimer = setTimeout(() => void this.#beat(), Math.min(250, this.#t.instanceHeartbeatMs / 4));
        }
      }
    }
  }

  #watch(): void {
    if (this.#registered && !this.#stopped && this.heartbeatAgeMs() >= this.#dangerAfterMs) {
      this.#fence(`no heartbeat acknowledged for ${Math.round(this.heartbeatAgeMs())} ms`);
    }
  }

  /** Steps down: closes every socket of this instance (through the handler) and starts over with a new id. */
  #fence(reason: string): void {
    if (!this.#registered || this.#stopped) return;
    const oldId = this.#id;
    this.#registered = false;
    this.#id = uuidv7();
    this.#ack = [];
    clearTimeout(this.#beatTimer);
    this.#metrics.fencingTotal.inc();
    this.#log.error('fenced: closing all sockets and starting a new instance', {
      instanceId: oldId,
      newInstanceId: this.#id,
      reason,
    });
    this.emit('fenced', oldId, reason, this.region);
    // Deleting the old item frees its slots at once for everyone; if the store
    // is unreachable they free themselves when the item expires.
    this.#store.deleteInstance(oldId, AbortSignal.timeout(this.#t.instanceTtlMs)).catch(() => {});
    void this.#register();
  }

  /** Stops beating and deletes the instance item (its remaining leases die with it). */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#beatTimer);
    clearInterval(this.#watchTimer);
    if (!this.#registered) return;
    this.#registered = false;
    try {
      await this.#store.deleteInstance(this.#id, AbortSignal.timeout(timeoutMs));
    } catch (err) {
      this.#log.warn('could not delete instance item; it expires on its own', { instanceId: this.#id, err });
    }
  }
}
