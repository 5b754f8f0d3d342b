/**
 * `node --import tsx test/bench/profile.ts [--sockets 10000] [--admissions 3000] [--concurrency 32]`:
 * CPU profiles (`node --cpu-prof`) of a gateway under the throughput load of
 * the bench (admissions at concurrency 32) and under the ping sweep (idle
 * leased sockets, 2 s ping interval), summarized by owner (SDK, jose, ws, our
 * code, logging, metrics) over the measured window only (start-up, warm-up
 * and drain left out). Writes bench-output/profile.md and keeps the
 * .cpuprofile files in bench-output/profiles/ (open them in Chrome DevTools).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { ROOT } from '../helpers/gateway.js';
import { mintToken } from '../helpers/tokens.js';
import { admit, rawAcquire, rawClient, tokens } from './admission.js';
import { profileMarkdown, summarizeProfile } from './cpuprofile.js';
import { pool, progress, sleep, summarize } from './measure.js';
import { cpuSeconds, dynamoLocal, openClients, startGateway, stopAll } from './procs.js';
import { closeAll } from './sockets.js';
import { measureStorm, PRODUCTION_TIMINGS } from './storm.js';
import { controlPinger } from './sweep.js';

const args = process.argv.slice(2);
const num = (flag: string, fallback: number): number => (args.includes(flag) ? Number(args[args.indexOf(flag) + 1]) : fallback);
const SOCKETS = num('--sockets', 10_000);
const ADMISSIONS = num('--admissions', 3000);
const SWEEP_S = num('--sweep-seconds', 20);
const STORM = num('--storm', 0);
/** Admissions in flight at once in part 1 (1: the sequential path of the latency phases). */
const CONCURRENCY = num('--concurrency', 32);
/** Another build's entry point (e.g. bench-output/ab/main/dist/main.js from ab.ts), for a before/after. */
const ENTRY = args.includes('--entry') ? args[args.indexOf('--entry') + 1] : undefined;
const outDir = join(ROOT, 'bench-output');
const profDir = join(outDir, 'profiles');
const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Production timings (not the tests' shrunk ones: a 2 s reconcile would read every user item under the sweep). */
const ENV = {
  ...PRODUCTION_TIMINGS,
  ADMISSION_TIMEOUT_MS: '10000',
  DYNAMODB_REQUEST_TIMEOUT_MS: '5000',
  DRAIN_MS: '500',
  MESSAGE_RATE_PER_SOCKET: '100',
  MESSAGE_BURST_PER_SOCKET: '100',
};

function profileOf(pid: number): string {
  const name = readdirSync(profDir).find((f) => f.includes(`.${pid}.`) && f.endsWith('.cpuprofile'));
  if (!name) throw new Error(`no profile for pid ${pid} in ${profDir}`);
  return join(profDir, name);
}

async function main(): Promise<void> {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  mkdirSync(profDir, { recursive: true });
  const local = await dynamoLocal();
  const client = rawClient(local.endpoint);
  const out: string[] = [`# CPU profiles (${new Date().toISOString().slice(0, 16)}Z)`, ''];
  try {
    // 1. Throughput: raw UpdateItems from this process (CPU from process.cpuUsage), then admissions.
    const table = `prof-adm-${Date.now()}`;
    const gw = await startGateway({
      endpoint: local.endpoint,
      table,
      env: ENV,
      entry: ENTRY,
      execArgv: ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
    });
    const toks = await tokens('prof', ADMISSIONS + 300);
    const held: WebSocket[] = [];
    await pool(300, 32, (i) => rawAcquire(client, table, `prof-warm-${i}`));
    await pool(300, 32, async (i) => void held.push((await admit(gw.url, toks[ADMISSIONS + i])).ws));
    const c0 = process.cpuUsage();
    let t0 = performance.now();
    await pool(ADMISSIONS, CONCURRENCY, (i) => rawAcquire(client, table, `prof-raw-${i}`));
    const rawWallS = (performance.now() - t0) / 1000;
    const c1 = process.cpuUsage(c0);
    const rawCpuMs = (c1.user + c1.system) / 1000 / ADMISSIONS;
    progress(`profile: raw ${ADMISSIONS} UpdateItems, ${rawCpuMs.toFixed(3)} client CPU-ms each, ${(ADMISSIONS / rawWallS).toFixed(0)}/s`);
    const g0 = cpuSeconds(gw.proc.pid!);
    const from = nowUs();
    t0 = performance.now();
    let failed = 0;
    await pool(ADMISSIONS, CONCURRENCY, async (i) => {
      const a = await admit(gw.url, toks[i]).catch(() => undefined);
      if (a) held.push(a.ws);
      if (a?.type !== 'granted') failed++;
    });
    const gwWallS = (performance.now() - t0) / 1000;
    const to = nowUs();
    const gwCpuMs = ((cpuSeconds(gw.proc.pid!) - g0) * 1000) / ADMISSIONS;
    progress(
      `profile: ${ADMISSIONS} admissions (${failed} not granted), gateway ${gwCpuMs.toFixed(3)} CPU-ms each (/proc), ${(ADMISSIONS / gwWallS).toFixed(0)}/s`,
    );
    await closeAll(held);
    await gw.stop(120_000);
    const adm = summarizeProfile(profileOf(gw.proc.pid!), from, to);
    out.push(
      `Raw conditional UpdateItem from a plain SDK client (same process as the load): ${rawCpuMs.toFixed(3)} CPU-ms each, ${(ADMISSIONS / rawWallS).toFixed(0)}/s at concurrency ${CONCURRENCY}.`,
    );
    out.push(
      `Gateway: ${gwCpuMs.toFixed(3)} CPU-ms per admission (/proc), ratio ${(gwCpuMs / rawCpuMs).toFixed(2)}; ${(ADMISSIONS / gwWallS).toFixed(0)} admissions/s at concurrency ${CONCURRENCY}; ${failed} not granted.`,
      '',
    );
    out.push(
      profileMarkdown(`Gateway under ${ADMISSIONS} admissions at concurrency ${CONCURRENCY}`, adm, {
        ops: ADMISSIONS,
        what: 'admission',
        cpuMs: gwCpuMs * ADMISSIONS,
      }),
      '',
    );

    // 2. The ping sweep: SOCKETS idle leased sockets, ping every 2 s, one control device pinging every 100 ms.
    if (SOCKETS > 0) {
      const sweepTable = `prof-sweep-${Date.now()}`;
      const sg = await startGateway({
        endpoint: local.endpoint,
        table: sweepTable,
        env: { ...ENV, PING_INTERVAL_MS: '2000', PONG_TIMEOUT_MS: '1000' },
        execArgv: ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
      });
      progress(`profile: opening ${SOCKETS} idle sockets`);
      const group = await openClients(sg.url, 'prof-idle', SOCKETS, 128);
      progress(`profile: ${group.granted} granted; sweeping for ${SWEEP_S} s`);
      const control = await admit(sg.url, await mintToken('prof-control'), 'tv');
      const pinger = controlPinger(control.ws, 100);
      const s0 = cpuSeconds(sg.proc.pid!);
      const sFrom = nowUs();
      await sleep(SWEEP_S * 1000);
      const sTo = nowUs();
      const sweepCpuMs = (cpuSeconds(sg.proc.pid!) - s0) * 1000;
      const { rtts, lost } = pinger.stop();
      control.ws.terminate();
      await group.close();
      await sg.stop(120_000); // a profile is only written on a clean exit, after 10 000 releases
      const sw = summarizeProfile(profileOf(sg.proc.pid!), sFrom, sTo);
      const r = summarize(rtts);
      const sweeps = (SWEEP_S * 1000) / 2000;
      out.push(
        `Ping sweep: ${group.granted} idle leased sockets, PING_INTERVAL_MS=2000, ${SWEEP_S} s (${sweeps} sweeps): gateway ${sweepCpuMs.toFixed(0)} CPU-ms (/proc), ` +
          `${(sweepCpuMs / sweeps).toFixed(1)} CPU-ms per sweep, ${((1000 * sweepCpuMs) / sweeps / group.granted).toFixed(1)} CPU-µs per socket per sweep. ` +
          `Control device app ping RTT: p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, max ${r.max.toFixed(1)} ms, ${lost} lost.`,
        '',
      );
      out.push(
        profileMarkdown(`Gateway holding ${group.granted} idle sockets, sweeping every 2 s`, sw, {
          ops: sweeps * group.granted,
          what: 'socket per sweep',
          cpuMs: sweepCpuMs,
        }),
        '',
      );
    }

    // 3. Gateway B during a reconnect storm (optional: --storm <players>).
    if (STORM > 0) {
      const before = new Set(readdirSync(profDir));
      const st = await measureStorm({
        endpoint: local.endpoint,
        table: `prof-storm-${Date.now()}`,
        devices: STORM,
        drainMs: 5000,
        rawPerSec: ADMISSIONS / rawWallS,
        env: ENV,
        execArgvB: ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
      });
      const file = readdirSync(profDir).find((f) => !before.has(f) && f.endsWith('.cpuprofile'));
      if (file) {
        const s3 = summarizeProfile(join(profDir, file), st.t0Us, st.t1Us);
        out.push(
          `Reconnect storm, ${st.devices} SDK players, DRAIN_MS=5000: all granted again through B ${(st.allGrantedMs / 1000).toFixed(1)} s after SIGTERM (floor ${(st.floorMs / 1000).toFixed(1)} s), B's admissions ending 1013: ${st.bTryLater}, B lag max ${st.bLagMaxMs.toFixed(0)} ms.`,
          '',
        );
        out.push(profileMarkdown(`Gateway B from SIGTERM on A to the last grant`, s3), '');
      }
    }
  } finally {
    client.destroy();
    await stopAll();
  }
  writeFileSync(join(outDir, 'profile.md'), out.join('\n') + '\n');
  process.stdout.write(out.join('\n') + '\n');
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`profile failed: ${(err as Error)?.stack ?? String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
