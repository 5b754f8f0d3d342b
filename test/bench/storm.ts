/**
 * Phases 7-9: load that comes all at once.
 *
 * - Reconnect storm: `devices` players (the SDK, src/client, in child
 *   processes) hold leases on gateway A; the load balancer takes A out of
 *   rotation and A gets SIGTERM; every player comes back through gateway B
 *   with the SDK's own jittered backoff. Measured from the SIGTERM to the
 *   last player granted again, against the floor DRAIN_MS + devices ÷ raw
 *   write throughput (from phase 2 of the same run).
 * - Throttled store: a gateway behind the counting proxy playing a
 *   provisioned table (writes above a rate get
 *   ProvisionedThroughputExceededException); a burst of admissions; every
 *   one must end granted or 1013 within its deadline, and no lease may stay
 *   behind once the sockets are gone.
 * - Kick-off: new users arriving open-loop at a fixed rate; time to
 *   `granted`, against raw UpdateItems arriving at the same rate.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import WebSocket from 'ws';
import { scanTable } from '../helpers/gateway.js';
import { mintToken } from '../helpers/tokens.js';
import { rawAcquire } from './admission.js';
import type { CountingProxy } from './count-proxy.js';
import { diff } from './count-proxy.js';
import { progress, sample, sleep, summarize, type Summary } from './measure.js';
import { cpuSeconds, javaChildPid, openClients, startGateway, startGrantAtOnce, type BenchGateway } from './procs.js';

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * The defaults a production gateway runs with (the bench's gateways otherwise start from the tests'
 * shrunk timings): a storm must not be judged on a 300 ms pong timeout or a 3 s instance TTL.
 */
export const PRODUCTION_TIMINGS: Record<string, string> = {
  PING_INTERVAL_MS: '20000',
  PONG_TIMEOUT_MS: '10000',
  INSTANCE_HEARTBEAT_MS: '5000',
  INSTANCE_TTL_MS: '20000',
  FENCING_MARGIN_MS: '5000',
  RECONCILE_INTERVAL_MS: '60000',
  ADMISSION_TIMEOUT_MS: '3000',
  DYNAMODB_REQUEST_TIMEOUT_MS: '1000',
};
/**
 * Store timeouts as long as the raw client's (5 s): on a loaded shared machine DynamoDB Local can
 * take over a second, and the default 1 s would turn that into 1013 closes the raw side never sees.
 */
export const PATIENT: Record<string, string> = { ADMISSION_TIMEOUT_MS: '10000', DYNAMODB_REQUEST_TIMEOUT_MS: '5000' };
const PER_PROCESS = 2500;

function kill(gw: BenchGateway): Promise<void> {
  return new Promise((resolve) => {
    if (gw.proc.exitCode !== null || gw.proc.signalCode !== null) return resolve();
    gw.proc.once('exit', () => resolve());
    gw.proc.kill('SIGKILL');
  });
}

export interface StormResult {
  /** CLOCK_MONOTONIC µs of the SIGTERM and of the last grant (to cut a profile of B to the storm). */
  t0Us: number;
  t1Us: number;
  devices: number;
  drainMs: number;
  /** Raw conditional UpdateItems per second at concurrency 32 (phase 2). */
  rawPerSec: number;
  /** DRAIN_MS + devices ÷ rawPerSec (no drain window when A was killed). */
  floorMs: number;
  /** SIGTERM to the last player granted again through B. */
  allGrantedMs: number;
  /** SIGTERM to each player's new grant. */
  regrant: Summary;
  /** `denied` (4429) frames during the storm: nobody was over the limit, so every one is false. */
  falseDenials: number;
  /** Players that ended (any terminal state) instead of coming back. */
  ended: number;
  /** Players not granted again before the bench gave up. */
  missing: number;
  /** SIGTERM to A's exit (its drain and its releases). */
  aExitMs: number;
  /** nodejs_eventloop_lag_max_seconds on B over the storm, ms. */
  bLagMaxMs: number;
  /** B's admissions that ended 1013 (store too slow) during the storm, which the SDK retried. */
  bTryLater: number;
  /**
   * SYNs the kernel dropped at a full listen queue during the storm (TcpExt ListenDrops in /proc/net/netstat,
   * the whole machine: B's public port takes nearly all connections then). Each costs a player 1 s or more.
   */
  listenDrops?: number;
  /** B's DynamoDB requests during the storm, by `operation:outcome` (sigma_dynamodb_requests_total). */
  bStore?: Record<string, number>;
  /** CPU seconds from the SIGTERM to the last grant, per process: where the storm's time went on 2 cores. */
  cpu?: { a: number; b: number; store: number; clients: number; wallS: number };
}

