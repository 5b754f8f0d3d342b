/**
 * `node --import tsx test/bench/ab.ts [--ref main] [--ops 4000] [--rounds 6]`:
 * gateway CPU per admission of this worktree's build against another git
 * revision's, measured the same way as phase 2 (closed loop at concurrency
 * 32, CPU from /proc) in alternating rounds against one DynamoDB Local, so
 * both see the same machine. The other revision is compiled into
 * bench-output/ab/<ref>/ (its src/ from `git archive`, this tsconfig).
 * `--ref minimal` compares against test/bench/minimal-gateway.mjs instead
 * (ws, the same SDK client, an HS256 check, no logs or metrics), warmed the
 * same way: the bench's phase 2b gives it fewer warm-up admissions.
 * Prints CPU-ms per admission for each and the ratio.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type WebSocket from 'ws';
import { ROOT } from '../helpers/gateway.js';
import { admit, tokens } from './admission.js';
import { pool, progress, sleep } from './measure.js';
import { TEST_SECRET } from '../helpers/tokens.js';
import { cpuSeconds, dynamoLocal, startGateway, startMinimalGateway, stopAll } from './procs.js';
import { closeAll } from './sockets.js';

const args = process.argv.slice(2);
const opt = (flag: string, fallback: string): string => (args.includes(flag) ? args[args.indexOf(flag) + 1] : fallback);
const REF = opt('--ref', 'main');
const OPS = Number(opt('--ops', '4000'));
const ROUNDS = Number(opt('--rounds', '6'));
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const ENV = {
  ADMISSION_TIMEOUT_MS: '10000',
  DYNAMODB_REQUEST_TIMEOUT_MS: '5000',
  PING_INTERVAL_MS: '20000',
  PONG_TIMEOUT_MS: '10000',
  INSTANCE_HEARTBEAT_MS: '5000',
  INSTANCE_TTL_MS: '20000',
  FENCING_MARGIN_MS: '5000',
};

function buildRef(): string {
  const dir = join(ROOT, 'bench-output', 'ab', REF.replace(/[^\w.-]/g, '_'));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tar = execFileSync('git', ['archive', REF, 'src', 'tsconfig.json'], { cwd: ROOT });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  // Inside the worktree, so the build resolves this node_modules.
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  execFileSync(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', dir], { cwd: dir, stdio: 'inherit' });
  return join(dir, 'dist', 'main.js');
}

async function main(): Promise<void> {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  const local = await dynamoLocal();
  try {
    const table = `ab-${Date.now()}`;
    const thisGw = await startGateway({ endpoint: local.endpoint, table, env: ENV });
    const gws: Record<string, { url: string; proc: { pid?: number }; stop(): Promise<void> }> = {
      [REF]:
        REF === 'minimal'
          ? await startMinimalGateway(local.endpoint, table, TEST_SECRET)
          : await startGateway({ endpoint: local.endpoint, table, env: ENV, entry: buildRef() }),
      this: thisGw,
    };
    const names = Object.keys(gws);
    const per = Math.ceil(OPS / ROUNDS);
    const cpu: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
    const wall: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
    const held: WebSocket[] = [];
    /** One round: CPU-ms per admission of that gateway. */
    const run = async (name: string, prefix: string, n: number): Promise<number> => {
      const toks = await tokens(prefix, n);
      const pid = gws[name].proc.pid!;
      const [c0, t0] = [cpuSeconds(pid), performance.now()];
      await pool(n, 32, async (i) => void held.push((await admit(gws[name].url, toks[i])).ws));
      const c = cpuSeconds(pid) - c0;
      cpu[name] += c;
      wall[name] += performance.now() - t0;
      return (c * 1000) / n;
    };
    // Warm both well past the JIT's tiers: the first rounds of a fresh process cost twice the later ones.
    for (let w = 0; w < 2; w++) for (const n of names) await run(n, `ab-warm-${w}-${n}`, per);
    await closeAll(held.splice(0));
    await sleep(1000);
    for (const n of names) cpu[n] = wall[n] = 0;
    const ratios: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const round: Record<string, number> = {};
      for (const n of r % 2 === 0 ? names : [...names].reverse()) round[n] = await run(n, `ab-${r}-${n}`, per);
      ratios.push(round.this / round[REF]);
      progress(
        `ab: round ${r + 1}/${ROUNDS}: ${names.map((n) => `${n} ${round[n].toFixed(3)}`).join(', ')} CPU-ms per admission; ratio ${ratios[r].toFixed(3)}`,
      );
      await closeAll(held.splice(0));
      await sleep(1000); // the releases land outside the next round
    }
    const ms = (n: string): number => (cpu[n] * 1000) / (ROUNDS * per);
    for (const n of names)
      process.stdout.write(
        `${n.padEnd(8)} ${ms(n).toFixed(3)} CPU-ms per admission, ${((ROUNDS * per) / (wall[n] / 1000)).toFixed(0)} admissions/s\n`,
      );
    const sorted = [...ratios].sort((a, b) => a - b);
    process.stdout.write(
      `ratio this / ${REF}: ${(ms('this') / ms(REF)).toFixed(3)} overall, per-round median ${sorted[Math.floor(sorted.length / 2)].toFixed(3)} (range ${sorted[0].toFixed(3)}-${sorted[sorted.length - 1].toFixed(3)})\n`,
    );
    await Promise.all(Object.values(gws).map((g) => g.stop()));
  } finally {
    await stopAll();
  }
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`ab failed: ${(err as Error)?.stack ?? String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
