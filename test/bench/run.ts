/**
 * `npm run bench [-- --quick] [-- --out <dir>]`: measures the gateway against
 * the floor and the alternatives, every figure beside a baseline from the
 * same run, and writes <out>/report.md, report.json and latency-cdf.svg
 * (default out: bench-output/).
 *
 * Order: build dist/ once, start DynamoDB Local and a counting proxy, then
 * 1+2 latency and throughput, 1b latency with the gateway pinned to a core,
 * 3 memory (+ steady-state writes), 4 per-step request counts and the
 * renewal simulation, 5 slot freeing, 6 the ping sweep, 7 the reconnect
 * storm, 8 the throttled store, 9 kick-off. Child processes are killed on
 * every exit path (procs.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { ensureTable } from '../../src/dynamo.js';
import { ROOT } from '../helpers/gateway.js';
import { measureLatency, measureThroughput, plainClient, rawClient } from './admission.js';
import { startCountingProxy } from './count-proxy.js';
import { measurePerOperation, simulateRenewal, type RenewalRun } from './cost.js';
import { measurePinnedLatency } from './pinned.js';
import { measureFreeing } from './freeing.js';
import { machine, progress } from './measure.js';
import { measureMemory } from './memory.js';
import { measurePlayback, writePlaybackReport } from './playback.js';
import { dynamoLocal, javaChildPid, startGateway, startMinimalGateway, stopAll } from './procs.js';
import { TEST_SECRET } from '../helpers/tokens.js';
import { markdown, targets, type Results } from './report.js';
import { measureKickoff, measureStorm, measureThrottled, PATIENT, PRODUCTION_TIMINGS } from './storm.js';
import { measureSweep } from './sweep.js';
import { cdfSvg } from './svg.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const outArg = args.indexOf('--out');
const outDir = resolve(ROOT, outArg >= 0 ? args[outArg + 1] : 'bench-output');

/**
 * Counts for each mode: quick stays under 2.5 minutes on 2 cores (CI), full under 10. The 20 000 level of the sweep holds
 * 19 800 sockets: the gateway's open-files limit (20 000 here) also counts its own descriptors.
 */
const PLAN = quick
  ? {
      latency: 250,
      warmup: 30,
      throughput: 300,
      concurrency: 32,
      levels: [300, 1000],
      holdS: 3,
      perOp: 30,
      simWindowS: 1.5,
      trials: 3,
      pinned: 150,
      sweepLevels: [100, 2000],
      sweepWindowS: 3,
      sweepSettleMs: 2000,
      storm: 500,
      stormDrainMs: 1000,
      throttle: { admissions: 200, allowedWritesPerSec: 100, concurrency: 100 },
      kickoff: { users: 400, windowS: 2 },
    }
  : {
      latency: 3000,
      warmup: 200,
      throughput: 4000,
      concurrency: 32,
      levels: [1000, 5000, 10000],
      holdS: 30,
      perOp: 200,
      simWindowS: 6,
      trials: 6,
      pinned: 2000,
      sweepLevels: [100, 10000, 19800],
      sweepWindowS: 20,
      sweepSettleMs: 4000,
      storm: 10000,
      stormDrainMs: 5000,
      throttle: { admissions: 3000, allowedWritesPerSec: 300, concurrency: 300 },
      kickoff: { users: 5000, windowS: 5 },
    };

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const table = (name: string): string => `bench-${name}-${Date.now()}`;

