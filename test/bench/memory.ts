/**
 * Phase 3 (memory and event-loop lag with idle leased sockets) and the
 * steady-state half of phase 4 (DynamoDB writes per open stream-hour while
 * those sockets sit idle), against a bare `ws` server holding the same
 * number of sockets from the same client processes.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CountingProxy, Counts } from './count-proxy.js';
import { diff } from './count-proxy.js';
import { progress, sample, sleep } from './measure.js';
import { openClients, rssBytes, startBareServer, startGateway, type ClientGroup } from './procs.js';
import { PRODUCTION_TIMINGS } from './storm.js';

export interface Level {
  connections: number;
  rssBytes: number;
  /** (RSS at this level - RSS with no connection) / connections. */
  perConnectionBytes: number;
  heapUsedBytes: number;
  /** V8 heap reserved (used + free space in its pages, young generation included). */
  heapTotalBytes: number;
  /** The same after the hold window and a full GC (only at levels with one): the figure for an idle server. */
  idleRssBytes?: number;
  idlePerConnectionBytes?: number;
  idleHeapUsedBytes?: number;
  /**
   * Live memory (V8 heap used + external) read inside the process right after that full GC (gc-probe.mjs
   * GC_PROBE_FILE), and per connection against the base read the same way: what the sockets hold, without
   * the reserve V8 keeps after a burst (which RSS includes, and which differs run to run).
   */
  idleLiveBytes?: number;
  idleLivePerConnectionBytes?: number;
}

export interface SteadyWindow {
  connections: number;
  seconds: number;
  /** Requests the proxy saw in the window, by operation and item kind. */
  proxy: Counts;
  /** Delta of the gateway's own sigma_dynamodb_requests_total in the window, by operation. */
  gateway: Counts;
  writes: number;
  writesPerStreamHour: number;
  /** Times the gateway fenced itself in the window (then it is no steady state), and streams left at its end. */
  fencings: number;
  streamsAtEnd: number;
}

export interface Lag {
  connections: number;
  seconds: number;
  /** Raw monitorEventLoopDelay figures over the window (its 10 ms resolution timer included), ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface ServerMemory {
  baseRssBytes: number;
  /** Heap used + external right after a full GC, before the first level. */
  baseLiveBytes: number;
  baseHeapUsedBytes: number;
  baseHeapTotalBytes: number;
  levels: Level[];
  lag?: Lag;
  steady: SteadyWindow[];
}

export interface MemoryResult {
  levels: number[];
  pingIntervalMs: number;
  pongTimeoutMs: number;
  heartbeatMs: number;
  instanceTtlMs: number;
  holdSeconds: number;
  bare: ServerMemory;
  gateway: ServerMemory;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function settledRss(read: () => number): Promise<number> {
  await sleep(2000);
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    xs.push(read());
    await sleep(200);
  }
  return median(xs);
}

interface Snapshot {
  lagMs: { p50Ms: number; p99Ms: number; maxMs: number };
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** Gateway only: sigma_fencing_events_total and sigma_streams_active (0 for the bare server). */
  fencings: number;
  streams: number;
  /** The gateway's own sigma_dynamodb_requests_total by operation (empty for the bare server). */
  requests: Counts;
}

/** What the memory phase needs of either server; snapshot() also resets the lag window. */
interface Probe {
  url: string;
  pid: number;
  /** Where gc-probe.mjs writes process.memoryUsage() after each full GC. */
  gcFile: string;
  snapshot(): Promise<Snapshot>;
  stop(): Promise<void>;
}

const gcFile = (kind: string): string => join(tmpdir(), `sigma-gc-${kind}-${process.pid}.json`);

/**
 * Runs a full GC in each server (SIGUSR2, gc-probe.mjs) and returns each one's live memory right after
 * it: heap used + external, from the process.memoryUsage() the probe writes.
 */
async function collect(probes: readonly Probe[]): Promise<number[]> {
  for (const p of probes) rmSync(p.gcFile, { force: true });
  for (const p of probes) process.kill(p.pid, 'SIGUSR2');
  return Promise.all(
    probes.map(async (p) => {
      for (let i = 0; i < 100 && !existsSync(p.gcFile); i++) await sleep(50);
      const m = JSON.parse(readFileSync(p.gcFile, 'utf8')) as { heapUsed: number; external: number };
      return m.heapUsed + m.external;
    }),
  );
}

