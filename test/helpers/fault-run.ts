/**
 * A seeded randomized fault run (Jepsen-style) against gateway child
 * processes: many users connect, close, take over, kick and reconnect the
 * same device through another gateway, while each gateway's fault proxy
 * delays requests past the SDK's timeout (the late copy lands after the
 * retry), commits writes and loses their replies, duplicates requests,
 * resets and blackholes, and whole processes are paused and killed.
 *
 * Black box only: it sees what a user sees (frames, close codes, HTTP status)
 * and what the table holds (strongly consistent reads straight from DynamoDB
 * Local, never through a proxy). Three checks:
 *
 *   store     polled every STORE_POLL_MS: no user item ever holds more lease
 *             entries than the user's limit, and `n` always equals the entry count.
 *   sockets   from the devices' own timelines: more than `limit` granted open
 *             sockets for a user only inside a documented window (a takeover,
 *             kick or same-device reconnect: up to INSTANCE_HEARTBEAT_MS + 1 s
 *             after its answer, RECONCILE_INTERVAL_MS more if a fault could have
 *             lost the mailbox note; a paused gateway's sockets while it is
 *             stopped and a little after SIGCONT).
 *   end       faults healed and every client closed: once the last held copy
 *             could have landed (END_SETTLE_MS), and within INSTANCE_TTL_MS +
 *             RECONCILE_INTERVAL_MS more, no user item holds an entry of a live
 *             instance; then every user can play on `limit` devices at once and,
 *             once they stop, the item is empty (no entry, `n` 0 or absent).
 *
 * The schedule (operations and faults, with their times) is a pure function of
 * the seed, so a failing seed replays the same schedule. Outcomes still depend
 * on timing (real processes, a shared machine): a seed that failed once fails
 * often, not always.
 *
 * A soak is the same call with a longer schedule, e.g. from a bench step:
 * `await runFaultSchedule({ seed, durationMs: 600_000 })`, then report
 * `violations` and `summary` (needs DynamoDB Local: test/helpers/dynamodb-local.ts).
 */
import { performance } from 'node:perf_hooks';
import { ScanCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { startCluster } from './cluster.js';
import { connect, type Device } from './devices.js';
import { localClient } from './dynamodb-local.js';
import type { FaultMode, FaultOptions, FaultProxy } from './fault-proxy.js';
import { FAST_TIMINGS, spawnGateway, type ChildGateway } from './gateway.js';
import { mintToken } from './tokens.js';
import { prng } from './raw-ws.js';

// ---- timings ------------------------------------------------------------------

/**
 * FAST_TIMINGS, with the reconcile backstop well above a revocation's bound
 * (heartbeat + 1 s = 1.5 s, + slack): at 2 s the checker could not tell a
 * revocation delivered by the mailbox from one only the backstop found.
 */
export const FAULT_RUN_TIMINGS: Record<string, string> = { ...FAST_TIMINGS, RECONCILE_INTERVAL_MS: '6000' };
const HEARTBEAT_MS = Number(FAULT_RUN_TIMINGS.INSTANCE_HEARTBEAT_MS);
const TTL_MS = Number(FAULT_RUN_TIMINGS.INSTANCE_TTL_MS);
const RECONCILE_MS = Number(FAULT_RUN_TIMINGS.RECONCILE_INTERVAL_MS);
const REQUEST_TIMEOUT_MS = Number(FAULT_RUN_TIMINGS.DYNAMODB_REQUEST_TIMEOUT_MS);
/** The revoker's mailbox write runs under the admission timeout, after the store write. */
const NOTE_SEND_MS = Number(FAULT_RUN_TIMINGS.ADMISSION_TIMEOUT_MS);

/** Scheduling noise on a shared 2-core machine, added to every bound below. */
export const SLACK_MS = 1000;
/** README: a revoked socket is closed within one heartbeat + 1 s of the takeover or kick. */
export const REVOKE_WINDOW_MS = HEARTBEAT_MS + 1000 + SLACK_MS;
/** README: at most one reconcile interval more when the mailbox write is lost. */
export const LOST_NOTE_WINDOW_MS = RECONCILE_MS + REVOKE_WINDOW_MS;
/** After SIGCONT a gateway fences within a watchdog tick or reads its mailbox within a heartbeat. */
export const AFTER_WAKE_MS = HEARTBEAT_MS + 1000 + SLACK_MS;
/** Longest a fault proxy holds a copy of a request (the `delay` and `duplicate` faults below). */
const MAX_COPY_DELAY_MS = REQUEST_TIMEOUT_MS + 2500;
/**
 * After the heal, copies still in the network land and admissions in flight end: an empty
 * table before this is no proof (a late copy may still re-create an entry).
 */
export const END_SETTLE_MS = MAX_COPY_DELAY_MS + NOTE_SEND_MS + SLACK_MS;
/** README: slots of a dead instance free after the TTL; a leaked entry on a live one, after reconcile. */
export const END_BOUND_MS = END_SETTLE_MS + TTL_MS + RECONCILE_MS;
const STORE_POLL_MS = 150;

// ---- seeded randomness ----------------------------------------------------------

/** mulberry32, the suite's seeded PRNG (uniform in [0, 1)): a seed replays the same schedule. */
export const mulberry32 = prng;

/** The seed from FAULT_SEED, or a fresh random one (printed, so a failure can be replayed). */
export function seedFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.FAULT_SEED;
  if (raw !== undefined && raw !== '') {
    const seed = Number(raw);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
      throw new Error(`FAULT_SEED must be an integer 0-4294967295, got "${raw}"`);
    return seed;
  }
  return Math.floor(Math.random() * 0x100000000);
}

const int = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
function weighted<T extends string>(r: () => number, weights: Record<T, number>): T {
  const entries = Object.entries(weights) as Array<[T, number]>;
  let x = r() * entries.reduce((s, [, w]) => s + w, 0);
  for (const [k, w] of entries) if ((x -= w) < 0) return k;
  return entries[entries.length - 1][0];
}

// ---- the schedule: a pure function of the seed ----------------------------------

/** Which open socket of the user an operation means: index modulo the open ones, resolved when it runs. */
type Pick = number;

