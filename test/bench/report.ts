/**
 * The bench's findings as Markdown (report.md) and JSON (report.json), with
 * the latency plot (latency-cdf.svg) next to them. Every figure sits beside
 * its same-run baseline; every section names the machine and configuration.
 */
import type { LatencyResult, ThroughputResult } from './admission.js';
import type { PerOperation, RenewalRun } from './cost.js';
import type { FreeingResult } from './freeing.js';
import type { Machine, Summary } from './measure.js';
import type { MemoryResult } from './memory.js';
import type { KickoffResult, StormResult, ThrottleResult } from './storm.js';
import type { SweepResult } from './sweep.js';

export interface Results {
  mode: 'full' | 'quick';
  machine: Machine;
  /** 1, 5 and 15 minute load averages when the run started and ended (the machine is shared). */
  loadAverage: { before: number[]; after: number[] };
  durationS: number;
  latency: LatencyResult;
  throughput: ThroughputResult;
  /** Phase 2 against the minimal gateway (test/bench/minimal-gateway.mjs). */
  minimal: ThroughputResult;
  /** Phase 1 with the gateway alone on core 0 (undefined on a single core). */
  pinnedLatency?: LatencyResult;
  memory: MemoryResult;
  perOperation: PerOperation[];
  renewal: RenewalRun[];
  freeing: FreeingResult;
  sweep: SweepResult;
  storm: StormResult;
  throttled: ThrottleResult;
  kickoff: KickoffResult;
}

export interface Target {
  id: string;
  what: string;
  target: string;
  value: string;
  pass: boolean;
  /** Why it was missed and what would close it (only when missed). */
  gap?: string;
}

const KB = 1024;
const f = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const kb = (bytes: number): string => `${f(bytes / KB, 1)} KB`;
const mb = (bytes: number): string => `${f(bytes / KB / KB, 1)} MB`;
const passMark = (t: Target): string => (t.pass ? '**pass**' : '**miss**');

/** Pinned phase: the latency a gateway adds before any work of its own (a new connection and upgrade, the store seen from core 0), per quantile. */
function pinnedFloor(p: LatencyResult): Pick<Summary, 'p50' | 'p90' | 'p99' | 'mean'> | undefined {
  const { grantAtOnce: c, rawElsewhere: e, raw } = p;
  if (c === undefined || e === undefined) return undefined;
  const at = (q: 'p50' | 'p90' | 'p99' | 'mean'): number => c[q] + e[q] - raw[q];
  return { p50: at('p50'), p90: at('p90'), p99: at('p99'), mean: at('mean') };
}

function last<T>(xs: readonly T[]): T {
  return xs[xs.length - 1];
}

function sweepTargets(sw: SweepResult): Target[] {
  const [base, ...rest] = sw.levels;
  return rest.map((l) => {
    const worst = l.rtt.max - base.rtt.max;
    const p99 = l.rtt.p99 - base.rtt.p99;
    const lost = l.lostPongs + l.pingTimeouts;
    return {
      id: `sweep-${l.sockets}`,
      what: `Ping sweep at ${l.sockets} idle sockets (ping every ${sw.pingIntervalMs / 1000} s): control device's app-ping round trip over its round trip with ${base.sockets} sockets`,
      target: 'worst +25 ms, p99 +10 ms, 0 pongs lost',
      value: `worst +${f(worst, 1)} ms (${f(l.rtt.max, 1)} vs ${f(base.rtt.max, 1)}), p99 +${f(p99, 1)} ms (${f(l.rtt.p99, 1)} vs ${f(base.rtt.p99, 1)}), ${l.lostPongs} app pongs and ${l.pingTimeouts} protocol pongs lost`,
      pass: worst <= 25 && p99 <= 10 && lost === 0,
    };
  });
}

