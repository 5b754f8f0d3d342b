import {
  BatchGetItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
  type AttributeValue,
  type BatchGetItemCommandOutput,
  type DynamoDBClient,
  type GetItemCommandOutput,
  type UpdateItemCommandOutput,
} from '@aws-sdk/client-dynamodb';
import { isConditionFailure, send, type Item } from './dynamo.js';
import type { Metrics } from './metrics.js';
import type { DenialReason, StreamPolicy } from './plan.js';

/**
 * The lease store on DynamoDB: single-item conditional writes only.
 *
 * Two kinds of item share one table (hash key `pk`):
 *
 *   user#<userId>          n (number of lease entries), v (version),
 *                          one attribute per device:
 *                          "lease:<deviceId>" = {leaseId, instanceId, acquiredAt, contentId, class, counted,
 *                          handedFrom, handedLease (the instance and lease id a hand-off replaced)},
 *                          and counts beside n for the plan's caps, kept in the same writes:
 *                          "c:<contentId>" (leases on that content), "k:<class>" (leases of that device class),
 *                          and "stop:<deviceId>" = {leaseId, handedLease, at, why}: the lease a REST stop, a
 *                          takeover or an eviction (why: evicted) took, and when (read only by a return with
 *                          handoff or previous; each of them removes other devices' marks older than STOP_KEPT_MS)
 *   instance#<instanceId>  expiresAt (ms since epoch), beatAt, startedAt, ttl (s, GC only),
 *                          mailbox (string set of "<leaseId> <closeCode>[ <why>]"),
 *                          dead (set once by the first gateway that acts on its expiry),
 *                          draining (set once by its own gateway before its drain's first 1012)
 *
 * A lease is live while its instance item exists with `expiresAt` in the
 * future (our own timestamps: DynamoDB TTL deletes lazily and is only garbage
 * collection). A gateway that is about to prune an expired instance's entries
 * first marks the instance item `dead` under a condition on the `expiresAt` it
 * read, and heartbeats require the mark to be absent: so a heartbeat delayed in
 * the network past the expiry can never revive an instance whose leases someone
 * has already acted on. Lease entries are top-level attributes rather than one nested
 * map so that the first lease of a new user is still one write: DynamoDB
 * cannot SET a path inside a map that does not exist yet.
 */

export interface Lease {
  readonly deviceId: string;
  readonly leaseId: string;
  readonly instanceId: string;
  /** Milliseconds since the epoch. */
  readonly acquiredAt: number;
  readonly contentId?: string;
  readonly deviceClass?: string;
  /**
   * The entry was added to the content and class counts (every entry this
   * version writes). Entries without it predate the counts, and their release
   * leaves the counts alone.
   */
  readonly counted?: boolean;
  /**
   * The instance whose entry a hand-off replaced to write this one: whom to
   * tell when that write's reply was lost (its retry, or the lease keeper's
   * check, then finds this entry in place and no trace of the one it replaced).
   */
  readonly handedFrom?: string;
  /**
   * The lease id that hand-off replaced: the id its device still knows when the write committed but the
   * admission ended without a grant (1013), and sends again as its `handoff`. A stop's mark keeps it.
   */
  readonly handedLease?: string;
}

/**
 * What an acquire did on the wire, filled in as it goes: read by the lease
 * keeper when the outcome is not known for sure (deadline, error) to decide
 * which lease ids may still appear in the store and whom a write that may have
 * committed was meant to revoke.
 */
export interface WriteTrace {
  /** Some request was sent more than once (SDK retry): a late copy may still land. */
  retried: boolean;
  /** Leases the last version-conditioned write removed to make room, if it committed. */
  victims: readonly Lease[];
}

export interface AcquireRequest {
  readonly userId: string;
  readonly deviceId: string;
  readonly contentId?: string;
  readonly deviceClass?: string;
  /** Fresh for every admission: the idempotency key of our writes. */
  readonly leaseId: string;
  readonly instanceId: string;
  readonly limit: number;
  /** At most this many leases on `contentId`. */
  readonly contentCap?: number;
  /** At most this many leases of `deviceClass`. */
  readonly classCap?: number;
  /** At the total limit: refuse (default), or revoke the longest-playing lease in the same write. */
  readonly policy?: StreamPolicy;
  /** Device to revoke to make room, or the oldest live one whose revocation makes room. */
  readonly takeover?: string;
  /**
   * The lease id this device held before a drain's 1012 or a fence's 4408
   * (the SDK's `handoff` query parameter). Its entry, if still there, is
   * replaced in one write: the device keeps its slot, and its old gateway
   * gave nothing back.
   */
  readonly handoff?: string;
  /**
   * The lease id this device held before its socket was lost (1006: the
   * `previous` query parameter), whose entry may be there or given back: it
   * is admitted as usual in one write when it went back, taken over as a
   * hand-off in a second when it is still there, and refused when a stop's
   * mark names that lease.
   */
  readonly previous?: string;
  /**
   * Is this lease id of our own instance held or being admitted here? Entries
   * of our instance that are neither are orphans (a late copy of a write) and
   * are pruned like dead ones.
   */
  readonly holds?: (leaseId: string) => boolean;
  readonly trace?: WriteTrace;
}

export type AcquireOutcome =
  | {
      readonly kind: 'granted';
      readonly lease: Lease;
      /** Lease entries counted for the user after this write, this one included. */
      readonly active: number;
      /** This device's previous lease, now replaced (its socket gets 4409). */
      readonly displaced?: Lease;
      /** A lease revoked by takeover (its socket gets 4403). */
      readonly revoked?: Lease;
      /** The longest-playing lease, revoked under `evict_oldest` (its socket gets 4403). */
      readonly evicted?: Lease;
      /** Leases of a draining gateway removed to make room, this device being otherwise refused (4403 each). */
      readonly gaveWay?: readonly Lease[];
    }
  | {
      readonly kind: 'denied';
      readonly reason: DenialReason;
      /** Every live lease of the user, oldest first, a takeover target included. */
      readonly active: readonly Lease[];
      /** Devices that must stop before this one can play (of that content or class for those caps). */
      readonly mustStop: number;
    }
  | {
      /**
       * A return with `handoff` (after a 1012 or a 4408, or a token-refresh socket) or `previous` (after a lost
       * socket) whose lease was stopped (a REST kick), taken over or evicted meanwhile: the stop stands (4403).
       */
      readonly kind: 'stopped';
      /** Evicted under `evict_oldest`, not stopped by a person: the close reason says so. */
      readonly evicted?: boolean;
    };

/** The expressions of one conditional write on a user item. */
interface UserWrite {
  readonly update: string;
  readonly condition: string;
  readonly names: Record<string, string>;
  readonly values: Item;
  /**
   * Return attributes: the updated ones after the write (the fast path reads the new `n`), the whole item
   * after it, or before it (a hand-off reads the entry it replaced).
   */
  readonly returns?: 'UPDATED_NEW' | 'ALL_NEW' | 'ALL_OLD';
}