/** TcpExt ListenDrops since boot (Linux), or undefined where /proc/net/netstat does not say. */
function listenDrops(): number | undefined {
  try {
    const [names, values] = readFileSync('/proc/net/netstat', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('TcpExt:'))
      .map((l) => l.split(/\s+/));
    const at = names.indexOf('ListenDrops');
    return at > 0 ? Number(values[at]) : undefined;
  } catch {
    return undefined;
  }
}

/** Every `operation:outcome` series of sigma_dynamodb_requests_total in a scrape. */
function storeRequests(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^sigma_dynamodb_requests_total\{([^}]*)\} (\S+)$/gm)) {
    const op = /operation="([^"]*)"/.exec(m[1])?.[1];
    const outcome = /outcome="([^"]*)"/.exec(m[1])?.[1];
    const key = `${op}:${outcome}`;
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

interface Child {
  proc: ChildProcess;
  granted: number;
  failed: number;
}

export async function measureStorm(opts: {
  endpoint: string;
  table: string;
  devices: number;
  drainMs: number;
  rawPerSec: number;
  env: Record<string, string>;
  /** Node flags for B (`--cpu-prof`): B then stops with SIGTERM, so the profile is written. */
  execArgvB?: string[];
  /** How A goes: drained (SIGTERM, the bench's storm) or killed (SIGKILL: its players come back from a 1006). */
  signal?: 'SIGTERM' | 'SIGKILL';
}): Promise<StormResult> {
  const env = { ...PRODUCTION_TIMINGS, ...opts.env, DRAIN_MS: String(opts.drainMs) };
  const a = await startGateway({ endpoint: opts.endpoint, table: opts.table, env });
  const b = await startGateway({ endpoint: opts.endpoint, table: opts.table, env, execArgv: opts.execArgvB });
  const script = fileURLToPath(new URL('./sdk-clients.ts', import.meta.url));
  const procs = Math.ceil(opts.devices / PER_PROCESS);
  const children: Child[] = [];
  try {
    progress(`storm: ${opts.devices} SDK players taking leases on gateway A (${procs} client processes)`);
    children.push(
      ...(await Promise.all(
        Array.from({ length: procs }, async (_, p) => {
          const share = Math.floor(opts.devices / procs) + (p < opts.devices % procs ? 1 : 0);
          const proc = fork(script, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
          const opened = await new Promise<{ granted: number; failed: number }>((resolve, reject) => {
            proc.once('message', (m) => resolve(m as { granted: number; failed: number }));
            proc.once('exit', (code) => reject(new Error(`storm client exited (${code}) while opening`)));
            proc.send({ cmd: 'open', url: a.url, userPrefix: `storm-${p}`, count: share, concurrency: Math.ceil(128 / procs) });
          });
          return { proc, ...opened };
        }),
      )),
    );
    const held = children.reduce((s, c) => s + c.granted, 0);
    if (held < opts.devices) throw new Error(`storm: only ${held} of ${opts.devices} players granted on A`);
    await sleep(2000);

    // The scrape resets B's event-loop lag window; the load balancer drops A; A gets SIGTERM.
    const bBefore = await b.metrics();
    const regrants: number[] = [];
    let falseDenials = 0;
    let ended = 0;
    const progressBy = new Map<ChildProcess, number>();
    const done = Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            c.proc.on('message', (m: { type: string; regranted?: number; grantUs?: number[]; denials?: number; ended?: number }) => {
              if (m.type === 'progress') progressBy.set(c.proc, m.regranted!);
              if (m.type === 'regranted') {
                regrants.push(...m.grantUs!);
                falseDenials += m.denials!;
                ended += m.ended!;
                progressBy.set(c.proc, m.grantUs!.length);
                resolve();
              }
            });
          }),
      ),
    );
    const java = javaChildPid();
    // Not exited, nor killed (a killed child has a signalCode and no exitCode).
    const aRunning = (): boolean => a.proc.exitCode === null && a.proc.signalCode === null;
    const cpuNow = () => ({
      a: aRunning() ? cpuSeconds(a.proc.pid!) : NaN,
      b: cpuSeconds(b.proc.pid!),
      store: java === undefined ? NaN : cpuSeconds(java),
      clients: children.reduce((sum, c) => sum + cpuSeconds(c.proc.pid!), 0),
    });
    // A's CPU is read until it exits (its last read stands for the rest).
    const cpu0 = cpuNow();
    const drops0 = listenDrops();
    let aCpu = cpu0.a;
    const aWatch = setInterval(() => {
      if (aRunning()) aCpu = cpuSeconds(a.proc.pid!);
    }, 100);
    for (const c of children) c.proc.send({ cmd: 'switch', url: b.url });
    const t0 = nowUs();
    const aExited = new Promise<number>((resolve) => a.proc.once('exit', () => resolve((nowUs() - t0) / 1000)));
    a.proc.kill(opts.signal ?? 'SIGTERM');
    const floorMs = (opts.signal === 'SIGKILL' ? 0 : opts.drainMs) + (opts.devices / opts.rawPerSec) * 1000;
    const giveUpMs = Math.max(60_000, 4 * floorMs);
    const ticker = setInterval(
      () => progress(`storm: ${[...progressBy.values()].reduce((s, v) => s + v, 0)}/${held} players granted again through B`),
      5000,
    );
    const finished = await Promise.race([done.then(() => true), sleep(giveUpMs).then(() => false)]);
    clearInterval(ticker);
    clearInterval(aWatch);
    const cpu1 = cpuNow();
    const drops1 = listenDrops();
    const bAfter = await b.metrics();
    const aExitMs = await Promise.race([aExited, sleep(20_000).then(() => NaN)]);
    const rel = regrants.map((us) => (us - t0) / 1000);
    const result: StormResult = {
      t0Us: t0,
      t1Us: regrants.length ? Math.max(...regrants) : nowUs(),
      devices: held,
      drainMs: opts.drainMs,
      rawPerSec: opts.rawPerSec,
      floorMs,
      allGrantedMs: finished ? Math.max(...rel) : NaN,
      regrant: summarize(rel),
      falseDenials,
      ended,
      missing: held - rel.length - ended,
      aExitMs,
      bLagMaxMs: sample(bAfter, 'nodejs_eventloop_lag_max_seconds') * 1000,
      bTryLater: sample(bAfter, 'sigma_ws_closes_total', { code: '1013' }) - sample(bBefore, 'sigma_ws_closes_total', { code: '1013' }),
      ...(drops0 !== undefined && drops1 !== undefined && { listenDrops: drops1 - drops0 }),
      cpu: {
        a: aCpu - cpu0.a,
        b: cpu1.b - cpu0.b,
        store: cpu1.store - cpu0.store,
        clients: cpu1.clients - cpu0.clients,
        wallS: (nowUs() - t0) / 1e6,
      },
      bStore: Object.fromEntries(
        [...storeRequests(bAfter)].map(([k, v]) => [k, v - (storeRequests(bBefore).get(k) ?? 0)] as const).filter(([, v]) => v > 0),
      ),
    };
    progress(
      `storm: all ${rel.length} granted again ${(result.allGrantedMs / 1000).toFixed(1)} s after SIGTERM (floor ${(floorMs / 1000).toFixed(1)} s), ${falseDenials} false denials, B lag max ${result.bLagMaxMs.toFixed(0)} ms`,
    );
    return result;
  } finally {
    // SIGKILL B first (no drain, no 10 000 releases: the table is thrown away), then the players.
    await Promise.all([kill(a), opts.execArgvB ? b.stop(120_000) : kill(b)]);
    await Promise.all(
      children.map(
        ({ proc }) =>
          new Promise<void>((resolve) => {
            if (proc.exitCode !== null) return resolve();
            proc.once('exit', () => resolve());
            proc.send({ cmd: 'close' });
            setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
          }),
      ),
    );
  }
}

