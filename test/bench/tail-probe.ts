/**
 * `node --import tsx test/bench/tail-probe.ts [count]`: what the pinned gateway was doing during its slowest
 * admissions. Runs the pinned latency phase of `npm run bench` (1b) with the gateway under `--cpu-prof`, then
 * reads, over each admission's own interval, how much of it the gateway's main thread was busy (and in GC)
 * rather than waiting in the event loop: the slowest 1 % against the middle of the distribution. A tail the
 * gateway spends idle is made outside it (the client, DynamoDB Local, the machine), not by its own work.
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rawClient } from './admission.js';
import { loadProfile, summarizeProfile } from './cpuprofile.js';
import { dynamoLocal, stopAll } from './procs.js';
import { measurePinnedLatency } from './pinned.js';
import { PATIENT, PRODUCTION_TIMINGS } from './storm.js';

const count = Number(process.argv[2] ?? 1500);
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const dir = mkdtempSync(join(tmpdir(), 'sigma-tail-'));
const local = await dynamoLocal();
const client = rawClient(local.endpoint);
try {
  const r = await measurePinnedLatency({
    endpoint: local.endpoint,
    client,
    table: `tail-${Date.now()}`,
    count,
    warmup: 100,
    env: { ...PRODUCTION_TIMINGS, ...PATIENT },
    execArgv: ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=100'],
    helpersElsewhere: true,
  });
  if (r === undefined) throw new Error('tail-probe needs 2 cores and its own DynamoDB Local');
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error(`the gateway wrote no profile in ${dir}`);
  const profile = loadProfile(join(dir, file));
  const byMs = r.gatewaySamples.map((ms, i) => ({ ms, startUs: r.gatewayStartsUs[i] })).sort((a, b) => a.ms - b.ms);
  const n = byMs.length;
  const share = (group: typeof byMs): string => {
    let busy = 0;
    let gc = 0;
    let total = 0;
    for (const a of group) {
      const s = summarizeProfile(profile, a.startUs, a.startUs + a.ms * 1000, 0);
      busy += s.busyMs;
      gc += s.byOwner.gc;
      total += a.ms;
    }
    const pct = (x: number): string => `${((100 * x) / total).toFixed(0)} %`;
    return `${group.length} admissions, ${group[0].ms.toFixed(2)}-${group.at(-1)!.ms.toFixed(2)} ms: the gateway busy ${pct(busy)} of their time (GC ${pct(gc)})`;
  };
  console.log(`middle (p40-p60): ${share(byMs.slice(Math.floor(n * 0.4), Math.ceil(n * 0.6)))}`);
  console.log(`slowest 1 %:      ${share(byMs.slice(Math.floor(n * 0.99)))}`);
  const from = r.gatewayStartsUs[0];
  const to = r.gatewayStartsUs.at(-1)! + r.gatewaySamples.at(-1)! * 1000;
  const loop = summarizeProfile(profile, from, to, 30);
  const inside = r.gatewaySamples.reduce(
    (sum, ms, i) => sum + summarizeProfile(profile, r.gatewayStartsUs[i], r.gatewayStartsUs[i] + ms * 1000, 0).busyMs,
    0,
  );
  console.log(
    `the whole run of ${n}: the gateway busy ${(loop.busyMs / n).toFixed(3)} ms per admission, ${(inside / n).toFixed(3)} ms of it while an admission was open; top functions:`,
  );
  console.log(
    '  by owner, ms per admission: ' +
      Object.entries(loop.byOwner)
        .filter(([, ms]) => ms > 0)
        .map(([owner, ms]) => `${owner} ${(ms / n).toFixed(3)}`)
        .join(', '),
  );
  for (const t of loop.top) console.log(`  ${t.ms.toFixed(0).padStart(5)} ms  ${t.owner.padEnd(9)} ${t.fn}`);
  console.log(
    `(raw p50 ${r.raw.p50.toFixed(2)} ms, p99 ${r.raw.p99.toFixed(2)} ms; gateway p50 ${r.gateway.p50.toFixed(2)}, p99 ${r.gateway.p99.toFixed(2)}; profile ${join(dir, file)})`,
  );
} finally {
  client.destroy();
  await stopAll();
}
process.exit(0);