/** What a release needs of a lease: which entry, which counts it is on, and (for a stop's mark) the lease it was handed from. */
export type LeaseRef = Pick<Lease, 'deviceId' | 'leaseId' | 'contentId' | 'deviceClass' | 'counted' | 'handedLease'>;

export interface StoreOptions {
  readonly table: string;
  /** This process's instance id: its leases are live without a read. */
  readonly selfInstanceId: () => string;
  /** The region this store's table is in, as metrics label it; undefined with one region (no label). */
  readonly region?: string;
}

const LEASE_PREFIX = 'lease:';
/**
 * `stop:<device>` holds the lease id a stop (REST kick), a takeover or an eviction (`evict_oldest`, with
 * `why: evicted`) took from a device, which may be on its way back with that id as its `handoff` (a 1012, a
 * 4408, a token-refresh socket) or `previous` (a lost socket): the return is refused (4403) instead of admitted anew, where
 * it would be refused at the limit, or evict a device in its turn. Written by every stop, not only of a
 * draining gateway's lease: the stop reads the instance before it writes, and a drain that begins in between
 * (mark, then 1012) would leave no trace of it. One per device at most; a new session ignores it.
 */
const STOP_PREFIX = 'stop:';
/**
 * How long a stop's mark stays: the SDK sends `handoff` or `previous` until its next decision, so a device
 * offline since its 1012 or its lost socket may come back hours later. Older marks go with the user's next
 * stop, takeover or eviction (in its write), so the item holds at most a day of stopped devices, even when
 * each visit brings a new device id.
 */
export const STOP_KEPT_MS = 24 * 3_600_000;

/**
 * Does this device's stop mark refuse a return with `handoff`? It names the lease it took, and the one that
 * lease was handed from (a return whose hand-off committed after its 1013 sends that one again).
 */
function stopMark(item: Item | undefined, deviceId: string, handoff: string): { evicted: boolean } | undefined {
  const mark = item?.[STOP_PREFIX + deviceId]?.M;
  if (mark === undefined || (mark.leaseId?.S !== handoff && mark.handedLease?.S !== handoff)) return undefined;
  return { evicted: mark.why?.S === 'evicted' };
}

/** The value of a stop's mark for the lease it took, as {@link stopMark} reads it. */
function markValue(lease: Pick<Lease, 'leaseId' | 'handedLease'>, evicted = false): AttributeValue {
  const m: Item = { leaseId: { S: lease.leaseId }, at: { N: String(Date.now()) } };
  if (lease.handedLease !== undefined) m.handedLease = { S: lease.handedLease };
  if (evicted) m.why = { S: 'evicted' };
  return { M: m };
}

/** Other devices' stop marks older than STOP_KEPT_MS, with the `at` each was read with (a write conditions on it). */
function staleStops(item: Item | undefined, deviceId: string, now: number): Array<[string, AttributeValue]> {
  const out: Array<[string, AttributeValue]> = [];
  for (const [attr, value] of Object.entries(item ?? {})) {
    const at = value.M?.at;
    if (attr.startsWith(STOP_PREFIX) && attr !== STOP_PREFIX + deviceId && at !== undefined && num(at) < now - STOP_KEPT_MS)
      out.push([attr, at]);
  }
  return out;
}
const CONTENT_PREFIX = 'c:';
const CLASS_PREFIX = 'k:';
/** Zero counts a user item may keep (each a content id no longer playing) before reconcile removes them. */
const ZERO_COUNTS_KEPT = 8;
const SLOW_PATH_ATTEMPTS = 8;
/** The weight of each return after a lost socket in {@link LeaseStore}'s moving average of what they found. */
const GHOST_WEIGHT = 0.2;
/**
 * Entries one write removes at most. DynamoDB limits an expression to 4 KB;
 * each removed name costs about 7 bytes of it. The rest go with later writes.
 */
export const MAX_REMOVALS_PER_WRITE = 100;
/** Draining or dead instances remembered (a few per deploy); the set starts over when full. */
const GONE_REMEMBERED = 1000;
/**
 * How long an instance read live and not draining answers {@link LeaseStore.closesOnItsOwn} without another
 * read: a same-device replacement on the slow path has just read it. Stale only costs a note it did not need.
 */
const LIVE_SEEN_MS = 1000;

/** The SDK's attempt count of a reply or an error (ours wraps the SDK's as `cause`). */
function attemptsOf(x: unknown): number {
  const meta =
    (x as { $metadata?: { attempts?: number } } | undefined)?.$metadata ??
    (x as { cause?: { $metadata?: { attempts?: number } } } | undefined)?.cause?.$metadata;
  return meta?.attempts ?? 1;
}

const userKey = (userId: string): Item => ({ pk: { S: `user#${userId}` } });
const instanceKey = (instanceId: string): Item => ({ pk: { S: `instance#${instanceId}` } });

function leaseValue(lease: Lease): AttributeValue {
  const m: Item = {
    leaseId: { S: lease.leaseId },
    instanceId: { S: lease.instanceId },
    acquiredAt: { N: String(lease.acquiredAt) },
    counted: { BOOL: true },
  };
  if (lease.contentId !== undefined) m.contentId = { S: lease.contentId };
  if (lease.deviceClass !== undefined) m.class = { S: lease.deviceClass };
  return { M: m };
}

/** The count attributes an entry adds to. */
function countsOf(l: Pick<Lease, 'contentId' | 'deviceClass' | 'counted'>): string[] {
  if (!l.counted) return [];
  const out: string[] = [];
  if (l.contentId !== undefined) out.push(CONTENT_PREFIX + l.contentId);
  if (l.deviceClass !== undefined) out.push(CLASS_PREFIX + l.deviceClass);
  return out;
}

/** `ADD` clauses (after the caller's own) for count deltas: names #d0.., values :d0... */
function deltaClauses(deltas: ReadonlyMap<string, number>, names: Record<string, string>, values: Item): string {
  let out = '';
  let i = 0;
  for (const [attr, delta] of deltas) {
    if (delta === 0) continue;
    names[`#d${i}`] = attr;
    values[`:d${i}`] = { N: String(delta) };
    out += `, #d${i} :d${i}`;
    i++;
  }
  return out;
}

/** What a count cap check found: the first cap this set of live leases leaves no room under. */
interface Blocked {
  readonly reason: DenialReason;
  readonly mustStop: number;
}

/**
 * The first cap that `live` (the user's other live leases) leaves no room
 * under for this request, or undefined when the device may play. The more
 * specific caps come first: stopping a device of another content or class
 * would not make room under them.
 */