async function bareProbe(pingIntervalMs: number): Promise<Probe> {
  const file = gcFile('bare');
  const bare = await startBareServer(pingIntervalMs, true, [], { GC_PROBE_FILE: file });
  return {
    url: bare.url,
    pid: bare.proc.pid!,
    gcFile: file,
    snapshot: async () => {
      const s = await bare.stats();
      return {
        lagMs: { p50Ms: s.lagMs.p50, p99Ms: s.lagMs.p99, maxMs: s.lagMs.max },
        heapUsedBytes: s.heapUsedBytes,
        heapTotalBytes: s.heapTotalBytes,
        fencings: 0,
        streams: s.connections,
        requests: {},
      };
    },
    stop: () => bare.stop(),
  };
}

const OPS = ['UpdateItem', 'PutItem', 'DeleteItem', 'GetItem', 'BatchGetItem'];

async function gatewayProbe(opts: { proxy: CountingProxy; table: string; pingIntervalMs: number; pongTimeoutMs: number }): Promise<Probe> {
  const file = gcFile('gateway');
  const gw = await startGateway({
    endpoint: opts.proxy.endpoint,
    table: opts.table,
    gcProbe: true,
    // Production timings first: the tests' shrunk ones (under gatewayEnv) would run a reconcile round over every
    // held socket's user every 2 s, whose reads and garbage the idle hold would then measure.
    env: {
      ...PRODUCTION_TIMINGS,
      PING_INTERVAL_MS: String(opts.pingIntervalMs),
      PONG_TIMEOUT_MS: String(opts.pongTimeoutMs),
      INSTANCE_HEARTBEAT_MS: String(HEARTBEAT_MS),
      INSTANCE_TTL_MS: String(INSTANCE_TTL_MS),
      FENCING_MARGIN_MS: '5000',
      ADMISSION_TIMEOUT_MS: '10000',
      DYNAMODB_REQUEST_TIMEOUT_MS: '5000',
      GC_PROBE_FILE: file,
    },
  });
  return {
    url: gw.url,
    pid: gw.proc.pid!,
    gcFile: file,
    snapshot: async () => {
      const text = await gw.metrics();
      const requests: Counts = {};
      for (const op of OPS) requests[op] = sample(text, 'sigma_dynamodb_requests_total', { operation: op });
      return {
        lagMs: {
          p50Ms: sample(text, 'nodejs_eventloop_lag_p50_seconds') * 1000,
          p99Ms: sample(text, 'nodejs_eventloop_lag_p99_seconds') * 1000,
          maxMs: sample(text, 'nodejs_eventloop_lag_max_seconds') * 1000,
        },
        heapUsedBytes: sample(text, 'nodejs_heap_size_used_bytes'),
        heapTotalBytes: sample(text, 'nodejs_heap_size_total_bytes'),
        fencings: sample(text, 'sigma_fencing_events_total'),
        streams: sample(text, 'sigma_streams_active'),
        requests,
      };
    },
    stop: () => gw.stop(),
  };
}

/** Production defaults: the steady-state cost is measured with them. */
const HEARTBEAT_MS = 5000;
const INSTANCE_TTL_MS = 20000;
const WRITE_OPS = ['UpdateItem', 'PutItem', 'DeleteItem', 'BatchWriteItem'];