export type Op =
  | { at: number; kind: 'connect'; user: number; device: number; node: number; takeover?: 'oldest' | Pick; playMs: number }
  | { at: number; kind: 'close'; user: number; pick: Pick }
  | { at: number; kind: 'kick'; user: number; pick: Pick; node: number }
  | { at: number; kind: 'reconnect'; user: number; pick: Pick; node: number; playMs: number };

export type FaultKind = 'delay' | 'duplicate' | 'drop-reply' | 'reset' | 'blackhole' | 'pause' | 'kill';
export interface Fault {
  at: number;
  kind: FaultKind;
  node: number;
  /** How long the fault lasts (pause: how long the process stays stopped). */
  forMs: number;
  mode?: FaultMode;
  opts?: FaultOptions;
}

export interface Schedule {
  limits: number[];
  ops: Op[];
  faults: Fault[];
}

export interface ScheduleShape {
  durationMs: number;
  gateways: number;
  users: number;
  /** Devices ids per user (d0..): a small pool, so the same device often connects again. */
  devicesPerUser: number;
  /** Mean gap between two operations, ms. */
  opGapMs: number;
  maxKills: number;
  /** Relative weights of the fault kinds (default FAULT_WEIGHTS); a kind at 0 never happens. */
  faultWeights?: Record<FaultKind, number>;
}

/** Late copies (delay, duplicate) are what most often breaks a lease: they get the most weight. */
export const FAULT_WEIGHTS: Record<FaultKind, number> = {
  delay: 28,
  duplicate: 28,
  'drop-reply': 14,
  reset: 7,
  blackhole: 7,
  pause: 11,
  kill: 5,
};
/** Almost only late copies: for a negative control whose mutant leaks and that only the end check can see. */
export const LATE_COPY_WEIGHTS: Record<FaultKind, number> = {
  delay: 45,
  duplicate: 45,
  'drop-reply': 10,
  reset: 0,
  blackhole: 0,
  pause: 0,
  kill: 0,
};

/** The run's shape unless told otherwise: three gateways, eight users, about nine operations a second. */
export const DEFAULT_SHAPE: ScheduleShape = { durationMs: 60_000, gateways: 3, users: 8, devicesPerUser: 5, opGapMs: 110, maxKills: 2 };

export function makeSchedule(seed: number, shape: ScheduleShape): Schedule {
  // Separate streams: changing the fault mix does not reshuffle the operations.
  const rOps = mulberry32(seed);
  const rFaults = mulberry32(seed ^ 0x5bd1e995);
  const limits = Array.from({ length: shape.users }, () => int(rOps, 2, 3));
  const ops: Op[] = [];
  const playMs = (): number => (rOps() < 0.4 ? int(rOps, 150, 1200) : int(rOps, 2000, 12_000));
  for (let at = 300; at < shape.durationMs; at += int(rOps, shape.opGapMs / 3, (shape.opGapMs * 5) / 3)) {
    const user = int(rOps, 0, shape.users - 1);
    const node = int(rOps, 0, shape.gateways - 1);
    const kind = weighted(rOps, { connect: 40, takeover: 14, close: 14, kick: 14, reconnect: 12 });
    if (kind === 'connect' || kind === 'takeover') {
      const takeover = kind === 'takeover' ? (rOps() < 0.5 ? 'oldest' : int(rOps, 0, 99)) : undefined;
      ops.push({ at, kind: 'connect', user, device: int(rOps, 0, shape.devicesPerUser - 1), node, takeover, playMs: playMs() });
    } else if (kind === 'close') {
      ops.push({ at, kind: 'close', user, pick: int(rOps, 0, 99) });
    } else if (kind === 'kick') {
      ops.push({ at, kind: 'kick', user, pick: int(rOps, 0, 99), node });
    } else {
      ops.push({ at, kind: 'reconnect', user, pick: int(rOps, 0, 99), node, playMs: playMs() });
    }
  }

  const faults: Fault[] = [];
  const busyUntil = Array.from({ length: shape.gateways }, () => 0);
  let kills = 0;
  const userWrites: FaultOptions = { only: ['UpdateItem'], usersOnly: true };
  for (let at = 1500; at < shape.durationMs - 2000; at += int(rFaults, 200, 1200)) {
    const free = busyUntil.map((u, i) => (u + 150 <= at ? i : -1)).filter((i) => i >= 0);
    const pickNode = int(rFaults, 0, shape.gateways - 1);
    let kind = weighted<FaultKind>(rFaults, shape.faultWeights ?? FAULT_WEIGHTS);
    const forMs = int(rFaults, 500, 4000);
    // Past the SDK's per-attempt timeout, and long enough that a short play ends before the copy lands.
    const delayMs = int(rFaults, REQUEST_TIMEOUT_MS + 300, MAX_COPY_DELAY_MS);
    if (free.length === 0) continue;
    const node = free[pickNode % free.length];
    if (kind === 'kill' && (kills >= shape.maxKills || at < 5000)) kind = 'delay';
    let fault: Fault;
    switch (kind) {
      case 'delay':
        // A request held past the SDK's per-attempt timeout: the SDK retries, the held copy lands later.
        fault = { at, kind, node, forMs, mode: 'delay', opts: { ...userWrites, delayMs, probability: 0.5 } };
        break;
      case 'duplicate':
        fault = {
          at,
          kind,
          node,
          forMs,
          mode: 'duplicate',
          opts: { ...userWrites, delayMs: int(rFaults, 500, MAX_COPY_DELAY_MS), probability: 0.8 },
        };
        break;
      case 'drop-reply':
        fault = { at, kind, node, forMs, mode: 'drop-reply', opts: { ...userWrites, probability: 0.5 } };
        break;
      case 'reset':
        fault = { at, kind, node, forMs: Math.min(forMs, 2000), mode: 'reset', opts: { probability: 0.3 } };
        break;
      case 'blackhole':
        fault = { at, kind, node, forMs: Math.min(forMs, 3500), mode: 'blackhole', opts: {} };
        break;
      case 'pause':
        fault = { at, kind, node, forMs: int(rFaults, 300, 4500) };
        break;
      case 'kill':
        kills++;
        // The node is busy while its replacement starts.
        fault = { at, kind, node, forMs: 4000 };
        break;
    }
    busyUntil[node] = at + fault.forMs;
    faults.push(fault);
  }
  return { limits, ops, faults };
}