export interface ThrottleResult {
  admissions: number;
  concurrency: number;
  allowedWritesPerSec: number;
  admissionTimeoutMs: number;
  granted: number;
  /** Ended with 1013 (the store did not take the write in time). */
  tryLater: number;
  /** Neither granted nor 1013 (another close, or no answer at all): must be 0. */
  other: number;
  /** Decisions later than ADMISSION_TIMEOUT_MS + 1 s after the socket opened: must be 0. */
  late: number;
  decision: Summary;
  /** Granted per second over the burst (first open to last decision). */
  grantedPerSec: number;
  /** Requests the proxy refused with ProvisionedThroughputExceededException, and writes it let through. */
  throttled: number;
  writesPassed: number;
  /** Lease entries left in the table once every socket was closed and the releases settled: must be 0. */
  leaked: number;
  /** sigma_admissions_in_flight at the end: must be 0. */
  inFlightAtEnd: number;
  /** Times the gateway fenced itself (its heartbeats are writes too, and were throttled like the rest). */
  fencings: number;
}

/** Every socket's first answer: a frame type, or the close code when it closed first. */
function decide(url: string, token: string): Promise<{ ws: WebSocket; outcome: string; ms: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const ws = new WebSocket(`${url}/v1/lease?device=tv`, ['sigma-stream.v1'], {
      headers: { Authorization: `Bearer ${token}` },
      perMessageDeflate: false,
    });
    let settled = false;
    const settle = (outcome: string): void => {
      if (settled) return;
      settled = true;
      resolve({ ws, outcome, ms: performance.now() - started });
    };
    ws.on('error', () => settle('error'));
    ws.on('close', (code) => settle(String(code)));
    ws.once('message', (d: Buffer) => settle((JSON.parse(d.toString()) as { type: string }).type));
    setTimeout(() => settle('no answer'), 30_000).unref();
  });
}

