/**
 * Memory per idle leased socket, standalone (issue 13): a gateway (dist/main.js,
 * production timings) and the bare ws server each hold N idle sockets from the
 * same client processes; after a hold and a full GC it prints RSS and V8 heap
 * per socket, and with --snapshot DIR writes heap snapshots of each server with
 * no socket and with N (DIR/<gateway|bare>-<base|held>.heapsnapshot; read them
 * with test/bench/heap-summary.mjs).
 *
 *   npx tsc -p . && node --import tsx test/bench/heap-probe.ts [--sockets 5000] [--hold 30] [--ping MS] [--snapshot DIR]
 *     [--entry other/dist/main.js] [--env NAME=VALUE ...] [--regc K]
 *
 * Heap snapshots are taken with --heapsnapshot-signal (V8 collects all garbage
 * first), so the figures in them are what survives a full GC.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { sleep } from './measure.js';
import { dynamoLocal, openClients, rssBytes, startBareServer, startGateway, stopAll, type ClientGroup } from './procs.js';
import { PRODUCTION_TIMINGS } from './storm.js';

const { values } = parseArgs({
  options: {
    sockets: { type: 'string' },
    hold: { type: 'string' },
    snapshot: { type: 'string' },
    ping: { type: 'string' },
    entry: { type: 'string' },
    env: { type: 'string', multiple: true },
    regc: { type: 'string' },
  },
});
const sockets = Number(values.sockets ?? 5000);
const holdS = Number(values.hold ?? 30);
const dir = values.snapshot === undefined ? undefined : resolve(values.snapshot);
if (dir) mkdirSync(dir, { recursive: true });
// --ping MS: the memory phase's timings (ping every MS, pong timeout MS/2) instead of production's 20 s / 10 s.
const timings: Record<string, string> =
  values.ping === undefined ? {} : { PING_INTERVAL_MS: values.ping, PONG_TIMEOUT_MS: String(Number(values.ping) / 2) };
const snapArgs = dir ? ['--heapsnapshot-signal=SIGWINCH', `--diagnostic-dir=${dir}`] : [];

// gc-probe.mjs writes each server's memoryUsage() right after the full GC here.
const gcFile = (kind: string): string => join(tmpdir(), `heap-probe-${process.pid}-${kind}.json`);
const local = await dynamoLocal();
const gw = await startGateway({
  endpoint: local.endpoint,
  table: `heap-probe-${Date.now()}`,
  gcProbe: true,
  execArgv: snapArgs,
  entry: values.entry,
  env: {
    ...PRODUCTION_TIMINGS,
    ...timings,
    ...Object.fromEntries((values.env ?? []).map((kv: string) => kv.split('=', 2))),
    GC_PROBE_FILE: gcFile('gateway'),
  },
});
process.env.GC_PROBE_FILE = gcFile('bare'); // the bare server inherits this process's environment
const bare = await startBareServer(Number(values.ping ?? PRODUCTION_TIMINGS.PING_INTERVAL_MS), true, snapArgs);
const servers = { gateway: { url: gw.url, pid: gw.proc.pid! }, bare: { url: bare.url, pid: bare.proc.pid! } };
const kinds = ['gateway', 'bare'] as const;

/** Full GC, then RSS 2 s later and heap used right after the GC. */
async function gcAndRss(kind: (typeof kinds)[number]): Promise<{ rss: number; liveHeap: number }> {
  rmSync(gcFile(kind), { force: true });
  process.kill(servers[kind].pid, 'SIGUSR2');
  await sleep(2000);
  const liveHeap = (JSON.parse(readFileSync(gcFile(kind), 'utf8')) as { heapUsed: number }).heapUsed;
  return { rss: rssBytes(servers[kind].pid), liveHeap };
}

interface Heap {
  used: number;
  total: number;
  /** Of the total: the young generation's reserve (V8 sizes it up under allocation and keeps it). */
  newTotal: number;
  external: number;
}

async function heapUsed(kind: (typeof kinds)[number]): Promise<Heap> {
  if (kind === 'bare') {
    const s = (await bare.stats()) as { heapUsedBytes: number; heapTotalBytes: number; newSpaceBytes?: number; externalBytes?: number };
    return { used: s.heapUsedBytes, total: s.heapTotalBytes, newTotal: s.newSpaceBytes ?? NaN, external: s.externalBytes ?? NaN };
  }
  const text = await gw.metrics();
  const read = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  return {
    used: read('nodejs_heap_size_used_bytes'),
    total: read('nodejs_heap_size_total_bytes'),
    newTotal: Number(/^nodejs_heap_space_size_total_bytes\{space="new"\} (\S+)/m.exec(text)?.[1] ?? NaN),
    external: read('nodejs_external_memory_bytes'),
  };
}