// ---- running it ------------------------------------------------------------------

export type ViolationKind =
  'store-over-limit' | 'store-count' | 'sockets-over-limit' | 'end-live-entries' | 'end-capacity' | 'end-not-empty' | 'gateway-exit';

export interface Violation {
  kind: ViolationKind;
  user: string;
  /** Ms since the run started. */
  atMs: number;
  detail: string;
}

export interface FaultRunOptions {
  seed: number;
  /** Entry file of the gateway (a mutant copy of src/ in negative controls). */
  entry?: string;
  /** Length of the fault phase, ms. Default 60 000. */
  durationMs?: number;
  gateways?: number;
  users?: number;
  /** Skip the end check and stop the schedule at the first continuous violation (negative controls). */
  stopEarly?: boolean;
  /** Relative weights of the fault kinds (default FAULT_WEIGHTS). */
  faultWeights?: Record<FaultKind, number>;
  env?: Record<string, string>;
  log?: (line: string) => void;
}

export interface FaultRunSummary {
  seed: number;
  wallMs: number;
  ops: Record<string, number>;
  outcomes: Record<string, number>;
  faults: Record<string, number>;
  /** Requests the proxies faulted, by mode. */
  faultedRequests: Record<string, number>;
  limits: Record<string, number>;
  peakEntries: Record<string, number>;
  windows: Record<string, number>;
  /** Error-level log lines of all gateways, by message (fencing is one, by design). */
  gatewayErrors: Record<string, number>;
}

export interface FaultRunResult {
  seed: number;
  violations: Violation[];
  summary: FaultRunSummary;
}

interface NodeState {
  readonly index: number;
  readonly proxy: FaultProxy;
  gateway: ChildGateway | undefined;
  /** Incarnation: bumped at every respawn. */
  gen: number;
  paused: boolean;
  /** Which fault episode owns the proxy now (a late heal of an older one must not end a newer one). */
  episode: number;
}

interface Sock {
  readonly id: number;
  readonly user: number;
  readonly device: string;
  readonly node: number;
  readonly gen: number;
  readonly dev: Device;
  readonly startedAt: number;
  grantedAt?: number;
  /** When the player stopped (close requested) or saw its socket close, whichever came first. */
  stopAt?: number;
  code?: number;
  reason?: string;
}

/**
 * One takeover, kick or same-device reconnect: until `until` it excuses one
 * extra open socket, and only one of its own victims (revocation is asynchronous).
 */
interface RevocationWindow {
  user: number;
  /** Where it was sent. */
  node: number;
  from: number;
  answeredAt: number;
  /** Not answered cleanly (1013, 503, network): its victim may be told only by the backstop. */
  unclean: boolean;
  /** The device it aims at, or the oldest playing one. */
  target: { device: string } | { oldest: true; except: string };
  /** The socket that asked (never its own victim). */
  self?: number;
  what: string;
  until?: number;
  victims?: Set<number>;
}