export function targets(r: Results): Target[] {
  const lat = r.latency;
  const addedP99 = lat.gateway.p99 - lat.raw.p99;
  const addedP50 = lat.gateway.p50 - lat.raw.p50;
  const tput = r.throughput.gatewayPerSec / r.throughput.rawPerSec;
  // Reports from before the plain client's rounds judged against the gateway's own client.
  const plainCpu = r.throughput.plain?.bench ?? r.throughput.raw.bench;
  const top = last(r.memory.gateway.levels);
  const bareTop = last(r.memory.bare.levels);
  const perConn = top.idlePerConnectionBytes ?? top.perConnectionBytes;
  const barePerConn = bareTop.idlePerConnectionBytes ?? bareTop.perConnectionBytes;
  // Live memory after the GC when the run read it (reports before it judged RSS).
  const livePerConn = top.idleLivePerConnectionBytes;
  const bareLivePerConn = bareTop.idleLivePerConnectionBytes;
  const live = livePerConn !== undefined && bareLivePerConn !== undefined;
  const adm = r.perOperation.find((p) => p.step.startsWith('admission'))!;
  const rel = r.perOperation.find((p) => p.step.startsWith('release'))!;
  const steadyTop = last(r.memory.gateway.steady);
  const fr = r.freeing;
  const list: Target[] = [
    ...(r.pinnedLatency
      ? (() => {
          const p = r.pinnedLatency;
          const a50 = p.gateway.p50 - p.raw.p50;
          const a99 = p.gateway.p99 - p.raw.p99;
          const floor = pinnedFloor(p);
          return [
            {
              id: 'latency-pinned-p50',
              what: 'Added admission latency p50 over the raw round trip, gateway alone on core 0 (taskset), store and client on core 1',
              target: '≤ 0.5 ms',
              value: `${f(a50)} ms (gateway ${f(p.gateway.p50)} vs raw ${f(p.raw.p50)} ms)${p.minimal ? `; the minimal gateway on the same core adds ${f(p.minimal.p50 - p.raw.p50)} ms` : ''}${floor ? `; a new connection and upgrade alone, with the raw call sent from core 0, add ${f(floor.p50)} ms` : ''}`,
              pass: a50 <= 0.5,
            },
            {
              id: 'latency-pinned-p99',
              what: 'Added admission latency p99, same pinning',
              target: '≤ 2 ms',
              value: `${f(a99)} ms (gateway ${f(p.gateway.p99)} vs raw ${f(p.raw.p99)} ms)${p.minimal ? `; the minimal gateway adds ${f(p.minimal.p99 - p.raw.p99)} ms` : ''}${floor ? `; the floor ${f(floor.p99)} ms` : ''}`,
              pass: a99 <= 2,
            },
          ];
        })()
      : []),
    {
      id: 'latency',
      what: 'Added admission latency p99 over the raw store round trip, unpinned',
      target: 'reported',
      value: `${f(addedP99)} ms (gateway ${f(lat.gateway.p99)} ms vs raw ${f(lat.raw.p99)} ms; p50 +${f(addedP50)} ms)`,
      pass: true,
    },
    {
      id: 'cpu-per-admission',
      what: "Gateway CPU per admission against a plain SDK client's CPU per raw conditional UpdateItem (DynamoDBClient with the SDK's defaults, `send(cmd)`; concurrency 32)",
      target: '≤ 1.4×',
      value: `${f(r.throughput.gatewayCpu.gateway / plainCpu)}× (${f(r.throughput.gatewayCpu.gateway)} vs ${f(plainCpu)} CPU-ms); against the gateway's own store client as the gateway sends (first attempt by hand) ${f(r.throughput.gatewayCpu.gateway / r.throughput.raw.bench)}× (${f(r.throughput.raw.bench)} CPU-ms); throughput ${f(tput * 100, 0)} % of raw (${f(r.throughput.gatewayPerSec, 0)}/s vs ${f(r.throughput.rawPerSec, 0)}/s)`,
      pass: r.throughput.gatewayCpu.gateway / plainCpu <= 1.4,
    },
    {
      id: 'cpu-vs-minimal',
      what: 'Gateway CPU per admission against the minimal gateway (ws, the same SDK client, an HS256 check, no logs or metrics), each over its own raw UpdateItems',
      target: 'at or below the minimal gateway',
      value: `${f(r.throughput.gatewayCpu.gateway / r.throughput.raw.bench)}× raw vs minimal ${f(r.minimal.gatewayCpu.gateway / r.minimal.raw.bench)}× raw (${f(r.throughput.gatewayCpu.gateway)} vs ${f(r.minimal.gatewayCpu.gateway)} CPU-ms)`,
      pass: r.throughput.gatewayCpu.gateway / r.throughput.raw.bench <= r.minimal.gatewayCpu.gateway / r.minimal.raw.bench,
    },
    live
      ? {
          id: 'memory',
          what: `Memory per idle leased connection at ${top.connections} connections against a bare ws server: live heap + external after ${r.memory.holdSeconds} s idle and a full GC, read inside each process`,
          target: '≤ bare + 1 KB',
          value: `${kb(livePerConn)} vs bare ws ${kb(bareLivePerConn)} (${livePerConn >= bareLivePerConn ? '+' : ''}${kb(livePerConn - bareLivePerConn)}); RSS, V8's reserve included, ${kb(perConn)} vs ${kb(barePerConn)}`,
          pass: livePerConn - bareLivePerConn <= KB,
        }
      : {
          id: 'memory',
          what: `RSS per idle leased connection at ${top.connections} connections against a bare ws server (after ${r.memory.holdSeconds} s idle and a full GC)`,
          target: '≤ bare + 1 KB',
          value: `${kb(perConn)} vs bare ws ${kb(barePerConn)} (${perConn >= barePerConn ? '+' : ''}${kb(perConn - barePerConn)}; right after the ramp ${kb(top.perConnectionBytes)} vs ${kb(bareTop.perConnectionBytes)})`,
          pass: perConn - barePerConn <= KB,
        },
    ...sweepTargets(r.sweep),
    {
      id: 'storm',
      what: `Reconnect storm: ${r.storm.devices} players, SIGTERM on A, all granted again through B`,
      target: `≤ 1.4 × (DRAIN_MS + ${r.storm.devices} ÷ raw writes/s) = ${f((1.4 * r.storm.floorMs) / 1000, 1)} s`,
      value: `${f(r.storm.allGrantedMs / 1000, 1)} s (${f(r.storm.allGrantedMs / r.storm.floorMs)} × the floor ${f(r.storm.floorMs / 1000, 1)} s); B's peak event-loop delay ${f(r.storm.bLagMaxMs, 0)} ms`,
      pass: r.storm.allGrantedMs <= 1.4 * r.storm.floorMs && r.storm.missing === 0,
    },
    {
      id: 'storm-denials',
      what: 'Reconnect storm: false denials (nobody was over the limit)',
      target: '0',
      value: `${r.storm.falseDenials} (players that ended instead of returning: ${r.storm.ended}, not back in time: ${r.storm.missing})`,
      pass: r.storm.falseDenials === 0 && r.storm.ended === 0,
    },
    {
      id: 'throttled',
      what: `Throttled store (${r.throttled.allowedWritesPerSec} writes/s allowed): every admission granted or 1013 within its deadline, none lost or leaked`,
      target: 'all',
      value: `${r.throttled.granted} granted + ${r.throttled.tryLater} 1013 of ${r.throttled.admissions}; other ${r.throttled.other}, late ${r.throttled.late}, leaked ${r.throttled.leaked}, in flight at the end ${r.throttled.inFlightAtEnd}; ${f(r.throttled.grantedPerSec, 0)} admissions/s against ${r.throttled.allowedWritesPerSec} writes/s allowed`,
      pass: r.throttled.other === 0 && r.throttled.late === 0 && r.throttled.leaked === 0 && r.throttled.inFlightAtEnd === 0,
    },
    {
      id: 'kickoff',
      what: `Kick-off: ${r.kickoff.users} new users within ${r.kickoff.windowS} s, time to granted`,
      target: 'all granted; p50/p99 reported',
      value: `${r.kickoff.granted}/${r.kickoff.users} granted; p50 ${f(r.kickoff.gateway.p50)} ms, p99 ${f(r.kickoff.gateway.p99)} ms (raw UpdateItems at the same rate: p50 ${f(r.kickoff.raw.p50)}, p99 ${f(r.kickoff.raw.p99)} ms${r.kickoff.connectionFloor ? `; a ws server that grants at once: p50 ${f(r.kickoff.connectionFloor.p50)}, p99 ${f(r.kickoff.connectionFloor.p99)} ms` : ''})`,
      pass: r.kickoff.granted === r.kickoff.users,
    },
    {
      id: 'writes-admission',
      what: 'DynamoDB writes per admission below the limit',
      target: 'exactly 1',
      value: `${f(adm.writesPerStep, 3)} (proxy), counters agree: ${adm.agree ? 'yes' : 'no'}`,
      pass: adm.writesPerStep === 1 && adm.requestsPerStep === 1 && adm.agree,
    },
    {
      id: 'writes-release',
      what: 'DynamoDB writes per release',
      target: 'exactly 1',
      value: `${f(rel.writesPerStep, 3)} (proxy), counters agree: ${rel.agree ? 'yes' : 'no'}`,
      pass: rel.writesPerStep === 1 && rel.requestsPerStep === 1 && rel.agree,
    },
    {
      id: 'steady-cost',
      what: `Steady-state writes per open stream-hour at ${steadyTop.connections} streams on one instance`,
      target: '≤ 0.1',
      value:
        `${f(steadyTop.writesPerStreamHour, 3)} (${steadyTop.writes} writes in ${f(steadyTop.seconds, 1)} s)` +
        (steadyTop.fencings > 0 ? `; the gateway fenced itself in this window, so it was no steady state` : ''),
      pass: steadyTop.writesPerStreamHour <= 0.1 && steadyTop.fencings === 0,
      gap:
        steadyTop.fencings > 0
          ? `The gateway's event loop stalled (max ${f((r.memory.gateway.lag?.maxMs ?? 0) / 1000, 1)} s in the window, bare ws server ${f((r.memory.bare.lag?.maxMs ?? 0) / 1000, 1)} s) ` +
            `for longer than INSTANCE_TTL_MS − FENCING_MARGIN_MS, so it fenced as designed: it closed its sockets with 4408 (${steadyTop.streamsAtEnd} streams left at the end of the window), ` +
            `registered a new instance, and the window counts the writes of that recovery rather than heartbeats. The machine was starved (both servers stalled); ` +
            `what would close it: rerun on a machine that is not oversubscribed, and see section 3 for the stall.`
          : r.mode === 'quick'
            ? `Quick mode holds only ${steadyTop.connections} streams: one heartbeat per ${r.memory.heartbeatMs / 1000} s is shared by fewer streams. The full run measures 10k.`
            : `One heartbeat every ${r.memory.heartbeatMs / 1000} s is ${3600000 / r.memory.heartbeatMs} writes an hour per instance, shared by its streams.`,
    },
    {
      id: 'dead-device',
      what: 'Dead device (no pongs) to slot free, worst of trials',
      target: `≤ ping + pong + 1 s = ${fr.deadDevice.boundMs} ms`,
      value: `${f(fr.deadDevice.ms.max, 0)} ms (median ${f(fr.deadDevice.ms.p50, 0)} ms)`,
      pass: fr.deadDevice.ms.max <= fr.deadDevice.boundMs,
    },
    {
      id: 'crashed-gateway',
      what: "SIGKILLed gateway's slots free on another gateway, worst of trials",
      target: `≤ TTL + 2 s = ${fr.crashedGateway.boundMs} ms`,
      value: `${f(fr.crashedGateway.ms.max, 0)} ms (median ${f(fr.crashedGateway.ms.p50, 0)} ms)`,
      pass: fr.crashedGateway.ms.max <= fr.crashedGateway.boundMs,
    },
  ];
  return list.map((t) => (t.pass ? { ...t, gap: undefined } : t));
}

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function countsCell(c: Record<string, number>): string {
  const entries = Object.entries(c).filter(([, v]) => v !== 0);
  return entries.length === 0 ? '0' : entries.map(([k, v]) => `${k} ${+v.toFixed(3)}`).join(', ');
}

