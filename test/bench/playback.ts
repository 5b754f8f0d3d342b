/**
 * Bench scenario: what the playback-token check costs on the media path.
 *
 *   - per segment request, the stateless check (nginx auth_request to the
 *     gateway's /v1/playback/authorize) against nginx serving the same file
 *     without auth_request, in the same run, alternating blocks: throughput
 *     and latency at a fixed concurrency, and CPU per request of nginx and of
 *     the gateway (the ratio is the cost);
 *   - per live=1 check, DynamoDB requests counted at the proxy in front of the
 *     store: on the gateway that holds the lease, and on another one;
 *   - signing: µs per token (ES256 and EdDSA), what the refresh sweep spends.
 *
 * Run alone: `node --import tsx test/bench/playback.ts [--quick] [--out dir]`
 * (writes <out>/playback.md and playback.json); `npm run bench` calls it too.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config.js';
import { Metrics } from '../../src/metrics.js';
import { Playback } from '../../src/playback.js';
import { ROOT } from '../helpers/gateway.js';
import { newKeyPair, startOrigin } from '../helpers/playback.js';
import { mintToken } from '../helpers/tokens.js';
import { diff, startCountingProxy, type CountingProxy } from './count-proxy.js';
import { progress, summarize, type Summary } from './measure.js';
import { cpuSeconds, dynamoLocal, startGateway, stopAll } from './procs.js';

export interface PlaybackBench {
  readonly requestsPerArm: number;
  readonly concurrency: number;
  readonly open: Arm;
  /** The same token on every request, as a player does until its next refresh. */
  readonly checked: Arm;
  /** A different token on every request: the worst case, every check verifies a signature. */
  readonly fresh: Arm;
  /** checked / open: time per request at the same concurrency (1 / throughput). */
  readonly costRatio: number;
  /** checked / open: CPU of nginx + gateway per request. */
  readonly cpuRatio: number;
  /** fresh / open, time and CPU. */
  readonly freshCostRatio: number;
  readonly freshCpuRatio: number;
  readonly live: {
    readonly checks: number;
    readonly onOwnerGetItems: number;
    readonly elsewhereGetItems: number;
    readonly otherRequests: number;
  };
  readonly signUs: { readonly ES256: number; readonly EdDSA: number };
}