interface PauseWindow {
  node: number;
  gen: number;
  from: number;
  /** SIGCONT (infinite while stopped). */
  wokeAt: number;
  /** SIGCONT + AFTER_WAKE_MS: the gateway's older sockets do not count until then. */
  until: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const num = (v: AttributeValue | undefined): number | undefined => (v?.N === undefined ? undefined : Number(v.N));

/**
 * Runs one seeded fault schedule against fresh gateways on a fresh table and
 * returns what the checks found. Never throws for a violation: the caller
 * asserts (and the bench can soak with a longer `durationMs`).
 */
export async function runFaultSchedule(options: FaultRunOptions): Promise<FaultRunResult> {
  const started = performance.now();
  const startedWall = Date.now();
  const t = (): number => performance.now() - started;
  const log = options.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const shape: ScheduleShape = {
    ...DEFAULT_SHAPE,
    durationMs: options.durationMs ?? DEFAULT_SHAPE.durationMs,
    gateways: options.gateways ?? DEFAULT_SHAPE.gateways,
    users: options.users ?? DEFAULT_SHAPE.users,
    faultWeights: options.faultWeights ?? DEFAULT_SHAPE.faultWeights,
  };
  const { seed } = options;
  const schedule = makeSchedule(seed, shape);
  const env = {
    ...FAULT_RUN_TIMINGS,
    // Every attempt of this run is one user's; the per-user connect limit is not what is under test.
    CONNECT_RATE_PER_USER: '10000',
    CONNECT_BURST_PER_USER: '10000',
    ...options.env,
  };
  const userName = (u: number): string => `u${u}`;
  const violations: Violation[] = [];
  const seen = new Set<string>();
  const violate = (v: Violation, dedupeKey?: string): void => {
    if (dedupeKey !== undefined) {
      if (seen.has(dedupeKey)) return;
      seen.add(dedupeKey);
    }
    violations.push(v);
    log(`fault-run: VIOLATION ${v.kind} ${v.user} at ${Math.round(v.atMs)} ms: ${v.detail}`);
  };

  const count = (rec: Record<string, number>, key: string, by = 1): void => {
    rec[key] = (rec[key] ?? 0) + by;
  };
  const summary: FaultRunSummary = {
    seed,
    wallMs: 0,
    ops: {},
    outcomes: {},
    faults: {},
    faultedRequests: {},
    limits: Object.fromEntries(schedule.limits.map((l, u) => [userName(u), l])),
    peakEntries: {},
    windows: {},
    gatewayErrors: {},
  };

  const tokens = await Promise.all(schedule.limits.map((limit, u) => mintToken(userName(u), { maxStreams: limit })));
  const cluster = await startCluster(shape.gateways, { env, entry: options.entry });
  const nodes: NodeState[] = cluster.nodes.map((n, index) => ({
    index,
    proxy: n.proxy,
    gateway: n.gateway,
    gen: 0,
    paused: false,
    episode: 0,
  }));
  /** Every gateway process of the run, killed ones included: their logs explain a leaked entry. */
  const allGateways: ChildGateway[] = [];
  /** Processes the run killed on purpose; any other exit before the teardown is a crash. */
  const killed = new Set<ChildGateway>();
  const watch = (g: ChildGateway): void => {
    allGateways.push(g);
    void g.exited.then(({ code, signal }) => {
      if (killed.has(g) || stopping) return;
      const tail = g.lines.slice(-5).join(' | ').slice(0, 1500);
      violate({
        kind: 'gateway-exit',
        user: '-',
        atMs: t(),
        detail: `gateway process ${allGateways.indexOf(g)} exited by itself (code ${code}, signal ${signal}); last lines: ${tail}`,
      });
    });
  };
  for (const n of nodes) watch(n.gateway!);
  const respawned: ChildGateway[] = [];
  const store = localClient(cluster.endpoint);
  const socks: Sock[] = [];
  const revocations: RevocationWindow[] = [];
  const pauses: PauseWindow[] = [];
  /** Spans in which a fault could lose a mailbox note (it touches instance items, or a process is frozen or gone). */
  const noteFaults: Array<{ node: number; kind: FaultKind; from: number; until: number }> = [];
  /** Every fault applied, for the story of a violation. */
  const applied: Array<{ node: number; kind: FaultKind; from: number; until: number; delayMs?: number }> = [];
  const inFlight = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>): void => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  let stopping = false;
  let polling = true;
  let poller: Promise<void> = Promise.resolve();
  let stoppedEarly = false;
  try {
    log(
      `fault-run: seed ${seed} (reproduce with FAULT_SEED=${seed}); ${shape.gateways} gateways, ${shape.users} users ` +
        `(limits ${schedule.limits.join(',')}), ${schedule.ops.length} operations and ${schedule.faults.length} faults over ${shape.durationMs / 1000} s`,
    );

    // ---- the continuous store check --------------------------------------------------
    poller = (async () => {
      while (polling) {
        try {
          const out = await store.send(new ScanCommand({ TableName: cluster.table, ConsistentRead: true }));
          const at = t();
          for (const item of out.Items ?? []) {
            const pk = item.pk?.S ?? '';
            if (!pk.startsWith('user#')) continue;
            const user = pk.slice('user#'.length);
            const u = Number(user.slice(1));
            const entries = Object.keys(item).filter((k) => k.startsWith('lease:'));
            const n = num(item.n) ?? 0;
            summary.peakEntries[user] = Math.max(summary.peakEntries[user] ?? 0, entries.length);
            if (entries.length > schedule.limits[u]) {
              violate(
                {
                  kind: 'store-over-limit',
                  user,
                  atMs: at,
                  detail: `${entries.length} lease entries, limit ${schedule.limits[u]}: ${entries.join(', ')}`,
                },
                `over:${user}`,
              );
            }
            if (n !== entries.length) {
              violate(
                {
                  kind: 'store-count',
                  user,
                  atMs: at,
                  detail: `n = ${n} but ${entries.length} lease entries (${entries.join(', ') || 'none'})`,
                },
                `count:${user}`,
              );
            }
            // The content and class counts beside n (c:<content>, k:<class>) equal what the entries say.
            const want = new Map<string, number>();
            for (const k of entries) {
              const m = item[k].M ?? {};
              for (const attr of [m.contentId?.S && `c:${m.contentId.S}`, m.class?.S && `k:${m.class.S}`])
                if (attr) want.set(attr, (want.get(attr) ?? 0) + 1);
            }
            const drift = Object.keys(item)
              .filter((k) => k.startsWith('c:') || k.startsWith('k:'))
              .concat([...want.keys()])
              .filter((k, i, all) => all.indexOf(k) === i && (num(item[k]) ?? 0) !== (want.get(k) ?? 0));
            if (drift.length > 0) {
              violate(
                {
                  kind: 'store-count',
                  user,
                  atMs: at,
                  detail: `counts drifted from the entries: ${drift.map((k) => `${k}=${num(item[k]) ?? 0} (entries ${want.get(k) ?? 0})`).join(', ')}`,
                },
                `plan-count:${user}`,
              );
            }
          }
        } catch (err) {
          log(`fault-run: store poll failed: ${String(err)}`);
        }
        await sleep(STORE_POLL_MS);
      }
    })();

    // ---- operations -------------------------------------------------------------------
    const openOf = (u: number): Sock[] => socks.filter((s) => s.user === u && s.grantedAt !== undefined && s.stopAt === undefined);
    /** The node's gateway if it can take requests now, else the next one that can (a killed node is restarting). */
    const target = (i: number): NodeState | undefined => {
      for (let k = 0; k < nodes.length; k++) {
        const n = nodes[(i + k) % nodes.length];
        if (n.gateway !== undefined) return n;
      }
      return undefined;
    };

    const stop = (s: Sock, why: 'close' | 'auto-close' | 'end'): void => {
      if (s.stopAt !== undefined || s.dev.ws.readyState >= s.dev.ws.CLOSING) return;
      s.stopAt = performance.now();
      if (why !== 'end') count(summary.ops, why);
      void s.dev.close(1000);
    };

    const open = (u: number, device: string, nodeIndex: number, takeover: string | undefined, playMs: number, what: string): void => {
      const node = target(nodeIndex);
      if (!node) return;
      const gateway = node.gateway!;
      // Same device already playing or admitting: this connect replaces it (4409 on the old socket).
      const replaces = socks.some((s) => s.user === u && s.device === device && s.stopAt === undefined);
      const aims: RevocationWindow['target'][] = [];
      if (replaces) aims.push({ device });
      if (takeover === 'oldest') aims.push({ oldest: true, except: device });
      else if (takeover !== undefined) aims.push({ device: takeover });
      // Each device watches one of two contents and most have a class, so the content and class counts on the
      // user item move with every admission, release, takeover and prune (no caps: they must only never drift).
      const slot = Number(device.replace(/\D+/g, '')) || 0;
      const query = new URLSearchParams({ device, content: `c${slot % 2}` });
      if (slot % 3 !== 2) query.set('class', slot % 3 === 0 ? 'tv' : 'mobile');
      if (takeover !== undefined) query.set('takeover', takeover);
      const dev = connect(gateway.url, { token: tokens[u], device, takeover, query: query.toString() });
      const sock: Sock = { id: socks.length, user: u, device, node: node.index, gen: node.gen, dev, startedAt: performance.now() };
      socks.push(sock);
      count(summary.ops, what);
      track(
        dev.decision.then(
          (frame) => {
            if (frame.type === 'granted') {
              sock.grantedAt = performance.now();
              count(summary.outcomes, 'granted');
              const label = `${what} ${device}${takeover ? ` takeover=${takeover}` : ''} #${sock.id}`;
              for (const target of aims) {
                revocations.push({
                  user: u,
                  node: node.index,
                  target,
                  self: sock.id,
                  from: sock.startedAt,
                  answeredAt: sock.grantedAt,
                  unclean: false,
                  what: label,
                });
              }
              setTimeout(() => stop(sock, 'auto-close'), playMs).unref();
            } else {
              count(summary.outcomes, String(frame.type));
            }
          },
          () => {},
        ),
      );
      track(
        dev.closed.then((c) => {
          sock.stopAt ??= dev.closedAt ?? performance.now();
          sock.code = c.code;
          sock.reason = c.reason;
          if (sock.grantedAt === undefined) {
            count(summary.outcomes, `closed ${c.code}`);
            // Not admitted, but its write may have committed (1013 after the deadline): its victim may hear late.
            if (c.code !== 4429) {
              const label = `${what} ${device} (${c.code}) #${sock.id}`;
              for (const target of aims) {
                revocations.push({
                  user: u,
                  node: node.index,
                  target,
                  self: sock.id,
                  from: sock.startedAt,
                  answeredAt: sock.stopAt,
                  unclean: true,
                  what: label,
                });
              }
            }
          } else if (c.code !== 1000 && c.code !== 1005) {
            count(summary.outcomes, `lost ${c.code}`);
          }
        }),
      );
    };

    const runOp = (op: Op): void => {
      const u = op.user;
      switch (op.kind) {
        case 'connect': {
          let takeover: string | undefined;
          if (op.takeover === 'oldest') takeover = 'oldest';
          else if (op.takeover !== undefined) {
            const others = openOf(u).filter((s) => s.device !== `d${op.device}`);
            if (others.length > 0) takeover = others[op.takeover % others.length].device;
          }
          open(u, `d${op.device}`, op.node, takeover, op.playMs, takeover === undefined ? 'connect' : 'takeover');
          return;
        }
        case 'close': {
          const o = openOf(u);
          if (o.length > 0) stop(o[op.pick % o.length], 'close');
          return;
        }
        case 'reconnect': {
          const o = openOf(u);
          if (o.length === 0) return;
          const s = o[op.pick % o.length];
          // Through another gateway than the one it plays on.
          const other = (s.node + 1 + (op.node % (nodes.length - 1))) % nodes.length;
          open(u, s.device, other, undefined, op.playMs, 'reconnect');
          return;
        }
        case 'kick': {
          const node = target(op.node);
          if (!node) return;
          const o = openOf(u);
          const device = o.length > 0 ? o[op.pick % o.length].device : `d${op.pick % shape.devicesPerUser}`;
          count(summary.ops, 'kick');
          const from = performance.now();
          track(
            fetch(`${node.gateway!.httpUrl}/v1/streams/${device}`, {
              method: 'DELETE',
              headers: { Authorization: `Bearer ${tokens[u]}` },
              signal: AbortSignal.timeout(15_000),
            }).then(
              async (res) => {
                await res.arrayBuffer();
                count(summary.outcomes, `kick ${res.status}`);
                if (res.status === 404) return;
                const unclean = res.status !== 204;
                revocations.push({
                  user: u,
                  node: node.index,
                  target: { device },
                  from,
                  answeredAt: performance.now(),
                  unclean,
                  what: `kick ${device} -> ${res.status}`,
                });
              },
              (err: Error) => {
                count(summary.outcomes, `kick ${err.name}`);
                revocations.push({
                  user: u,
                  node: node.index,
                  target: { device },
                  from,
                  answeredAt: performance.now(),
                  unclean: true,
                  what: `kick ${device} -> ${err.name}`,
                });
              },
            ),
          );
          return;
        }
      }
    };

    // ---- faults -------------------------------------------------------------------------
    const heal = (node: NodeState, episode: number): void => {
      if (node.episode === episode) node.proxy.set('pass');
    };
    const runFault = (f: Fault): void => {
      const node = nodes[f.node];
      const episode = ++node.episode;
      const from = performance.now();
      count(summary.faults, f.kind);
      applied.push({ node: f.node, kind: f.kind, from, until: from + f.forMs, delayMs: f.opts?.delayMs });
      switch (f.kind) {
        case 'delay':
        case 'duplicate':
        case 'drop-reply':
        case 'reset':
        case 'blackhole': {
          const random = mulberry32(seed ^ (episode * 0x9e3779b1) ^ f.node);
          node.proxy.set(f.mode!, { ...f.opts, random });
          if (!f.opts?.usersOnly) noteFaults.push({ node: f.node, kind: f.kind, from, until: from + f.forMs });
          setTimeout(() => heal(node, episode), f.forMs).unref();
          return;
        }
        case 'pause': {
          const gateway = node.gateway;
          if (!gateway || node.paused) return;
          gateway.kill('SIGSTOP');
          node.paused = true;
          const gen = node.gen;
          const window: PauseWindow = { node: node.index, gen, from, wokeAt: Number.POSITIVE_INFINITY, until: Number.POSITIVE_INFINITY };
          pauses.push(window);
          noteFaults.push({ node: f.node, kind: f.kind, from, until: from + f.forMs });
          setTimeout(() => {
            if (node.gateway === gateway) gateway.kill('SIGCONT');
            node.paused = false;
            window.wokeAt = performance.now();
            window.until = window.wokeAt + AFTER_WAKE_MS;
          }, f.forMs).unref();
          return;
        }
        case 'kill': {
          const gateway = node.gateway;
          if (!gateway || node.paused) return;
          killed.add(gateway);
          gateway.kill('SIGKILL');
          node.gateway = undefined;
          // Notes the killed process had not sent yet are lost; its replacement starts clean.
          noteFaults.push({ node: f.node, kind: f.kind, from, until: from });
          track(
            (async () => {
              await gateway.exited;
              const next = await spawnGateway({ table: cluster.table, endpoint: node.proxy.endpoint, env, entry: options.entry });
              respawned.push(next);
              watch(next);
              node.gen++;
              if (stopping) next.kill('SIGKILL');
              else node.gateway = next;
            })().catch((err: unknown) => log(`fault-run: respawn failed: ${String(err)}`)),
          );
          return;
        }
      }
    };

    // ---- the schedule ---------------------------------------------------------------
    const timeline: Array<{ at: number; run: () => void }> = [
      ...schedule.ops.map((op) => ({ at: op.at, run: () => runOp(op) })),
      ...schedule.faults.map((f) => ({ at: f.at, run: () => runFault(f) })),
    ].sort((a, b) => a.at - b.at);
    const scheduleStart = performance.now();
    for (const item of timeline) {
      const wait = scheduleStart + item.at - performance.now();
      if (wait > 0) await sleep(wait);
      if (options.stopEarly && violations.length > 0) {
        stoppedEarly = true;
        break;
      }
      item.run();
    }
    if (!stoppedEarly) await sleep(Math.max(0, scheduleStart + shape.durationMs - performance.now()));
    const faultsEndAt = performance.now();

    // ---- heal, close everything ------------------------------------------------------
    for (const n of nodes) {
      n.episode++;
      n.proxy.set('pass');
      if (n.paused && n.gateway) {
        n.gateway.kill('SIGCONT');
        n.paused = false;
      }
    }
    for (const p of pauses) {
      p.wokeAt = Math.min(p.wokeAt, performance.now());
      p.until = Math.min(p.until, p.wokeAt + AFTER_WAKE_MS);
    }
    // Let a respawn finish, so every node has a gateway for the end check.
    const respawnDeadline = performance.now() + 20_000;
    while (nodes.some((n) => n.gateway === undefined) && performance.now() < respawnDeadline) await sleep(100);
    for (const s of socks) stop(s, 'end');
    await Promise.race([Promise.all(socks.map((s) => s.dev.closed)), sleep(5000)]);
    for (const s of socks) if (s.dev.ws.readyState !== s.dev.ws.CLOSED) s.dev.ws.terminate();
    const endAt = performance.now();

    // ---- the timeline check -------------------------------------------------------------
    // Who a revocation may have hit, from the devices' timelines: the named device's sockets alive while it
    // ran, or (takeover=oldest) the two earliest granted, in case the store's order differs from ours.
    for (const w of revocations) {
      const alive = socks.filter(
        (s) => s.user === w.user && s.id !== w.self && s.startedAt <= w.answeredAt && (s.stopAt ?? endAt) > w.from,
      );
      const target = w.target;
      const victims =
        'device' in target
          ? alive.filter((s) => s.device === target.device)
          : alive
              .filter((s) => s.device !== target.except && s.grantedAt !== undefined && s.grantedAt <= w.answeredAt)
              .sort((a, b) => a.grantedAt! - b.grantedAt!)
              .slice(0, 2);
      w.victims = new Set(victims.map((s) => s.id));
      const strictUntil = w.answeredAt + REVOKE_WINDOW_MS;
      // A mailbox note can be lost or held on its way out (any fault on the revoker's store path, or the
      // revoker frozen or gone), or on its way in when the victim's gateway cannot read its mailbox (blackhole;
      // a frozen victim is excused by its pause window, a killed one has no sockets, a reset beat is retried).
      const victimNodes = new Set(victims.map((s) => s.node));
      const noteAtRisk =
        w.unclean ||
        noteFaults.some(
          (f) =>
            (f.node === w.node && f.from <= w.answeredAt + NOTE_SEND_MS && f.until >= w.from) ||
            (f.kind === 'blackhole' && victimNodes.has(f.node) && f.from <= strictUntil && f.until >= w.from),
        );
      w.until = noteAtRisk ? w.answeredAt + LOST_NOTE_WINDOW_MS : strictUntil;
    }
    summary.windows['revocation windows'] = revocations.length;
    summary.windows['of which note at risk'] = revocations.filter((w) => w.until! - w.answeredAt > REVOKE_WINDOW_MS).length;
    summary.windows['of which unanswered (1013, 503)'] = revocations.filter((w) => w.unclean).length;
    summary.windows['pause windows'] = pauses.length;
    let longestExcused = 0;
    /** Can every socket over the limit be matched to a distinct open window that may have revoked it? (Kuhn's matching) */
    const excusable = (over: number, playing: Sock[], wins: RevocationWindow[]): boolean => {
      const owner = new Map<number, RevocationWindow>();
      const augment = (w: RevocationWindow, seenIds: Set<number>): boolean => {
        for (const s of playing) {
          if (!w.victims!.has(s.id) || seenIds.has(s.id)) continue;
          seenIds.add(s.id);
          const holder = owner.get(s.id);
          if (holder === undefined || augment(holder, seenIds)) {
            owner.set(s.id, w);
            return true;
          }
        }
        return false;
      };
      let matched = 0;
      for (const w of wins) if (augment(w, new Set())) matched++;
      return matched >= over;
    };
    for (let u = 0; u < shape.users; u++) {
      const limit = schedule.limits[u];
      const mine = socks.filter((s) => s.user === u && s.grantedAt !== undefined);
      const wins = revocations.filter((w) => w.user === u);
      const frozen = (s: Sock, a: number): boolean =>
        pauses.some((p) => p.node === s.node && p.gen === s.gen && s.grantedAt! < p.wokeAt && a >= p.from && a < p.until);
      const cuts = new Set<number>();
      for (const s of mine) cuts.add(s.grantedAt!).add(s.stopAt ?? endAt);
      for (const w of wins) cuts.add(w.from).add(w.until!);
      for (const p of pauses) cuts.add(p.from).add(p.until);
      const times = [...cuts].filter(Number.isFinite).sort((a, b) => a - b);
      let bad: { from: number; to: number; peak: number; windows: number } | undefined;
      let excusedFrom: number | undefined;
      const flush = (): void => {
        if (bad && bad.to - bad.from >= 10) {
          const span = bad;
          const during = mine
            .filter((s) => s.grantedAt! < span.to && (s.stopAt ?? endAt) > span.from)
            .map(
              (s) =>
                `#${s.id} ${s.device}@g${s.node}.${s.gen} granted ${Math.round(s.grantedAt! - started)} ` +
                `stop ${Math.round((s.stopAt ?? endAt) - started)} (${s.code ?? 'open'}${s.reason ? ` ${s.reason}` : ''})`,
            );
          const near = wins
            .filter((w) => w.from < span.to && w.until! > span.from - LOST_NOTE_WINDOW_MS)
            .map(
              (w) =>
                `${w.what} [${Math.round(w.from - started)}-${Math.round(w.until! - started)}] may hit ${[...w.victims!].map((id) => `#${id}`).join(',') || 'nobody we saw'}`,
            );
          violate({
            kind: 'sockets-over-limit',
            user: userName(u),
            atMs: span.from - started,
            detail:
              `${span.peak} granted sockets open for ${Math.round(span.to - span.from)} ms (limit ${limit}; ${span.windows} revocation ` +
              `window(s) open, not enough of them aimed at these sockets) - sockets: ${during.join('; ')} - windows: ${near.join('; ') || 'none'}`,
          });
        }
        bad = undefined;
      };
      for (let i = 0; i + 1 < times.length; i++) {
        const a = times[i];
        const b = times[i + 1];
        if (b <= a) continue;
        const playing = mine.filter((s) => s.grantedAt! <= a && (s.stopAt ?? endAt) > a && !frozen(s, a));
        const over = playing.length - limit;
        const open = wins.filter((w) => w.from <= a && w.until! > a);
        const ok = over <= 0 || excusable(over, playing, open);
        if (!ok) {
          if (bad && bad.to === a) {
            bad.to = b;
            bad.peak = Math.max(bad.peak, playing.length);
          } else {
            flush();
            bad = { from: a, to: b, peak: playing.length, windows: open.length };
          }
        } else {
          flush();
        }
        // Length of the longest excused overlap, for the record.
        if (over > 0 && ok) {
          excusedFrom ??= a;
          longestExcused = Math.max(longestExcused, b - excusedFrom);
        } else {
          excusedFrom = undefined;
        }
      }
      flush();
    }
    summary.windows['longest excused overlap (ms)'] = Math.round(longestExcused);
    const revokedCloses = socks.filter((s) => s.code === 4403 || s.code === 4409);
    summary.windows['revoked sockets (4403/4409)'] = revokedCloses.length;
    // How long after the answer of the revocation aimed at it a revoked socket heard its close (the README bound).
    let slowest = 0;
    for (const s of revokedCloses) {
      const aimed = revocations.filter((w) => w.victims!.has(s.id) && !w.unclean && w.answeredAt <= s.stopAt!);
      if (aimed.length > 0) slowest = Math.max(slowest, s.stopAt! - Math.max(...aimed.map((w) => w.answeredAt)));
    }
    summary.windows['slowest revocation, answer to 4403/4409 (ms)'] = Math.round(slowest);

    // ---- the end check --------------------------------------------------------------------
    const readUsers = async (): Promise<{ users: Map<string, Record<string, AttributeValue>>; live: Set<string> }> => {
      const out = await store.send(new ScanCommand({ TableName: cluster.table, ConsistentRead: true }));
      const users = new Map<string, Record<string, AttributeValue>>();
      const live = new Set<string>();
      const now = Date.now();
      for (const item of out.Items ?? []) {
        const pk = item.pk?.S ?? '';
        if (pk.startsWith('user#')) users.set(pk.slice(5), item);
        else if (pk.startsWith('instance#') && (num(item.expiresAt) ?? 0) > now) live.add(pk.slice(9));
      }
      return { users, live };
    };
    const entriesOf = (
      item: Record<string, AttributeValue> | undefined,
    ): Array<{ device: string; leaseId: string; instanceId: string; acquiredAt: number }> =>
      Object.entries(item ?? {})
        .filter(([k]) => k.startsWith('lease:'))
        .map(([k, v]) => ({
          device: k.slice(6),
          leaseId: v.M?.leaseId?.S ?? '',
          instanceId: v.M?.instanceId?.S ?? '',
          acquiredAt: num(v.M?.acquiredAt) ?? 0,
        }));
    /** Which process wrote an entry, what it logged about that device, and the faults around the write. */
    const history = (user: string, device: string, leaseId: string, instanceId: string, acquiredAt: number): string => {
      const owner = allGateways.findIndex((g) => g.lines.some((l) => l.includes(instanceId)));
      const at = acquiredAt - startedWall;
      const lines = (owner >= 0 ? allGateways[owner].lines : []).flatMap((l) => {
        try {
          // One JSON object per line (src/log.ts); only these fields are read.
          const rec = JSON.parse(l) as {
            time?: string;
            msg?: string;
            userId?: string;
            deviceId?: string;
            leaseId?: string;
            reason?: string;
            code?: number;
          };
          if (rec.userId !== user || rec.deviceId !== device) return [];
          const when = Date.parse(rec.time ?? '') - startedWall;
          if (when < at - 4000 || when > at + 8000) return [];
          const mine = rec.leaseId === leaseId ? ' (this lease)' : '';
          return [`${when} ${rec.msg ?? '?'}${mine}${rec.reason ? ` ${rec.reason}` : ''}${rec.code ? ` ${rec.code}` : ''}`];
        } catch {
          return [];
        }
      });
      const node = nodes.findIndex((n) => n.gateway !== undefined && allGateways.indexOf(n.gateway) === owner);
      const faults = applied
        .filter((f) => (node < 0 || f.node === node) && f.from - started <= at + 1000 && f.until - started >= at - 4000)
        .map(
          (f) =>
            `${f.kind}${f.delayMs ? ` ${f.delayMs} ms` : ''} on g${f.node} ${Math.round(f.from - started)}-${Math.round(f.until - started)}`,
        );
      return (
        `written at ${at} ms by gateway process ${owner >= 0 ? owner : '?'} (node ${node >= 0 ? node : '?'}, instance ${instanceId}); ` +
        `its log for ${user}/${device}: ${lines.join(' | ') || 'nothing'}; faults on that node around the write: ${faults.join(', ') || 'none'}`
      );
    };

    if (!stoppedEarly) {
      let last = await readUsers();
      const liveLeft = (): Array<[string, ReturnType<typeof entriesOf>]> =>
        [...last.users]
          .map(
            ([user, item]) => [user, entriesOf(item).filter((e) => last.live.has(e.instanceId))] as [string, ReturnType<typeof entriesOf>],
          )
          .filter(([, e]) => e.length > 0);
      const settled = faultsEndAt + END_SETTLE_MS;
      const deadline = faultsEndAt + END_BOUND_MS;
      while ((liveLeft().length > 0 || performance.now() < settled) && performance.now() < deadline) {
        await sleep(200);
        last = await readUsers();
      }
      summary.windows['end: heal to no live entry (ms)'] = Math.round(performance.now() - faultsEndAt);
      for (const [user, entries] of liveLeft()) {
        const u = Number(user.slice(1));
        const sockets = (device: string): string =>
          socks
            .filter((s) => s.user === u && s.device === device)
            .map((s) => {
              const at = (x: number | undefined): string => (x === undefined ? '-' : String(Math.round(x - started)));
              return `#${s.id} g${s.node}.${s.gen} start ${at(s.startedAt)} granted ${at(s.grantedAt)} stop ${at(s.stopAt)} (${s.code ?? '?'})`;
            })
            .join(', ');
        violate({
          kind: 'end-live-entries',
          user,
          atMs: t(),
          detail:
            `${END_BOUND_MS} ms after the heal (every client closed) the item still holds ${entries.length} ` +
            `entr${entries.length === 1 ? 'y' : 'ies'} of live instances (n = ${num(last.users.get(user)?.n) ?? 'absent'}, limit ${schedule.limits[u]}): ` +
            entries
              .map(
                (e) =>
                  `${e.device} lease ${e.leaseId} ${history(user, e.device, e.leaseId, e.instanceId, e.acquiredAt)}; this device's sockets: ${sockets(e.device)}`,
              )
              .join(' || '),
        });
      }

      // Every user can play on `limit` devices at once again, and the item is empty once they stop.
      const probes = await Promise.all(
        schedule.limits.flatMap((limit, u) =>
          Array.from({ length: limit }, async (_, i) => {
            const node = target(i)!;
            const dev = connect(node.gateway!.url, { token: tokens[u], device: `probe${i}` });
            const frame = await dev.decision.catch((err: Error) => ({ type: err.message }));
            return { u, dev, frame };
          }),
        ),
      );
      for (let u = 0; u < shape.users; u++) {
        const mine = probes.filter((p) => p.u === u);
        const refused = mine.filter((p) => p.frame.type !== 'granted');
        if (refused.length > 0) {
          const why = refused.map((p) => JSON.stringify(p.frame).slice(0, 200)).join('; ');
          violate({
            kind: 'end-capacity',
            user: userName(u),
            atMs: t(),
            detail: `only ${mine.length - refused.length} of ${mine.length} probe devices admitted: ${why}`,
          });
        }
      }
      await Promise.all(probes.map((p) => p.dev.close()));
      const emptyBy = performance.now() + 3000 + SLACK_MS;
      let notEmpty: Array<[string, string]> = [];
      do {
        last = await readUsers();
        notEmpty = [...last.users]
          .map(([user, item]): [string, string] => [
            user,
            `${
              entriesOf(item)
                .map((e) => e.device)
                .join(', ') || 'no entries'
            }, n = ${num(item.n) ?? 'absent'}`,
          ])
          .filter(([user]) => {
            const item = last.users.get(user)!;
            return entriesOf(item).length > 0 || (num(item.n) ?? 0) !== 0;
          });
        if (notEmpty.length === 0) break;
        await sleep(200);
      } while (performance.now() < emptyBy);
      for (const [user, what] of notEmpty)
        violate({ kind: 'end-not-empty', user, atMs: t(), detail: `after the probe devices stopped the item holds ${what}` });
    }
  } finally {
    // ---- tear down, also when something above threw: no gateway may outlive the run (stopped or not)
    stopping = true;
    polling = false;
    await poller;
    for (const s of socks) if (s.dev.ws.readyState !== s.dev.ws.CLOSED) s.dev.ws.terminate();
    await Promise.race([Promise.allSettled([...inFlight]), sleep(5000)]);
    for (const g of respawned) {
      g.kill('SIGCONT');
      g.kill('SIGKILL');
    }
    await Promise.all(respawned.map((g) => g.exited));
    await cluster.stop();
    store.destroy();
  }