function blockedBy(req: AcquireRequest, live: readonly Lease[]): Blocked | undefined {
  if (req.contentCap !== undefined && req.contentId !== undefined) {
    const same = live.filter((l) => l.contentId === req.contentId).length;
    if (same >= req.contentCap) return { reason: 'content_limit', mustStop: same - req.contentCap + 1 };
  }
  if (req.classCap !== undefined && req.deviceClass !== undefined) {
    const same = live.filter((l) => l.deviceClass === req.deviceClass).length;
    if (same >= req.classCap) return { reason: 'class_limit', mustStop: same - req.classCap + 1 };
  }
  if (live.length >= req.limit) return { reason: 'limit', mustStop: live.length - req.limit + 1 };
  return undefined;
}

/**
 * Whom to revoke so that this device may play, when `others` leave no room:
 * the takeover target (or, for `oldest`, the oldest lease whose revocation
 * makes room), or under `evict_oldest` the longest-playing lease when only the
 * total limit is in the way. One revocation at most: if one cannot make room
 * (a plan lowered below the devices playing), nobody is revoked.
 */
function toRevoke(req: AcquireRequest, others: readonly Lease[], blocked: Blocked): { revoked?: Lease; evicted?: Lease } | undefined {
  const makesRoom = (l: Lease) =>
    blockedBy(
      req,
      others.filter((o) => o !== l),
    ) === undefined;
  if (req.takeover !== undefined) {
    const candidates = req.takeover === 'oldest' ? others : others.filter((l) => l.deviceId === req.takeover);
    const revoked = candidates.find(makesRoom);
    return revoked && { revoked };
  }
  if (req.policy === 'evict_oldest' && blocked.reason === 'limit' && others.length > 0 && makesRoom(others[0])) {
    return { evicted: others[0] };
  }
  return undefined;
}

/** Does removing `l` lift (or lower) what blocks this request? A lease of another content or class does not. */
function makesRoomFor(req: AcquireRequest, l: Lease, blocked: Blocked): boolean {
  if (blocked.reason === 'content_limit') return l.contentId === req.contentId;
  if (blocked.reason === 'class_limit') return l.deviceClass === req.deviceClass;
  return true;
}

function num(v: AttributeValue | undefined): number {
  return v?.N === undefined ? 0 : Number(v.N);
}

/** Lease entries of a user item, keyed by device id. */
export function leasesOf(item: Item | undefined): Map<string, Lease> {
  const out = new Map<string, Lease>();
  if (!item) return out;
  for (const [name, value] of Object.entries(item)) {
    if (!name.startsWith(LEASE_PREFIX) || value.M === undefined) continue;
    const m = value.M;
    const deviceId = name.slice(LEASE_PREFIX.length);
    out.set(deviceId, {
      deviceId,
      leaseId: m.leaseId?.S ?? '',
      instanceId: m.instanceId?.S ?? '',
      acquiredAt: num(m.acquiredAt),
      contentId: m.contentId?.S,
      deviceClass: m.class?.S,
      counted: m.counted?.BOOL === true,
      handedFrom: m.handedFrom?.S,
      handedLease: m.handedLease?.S,
    });
  }
  return out;
}

/** Live: on a live instance, and when on our own, held or being admitted here. */
function isLive(l: Lease, live: ReadonlySet<string>, req: AcquireRequest): boolean {
  if (!live.has(l.instanceId)) return false;
  return l.instanceId !== req.instanceId || req.holds === undefined || req.holds(l.leaseId);
}

export class LeaseStore {
  readonly #client: Pick<DynamoDBClient, 'send'>;
  readonly #metrics: Metrics;
  readonly #table: string;
  readonly #self: () => string;
  readonly #region: string | undefined;
  /** Instances known to close their sockets on their own: see {@link closesOnItsOwn}. */
  readonly #gone = new Set<string>();
  readonly #goneReads = new Map<string, Promise<boolean>>();
  /** Instances read live and not draining, with when (Date.now()). */
  readonly #liveSeen = new Map<string, number>();
  /**
   * How often recent returns after a lost socket (`previous`) found their entry still there, a moving average
   * in [0, 1]: a gateway that died sends all its devices back with theirs, an ingress that dropped its sockets
   * sends them back with theirs given back. Above one half the hand-off is tried first.
   */
  #ghosts = 0;

  constructor(client: Pick<DynamoDBClient, 'send'>, metrics: Metrics, opts: StoreOptions) {
    this.#client = client;
    this.#metrics = metrics;
    this.#table = opts.table;
    this.#self = opts.selfInstanceId;
    this.#region = opts.region;
  }

  #send<T>(operation: string, command: unknown, signal?: AbortSignal): Promise<T> {
    return send<T>(this.#client, this.#metrics, operation, command, signal, this.#region);
  }