interface Arm {
  readonly rps: number;
  readonly latencyMs: Summary;
  /** CPU µs per request: nginx, gateway. */
  readonly nginxCpuUs: number;
  readonly gatewayCpuUs: number;
  readonly statuses: Record<string, number>;
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function get(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const req = request(url, { agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolvePromise(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function block(
  url: string,
  headers: () => Record<string, string>,
  count: number,
  concurrency: number,
  latencies: number[],
  statuses: Record<string, number>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < count) {
        const t0 = performance.now();
        const status = await get(url, headers());
        latencies.push(performance.now() - t0);
        statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }),
  );
}

function signMicros(kind: 'p256' | 'ed25519', count: number): number {
  const playback = new Playback(loadConfig({ PLAYBACK_SIGNING_KEY: newKeyPair(kind).privatePem }).playback!, new Metrics());
  const lease = {
    userId: 'user-0001',
    deviceId: 'living-room-tv',
    leaseId: '0192b9c4-6a4e-7d3a-9f3e-3c2b1a0f9e8d',
    contentId: 'match-day-live',
  };
  const deadline = Date.now() + 60_000;
  for (let i = 0; i < 200; i++) playback.issue(lease, deadline, 0);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) playback.issue(lease, deadline, 0);
  return ((performance.now() - t0) * 1000) / count;
}

function decodeExp(token: string): number {
  return (JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as { exp: number }).exp;
}

/** Opens one lease; `token` follows the refresh frames (and the socket, to close). */
async function lease(url: string, user: string): Promise<{ token: string; ws: WebSocket; exp: number }> {
  const ws = new WebSocket(`${url}/v1/lease?device=tv`, ['sigma-stream.v1'], {
    headers: { Authorization: `Bearer ${await mintToken(user)}` },
  });
  const token = await new Promise<string>((resolvePromise, reject) => {
    ws.once('message', (data) => {
      const frame = JSON.parse((data as Buffer).toString()) as { type: string; playback?: { token: string } };
      if (frame.playback) resolvePromise(frame.playback.token);
      else reject(new Error(`no playback token: ${(data as Buffer).toString()}`));
    });
    ws.once('close', (code) => reject(new Error(`closed ${code}`)));
  });
  const held = { token, ws, exp: 0 };
  ws.on('message', (data) => {
    const frame = JSON.parse((data as Buffer).toString()) as { type: string; token?: string; exp?: number };
    if (frame.type === 'playback' && frame.token) {
      held.token = frame.token;
      held.exp = frame.exp ?? 0;
    }
  });
  ws.on('close', (code) => progress(`playback: the bench's lease socket closed ${code}`));
  return held;
}

export async function measurePlayback(opts: { endpoint: string; proxy: CountingProxy; quick: boolean }): Promise<PlaybackBench> {
  const perBlock = opts.quick ? 500 : 2000;
  const blocks = opts.quick ? 2 : 5;
  const concurrency = 16;
  const key = newKeyPair('p256').privatePem;
  const table = `bench-playback-${Date.now()}`;
  // Production mode, as deployed; the key makes the feature on. Both gateways behind the counting proxy.
  const env = { PLAYBACK_SIGNING_KEY: key, CONNECT_RATE_PER_IP: '100000', CONNECT_BURST_PER_IP: '100000' };
  const owner = await startGateway({ endpoint: opts.proxy.endpoint, table, env });
  const other = await startGateway({ endpoint: opts.proxy.endpoint, table, env });
  const origin = await startOrigin(owner.url.replace('ws://', 'http://'));
  const held = await lease(owner.url, 'bench-user');
  try {
    const headers = (): Record<string, string> => ({ Authorization: `Bearer ${held.token}` });
    const none = (): Record<string, string> => ({});
    const arms = {
      open: { lat: [] as number[], st: {} as Record<string, number>, ms: 0, nginx: 0, gw: 0 },
      checked: { lat: [] as number[], st: {} as Record<string, number>, ms: 0, nginx: 0, gw: 0 },
      fresh: { lat: [] as number[], st: {} as Record<string, number>, ms: 0, nginx: 0, gw: 0 },
    };
    // Distinct valid tokens, signed here with the gateways' key (the stateless check does not look at the lease).
    const signer = new Playback(loadConfig({ PLAYBACK_SIGNING_KEY: key }).playback!, new Metrics());
    const tokens = Array.from(
      { length: perBlock * blocks },
      (_, i) => signer.issue({ userId: `u${i}`, deviceId: 'tv', leaseId: `l${i}` }, Date.now() + 600_000, 0)!.token,
    );
    let nextFresh = 0;
    const freshHeaders = (): Record<string, string> => ({ Authorization: `Bearer ${tokens[nextFresh++ % tokens.length]}` });
    progress(
      `playback: ${blocks} x ${perBlock} segment requests per arm at concurrency ${concurrency}, alternating open / checked / fresh tokens`,
    );
    // Warm up both paths (keep-alive sockets, JIT).
    await block(`${origin.url}/open/seg001.m4s`, none, 300, concurrency, [], {});
    await block(`${origin.url}/hls/seg001.m4s`, headers, 300, concurrency, [], {});
    for (let b = 0; b < blocks; b++) {
      for (const name of ['open', 'checked', 'fresh'] as const) {
        const arm = arms[name];
        const nginx0 = cpuSeconds(origin.proc.pid!);
        const gw0 = cpuSeconds(owner.proc.pid!);
        const t0 = performance.now();
        await block(
          `${origin.url}/${name === 'open' ? 'open' : 'hls'}/seg001.m4s`,
          name === 'open' ? none : name === 'checked' ? headers : freshHeaders,
          perBlock,
          concurrency,
          arm.lat,
          arm.st,
        );
        arm.ms += performance.now() - t0;
        arm.nginx += cpuSeconds(origin.proc.pid!) - nginx0;
        arm.gw += cpuSeconds(owner.proc.pid!) - gw0;
      }
    }
    const total = perBlock * blocks;
    const view = (a: (typeof arms)['open']): Arm => ({
      rps: total / (a.ms / 1000),
      latencyMs: summarize(a.lat),
      nginxCpuUs: (a.nginx * 1e6) / total,
      gatewayCpuUs: (a.gw * 1e6) / total,
      statuses: a.st,
    });
    const open = view(arms.open);
    const checked = view(arms.checked);
    const fresh = view(arms.fresh);
    const cpu = (a: Arm): number => a.nginxCpuUs + a.gatewayCpuUs;

    // On a starved machine the lease may have been lost (a fenced gateway) or its token left to run out: start
    // the live phase with a held lease and a token that has a few seconds left.
    if (held.ws.readyState !== WebSocket.OPEN) Object.assign(held, await lease(owner.url, 'bench-user-2'));
    for (let i = 0; i < 100 && decodeExp(held.token) - Date.now() / 1000 < 3; i++) await new Promise((r) => setTimeout(r, 100));
    const checks = opts.quick ? 50 : 200;
    progress(`playback: ${checks} live=1 checks on the owning gateway and ${checks} on another, counted at the store proxy`);
    const liveOn = async (base: string): Promise<{ getItems: number; other: number }> => {
      const before = opts.proxy.snapshot();
      for (let i = 0; i < checks; i++) {
        const status = await get(`${base}/v1/playback/authorize?live=1`, headers());
        if (status !== 204)
          throw new Error(
            `live check answered ${status} (lease socket ${held.ws.readyState === WebSocket.OPEN ? 'open' : 'closed'}, token exp in ${held.exp - Date.now() / 1000} s)`,
          );
      }
      const d = diff(opts.proxy.snapshot(), before);
      const other = Object.entries(d)
        .filter(([k]) => k.includes(':') && k !== 'GetItem:user' && !k.endsWith(':instance'))
        .reduce((s, [, v]) => s + v, 0);
      return { getItems: d['GetItem:user'] ?? 0, other };
    };
    const mine = await liveOn(owner.url.replace('ws://', 'http://'));
    const elsewhere = await liveOn(other.url.replace('ws://', 'http://'));

    progress('playback: signing cost');
    const signCount = opts.quick ? 2000 : 20000;
    return {
      requestsPerArm: total,
      concurrency,
      open,
      checked,
      fresh,
      costRatio: open.rps / checked.rps,
      cpuRatio: cpu(checked) / cpu(open),
      freshCostRatio: open.rps / fresh.rps,
      freshCpuRatio: cpu(fresh) / cpu(open),
      live: {
        checks,
        onOwnerGetItems: mine.getItems / checks,
        elsewhereGetItems: elsewhere.getItems / checks,
        otherRequests: mine.other + elsewhere.other,
      },
      signUs: { ES256: signMicros('p256', signCount), EdDSA: signMicros('ed25519', signCount) },
    };
  } finally {
    held.ws.close();
    await origin.stop();
    await owner.stop();
    await other.stop();
  }
}

export function playbackMarkdown(r: PlaybackBench): string {
  const f = (n: number, d = 1) => n.toFixed(d);
  const row = (name: string, a: Arm) =>
    `| ${name} | ${f(a.rps, 0)} | ${f(a.latencyMs.p50, 2)} | ${f(a.latencyMs.p99, 2)} | ${f(a.nginxCpuUs)} | ${f(a.gatewayCpuUs)} | ${Object.entries(
      a.statuses,
    )
      .map(([s, n]) => `${s}: ${n}`)
      .join(', ')} |`;
  return `## Playback tokens on the media path

Same file (a 1 s fMP4 segment of the test stream) from Debian's nginx, ${r.requestsPerArm} requests per arm at
concurrency ${r.concurrency}, arms alternating in blocks. "checked" is \`auth_request\` to the gateway's
\`/v1/playback/authorize\` (stateless: signature, issuer, expiry; no store request).

| arm | requests/s | p50 ms | p99 ms | nginx CPU µs/req | gateway CPU µs/req | statuses |
|---|---|---|---|---|---|---|
${row('open (no auth_request)', r.open)}
${row('checked (auth_request), one token', r.checked)}
${row('checked, a new token every request', r.fresh)}

**Cost of the stateless check per segment request: ${f(r.costRatio, 2)}× the time of serving the file alone at the same
concurrency, ${f(r.cpuRatio, 2)}× the CPU (nginx + gateway)**, with the same token on every request as a player
sends it until its next refresh (the gateway remembers verified tokens until their exp). Worst case, a new token
on every request (every check verifies a signature): ${f(r.freshCostRatio, 2)}× the time, ${f(r.freshCpuRatio, 2)}× the CPU.

\`live=1\` checks (licences, keys), ${r.live.checks} each, DynamoDB requests counted at the proxy in front of the store:
${f(r.live.onOwnerGetItems, 2)} GetItem per check on the gateway holding the lease (answered from its sessions),
${f(r.live.elsewhereGetItems, 2)} GetItem (strongly consistent) per check on another gateway; ${r.live.otherRequests} other user-item requests.

Signing one token (what the refresh sweep spends per stream per half-lifetime): ES256 ${f(r.signUs.ES256)} µs, EdDSA ${f(r.signUs.EdDSA)} µs.
`;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const outArg = args.indexOf('--out');
  const outDir = resolve(ROOT, outArg >= 0 ? args[outArg + 1] : 'bench-output');
  progress('playback bench: building dist/ (npm run build)');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  const local = await dynamoLocal();
  const proxy = await startCountingProxy(local.endpoint);
  try {
    const result = await measurePlayback({ endpoint: local.endpoint, proxy, quick });
    writePlaybackReport(outDir, result);
  } finally {
    await proxy.close();
    await stopAll();
  }
}

export function writePlaybackReport(outDir: string, result: PlaybackBench): void {
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'playback.md'), playbackMarkdown(result));
  writeFileSync(
    join(outDir, 'playback.json'),
    JSON.stringify(result, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? +v.toFixed(3) : v), 2) + '\n',
  );
  progress(
    `playback: stateless check ${result.costRatio.toFixed(2)}x per segment (CPU ${result.cpuRatio.toFixed(2)}x), a new token every request ${result.freshCostRatio.toFixed(2)}x (CPU ${result.freshCpuRatio.toFixed(2)}x); live=1 ${result.live.elsewhereGetItems} GetItem elsewhere, ${result.live.onOwnerGetItems} on the owner`,
  );
  progress(`playback report: ${join(outDir, 'playback.md')}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().then(
    () => process.exit(0),
    async (err: unknown) => {
      process.stderr.write(`playback bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
      await stopAll();
      process.exit(1);
    },
  );
}