  for (const n of nodes) for (const [mode, c] of n.proxy.faulted) count(summary.faultedRequests, mode, c);
  for (const g of allGateways) {
    for (const line of g.lines) {
      if (!line.includes('"level":"error"')) continue;
      try {
        count(summary.gatewayErrors, String((JSON.parse(line) as { msg?: unknown }).msg).slice(0, 80));
      } catch {
        count(summary.gatewayErrors, line.slice(0, 80));
      }
    }
  }
  summary.wallMs = Math.round(performance.now() - started);
  log(
    `fault-run summary (seed ${seed}${stoppedEarly ? ', stopped at the first violation' : ''}, ${(summary.wallMs / 1000).toFixed(1)} s): ` +
      `operations ${JSON.stringify(summary.ops)}; outcomes ${JSON.stringify(summary.outcomes)}; faults ${JSON.stringify(summary.faults)}; ` +
      `faulted requests ${JSON.stringify(summary.faultedRequests)}; limits ${JSON.stringify(summary.limits)}; peak entries ${JSON.stringify(summary.peakEntries)}; ` +
      `windows ${JSON.stringify(summary.windows)}; gateway errors ${JSON.stringify(summary.gatewayErrors)}; violations ${violations.length}`,
  );
  return { seed, violations, summary };
}