  /**
   * One conditional UpdateItem on a user item. A failed condition returns the
   * item as it was (on the thrown error's `Item`), so the caller can look again
   * without another read.
   */
  #updateUser(userId: string, w: UserWrite, signal?: AbortSignal): Promise<UpdateItemCommandOutput> {
    return this.#send<UpdateItemCommandOutput>(
      'UpdateItem',
      new UpdateItemCommand({
        TableName: this.#table,
        Key: userKey(userId),
        UpdateExpression: w.update,
        ConditionExpression: w.condition,
        ExpressionAttributeNames: w.names,
        ExpressionAttributeValues: w.values,
        ReturnValues: w.returns,
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }),
      signal,
    );
  }

  /** Strongly consistent read of a user item. */
  async readUser(userId: string, signal?: AbortSignal): Promise<Item | undefined> {
    const out = await this.#send<GetItemCommandOutput>(
      'GetItem',
      new GetItemCommand({ TableName: this.#table, Key: userKey(userId), ConsistentRead: true }),
      signal,
    );
    return out.Item;
  }

  /**
   * Admits a device. Below every cap this is exactly one conditional write
   * (`n < limit`, and the content and class counts below their caps, all in
   * one condition, with ADD on each). Otherwise (a cap reached, a takeover,
   * the same device again) it reads the user item and the instance items it
   * names, prunes leases of dead instances, revokes whom the request or the
   * policy allows, and writes back under a version condition.
   */
  async acquire(req: AcquireRequest, signal?: AbortSignal): Promise<AcquireOutcome> {
    const lease: Lease = {
      deviceId: req.deviceId,
      leaseId: req.leaseId,
      instanceId: req.instanceId,
      acquiredAt: Date.now(),
      contentId: req.contentId,
      deviceClass: req.deviceClass,
      counted: true,
    };
    let item: Item | undefined;
    // The entry to take over first: the hand-off's, or a lost socket's ghost when recent returns found theirs
    // (the devices of a gateway that died); else the admission's own write comes first (an ingress that dropped
    // every socket, a network cut: the gateway saw the socket end and gave the entry back).
    const back = req.takeover !== undefined ? undefined : (req.handoff ?? (this.#ghostsLikely() ? req.previous : undefined));
    let fast = req.takeover === undefined && back === undefined;
    if (back !== undefined) {
      try {
        const out = await this.#handOver(req, lease, back, signal);
        this.#sawGhost(req, true);
        return out;
      } catch (err) {
        if (req.trace && attemptsOf(err) > 1) req.trace.retried = true;
        if (!isConditionFailure(err)) throw err;
        // The entry went back, was pruned, replaced or stopped, or the plan or the content changed: the slow
        // path judges the item as it was (a new user, with no item, is written there in one write too). A
        // lost socket's entry that went back, with no stop for it: the device is admitted as a new one.
        item = err.Item;
        if (req.handoff === undefined && !leasesOf(item).has(req.deviceId) && !stopMark(item, req.deviceId, back)) {
          this.#sawGhost(req, false);
          fast = true;
        }
      }
    }
    if (fast) {
      const names: Record<string, string> = { '#lease': LEASE_PREFIX + req.deviceId, '#n': 'n', '#v': 'v' };
      const values: Item = { ':lease': leaseValue(lease), ':one': { N: '1' }, ':limit': { N: String(req.limit) } };
      let condition = 'attribute_not_exists(#lease) AND (attribute_not_exists(#n) OR #n < :limit)';
      let add = 'ADD #n :one, #v :one';
      if (req.previous !== undefined) {
        // Back from a lost socket: not if a stop's mark names the lease it held (the slow path then says so).
        Object.assign(names, { '#mark': STOP_PREFIX + req.deviceId, '#lid': 'leaseId', '#hl': 'handedLease' });
        values[':previous'] = { S: req.previous };
        condition +=
          ' AND (attribute_not_exists(#mark) OR (#mark.#lid <> :previous AND (attribute_not_exists(#mark.#hl) OR #mark.#hl <> :previous)))';
      }
      const capped: Array<[string, string | undefined, number | undefined]> = [
        ['c', req.contentId === undefined ? undefined : CONTENT_PREFIX + req.contentId, req.contentCap],
        ['k', req.deviceClass === undefined ? undefined : CLASS_PREFIX + req.deviceClass, req.classCap],
      ];
      for (const [key, attr, cap] of capped) {
        if (attr === undefined) continue;
        names[`#${key}`] = attr;
        add += `, #${key} :one`;
        if (cap === undefined) continue;
        values[`:${key}cap`] = { N: String(cap) };
        condition += ` AND (attribute_not_exists(#${key}) OR #${key} < :${key}cap)`;
      }
      try {
        const out = await this.#updateUser(
          req.userId,
          { update: `SET #lease = :lease ${add}`, condition, names, values, returns: 'UPDATED_NEW' },
          signal,
        );
        if (req.trace && attemptsOf(out) > 1) req.trace.retried = true;
        if (back === undefined) this.#sawGhost(req, false);
        return { kind: 'granted', lease, active: num(out.Attributes?.n) };
      } catch (err) {
        if (req.trace && attemptsOf(err) > 1) req.trace.retried = true;
        if (!isConditionFailure(err)) throw err;
        item = err.Item ?? (await this.readUser(req.userId, signal));
      }
      // Back from a lost socket, its ghost still there (its gateway died or froze): taken over in one more write,
      // as a hand-off, instead of the reads and the versioned write of a same-device replacement.
      const { previous } = req;
      if (
        previous !== undefined &&
        back === undefined &&
        leasesOf(item).get(req.deviceId)?.leaseId === previous &&
        !stopMark(item, req.deviceId, previous)
      ) {
        this.#sawGhost(req, true);
        try {
          return await this.#handOver(req, lease, previous, signal);
        } catch (err) {
          if (req.trace && attemptsOf(err) > 1) req.trace.retried = true;
          if (!isConditionFailure(err)) throw err;
          item = err.Item ?? (await this.readUser(req.userId, signal));
        }
      }
    } else if (back === undefined) {
      item = await this.readUser(req.userId, signal);
    }
    return this.#acquireSlow(req, lease, item, signal);
  }

  /** Do recent returns after a lost socket find their entry still there? */
  #ghostsLikely(): boolean {
    return this.#ghosts > 0.5;
  }

  /** What a return after a lost socket found (each return counts once). */
  #sawGhost(req: AcquireRequest, found: boolean): void {
    if (req.previous !== undefined) this.#ghosts += ((found ? 1 : 0) - this.#ghosts) * GHOST_WEIGHT;
  }

  /**
   * A device back from a drain replaces its own entry in one write, keeping
   * every count: the condition holds the entry's lease id, its content and
   * class, and the caps (this device included, as the counts are), so any
   * change falls to the slow path with the item as it was. The entry it
   * replaced comes back as `displaced`: its old gateway closes that socket on
   * its own while it drains, and is told like any same-device replacement
   * otherwise (a copied lease id gains nothing).
   */
  async #handOver(req: AcquireRequest, lease: Lease, oldLeaseId: string, signal?: AbortSignal): Promise<AcquireOutcome> {
    const names: Record<string, string> = {
      '#lease': LEASE_PREFIX + req.deviceId,
      '#id': 'leaseId',
      '#inst': 'instanceId',
      '#from': 'handedFrom',
      '#was': 'handedLease',
      '#counted': 'counted',
      '#n': 'n',
      '#v': 'v',
    };
    const values: Item = {
      ':id': { S: lease.leaseId },
      ':inst': { S: lease.instanceId },
      ':old': { S: oldLeaseId },
      ':true': { BOOL: true },
      ':one': { N: '1' },
      ':limit': { N: String(req.limit) },
    };
    let condition = '#lease.#id = :old AND #lease.#counted = :true AND #n <= :limit';
    const capped: Array<[string, string, string | undefined, string, number | undefined]> = [
      ['c', 'contentId', req.contentId, CONTENT_PREFIX, req.contentCap],
      ['k', 'class', req.deviceClass, CLASS_PREFIX, req.classCap],
    ];
    for (const [key, field, value, prefix, cap] of capped) {
      names[`#${key}f`] = field;
      if (value === undefined) {
        condition += ` AND attribute_not_exists(#lease.#${key}f)`;
        continue;
      }
      values[`:${key}`] = { S: value };
      condition += ` AND #lease.#${key}f = :${key}`;
      if (cap === undefined) continue;
      names[`#${key}`] = prefix + value;
      values[`:${key}cap`] = { N: String(cap) };
      condition += ` AND #${key} <= :${key}cap`;
    }
    // Content, class and `counted` stay as they are (the condition holds them equal), and so does acquiredAt: the
    // device keeps its slot, and its place among the longest-playing (evict_oldest, `since`). The entry keeps the
    // instance it replaces, in case this write's reply is lost.
    const update = 'SET #lease.#id = :id, #lease.#inst = :inst, #lease.#from = #lease.#inst, #lease.#was = :old ADD #v :one';
    // Its instance is not known before the write: the keeper learns it from the entry, if this one's outcome is unknown.
    if (req.trace) req.trace.victims = [{ ...lease, leaseId: oldLeaseId, instanceId: '' }];
    const out = await this.#updateUser(req.userId, { update, condition, names, values, returns: 'ALL_OLD' }, signal);
    if (req.trace && attemptsOf(out) > 1) req.trace.retried = true;
    const displaced = leasesOf(out.Attributes).get(req.deviceId);
    const kept = displaced === undefined ? lease : { ...lease, acquiredAt: displaced.acquiredAt };
    return { kind: 'granted', lease: kept, active: num(out.Attributes?.n), displaced };
  }

  async #acquireSlow(req: AcquireRequest, lease: Lease, item: Item | undefined, signal?: AbortSignal): Promise<AcquireOutcome> {
    // What the last write we sent displaced and revoked: if it committed but its reply was lost, the
    // retry fails its condition and only this tells whose socket must still be closed.
    let sent: { displaced?: Lease; revoked?: Lease; evicted?: Lease; gaveWay?: readonly Lease[] } = {};
    for (let attempt = 0; attempt < SLOW_PATH_ATTEMPTS; attempt++) {
      const entries = leasesOf(item);
      const mine = entries.get(req.deviceId);
      // A retried write whose first attempt committed: the blocking entry is ours. A hand-off's says whom it replaced.
      if (mine?.leaseId === req.leaseId) {
        const from = req.handoff ?? req.previous;
        const handedFrom = mine.handedFrom === undefined || from === undefined ? undefined : mine.handedFrom;
        const displaced = handedFrom && { ...mine, leaseId: from!, instanceId: handedFrom, handedFrom: undefined };
        return { kind: 'granted', lease: mine, active: entries.size, ...(displaced ? { displaced } : {}), ...sent };
      }
      // A return whose lease was stopped since (STOP_PREFIX): looked at on every item this loop reads, for the
      // stop may land while the return is here (its content changed, its write lost a race).
      const back = req.handoff ?? req.previous;
      const mark = back === undefined ? undefined : stopMark(item, req.deviceId, back);
      if (mark !== undefined) return { kind: 'stopped', ...(mark.evicted && { evicted: true }) };
      const { live, draining } = await this.#instances(entries.values(), signal, true);
      const dead: Lease[] = [];
      let others: Lease[] = [];
      // On a draining gateway: its sockets are closing, their devices coming back elsewhere with a hand-off.
      const leaving: Lease[] = [];
      for (const [deviceId, l] of entries) {
        if (deviceId === req.deviceId) continue;
        if (!isLive(l, live, req)) dead.push(l);
        else (draining.has(l.instanceId) ? leaving : others).push(l);
      }
      // They hold their slots and are revoked like any other (a takeover, evict_oldest: told, and marked for a
      // return with a hand-off, so they do not come back), unless this device would be refused: then, oldest
      // first, as many as make room give way (a device that does come back is admitted like a new one) rather
      // than refuse a viewer for a device that may not be playing any more. Each is told (4403): its socket may
      // still play until its 1012.
      others.push(...leaving);
      others.sort((a, b) => a.acquiredAt - b.acquiredAt);
      let blocked = blockedBy(req, others);
      let taken = blocked === undefined ? {} : toRevoke(req, others, blocked);
      const gaveWay: Lease[] = [];
      if (taken === undefined && leaving.length > 0) {
        let rest = others;
        let still = blocked;
        while (still !== undefined) {
          const by = still;
          const l = rest.find((o) => leaving.includes(o) && makesRoomFor(req, o, by));
          if (l === undefined) break;
          gaveWay.push(l);
          rest = rest.filter((o) => o !== l);
          still = blockedBy(req, rest);
        }
        const rescue = still === undefined ? {} : toRevoke(req, rest, still);
        if (rescue !== undefined) {
          others = rest;
          blocked = still;
          taken = rescue;
        } else gaveWay.length = 0;
      }
      if (blocked !== undefined && taken === undefined) {
        // The draining ones would give way: the viewer must stop some of the others.
        const active = others.filter((l) => !leaving.includes(l));
        const { reason, mustStop } = blockedBy(req, active) ?? blocked;
        return { kind: 'denied', reason, active, mustStop };
      }
      const { revoked, evicted } = taken ?? {};
      const victim = revoked ?? evicted;

      const removed = [...(victim ? [victim] : []), ...gaveWay, ...dead].slice(0, MAX_REMOVALS_PER_WRITE);
      const names: Record<string, string> = { '#lease': LEASE_PREFIX + req.deviceId, '#n': 'n', '#v': 'v' };
      removed.forEach((l, i) => (names[`#r${i}`] = LEASE_PREFIX + l.deviceId));
      // The victim may have lost its socket (or had its 1012) and be on its way back with a hand-off: it finds
      // the mark, as after a stop, and day-old marks of other devices go with this write (its version holds them).
      const removals = removed.map((_, i) => `#r${i}`);
      let setMark = '';
      if (victim) {
        names['#mark'] = STOP_PREFIX + victim.deviceId;
        setMark = ', #mark = :mark';
        const stale = staleStops(item, victim.deviceId, Date.now()).slice(0, MAX_REMOVALS_PER_WRITE - removed.length);
        for (const [i, [attr]] of stale.entries()) {
          names[`#p${i}`] = attr;
          removals.push(`#p${i}`);
        }
      }
      // The counts move by what this write adds and removes; reconcile repairs any drift.
      const deltas = new Map<string, number>();
      const bump = (l: Lease, by: number) => countsOf(l).forEach((attr) => deltas.set(attr, (deltas.get(attr) ?? 0) + by));
      bump(lease, 1);
      if (mine) bump(mine, -1);
      removed.forEach((l) => bump(l, -1));
      const version = item?.v;
      // n counts entries, dead ones not yet removed included, so the fast path's `n < limit` stays exact.
      const count = entries.size - removed.length + (mine ? 0 : 1);
      const active = others.length + 1 - (victim ? 1 : 0);
      sent = { displaced: mine, revoked, evicted, ...(gaveWay.length > 0 ? { gaveWay } : {}) };
      if (req.trace) req.trace.victims = [mine, victim, ...gaveWay].filter((l): l is Lease => l !== undefined);
      const values: Item = {
        ':lease': leaseValue(lease),
        ':count': { N: String(count) },
        ':one': { N: '1' },
        ...(version === undefined ? {} : { ':version': version }),
        ...(victim ? { ':mark': markValue(victim, victim === evicted) } : {}),
      };
      const add = `ADD #v :one${deltaClauses(deltas, names, values)}`;
      try {
        const out = await this.#updateUser(
          req.userId,
          {
            update: `SET #lease = :lease, #n = :count${setMark} ${add}` + (removals.length > 0 ? ` REMOVE ${removals.join(', ')}` : ''),
            condition: version === undefined ? 'attribute_not_exists(#v)' : '#v = :version',
            names,
            values,
          },
          signal,
        );
        if (req.trace && attemptsOf(out) > 1) req.trace.retried = true;
        return { kind: 'granted', lease, active, ...sent };
      } catch (err) {
        if (req.trace && attemptsOf(err) > 1) req.trace.retried = true;
        if (!isConditionFailure(err)) throw err;
        // Someone else wrote in between (or our own retry already committed): look again.
        item = err.Item ?? (await this.readUser(req.userId, signal));
      }
    }
    throw Object.assign(new Error('lease write kept losing races'), { code: 'ERR_CONTENTION' });
  }

  /**
   * Gives a lease back: removes the device's entry only if it still carries
   * our lease id, so a late release never deletes a successor's lease, and
   * takes the entry off its content and class counts. Returns false when the
   * entry was already gone or replaced (including a retry of our own committed
   * release). The count never goes below zero: an entry found with `n` at 0 (it
   * cannot drift, but if it ever did) is removed with the count recomputed
   * from the entries, under the version condition.
   */
  async release(
    userId: string,
    lease: LeaseRef,
    signal?: AbortSignal,
    stop?: { readonly prune: ReadonlyArray<[string, AttributeValue]> },
  ): Promise<boolean> {
    const names: Record<string, string> = { '#lease': LEASE_PREFIX + lease.deviceId, '#n': 'n', '#v': 'v' };
    // DynamoDB refuses values an expression does not use, so each write gets exactly its own.
    const countValues: Item = {};
    const counts = deltaClauses(new Map(countsOf(lease).map((attr) => [attr, -1])), names, countValues);
    const mine: Item = { ':leaseId': { S: lease.leaseId }, ':one': { N: '1' }, ...countValues };
    // A stop (REST kick) leaves its lease id behind, for a hand-off return to find (STOP_PREFIX), and takes
    // the day-old marks of other devices with it, each only if it is still the mark that was read.
    let removes = '#lease';
    let setStop = '';
    let stopHolds = '';
    if (stop) {
      names['#stop'] = STOP_PREFIX + lease.deviceId;
      mine[':stop'] = markValue(lease);
      setStop = '#stop = :stop';
      stop.prune.forEach(([attr, at], i) => {
        names[`#p${i}`] = attr;
        mine[`:p${i}`] = at;
        removes += `, #p${i}`;
        stopHolds += ` AND #p${i}.#at = :p${i}`;
      });
      if (stop.prune.length > 0) names['#at'] = 'at';
    }
    try {
      const out = await this.#updateUser(
        userId,
        {
          update: `REMOVE ${removes}${setStop && ` SET ${setStop}`} ADD #n :minus, #v :one${counts}`,
          condition: `#lease.leaseId = :leaseId AND #n > :zero${stopHolds}`,
          names,
          values: { ...mine, ':minus': { N: '-1' }, ':zero': { N: '0' } },
          // The item after the release (same request): lets the release tidy counts left at 0.
          returns: counts === '' ? undefined : 'ALL_NEW',
        },
        signal,
      );
      await this.#tidyZeros(userId, out.Attributes, signal);
      return true;
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
      let item = err.Item;
      for (let attempt = 0; attempt < SLOW_PATH_ATTEMPTS; attempt++) {
        const entries = leasesOf(item);
        if (entries.get(lease.deviceId)?.leaseId !== lease.leaseId) return false;
        // A mark to prune changed since the caller read it (a stop of that device meanwhile): it reads again.
        if (stopHolds !== '' && num(item?.n) > 0) return false;
        // Our entry is there but the count says 0: remove it and set the count from the entries.
        try {
          await this.#updateUser(
            userId,
            {
              update: `REMOVE ${removes} SET #n = :count${setStop && `, ${setStop}`} ADD #v :one${counts}`,
              condition: `#v = :version AND #lease.leaseId = :leaseId${stopHolds}`,
              names,
              values: { ...mine, ':count': { N: String(entries.size - 1) }, ':version': item?.v ?? { N: '0' } },
            },
            signal,
          );
          return true;
        } catch (retryErr) {
          if (!isConditionFailure(retryErr)) throw retryErr;
          item = retryErr.Item;
        }
      }
      throw Object.assign(new Error('lease write kept losing races'), { code: 'ERR_CONTENTION' });
    }
  }

  /**
   * Counts left at 0 (one per content that stopped playing) would otherwise
   * pile up on the user item until a reconcile round happens to read that
   * user: only a user with a lease or a doubt on a gateway at round time is
   * read, so a viewer of short streams on many contents grows the item
   * without bound (and every write costs write units by item size). Once more
   * than ZERO_COUNTS_KEPT pile up, the release that sees them removes them:
   * one extra write every few contents. Best effort: reconcile still repairs.
   */
  async #tidyZeros(userId: string, item: Item | undefined, signal?: AbortSignal): Promise<void> {
    if (item === undefined) return;
    let zeros = 0;
    for (const [attr, value] of Object.entries(item)) {
      if ((attr.startsWith(CONTENT_PREFIX) || attr.startsWith(CLASS_PREFIX)) && num(value) === 0) zeros++;
    }
    if (zeros <= ZERO_COUNTS_KEPT) return;
    await this.repairCount(userId, item, signal).catch(() => false);
  }

  /**
   * Sets a user item's counts from its entries when they differ: `n`, and the
   * content and class counts (a count left at 0 is fine until more than a few
   * pile up; then they are removed). The reconcile loop's repair. Under the
   * version condition: a write in between wins, and the next round looks
   * again. Returns true when it wrote.
   */
  async repairCount(userId: string, item: Item, signal?: AbortSignal): Promise<boolean> {
    const entries = leasesOf(item);
    const want = new Map<string, number>();
    for (const l of entries.values()) for (const attr of countsOf(l)) want.set(attr, (want.get(attr) ?? 0) + 1);
    const set = new Map<string, number>();
    const zeros: string[] = [];
    for (const [attr, value] of Object.entries(item)) {
      if (!attr.startsWith(CONTENT_PREFIX) && !attr.startsWith(CLASS_PREFIX)) continue;
      const expected = want.get(attr) ?? 0;
      if (expected === 0) {
        if (num(value) !== 0) set.set(attr, 0);
        zeros.push(attr);
      } else if (num(value) !== expected) set.set(attr, expected);
    }
    for (const [attr, expected] of want) if (item[attr] === undefined) set.set(attr, expected);
    const nWrong = num(item.n) !== entries.size;
    if ((!nWrong && set.size === 0 && zeros.length <= ZERO_COUNTS_KEPT) || item.v === undefined) return false;
    const names: Record<string, string> = { '#n': 'n', '#v': 'v' };
    const values: Item = { ':count': { N: String(entries.size) }, ':one': { N: '1' }, ':version': item.v };
    const clauses = ['#n = :count'];
    const removes: string[] = [];
    let i = 0;
    for (const [attr, value] of set) {
      if (value === 0) continue;
      names[`#s${i}`] = attr;
      values[`:s${i}`] = { N: String(value) };
      clauses.push(`#s${i} = :s${i}`);
      if (++i >= MAX_REMOVALS_PER_WRITE) break;
    }
    for (const [j, attr] of zeros.slice(0, MAX_REMOVALS_PER_WRITE).entries()) {
      names[`#z${j}`] = attr;
      removes.push(`#z${j}`);
    }
    try {
      await this.#updateUser(
        userId,
        {
          update: `SET ${clauses.join(', ')} ADD #v :one` + (removes.length > 0 ? ` REMOVE ${removes.join(', ')}` : ''),
          condition: '#v = :version',
          names,
          values,
        },
        signal,
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  /**
   * User items of up to 100 users (one reconcile batch), keyed by user id;
   * a user without an item maps to undefined. Strongly consistent.
   */
  async readUsers(userIds: readonly string[], signal?: AbortSignal): Promise<Map<string, Item | undefined>> {
    const out = new Map<string, Item | undefined>(userIds.map((userId) => [userId, undefined]));
    for (const item of await this.#batchGet(userIds.map(userKey), undefined, signal)) {
      out.set(item.pk.S!.slice('user#'.length), item);
    }
    return out;
  }

  /**
   * Strongly consistent BatchGetItem over any number of keys: 100 a request,
   * resending what DynamoDB left unprocessed (it does so when throttling)
   * after a full-jitter pause.
   */
  async #batchGet(keys: Item[], projection: string | undefined, signal?: AbortSignal): Promise<Item[]> {
    const items: Item[] = [];
    for (let rounds = 0; keys.length > 0;) {
      const batch = keys.slice(0, 100);
      keys = keys.slice(100);
      const out = await this.#send<BatchGetItemCommandOutput>(
        'BatchGetItem',
        new BatchGetItemCommand({
          RequestItems: { [this.#table]: { Keys: batch, ConsistentRead: true, ProjectionExpression: projection } },
        }),
        signal,
      );
      items.push(...(out.Responses?.[this.#table] ?? []));
      const unprocessed = out.UnprocessedKeys?.[this.#table]?.Keys;
      if (unprocessed?.length) {
        keys = keys.concat(unprocessed);
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(1000, 25 * 2 ** ++rounds)));
      }
    }
    return items;
  }

  /** Live leases of a user, oldest first. */
  async listLive(userId: string, signal?: AbortSignal): Promise<Lease[]> {
    const entries = leasesOf(await this.readUser(userId, signal));
    const { live } = await this.#instances(entries.values(), signal, false);
    return [...entries.values()].filter((l) => live.has(l.instanceId)).sort((a, b) => a.acquiredAt - b.acquiredAt);
  }

  /**
   * Revokes a device's live lease (REST kick). Returns the removed lease so
   * the caller can tell its gateway, or undefined when the device holds no
   * live lease. `trace.victims` names the lease before the write is sent, so
   * a caller that never hears back can still tell the victim later.
   */
  async revoke(userId: string, deviceId: string, signal?: AbortSignal, trace?: WriteTrace): Promise<Lease | undefined> {
    let attempted: Lease | undefined;
    for (let attempt = 0; attempt < SLOW_PATH_ATTEMPTS; attempt++) {
      const item = await this.readUser(userId, signal);
      const lease = leasesOf(item).get(deviceId);
      // Gone after our release "failed": its reply was lost and the retry found it removed (ours), or its socket
      // ended and its gateway gave it back first. Either way the stop is done, and its mark must be there: the
      // device may come back with that lease id.
      if (!lease) {
        if (attempted === undefined) return undefined;
        if (stopMark(item, deviceId, attempted.leaseId) !== undefined || (await this.#markStopped(userId, attempted, signal)))
          return attempted;
        continue; // the device has an entry again (a late copy of a write, its return with previous): stop it too
      }
      const { live } = await this.#instances([lease], signal, true);
      attempted = lease;
      // A dead instance's entry too: no socket plays on it, but its device may be on its way back with its
      // lease id (`previous`), and the stop must stand for it.
      if (!live.has(lease.instanceId)) {
        if (await this.release(userId, lease, signal, { prune: staleStops(item, deviceId, Date.now()) })) return lease;
        continue;
      }
      if (trace) trace.victims = [lease];
      // The device may have had its 1012 already, or have it before its note is read (its gateway may begin
      // draining after the read above), or have lost its socket, and come back with this lease id: the stop
      // stays on the item for it.
      if (await this.release(userId, lease, signal, { prune: staleStops(item, deviceId, Date.now()) })) return lease;
    }
    throw Object.assign(new Error('lease write kept losing races'), { code: 'ERR_CONTENTION' });
  }

  /**
   * Leaves a stop's mark for a lease whose entry is already gone; false if the device has an entry again: a late
   * copy of that lease's write, or the device back with `previous` naming it, admitted before this mark (the
   * caller stops that one in its turn, or its 204 would leave it playing).
   */
  async #markStopped(userId: string, lease: Lease, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.#updateUser(
        userId,
        {
          update: 'SET #stop = :stop',
          condition: 'attribute_not_exists(#lease)',
          names: { '#stop': STOP_PREFIX + lease.deviceId, '#lease': LEASE_PREFIX + lease.deviceId },
          values: { ':stop': markValue(lease) },
        },
        signal,
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  /**
   * Instance ids among these leases whose instance item is live now, and
   * which of those are draining. Our own is live without a read. With `act`
   * (the caller will prune the dead ones), an expired instance not yet marked
   * is first marked `dead`, conditioned on the expiry we read: if a late
   * heartbeat extended it meanwhile, the mark fails and the instance counts as
   * live; once marked, no heartbeat revives it.
   */
  async #instances(
    leases: Iterable<Lease>,
    signal: AbortSignal | undefined,
    act: boolean,
  ): Promise<{ live: Set<string>; draining: Set<string> }> {
    const self = this.#self();
    const live = new Set<string>();
    const draining = new Set<string>();
    const toRead = new Set<string>();
    for (const l of leases) {
      if (l.instanceId === self) live.add(self);
      else toRead.add(l.instanceId);
    }
    const now = Date.now();
    const toMark: Item[] = [];
    for (const it of await this.#batchGet([...toRead].map(instanceKey), 'pk, expiresAt, dead, draining', signal)) {
      if (it.dead !== undefined) continue;
      const id = it.pk.S!.slice('instance#'.length);
      if (num(it.expiresAt) > now) {
        live.add(id);
        if (it.draining !== undefined) draining.add(this.#leaving(id));
        else this.#seenLive(id, now);
      } else if (act) toMark.push(it);
    }
    const marks = await Promise.all(toMark.map((it) => this.#markDead(it, signal)));
    marks.forEach((marked, i) => !marked && live.add(toMark[i].pk.S!.slice('instance#'.length)));
    return { live, draining };
  }

  /** Remembers an instance that closes its sockets on its own (draining, dead or gone): that never changes. */
  #seenLive(instanceId: string, at: number): void {
    if (this.#liveSeen.size >= GONE_REMEMBERED) this.#liveSeen.clear();
    this.#liveSeen.set(instanceId, at);
  }

  #leaving(instanceId: string): string {
    if (this.#gone.size >= GONE_REMEMBERED) this.#gone.clear();
    this.#gone.add(instanceId);
    return instanceId;
  }

  /**
   * Does the gateway of `instanceId` close its sockets on its own, so that a
   * replaced lease there needs no note in its mailbox? True once it drains
   * (it closes every socket within its drain window, and its devices come
   * back with a hand-off: a note each would be one more write per device on
   * one item), and when it is dead or gone. Learnt from one strongly
   * consistent read per instance, shared by the callers asking at once.
   */
  closesOnItsOwn(instanceId: string, signal?: AbortSignal): Promise<boolean> {
    if (this.#gone.has(instanceId)) return Promise.resolve(true);
    if (Date.now() - (this.#liveSeen.get(instanceId) ?? -Infinity) < LIVE_SEEN_MS) return Promise.resolve(false);
    let read = this.#goneReads.get(instanceId);
    if (read === undefined) {
      read = this.#send<GetItemCommandOutput>(
        'GetItem',
        new GetItemCommand({
          TableName: this.#table,
          Key: instanceKey(instanceId),
          ConsistentRead: true,
          ProjectionExpression: 'expiresAt, dead, draining',
        }),
        signal,
      )
        .then(({ Item: it }) => {
          const leaving = it === undefined || it.dead !== undefined || it.draining !== undefined || num(it.expiresAt) <= Date.now();
          if (leaving) this.#leaving(instanceId);
          else this.#seenLive(instanceId, Date.now());
          return leaving;
        })
        .finally(() => this.#goneReads.delete(instanceId));
      this.#goneReads.set(instanceId, read);
    }
    return read;
  }

  /**
   * Marks our instance item draining, before the drain's first 1012: from
   * then on its devices come back elsewhere with a hand-off, and its entries
   * give way to a device that needs a slot (see {@link acquire}).
   */
  async markDraining(instanceId: string, signal?: AbortSignal): Promise<void> {
    await this.#send(
      'UpdateItem',
      new UpdateItemCommand({
        TableName: this.#table,
        Key: instanceKey(instanceId),
        UpdateExpression: 'SET draining = :true',
        ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(dead)',
        ExpressionAttributeValues: { ':true': { BOOL: true } },
      }),
      signal,
    );
  }

  /**
   * Marks an expired instance item dead. False when a heartbeat extended it
   * since we read it; true when it is marked, or gone (a deleted item cannot
   * be revived: heartbeats require it to exist).
   */
  async #markDead(it: Item, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.#send(
        'UpdateItem',
        new UpdateItemCommand({
          TableName: this.#table,
          Key: { pk: it.pk },
          UpdateExpression: 'SET dead = :true',
          ConditionExpression: 'expiresAt = :read OR attribute_exists(dead)',
          ExpressionAttributeValues: { ':true': { BOOL: true }, ':read': it.expiresAt ?? { N: '0' } },
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
        signal,
      );
      return true;
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
      return err.Item === undefined;
    }
  }

  // ---- instance items -----------------------------------------------------

  /** Creates this process's instance item. */
  async registerInstance(instanceId: string, ttlMs: number, host: string, signal?: AbortSignal): Promise<void> {
    const now = Date.now();
    await this.#send(
      'PutItem',
      new PutItemCommand({
        TableName: this.#table,
        Item: {
          ...instanceKey(instanceId),
          expiresAt: { N: String(now + ttlMs) },
          beatAt: { N: String(now) },
          startedAt: { N: String(now) },
          host: { S: host },
          ttl: { N: String(Math.ceil((now + ttlMs) / 1000) + 3600) },
        },
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
      signal,
    );
  }

  /**
   * One heartbeat: extends the instance item only while it is still live
   * (never revives an instance others may already consider dead) and reads
   * the mailbox in the same write. Entries are deleted one beat later, once
   * handled (`ack`), so a retry whose first attempt committed cannot lose
   * them. Throws a condition failure when the item expired, was marked dead or
   * is gone: the caller must fence.
   */
  async heartbeat(
    instanceId: string,
    sentAt: number,
    ttlMs: number,
    ack: readonly string[],
    signal?: AbortSignal,
  ): Promise<Array<{ entry: string; leaseId: string; code: number; why?: string }>> {
    const out = await this.#send<UpdateItemCommandOutput>(
      'UpdateItem',
      new UpdateItemCommand({
        TableName: this.#table,
        Key: instanceKey(instanceId),
        UpdateExpression: 'SET expiresAt = :expiresAt, beatAt = :now, #ttl = :ttl' + (ack.length > 0 ? ' DELETE mailbox :ack' : ''),
        // `dead`: another gateway judged this instance expired and acts on it; never revive it.
        ConditionExpression: 'attribute_exists(pk) AND expiresAt > :now AND attribute_not_exists(dead)',
        ExpressionAttributeNames: { '#ttl': 'ttl' },
        ExpressionAttributeValues: {
          ':expiresAt': { N: String(sentAt + ttlMs) },
          ':now': { N: String(sentAt) },
          ':ttl': { N: String(Math.ceil((sentAt + ttlMs) / 1000) + 3600) },
          ...(ack.length > 0 ? { ':ack': { SS: [...ack] } } : {}),
        },
        ReturnValues: 'ALL_NEW',
      }),
      signal,
    );
    return (out.Attributes?.mailbox?.SS ?? []).map((entry) => {
      const [leaseId, code, why] = entry.split(' ');
      return { entry, leaseId, code: Number(code), why };
    });
  }

  /**
   * Drops a revoked lease id into the owning instance's mailbox. Does nothing
   * when that instance item is gone (its leases are dead anyway).
   */
  async notify(instanceId: string, leaseId: string, code: number, signal?: AbortSignal, why?: string): Promise<boolean> {
    try {
      await this.#send(
        'UpdateItem',
        new UpdateItemCommand({
          TableName: this.#table,
          Key: instanceKey(instanceId),
          UpdateExpression: 'ADD mailbox :entry',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: { ':entry': { SS: [why === undefined ? `${leaseId} ${code}` : `${leaseId} ${code} ${why}`] } },
        }),
        signal,
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  /** Deletes an instance item: every lease attached to it is dead at once. */
  async deleteInstance(instanceId: string, signal?: AbortSignal): Promise<void> {
    await this.#send('DeleteItem', new DeleteItemCommand({ TableName: this.#table, Key: instanceKey(instanceId) }), signal);
  }
}