export async function measureThrottled(opts: {
  proxy: CountingProxy;
  table: string;
  admissions: number;
  allowedWritesPerSec: number;
  concurrency: number;
}): Promise<ThrottleResult> {
  const admissionTimeoutMs = 3000;
  const gw = await startGateway({
    endpoint: opts.proxy.endpoint,
    table: opts.table,
    // Production store timeouts: the deadline is what is being checked.
    env: { ...PRODUCTION_TIMINGS, ADMISSION_TIMEOUT_MS: String(admissionTimeoutMs), DRAIN_MS: '1000' },
  });
  const toks = await Promise.all(Array.from({ length: opts.admissions }, (_, i) => mintToken(`throttle-${i}`)));
  const held: WebSocket[] = [];
  const outcomes: Array<{ outcome: string; ms: number }> = [];
  let leaked: number;
  let inFlightAtEnd: number;
  let fencings: number;
  let burstS: number;
  let counts: Record<string, number>;
  try {
    progress(
      `throttle: ${opts.admissions} admissions at concurrency ${opts.concurrency}, store writes capped at ${opts.allowedWritesPerSec}/s`,
    );
    const before = opts.proxy.snapshot();
    opts.proxy.setWriteRate(opts.allowedWritesPerSec);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: opts.concurrency }, async () => {
        while (next < opts.admissions) {
          const d = await decide(gw.url, toks[next++]);
          outcomes.push(d);
          held.push(d.ws);
        }
      }),
    );
    burstS = (performance.now() - t0) / 1000;
    counts = diff(opts.proxy.snapshot(), before);
    // Releases go through the same cap: they retry until the store takes them.
    progress('throttle: closing every socket; waiting for the releases');
    for (const ws of held) ws.close(1000);
    const until = performance.now() + 30_000;
    for (;;) {
      const items = await scanTable(opts.proxy.endpoint, opts.table);
      leaked = items
        .filter((i) => i.pk.S!.startsWith('user#'))
        .reduce((s, i) => s + Object.keys(i).filter((k) => k.startsWith('lease:')).length, 0);
      if (leaked === 0 || performance.now() > until) break;
      await sleep(1000);
    }
    const text = await gw.metrics();
    inFlightAtEnd = sample(text, 'sigma_admissions_in_flight');
    fencings = sample(text, 'sigma_fencing_events_total');
  } finally {
    opts.proxy.setWriteRate(undefined);
    await gw.stop();
  }
  const c = counts;
  const granted = outcomes.filter((o) => o.outcome === 'granted').length;
  const tryLater = outcomes.filter((o) => o.outcome === '1013').length;
  const writes = ['PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem'].reduce(
    (s, op) => s + (c[op] ?? 0) - (c[`${op}:throttled`] ?? 0),
    0,
  );
  return {
    admissions: opts.admissions,
    concurrency: opts.concurrency,
    allowedWritesPerSec: opts.allowedWritesPerSec,
    admissionTimeoutMs,
    granted,
    tryLater,
    other: outcomes.length - granted - tryLater + (opts.admissions - outcomes.length),
    late: outcomes.filter((o) => o.ms > admissionTimeoutMs + 1000).length,
    decision: summarize(outcomes.map((o) => o.ms)),
    grantedPerSec: granted / burstS,
    throttled: c.throttled ?? 0,
    writesPassed: writes,
    leaked,
    inFlightAtEnd,
    fencings,
  };
}