/** Writes a heap snapshot of one server and waits until its file is complete. */
async function snapshot(kind: (typeof kinds)[number], label: string): Promise<void> {
  const before = new Set(readdirSync(dir!));
  process.kill(servers[kind].pid, 'SIGWINCH');
  let file: string | undefined;
  for (let last = -1; ;) {
    await sleep(1000);
    file ??= readdirSync(dir!).find((f) => !before.has(f));
    const size = file ? statSync(join(dir!, file)).size : -1;
    if (size > 0 && size === last) break;
    last = size;
  }
  renameSync(join(dir!, file!), join(dir!, `${kind}-${label}.heapsnapshot`));
  console.log(`${kind} snapshot (${label}): ${join(dir!, `${kind}-${label}.heapsnapshot`)}`);
}

const groups: ClientGroup[] = [];
try {
  for (const kind of kinds) await (await openClients(servers[kind].url, `${kind}-warm`, 100)).close();
  const base: Record<string, { rss: number; liveHeap: number } & Heap> = {};
  for (const kind of kinds) base[kind] = { ...(await gcAndRss(kind)), ...(await heapUsed(kind)) };
  if (dir) for (const kind of kinds) await snapshot(kind, 'base');
  for (const kind of kinds) {
    // On a loaded machine some admissions time out (1013): open more until N are held, as memory.ts does.
    for (let held = 0, attempt = 0; held < sockets; attempt++) {
      if (attempt === 4) throw new Error(`${kind}: only ${held} of ${sockets} granted`);
      const group = await openClients(servers[kind].url, `${kind}-n${attempt}`, sockets - held);
      groups.push(group);
      held += group.granted;
      if (group.failed > 0)
        console.log(`${kind}: ${group.failed} of ${group.granted + group.failed} not granted (attempt ${attempt}), opening more`);
    }
  }
  await sleep(holdS * 1000);
  for (const kind of kinds) {
    const { rss, liveHeap } = await gcAndRss(kind);
    const heap = await heapUsed(kind);
    const b = base[kind];
    const per = (x: number, y: number): string => `${((x - y) / sockets / 1024).toFixed(2)} KB`;
    console.log(
      `${kind.padEnd(8)} rss ${(rss / 2 ** 20).toFixed(1)} MB (${per(rss, b.rss)}/socket)  ` +
        `live heap ${(liveHeap / 2 ** 20).toFixed(1)} MB (${per(liveHeap, b.liveHeap)}/socket)  heap used 2 s later ${(heap.used / 2 ** 20).toFixed(1)} MB ` +
        `(${per(heap.used, b.used)}/socket)  heap total ${(heap.total / 2 ** 20).toFixed(1)} MB (${per(heap.total, b.total)}/socket, young ${(heap.newTotal / 2 ** 20).toFixed(1)} MB)  external ${(heap.external / 2 ** 20).toFixed(1)} MB (${per(heap.external, b.external)}/socket)`,
    );
  }
  // --regc K: K more full GCs 2 s apart, then the figures again (does V8 give the burst's pages back?).
  if (values.regc !== undefined) {
    for (let i = 0; i < Number(values.regc); i++) for (const kind of kinds) await gcAndRss(kind);
    for (const kind of kinds) {
      const { rss, liveHeap } = await gcAndRss(kind);
      const { total } = await heapUsed(kind);
      console.log(
        `${kind.padEnd(8)} after ${values.regc} more GCs: rss ${(rss / 2 ** 20).toFixed(1)} MB (${((rss - base[kind].rss) / sockets / 1024).toFixed(2)} KB/socket)  ` +
          `live heap ${(liveHeap / 2 ** 20).toFixed(1)} MB  heap total ${(total / 2 ** 20).toFixed(1)} MB`,
      );
    }
  }
  if (dir) for (const kind of kinds) await snapshot(kind, 'held');
} finally {
  await Promise.all(groups.map((g) => g.close()));
  await Promise.all([gw.stop(), bare.stop()]);
  await stopAll();
}