export function markdown(r: Results, svgName: string): string {
  const m = r.machine;
  const machineLine = `${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, ${m.java}, ${m.dynamodbLocal}`;
  const ts = targets(r);
  const lat = r.latency;
  const mem = r.memory;
  const fr = r.freeing;
  const where = `Machine: ${machineLine}.`;
  const out: string[] = [];
  out.push(`# Sigma Stream benchmark (${r.mode} run, ${m.date})`);
  out.push('');
  out.push(
    `${where} Everything ran on 127.0.0.1: DynamoDB Local, each gateway (\`node dist/main.js\`, NODE_ENV=production, LOG_LEVEL=info to /dev/null), ` +
      `the bare ws server and the client processes were separate processes; the bench process is the client for phases 1, 2, 4 and 5. ` +
      `The machine was shared with other work while this ran, so every figure is set against a baseline measured in the same run, ` +
      `interleaved with it where possible. Run: \`npm run bench${r.mode === 'quick' ? ' -- --quick' : ''}\`, ${f(r.durationS, 0)} s. ` +
      `Load average (1/5/15 min) at the start ${r.loadAverage.before.map((x) => f(x)).join(' / ')}, at the end ${r.loadAverage.after.map((x) => f(x)).join(' / ')} on ${m.cores} cores.`,
  );
  out.push('');
  out.push('## Targets');
  out.push('');
  out.push(
    table(
      ['target', 'goal', 'measured', ''],
      ts.map((t) => [t.what, t.target, t.value, passMark(t)]),
    ),
  );
  out.push('');
  out.push('What the figures mean, and what the profile shows: [notes.md](notes.md).');

  out.push('');
  out.push('## 1. Admission latency');
  out.push('');
  out.push(
    `${where} Gateway: default timings. ${lat.gateway.n} admissions, one at a time, each a new user below the limit, ` +
      `timed from \`new WebSocket()\` to the \`granted\` frame (TCP connect, upgrade, JWT verify, the store write, the frame); sockets held until the end. ` +
      `Floor: the gateway's own fast-path conditional UpdateItem sent directly to the same DynamoDB Local and table from the same process with a client ` +
      `configured like the gateway's, sent as the gateway sends it (src/dynamo.ts send(): the first attempt by hand). The two alternate one by one (raw, admission, raw, ...), after warm-up.`,
  );
  out.push('');
  const row = (name: string, s: LatencyResult['raw']): string[] => [name, f(s.p50), f(s.p90), f(s.p99), f(s.max), f(s.mean)];
  out.push(
    table(
      ['ms', 'p50', 'p90', 'p99', 'max', 'mean'],
      [
        row('raw UpdateItem (floor)', lat.raw),
        row('gateway admission', lat.gateway),
        [
          'added by the gateway',
          f(lat.gateway.p50 - lat.raw.p50),
          f(lat.gateway.p90 - lat.raw.p90),
          f(lat.gateway.p99 - lat.raw.p99),
          '',
          f(lat.gateway.mean - lat.raw.mean),
        ],
        [
          'ratio gateway / raw',
          f(lat.gateway.p50 / lat.raw.p50),
          f(lat.gateway.p90 / lat.raw.p90),
          f(lat.gateway.p99 / lat.raw.p99),
          '',
          f(lat.gateway.mean / lat.raw.mean),
        ],
      ],
    ),
  );
  out.push('');
  out.push(
    `Inside the gateway process, per admission: ${f(lat.gatewayCpuMsPerAdmission)} ms on a CPU and ${f(lat.gatewayRunQueueMsPerAdmission)} ms runnable but ` +
      `waiting for a core (/proc/<pid>/schedstat); its own upgrade-to-decision histogram (\`sigma_lease_acquire_duration_seconds\`) averages ${f(lat.gatewayInsideMeanMs)} ms.`,
  );
  out.push('');
  out.push(`![Admission latency CDF, gateway against the raw store floor](${svgName})`);
  const pl = r.pinnedLatency;
  if (pl) {
    out.push('');
    out.push(`### 1b. The same, gateway pinned to a core`);
    out.push('');
    out.push(
      `The gateway ran under \`taskset -c 0\`; DynamoDB Local (all its threads) and the bench process (the client) were pinned to core 1 with \`taskset -a -p -c 1\`. ` +
        `Other work on the machine was not pinned, so core 0 was the gateway's alone only among this run's processes. ${pl.gateway.n} ${pl.minimal ? `${pl.grantAtOnce ? 'rounds of five (raw, gateway, minimal gateway, and the two floors below' : 'triples (raw, gateway, minimal gateway'}: test/bench/minimal-gateway.mjs and the floors' servers also on core 0, each idle while another works)` : 'pairs'}, alternating, after warm-up.`,
    );
    out.push('');
    out.push(
      table(
        ['ms', 'p50', 'p90', 'p99', 'max', 'mean'],
        [
          row('raw UpdateItem (floor)', pl.raw),
          row('gateway admission', pl.gateway),
          [
            'added by the gateway',
            f(pl.gateway.p50 - pl.raw.p50),
            f(pl.gateway.p90 - pl.raw.p90),
            f(pl.gateway.p99 - pl.raw.p99),
            '',
            f(pl.gateway.mean - pl.raw.mean),
          ],
          ...(pl.minimal
            ? [
                row('minimal gateway admission (same core)', pl.minimal),
                [
                  'added by the minimal gateway',
                  f(pl.minimal.p50 - pl.raw.p50),
                  f(pl.minimal.p90 - pl.raw.p90),
                  f(pl.minimal.p99 - pl.raw.p99),
                  '',
                  f(pl.minimal.mean - pl.raw.mean),
                ],
              ]
            : []),
          ...(pl.grantAtOnce && pl.rawElsewhere
            ? [
                row('a new connection and upgrade alone (test/bench/grant-at-once.mjs on core 0)', pl.grantAtOnce),
                row('raw UpdateItem sent from core 0 (test/bench/raw-child.ts)', pl.rawElsewhere),
                [
                  'floor: the two above, less the raw UpdateItem',
                  ...(['p50', 'p90', 'p99'] as const).map((q) => f(pinnedFloor(pl)![q])),
                  '',
                  f(pinnedFloor(pl)!.mean),
                ],
              ]
            : []),
        ],
      ),
    );
    if (pl.grantAtOnce) {
      out.push('');
      out.push(
        'The floor is what any gateway adds in this layout before it does any work of its own: a new TCP connection and a WebSocket upgrade ' +
          "(a ws server that answers each upgrade with its 101 and `granted` at once), and the store's round trip seen from core 0 instead of core 1. " +
          'Each is measured on its own and the quantiles are added, so it is an estimate of the sum, not a measured sum.',
      );
    }
    out.push('');
    out.push(
      `Gateway per admission: ${f(pl.gatewayCpuMsPerAdmission)} ms on a CPU, ${f(pl.gatewayRunQueueMsPerAdmission)} ms runnable but waiting for core 0.`,
    );
  }

  out.push('');
  out.push('## 2. Admission throughput');
  out.push('');
  const t = r.throughput;
  out.push(
    `${where} Closed loop at concurrency ${t.concurrency} from the bench process, distinct users (always below the limit), ` +
      `${t.rounds} rotating rounds of raw UpdateItems (from the gateway's own store client and from a plain SDK client: DynamoDBClient with the SDK's defaults) and gateway admissions (sockets held until the end, so no release overlaps). ` +
      `Gateway store timeouts set to the raw client's 5 s (ADMISSION_TIMEOUT_MS=10000, DYNAMODB_REQUEST_TIMEOUT_MS=5000); admissions not granted: ${t.gatewayFailed}.`,
  );
  out.push('');
  out.push(
    table(
      ['', 'operations', 'per second', 'ratio to raw'],
      [
        [
          "raw conditional UpdateItem (the gateway's store client, src/dynamo.ts createClient)",
          String(t.rawOps),
          f(t.rawPerSec, 0),
          '1.00',
        ],
        ...(t.plain
          ? [['raw conditional UpdateItem (plain SDK client)', String(t.rawOps), f(t.plain.perSec, 0), f(t.plain.perSec / t.rawPerSec)]]
          : []),
        ['gateway admission (open → granted)', String(t.gatewayOps), f(t.gatewayPerSec, 0), f(t.gatewayPerSec / t.rawPerSec)],
      ],
    ),
  );
  out.push('');
  out.push(
    'Where the CPU went (CPU seconds per 1000 operations, from /proc; "cores busy" = our three processes\' CPU seconds per wall second, of ' +
      m.cores +
      '):',
  );
  out.push('');
  out.push(
    table(
      ['', 'bench client', 'gateway', 'DynamoDB Local', 'cores busy'],
      [
        ['raw UpdateItem', f(t.raw.bench), '-', f(t.raw.dynamodbLocal), f(t.raw.coresBusy)],
        ...(t.plain ? [['raw UpdateItem, plain SDK client', f(t.plain.bench), '-', f(t.plain.dynamodbLocal), f(t.plain.coresBusy)]] : []),
        ['gateway admission', f(t.gatewayCpu.bench), f(t.gatewayCpu.gateway), f(t.gatewayCpu.dynamodbLocal), f(t.gatewayCpu.coresBusy)],
        [
          'raw UpdateItem (rounds beside the minimal gateway)',
          f(r.minimal.raw.bench),
          '-',
          f(r.minimal.raw.dynamodbLocal),
          f(r.minimal.raw.coresBusy),
        ],
        [
          'minimal gateway admission (test/bench/minimal-gateway.mjs)',
          f(r.minimal.gatewayCpu.bench),
          f(r.minimal.gatewayCpu.gateway),
          f(r.minimal.gatewayCpu.dynamodbLocal),
          f(r.minimal.gatewayCpu.coresBusy),
        ],
      ],
    ),
  );
  out.push('');
  out.push(
    `Minimal gateway: ${f(r.minimal.gatewayPerSec, 0)} admissions/s against ${f(r.minimal.rawPerSec, 0)} raw UpdateItems/s in its own rounds (${r.minimal.gatewayFailed} not granted).`,
  );

  out.push('');
  out.push('## 3. Memory and event-loop lag, idle leased sockets');
  out.push('');
  out.push(
    `${where} The gateway and the bare server run side by side and are measured in the same windows. Sockets opened from child processes of at most 2500 sockets each, one user per socket, then left idle; ` +
      `both servers ping every ${mem.pingIntervalMs} ms (gateway: PONG_TIMEOUT_MS=${mem.pongTimeoutMs}, heartbeat ${mem.heartbeatMs} ms, TTL ${mem.instanceTtlMs} ms). ` +
      `RSS from /proc/<pid>/status (median of 5 reads after 2 s), per connection = (RSS − RSS after a 100-socket warm-up with none open) / connections. ` +
      `Baseline: a bare \`ws\` server (test/bench/bare-ws-server.mjs, plain node, no per-message deflate) holding the same sockets from the same clients.`,
  );
  out.push('');
  const idle = (l: { idlePerConnectionBytes?: number }): string =>
    l.idlePerConnectionBytes === undefined ? '' : ` (idle ${kb(l.idlePerConnectionBytes)})`;
  const rows: string[][] = mem.gateway.levels.map((g, i) => {
    const b = mem.bare.levels[i];
    return [
      String(g.connections),
      mb(g.rssBytes) + (g.idleRssBytes === undefined ? '' : ` (idle ${mb(g.idleRssBytes)})`),
      kb(g.perConnectionBytes) + idle(g),
      `${mb(g.heapUsedBytes)} / ${mb(g.heapTotalBytes)}`,
      mb(b.rssBytes) + (b.idleRssBytes === undefined ? '' : ` (idle ${mb(b.idleRssBytes)})`),
      kb(b.perConnectionBytes) + idle(b),
      `${mb(b.heapUsedBytes)} / ${mb(b.heapTotalBytes)}`,
      f((g.idlePerConnectionBytes ?? g.perConnectionBytes) / (b.idlePerConnectionBytes ?? b.perConnectionBytes)),
    ];
  });
  rows.unshift([
    '0 (base)',
    mb(mem.gateway.baseRssBytes),
    '',
    `${mb(mem.gateway.baseHeapUsedBytes)} / ${mb(mem.gateway.baseHeapTotalBytes)}`,
    mb(mem.bare.baseRssBytes),
    '',
    `${mb(mem.bare.baseHeapUsedBytes)} / ${mb(mem.bare.baseHeapTotalBytes)}`,
    '',
  ]);
  out.push(
    table(
      [
        'connections',
        'gateway RSS',
        'gateway per conn',
        'gateway heap used / total',
        'bare ws RSS',
        'bare per conn',
        'bare heap used / total',
        'ratio per conn',
      ],
      rows,
    ),
  );
  out.push('');
  out.push(
    `"idle": measured again at the end of the ${mem.holdSeconds} s hold window after one full GC in each server ` +
      `(test/bench/gc-probe.mjs, preloaded into both with \`--expose-gc\`; the base is read after one too). ` +
      `Without the GC, RSS depends on when V8 last collected the garbage of the admission burst; even after it, RSS keeps the heap V8 reserved during the burst, which differs run to run.`,
  );
  const liveRows = mem.gateway.levels
    .map((g, i) => [g, mem.bare.levels[i]] as const)
    .filter(([g, b]) => g.idleLivePerConnectionBytes !== undefined && b.idleLivePerConnectionBytes !== undefined);
  if (liveRows.length > 0) {
    out.push('');
    out.push(
      'Live memory (V8 heap used + external, from `process.memoryUsage()` inside each process right after the same full GC; the target is judged on it):',
    );
    out.push('');
    out.push(
      table(
        ['connections', 'gateway live', 'gateway per conn', 'bare ws live', 'bare per conn', 'gateway − bare per conn'],
        [
          ['0 (base)', mb(mem.gateway.baseLiveBytes), '', mb(mem.bare.baseLiveBytes), '', ''],
          ...liveRows.map(([g, b]) => [
            String(g.connections),
            mb(g.idleLiveBytes!),
            kb(g.idleLivePerConnectionBytes!),
            mb(b.idleLiveBytes!),
            kb(b.idleLivePerConnectionBytes!),
            kb(g.idleLivePerConnectionBytes! - b.idleLivePerConnectionBytes!),
          ]),
        ],
      ),
    );
  }
  const [g1, g2] = mem.gateway.levels.slice(-2);
  const [b1, b2] = mem.bare.levels.slice(-2);
  if (g1 && g2 && b1 && b2) {
    const gs = (g2.rssBytes - g1.rssBytes) / (g2.connections - g1.connections);
    const bs = (b2.rssBytes - b1.rssBytes) / (b2.connections - b1.connections);
    out.push('');
    out.push(
      `Marginal cost from ${g1.connections} to ${g2.connections} connections (excludes one-off growth such as the JIT and the heap's young generation sizing up during the ramp): ` +
        `gateway ${kb(gs)}, bare ws ${kb(bs)} per connection (ratio ${f(gs / bs)}); gateway heap used ${kb((g2.heapUsedBytes - g1.heapUsedBytes) / (g2.connections - g1.connections))}, bare ${kb((b2.heapUsedBytes - b1.heapUsedBytes) / (b2.connections - b1.connections))} per connection.`,
    );
  }
  const gl = mem.gateway.lag;
  const bl = mem.bare.lag;
  if (gl && bl) {
    out.push('');
    out.push(
      `Event-loop delay over ${f(gl.seconds, 0)} s idle with ${gl.connections} sockets and pings running (monitorEventLoopDelay at 10 ms resolution; ` +
        `the figures include that 10 ms timer, so an idle loop reads about 10 ms; gateway from \`nodejs_eventloop_lag_*\` on /metrics):`,
    );
    out.push('');
    out.push(
      table(
        ['ms', 'p50', 'p99', 'max'],
        [
          ['gateway', f(gl.p50Ms), f(gl.p99Ms), f(gl.maxMs)],
          ['bare ws', f(bl.p50Ms), f(bl.p99Ms), f(bl.maxMs)],
        ],
      ),
    );
  }

  out.push('');
  out.push('## 4. DynamoDB requests');
  out.push('');
  const perN = r.perOperation[0]?.count ?? 0;
  out.push(
    `${where} Two gateways (A, B) on one table behind a counting HTTP proxy (test/bench/count-proxy.ts: \`X-Amz-Target\` and the item kind of the key), ` +
      `heartbeats set 60 s apart so the windows hold only what each step causes. ${perN} of each step; figures are per step. ` +
      `"Gateway counters" is the delta of \`sigma_dynamodb_requests_total\` (operation:outcome) summed over both gateways.`,
  );
  out.push('');
  out.push(
    table(
      ['step', 'writes (proxy)', 'requests (proxy)', 'proxy, by operation:item', 'gateway counters', 'books agree'],
      r.perOperation.map((p) => [
        p.step,
        f(p.writesPerStep, 3),
        f(p.requestsPerStep, 3),
        countsCell(Object.fromEntries(Object.entries(p.proxy).filter(([k]) => k.includes(':')))),
        countsCell(p.gateway),
        p.agree ? 'yes' : 'no',
      ]),
    ),
  );
  out.push('');
  out.push(
    `Steady state: the gateway of section 3 (heartbeat every ${mem.heartbeatMs} ms, the default) with its sockets idle, counted at the proxy over each hold window; ` +
      `against the common design that renews each stream's own lease item, simulated on the same store (test/bench/cost.ts \`simulateRenewal\`: ` +
      `one lease item per stream, a conditional UpdateItem per stream per period, spread evenly over the period, run for the window and counted at the proxy).`,
  );
  out.push('');
  const steadyRows: string[][] = [];
  for (const s of mem.gateway.steady) {
    steadyRows.push([
      String(s.connections),
      'this gateway (one instance heartbeat)',
      f(s.seconds, 1),
      `${s.writes} (gateway counter: ${s.gateway.UpdateItem ?? 0})`,
      f(s.writesPerStreamHour, 3),
      '1',
    ]);
    for (const sim of r.renewal.filter((x) => x.streams === s.connections)) {
      steadyRows.push([
        String(sim.streams),
        `per-stream renewal every ${sim.periodS} s (simulated)`,
        f(sim.windowS, 1),
        String(sim.writes),
        f(sim.writesPerStreamHour, 1),
        f(sim.writesPerStreamHour / s.writesPerStreamHour, 0),
      ]);
    }
  }
  out.push(table(['open streams', 'design', 'window s', 'writes', 'writes per stream-hour', 'ratio to gateway'], steadyRows));
  for (const s of mem.gateway.steady.filter((x) => x.fencings > 0)) {
    out.push('');
    out.push(
      `**The gateway fenced itself during the ${s.connections}-stream window** (event loop stalled, heartbeats missed past the danger zone): ` +
        `its sockets were closed with 4408 and ${s.streamsAtEnd} streams were left at the end; the window's writes are that recovery, not a steady state.`,
    );
  }
  const lagging = r.renewal.filter((x) => x.maxInFlight > 100);
  if (lagging.length > 0) {
    out.push('');
    out.push(
      `The store fell behind the simulated renewals (${lagging.map((x) => `${x.streams} streams / ${x.periodS} s: up to ${x.maxInFlight} in flight`).join('; ')}): on this machine DynamoDB Local cannot absorb them at that rate.`,
    );
  }

  out.push('');
  out.push('## 5. Slot freeing');
  out.push('');
  out.push(
    `${where} Shrunk timings. "Free" is what a user sees: a new device of the same user (max_streams 1) polls every ${fr.pollMs} ms and is granted. ` +
      `${fr.trials} trials each.`,
  );
  out.push('');
  out.push(
    table(
      ['case', 'configuration', 'bound', 'median', 'max', 'samples (ms)', ''],
      [
        [
          'dead device (client with autoPong off), from its grant',
          `PING_INTERVAL_MS=${fr.deadDevice.pingIntervalMs}, PONG_TIMEOUT_MS=${fr.deadDevice.pongTimeoutMs}`,
          `${fr.deadDevice.boundMs} ms`,
          `${f(fr.deadDevice.ms.p50, 0)} ms`,
          `${f(fr.deadDevice.ms.max, 0)} ms`,
          fr.deadDevice.samples.map((x) => f(x, 0)).join(', '),
          passMark(ts.find((x) => x.id === 'dead-device')!),
        ],
        [
          'SIGKILLed gateway, from the kill to a grant on another gateway',
          `INSTANCE_HEARTBEAT_MS=${fr.crashedGateway.heartbeatMs}, INSTANCE_TTL_MS=${fr.crashedGateway.instanceTtlMs}, FENCING_MARGIN_MS=${fr.crashedGateway.fencingMarginMs}`,
          `${fr.crashedGateway.boundMs} ms`,
          `${f(fr.crashedGateway.ms.p50, 0)} ms`,
          `${f(fr.crashedGateway.ms.max, 0)} ms`,
          fr.crashedGateway.samples.map((x) => f(x, 0)).join(', '),
          passMark(ts.find((x) => x.id === 'crashed-gateway')!),
        ],
      ],
    ),
  );

  const sw = r.sweep;
  out.push('');
  out.push('## 6. Ping sweep');
  out.push('');
  out.push(
    `${where} One gateway (PING_INTERVAL_MS=${sw.pingIntervalMs}, PONG_TIMEOUT_MS=${sw.pongTimeoutMs}) straight on DynamoDB Local, idle leased sockets opened from child processes of at most 2500 sockets each; ` +
      `a control device of another user sends an app ping every ${sw.pingEveryMs} ms (one in flight) for ${sw.windowS} s at each level, after two ping intervals of settling. ` +
      `The first level is the baseline. The top level holds 19 800 rather than 20 000 sockets: the gateway's open-files limit (20 000) also counts its own descriptors.`,
  );
  out.push('');
  out.push(
    table(
      [
        'idle sockets',
        'RTT p50 ms',
        'p99 ms',
        'max ms',
        'p99 − base',
        'max − base',
        'app pongs lost',
        'ping timeouts',
        'CPU-ms per sweep',
        'event-loop lag max ms',
        '',
      ],
      sw.levels.map((l, i) => [
        String(l.sockets),
        f(l.rtt.p50),
        f(l.rtt.p99),
        f(l.rtt.max),
        i === 0 ? '' : f(l.rtt.p99 - sw.levels[0].rtt.p99, 1),
        i === 0 ? '' : f(l.rtt.max - sw.levels[0].rtt.max, 1),
        String(l.lostPongs),
        String(l.pingTimeouts),
        f(l.cpuMsPerSweep, 0),
        f(l.lagMaxMs, 0),
        i === 0 ? 'baseline' : passMark(ts.find((x) => x.id === `sweep-${l.sockets}`)!),
      ]),
    ),
  );

  const st = r.storm;
  out.push('');
  out.push('## 7. Reconnect storm');
  out.push('');
  out.push(
    `${where} Gateways A and B on one table, straight on DynamoDB Local, DRAIN_MS=${st.drainMs}, store timeouts as in phase 2. ${st.devices} players, each a \`StreamLease\` of the SDK (src/client) with its default backoff ` +
      `(full jitter from 500 ms), one user each, in child processes of at most 2500; the SDK's \`url\` function plays the load balancer, switched to B as A gets SIGTERM. ` +
      `Floor: DRAIN_MS + ${st.devices} ÷ ${f(st.rawPerSec, 0)} raw UpdateItems/s (phase 2) = ${f(st.floorMs / 1000, 1)} s.`,
  );
  out.push('');
  out.push(
    table(
      ['', 'value'],
      [
        [
          'SIGTERM to the last player granted again',
          `${f(st.allGrantedMs / 1000, 2)} s (${f(st.allGrantedMs / st.floorMs)} × floor) ${passMark(ts.find((x) => x.id === 'storm')!)}`,
        ],
        [
          "SIGTERM to a player's new grant, p50 / p90 / p99",
          `${f(st.regrant.p50 / 1000, 2)} / ${f(st.regrant.p90 / 1000, 2)} / ${f(st.regrant.p99 / 1000, 2)} s`,
        ],
        ['false denials (4429)', `${st.falseDenials} ${passMark(ts.find((x) => x.id === 'storm-denials')!)}`],
        ['players that ended / not back in time', `${st.ended} / ${st.missing}`],
        ['admissions on B that ended 1013 (retried by the SDK)', String(st.bTryLater)],
        ['B peak event-loop delay', `${f(st.bLagMaxMs, 0)} ms`],
        ...(st.listenDrops === undefined
          ? []
          : [['SYNs dropped at a full listen queue (TcpExt ListenDrops, whole machine)', String(st.listenDrops)]]),
        ["SIGTERM to A's exit (drain and releases)", `${f(st.aExitMs / 1000, 2)} s`],
        ...(st.bStore
          ? [
              [
                "B's DynamoDB requests in the storm (operation:outcome)",
                Object.entries(st.bStore)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', '),
              ],
            ]
          : []),
        ...(st.cpu
          ? [
              [
                'CPU seconds from SIGTERM to the last grant: A / B / DynamoDB Local / player processes',
                `${f(st.cpu.a, 1)} / ${f(st.cpu.b, 1)} / ${f(st.cpu.store, 1)} / ${f(st.cpu.clients, 1)} (${f((st.cpu.a + st.cpu.b + st.cpu.store + st.cpu.clients) / st.cpu.wallS)} of ${m.cores} cores busy)`,
              ],
            ]
          : []),
      ],
    ),
  );

  const th = r.throttled;
  out.push('');
  out.push('## 8. Throttled store');
  out.push('');
  out.push(
    `${where} One gateway behind the counting proxy, which lets ${th.allowedWritesPerSec} writes/s through (a token bucket holding 0.1 s of them) and answers the rest ` +
      `with 400 \`ProvisionedThroughputExceededException\`, heartbeats included. ${th.admissions} admissions of distinct users at concurrency ${th.concurrency} from the bench process, ` +
      `ADMISSION_TIMEOUT_MS=${th.admissionTimeoutMs} and the default store timeouts and attempts; "late" is a decision more than ADMISSION_TIMEOUT_MS + 1 s after the socket opened. ` +
      `Then every socket closes and the table is scanned until no lease entry is left (60 s at most).`,
  );
  out.push('');
  out.push(
    table(
      ['', 'value'],
      [
        ['granted / 1013 / other', `${th.granted} / ${th.tryLater} / ${th.other} ${passMark(ts.find((x) => x.id === 'throttled')!)}`],
        [
          'decision time p50 / p99 / max',
          `${f(th.decision.p50, 0)} / ${f(th.decision.p99, 0)} / ${f(th.decision.max, 0)} ms (late: ${th.late})`,
        ],
        ['admissions granted per second vs writes allowed', `${f(th.grantedPerSec, 0)} vs ${th.allowedWritesPerSec}`],
        ['writes refused by the proxy / let through', `${th.throttled} / ${th.writesPassed}`],
        ['lease entries left after the releases / in flight at the end', `${th.leaked} / ${th.inFlightAtEnd}`],
        ['gateway fencings during the run', String(th.fencings)],
      ],
    ),
  );

  const k = r.kickoff;
  out.push('');
  out.push('## 9. Kick-off');
  out.push('');
  out.push(
    `${where} One gateway straight on DynamoDB Local, store timeouts as in phase 2, warmed with 200 admissions. ${k.users} new users (one socket each) arrive open-loop, evenly over ${k.windowS} s, ` +
      `from child processes; baseline: ${k.users} raw conditional UpdateItems arriving at the same rate from the bench process, just before${k.connectionFloor ? ', and the same players against a ws server that grants every upgrade at once, just after' : ''}.`,
  );
  out.push('');
  out.push(
    table(
      ['ms', 'p50', 'p90', 'p99', 'max', ''],
      [
        ['raw UpdateItem at the same arrival rate', f(k.raw.p50), f(k.raw.p90), f(k.raw.p99), f(k.raw.max), ''],
        ...(k.connectionFloor
          ? [
              [
                'the same players on a ws server that grants at once (test/bench/grant-at-once.mjs): the connection floor',
                f(k.connectionFloor.p50),
                f(k.connectionFloor.p90),
                f(k.connectionFloor.p99),
                f(k.connectionFloor.max),
                '',
              ],
            ]
          : []),
        [
          `gateway: socket open to granted (${k.granted}/${k.users} granted)`,
          f(k.gateway.p50),
          f(k.gateway.p90),
          f(k.gateway.p99),
          f(k.gateway.max),
          passMark(ts.find((x) => x.id === 'kickoff')!),
        ],
      ],
    ),
  );
  out.push('');
  return out.join('\n') + '\n';
}