async function main(): Promise<void> {
  const started = performance.now();
  const loadBefore = loadavg();
  progress(`mode ${quick ? 'quick' : 'full'}; building dist/ (npm run build)`);
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  // `java -version` writes to stderr.
  const java = spawnSync('java', ['-version'], { encoding: 'utf8' }).stderr.split('\n')[0].trim() || 'java (version unknown)';
  progress('starting DynamoDB Local');
  const local = await dynamoLocal();
  const proxy = await startCountingProxy(local.endpoint);
  const client = rawClient(local.endpoint);
  try {
    // 1 + 2: one gateway straight on DynamoDB Local (no proxy in the path), default timings.
    const admTable = table('admission');
    const gw = await startGateway({
      endpoint: local.endpoint,
      table: admTable,
      // The defaults a production gateway runs with: the tests' shrunk timings (under gatewayEnv) would add a
      // reconcile round every 2 s over every held socket's user, and a heartbeat every 500 ms, to the latency.
      env: { ...PRODUCTION_TIMINGS, ...PATIENT },
    });
    let latency;
    let throughput;
    const plain = plainClient(local.endpoint);
    try {
      progress(`latency: ${PLAN.latency} admissions alternating with ${PLAN.latency} raw UpdateItems`);
      latency = await measureLatency({
        url: gw.url,
        client,
        table: admTable,
        count: PLAN.latency,
        warmup: PLAN.warmup,
        gatewayPid: gw.proc.pid!,
        metrics: () => gw.metrics(),
      });
      progress(`throughput: ${PLAN.throughput} admissions against ${PLAN.throughput} raw UpdateItems at concurrency ${PLAN.concurrency}`);
      throughput = await measureThroughput({
        url: gw.url,
        client,
        table: admTable,
        count: PLAN.throughput,
        rounds: quick ? 2 : 4,
        warmup: PLAN.warmup * 2,
        concurrency: PLAN.concurrency,
        gatewayPid: gw.proc.pid!,
        dynamodbPid: javaChildPid(),
        plain,
      });
    } finally {
      await gw.stop();
      plain.destroy();
    }

    // 2b: the same closed loop against the minimal gateway (minimal-gateway.mjs), the CPU floor of an admission.
    const minTable = table('minimal');
    await ensureTable(client, minTable);
    const mg = await startMinimalGateway(local.endpoint, minTable, TEST_SECRET);
    let minimal;
    try {
      progress(`throughput: minimal gateway, ${PLAN.throughput / 2} admissions against as many raw UpdateItems`);
      // A fresh process's first ~750 admissions cost 2-3x the later ones (test/bench/ab.ts): warm the minimal
      // gateway as long as the gateway had been by now, or the comparison flatters the gateway.
      minimal = await measureThroughput({
        url: mg.url,
        client,
        table: minTable,
        count: PLAN.throughput / 2,
        rounds: 2,
        warmup: PLAN.throughput / 2,
        concurrency: PLAN.concurrency,
        gatewayPid: mg.proc.pid!,
        dynamodbPid: javaChildPid(),
      });
    } finally {
      await mg.stop();
    }

    // 1b: the same latency measurement with the gateway on core 0 and DynamoDB Local + this process on core 1.
    const pinnedLatency = await measurePinnedLatency({
      endpoint: local.endpoint,
      client,
      table: table('pinned'),
      count: PLAN.pinned,
      warmup: PLAN.warmup,
      env: { ...PRODUCTION_TIMINGS, ...PATIENT },
    });

    // 3 (+ steady state of 4): memory at each level, gateway behind the proxy.
    const memory = await measureMemory({
      proxy,
      table: table('memory'),
      levels: PLAN.levels,
      holdSeconds: PLAN.holdS,
      pingIntervalMs: 2000,
      pongTimeoutMs: 1000,
    });

    // 4: per-step counts, then the per-stream renewal design on the same store.
    progress(`cost: ${PLAN.perOp} admissions, releases and denials through the counting proxy`);
    const perOperation = await measurePerOperation({ proxy, table: table('cost'), count: PLAN.perOp });
    const simTable = table('renewal');
    await ensureTable(client, simTable);
    // Renewals queue in the client when the store falls behind: a long timeout keeps them all counted.
    const simClient = rawClient(proxy.endpoint, 120_000);
    const renewal: RenewalRun[] = [];
    try {
      // Quick mode simulates only the top level: the smoke test needs the code path, not both figures.
      for (const streams of quick ? PLAN.levels.slice(-1) : [PLAN.levels[0], PLAN.levels[PLAN.levels.length - 1]]) {
        for (const periodS of [10, 30]) {
          progress(`cost: simulating per-stream renewal, ${streams} streams every ${periodS} s, for ${PLAN.simWindowS} s`);
          renewal.push(await simulateRenewal({ client: simClient, proxy, table: simTable, streams, periodS, windowS: PLAN.simWindowS }));
        }
      }
    } finally {
      simClient.destroy();
    }

    // 5: slot freeing with shrunk timings.
    const freeing = await measureFreeing({ endpoint: local.endpoint, table: table('freeing'), trials: PLAN.trials });

    // 6-9: the ping sweep, the reconnect storm, the throttled store, kick-off.
    const sweep = await measureSweep({
      endpoint: local.endpoint,
      table: table('sweep'),
      levels: PLAN.sweepLevels,
      windowS: PLAN.sweepWindowS,
      settleMs: PLAN.sweepSettleMs,
      env: PATIENT,
    });
    const storm = await measureStorm({
      endpoint: local.endpoint,
      table: table('storm'),
      devices: PLAN.storm,
      drainMs: PLAN.stormDrainMs,
      rawPerSec: throughput.rawPerSec,
      env: PATIENT,
    });
    const throttled = await measureThrottled({ proxy, table: table('throttle'), ...PLAN.throttle });
    const kickTable = table('kickoff');
    await ensureTable(client, kickTable);
    const kickoff = await measureKickoff({ endpoint: local.endpoint, table: kickTable, client, ...PLAN.kickoff, env: PATIENT });

    // 10: playback tokens on the media path (its own report: playback.md, playback.json).
    writePlaybackReport(outDir, await measurePlayback({ endpoint: local.endpoint, proxy, quick }));

    const results: Results = {
      mode: quick ? 'quick' : 'full',
      machine: machine(java),
      loadAverage: { before: loadBefore, after: loadavg() },
      durationS: (performance.now() - started) / 1000,
      latency,
      throughput,
      minimal,
      pinnedLatency,
      memory,
      perOperation,
      renewal,
      freeing,
      sweep,
      storm,
      throttled,
      kickoff,
    };
    mkdirSync(outDir, { recursive: true });
    const svgName = 'latency-cdf.svg';
    writeFileSync(
      join(outDir, svgName),
      cdfSvg(`Admission latency CDF (${latency.gateway.n} each, ${results.machine.cores} cores, Node ${results.machine.node})`, [
        { label: 'raw conditional UpdateItem (floor)', color: '#1f77b4', values: latency.rawSamples },
        { label: 'gateway: socket open to granted', color: '#d62728', values: latency.gatewaySamples },
      ]),
    );
    writeFileSync(join(outDir, 'report.md'), markdown(results, svgName));
    const json = JSON.stringify(
      { ...results, targets: targets(results) },
      (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? +v.toFixed(3) : v),
      2,
    );
    // Sample arrays on one line each: thousands of numbers one per line would swamp every diff of the committed copy.
    writeFileSync(
      join(outDir, 'report.json'),
      json.replace(/\[\s*(-?[\d.]+(?:,\s*-?[\d.]+)*)\s*\]/g, (_m, inner: string) => `[${inner.split(/,\s*/).join(', ')}]`) + '\n',
    );
    for (const t of targets(results)) progress(`${t.pass ? 'pass' : 'MISS'}  ${t.what}: ${t.value} (target ${t.target})`);
    progress(`report: ${join(outDir, 'report.md')} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  } finally {
    client.destroy();
    await proxy.close();
    await stopAll();
  }
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