export interface KickoffResult {
  users: number;
  windowS: number;
  granted: number;
  gateway: Summary;
  /** Raw conditional UpdateItems arriving at the same rate from this process, ms. */
  raw: Summary;
  /** The same players, at the same rate, against a ws server that grants at once (grant-at-once.mjs): the connection floor, ms. */
  connectionFloor?: Summary;
}

export async function measureKickoff(opts: {
  endpoint: string;
  table: string;
  client: DynamoDBClient;
  users: number;
  windowS: number;
  env: Record<string, string>;
}): Promise<KickoffResult> {
  const rate = opts.users / opts.windowS;
  progress(`kick-off: ${opts.users} raw UpdateItems arriving at ${rate.toFixed(0)}/s (baseline)`);
  const raw: number[] = [];
  const pending: Promise<void>[] = [];
  const started = performance.now();
  for (let i = 0; i < opts.users; i++) {
    const wait = started + (i * 1000) / rate - performance.now();
    if (wait > 1) await sleep(wait);
    const t = performance.now();
    pending.push(rawAcquire(opts.client, opts.table, `kick-raw-${i}`).then(() => void raw.push(performance.now() - t)));
  }
  await Promise.all(pending);
  const gw = await startGateway({ endpoint: opts.endpoint, table: opts.table, env: { ...PRODUCTION_TIMINGS, ...opts.env } });
  try {
    // Warm the gateway's paths first, as a running gateway is.
    const warm = await openClients(gw.url, 'kick-warm', 200, 32);
    await warm.close();
    progress(`kick-off: ${opts.users} new users connecting within ${opts.windowS} s`);
    const group = await openClients(gw.url, 'kick', opts.users, 0, rate);
    await group.close();
    await kill(gw);
    // What the players and the machine take for a new connection and upgrade at this rate, with no work behind it.
    const floorServer = await startGrantAtOnce();
    progress(`kick-off: ${opts.users} new players at the same rate on a ws server that grants at once (the connection floor)`);
    const floor = await openClients(floorServer.url, 'kick-floor', opts.users, 0, rate);
    await floor.close();
    await floorServer.stop();
    return {
      users: opts.users,
      windowS: opts.windowS,
      granted: group.granted,
      gateway: summarize(group.grantMs),
      raw: summarize(raw),
      connectionFloor: summarize(floor.grantMs),
    };
  } finally {
    await kill(gw);
  }
}