export async function measureMemory(opts: {
  proxy: CountingProxy;
  table: string;
  levels: number[];
  /** Levels at which to hold for a steady-state window (first and last). */
  holdSeconds: number;
  pingIntervalMs: number;
  pongTimeoutMs: number;
}): Promise<MemoryResult> {
  const result: MemoryResult = {
    levels: opts.levels,
    pingIntervalMs: opts.pingIntervalMs,
    pongTimeoutMs: opts.pongTimeoutMs,
    heartbeatMs: HEARTBEAT_MS,
    instanceTtlMs: INSTANCE_TTL_MS,
    holdSeconds: opts.holdSeconds,
    bare: { baseRssBytes: 0, baseLiveBytes: 0, baseHeapUsedBytes: 0, baseHeapTotalBytes: 0, levels: [], steady: [] },
    gateway: { baseRssBytes: 0, baseLiveBytes: 0, baseHeapUsedBytes: 0, baseHeapTotalBytes: 0, levels: [], steady: [] },
  };
  const top = opts.levels[opts.levels.length - 1];
  const holdAt = new Set([opts.levels[0], top]);

  // Both servers run side by side and are measured in the same windows, so the lag baseline sees the same machine.
  const servers = { bare: await bareProbe(opts.pingIntervalMs), gateway: await gatewayProbe(opts) };
  const kinds = ['bare', 'gateway'] as const;
  const groups: ClientGroup[] = [];
  try {
    for (const kind of kinds) {
      // Warm up the code paths (JIT, SDK, HTTP agent) so the base is a running server, not a cold one.
      const warm = await openClients(servers[kind].url, `${kind}-warm`, 100);
      await warm.close();
    }
    const baseLive = await collect(kinds.map((k) => servers[k]));
    for (const [i, kind] of kinds.entries()) {
      result[kind].baseLiveBytes = baseLive[i];
      result[kind].baseRssBytes = await settledRss(() => rssBytes(servers[kind].pid));
      const snap = await servers[kind].snapshot();
      result[kind].baseHeapUsedBytes = snap.heapUsedBytes;
      result[kind].baseHeapTotalBytes = snap.heapTotalBytes;
    }
    const held = { bare: 0, gateway: 0 };
    for (const level of opts.levels) {
      for (const kind of kinds) {
        progress(`memory (${kind}): opening sockets up to ${level}`);
        // On a loaded machine some admissions time out (1013): open more until the level is held.
        // Figures are per socket actually held (a refused one is closed by the server).
        for (let attempt = 0; held[kind] < level; attempt++) {
          if (attempt === 4) throw new Error(`memory (${kind}): only ${held[kind]} of ${level} sockets granted after ${attempt} attempts`);
          const group = await openClients(servers[kind].url, `${kind}-${level}-${attempt}`, level - held[kind]);
          groups.push(group);
          held[kind] += group.granted;
        }
      }
      for (const kind of kinds) {
        const rss = await settledRss(() => rssBytes(servers[kind].pid));
        const snap = await servers[kind].snapshot();
        result[kind].levels.push({
          connections: held[kind],
          rssBytes: rss,
          perConnectionBytes: (rss - result[kind].baseRssBytes) / held[kind],
          heapUsedBytes: snap.heapUsedBytes,
          heapTotalBytes: snap.heapTotalBytes,
        });
      }
      if (!holdAt.has(level)) continue;

      progress(`memory: holding ${held.gateway} + ${held.bare} idle sockets for ${opts.holdSeconds} s`);
      // A snapshot resets the lag histogram (prom-client and the bare server alike): the window starts now.
      const before = { bare: await servers.bare.snapshot(), gateway: await servers.gateway.snapshot() };
      const proxyBefore = opts.proxy.snapshot();
      const t0 = performance.now();
      await sleep(opts.holdSeconds * 1000);
      const seconds = (performance.now() - t0) / 1000;
      const after = { bare: await servers.bare.snapshot(), gateway: await servers.gateway.snapshot() };
      // The proxy's books close with the window, before the slow RSS reads below (a heartbeat lands every 5 s).
      const proxy = diff(opts.proxy.snapshot(), proxyBefore);
      // RSS again after the idle window and one full GC in each server (gc-probe.mjs): what the sockets
      // themselves hold, without the heap headroom the admission burst left behind.
      const idleLive = await collect(kinds.map((k) => servers[k]));
      for (const [i, kind] of kinds.entries()) {
        const entry = result[kind].levels[result[kind].levels.length - 1];
        entry.idleLiveBytes = idleLive[i];
        entry.idleLivePerConnectionBytes = (idleLive[i] - result[kind].baseLiveBytes) / entry.connections;
        entry.idleRssBytes = await settledRss(() => rssBytes(servers[kind].pid));
        entry.idlePerConnectionBytes = (entry.idleRssBytes - result[kind].baseRssBytes) / entry.connections;
        entry.idleHeapUsedBytes = (await servers[kind].snapshot()).heapUsedBytes;
      }
      if (level === top) for (const kind of kinds) result[kind].lag = { connections: held[kind], seconds, ...after[kind].lagMs };
      const writes = WRITE_OPS.reduce((s, op) => s + (proxy[op] ?? 0), 0);
      result.gateway.steady.push({
        connections: held.gateway,
        seconds,
        proxy,
        gateway: diff(after.gateway.requests, before.gateway.requests),
        writes,
        writesPerStreamHour: writes / (held.gateway * (seconds / 3600)),
        fencings: after.gateway.fencings - before.gateway.fencings,
        streamsAtEnd: after.gateway.streams,
      });
    }
  } finally {
    await Promise.all(groups.map((g) => g.close()));
    await Promise.all(kinds.map((k) => servers[k].stop()));
  }
  return result;
}
