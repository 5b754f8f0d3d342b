/**
 * `npm run bench [-- --quick] [-- --out <dir>]`: measures the gateway against
 * the floor and the alternatives, every figure beside a baseline from the
 * same run, and writes <out>/report.md, report.json and latency-cdf.svg
 * (default out: bench-output/).
 *
 * Order: build dist/ once, start DynamoDB Local and a counting proxy, then
 * 1+2 latency and throughput, 3 memory (+ steady-state writes), 4 per-step
 * request counts and the renewal simulation, 5 slot freeing. Child processes
 * are killed on every exit path (procs.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ensureTable } from '../../src/dynamo.js';
import { ROOT } from '../helpers/gateway.js';
import { measureLatency, measureThroughput, rawClient } from './admission.js';
import { startCountingProxy } from './count-proxy.js';
import { measurePerOperation, simulateRenewal, type RenewalRun } from './cost.js';
import { measureFreeing } from './freeing.js';
import { machine, progress } from './measure.js';
import { measureMemory } from './memory.js';
import { dynamoLocal, startGateway, stopAll } from './procs.js';
import { markdown, targets, type Results } from './report.js';
import { cdfSvg } from './svg.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const outArg = args.indexOf('--out');
const outDir = resolve(ROOT, outArg >= 0 ? args[outArg + 1] : 'bench-output');

/** Counts for each mode: full stays under 10 minutes on 2 cores, quick under 2. */
const PLAN = quick
  ? { latency: 500, rounds: 5, warmup: 50, throughput: 800, concurrency: 32, levels: [200, 500, 1000], holdS: 6, perOp: 50, simWindowS: 2, trials: 3 }
  : { latency: 3000, rounds: 10, warmup: 200, throughput: 4000, concurrency: 32, levels: [1000, 5000, 10000], holdS: 20, perOp: 200, simWindowS: 6, trials: 6 };

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const table = (name: string): string => `bench-${name}-${Date.now()}`;

async function main(): Promise<void> {
  const started = performance.now();
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
    const gw = await startGateway({ endpoint: local.endpoint, table: admTable, env: { PING_INTERVAL_MS: '20000', PONG_TIMEOUT_MS: '10000', INSTANCE_HEARTBEAT_MS: '5000', INSTANCE_TTL_MS: '20000', FENCING_MARGIN_MS: '5000', ADMISSION_TIMEOUT_MS: '3000', DYNAMODB_REQUEST_TIMEOUT_MS: '1000' } });
    let latency;
    let throughput;
    try {
      progress(`latency: ${PLAN.latency} admissions against ${PLAN.latency} raw UpdateItems`);
      latency = await measureLatency({ url: gw.url, client, table: admTable, count: PLAN.latency, rounds: PLAN.rounds, warmup: PLAN.warmup });
      progress(`throughput: ${PLAN.throughput} admissions against ${PLAN.throughput} raw UpdateItems at concurrency ${PLAN.concurrency}`);
      throughput = await measureThroughput({ url: gw.url, client, table: admTable, count: PLAN.throughput, rounds: 2, concurrency: PLAN.concurrency });
    } finally {
      await gw.stop();
    }

    // 3 (+ steady state of 4): memory at each level, gateway behind the proxy.
    const memory = await measureMemory({ proxy, table: table('memory'), levels: PLAN.levels, holdSeconds: PLAN.holdS, pingIntervalMs: 2000, pongTimeoutMs: 1000 });

    // 4: per-step counts, then the per-stream renewal design on the same store.
    progress(`cost: ${PLAN.perOp} admissions, releases and denials through the counting proxy`);
    const perOperation = await measurePerOperation({ proxy, table: table('cost'), count: PLAN.perOp });
    const simTable = table('renewal');
    await ensureTable(client, simTable);
    const simClient = rawClient(proxy.endpoint);
    const renewal: RenewalRun[] = [];
    try {
      for (const streams of [PLAN.levels[0], PLAN.levels[PLAN.levels.length - 1]]) {
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

    const results: Results = {
      mode: quick ? 'quick' : 'full',
      machine: machine(java),
      durationS: (performance.now() - started) / 1000,
      latency,
      throughput,
      memory,
      perOperation,
      renewal,
      freeing,
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
    writeFileSync(join(outDir, 'report.json'), JSON.stringify({ ...results, targets: targets(results) }, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? +v.toFixed(3) : v), 2) + '\n');
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
