/**
 * Every child process the bench starts goes through here, so one exit path
 * can kill them all: normal end, an exception, Ctrl-C or SIGTERM. No java or
 * node process outlives the bench.
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort, startDynamoLocal, type DynamoLocal } from '../helpers/dynamodb-local.js';
import { gatewayEnv, ROOT } from '../helpers/gateway.js';
import type { OpenOrder } from './clients.js';

const children = new Set<ChildProcess>();
const stoppers = new Set<() => Promise<void>>();

function track(proc: ChildProcess): ChildProcess {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

/** Kills every child still running (synchronous, so it also works from process 'exit'). */
export function killAll(): void {
  for (const proc of children) proc.kill('SIGKILL');
  for (const stop of stoppers) void stop();
}

/** Stops DynamoDB Local and every child; waits for DynamoDB Local to exit. */
export async function stopAll(): Promise<void> {
  for (const proc of children) proc.kill('SIGKILL');
  await Promise.all([...stoppers].map((stop) => stop()));
}

process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping child processes\n`);
    void stopAll().finally(() => process.exit(130));
  });
}

export async function dynamoLocal(): Promise<DynamoLocal> {
  const local = await startDynamoLocal();
  stoppers.add(() => local.stop());
  return local;
}

export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status);
  return kb ? Number(kb[1]) * 1024 : NaN;
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined>, proc: ChildProcess, timeoutMs = 30_000): Promise<T> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited before it was ready`);
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (performance.now() > until) throw new Error(`${what} not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** /proc/<pid>/schedstat: nanoseconds on a CPU, and nanoseconds runnable but waiting for one. */
export function schedstat(pid: number): { cpuNs: number; waitNs: number } {
  const [cpuNs, waitNs] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
  return { cpuNs, waitNs };
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** Pid of this process's DynamoDB Local (its java child), for CPU accounting. */
export function javaChildPid(): number | undefined {
  const out = spawnSync('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)], { encoding: 'utf8' }).stdout;
  const line = out.split('\n').find((l) => l.trim().endsWith('java'));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/)[0]);
}

/** node flags that load gc-probe.mjs: SIGUSR2 then runs a full GC in that process. */
export const GC_PROBE_ARGS = ['--expose-gc', '--import', new URL('./gc-probe.mjs', import.meta.url).href];

export interface BenchGateway {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly opsUrl: string;
  readonly env: Record<string, string>;
  metrics(): Promise<string>;
  rssBytes(): number;
  /** SIGTERM (graceful drain) and wait for the exit; SIGKILL after `killAfterMs` (default 15 s). */
  stop(killAfterMs?: number): Promise<void>;
}

/**
 * A gateway as production runs it: compiled JavaScript (`node dist/main.js`,
 * built once at bench start), its own process, ports chosen here so the logs
 * can go to /dev/null at the production level (info).
 */
export async function startGateway(opts: {
  endpoint: string;
  table: string;
  env?: Record<string, string>;
  gcProbe?: boolean;
  /** Extra node flags (e.g. `--cpu-prof`), and a command prefix such as `['taskset', '-c', '0']`. */
  execArgv?: string[];
  prefix?: string[];
  /** Script to run instead of dist/main.js (another build, test/bench/ab.ts). */
  entry?: string;
}): Promise<BenchGateway> {
  const [port, opsPort] = [await freePort(), await freePort()];
  const env = await gatewayEnv({
    endpoint: opts.endpoint,
    table: opts.table,
    env: { NODE_ENV: 'production', LOG_LEVEL: 'info', PORT: String(port), OPS_PORT: String(opsPort), ...opts.env },
  });
  const proc = track(
    spawn(
      opts.prefix?.[0] ?? process.execPath,
      [
        ...(opts.prefix ? [...opts.prefix.slice(1), process.execPath] : []),
        ...(opts.gcProbe ? GC_PROBE_ARGS : []),
        ...(opts.execArgv ?? []),
        opts.entry ?? 'dist/main.js',
      ],
      {
        cwd: ROOT,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    ),
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const opsUrl = `http://127.0.0.1:${opsPort}`;
  const metrics = async (): Promise<string> => (await fetch(`${opsUrl}/metrics`)).text();
  try {
    await waitFor('gateway', async () => ((await fetch(`${opsUrl}/healthz`)).ok ? true : undefined), proc);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
  }
  return {
    proc,
    url: `ws://127.0.0.1:${port}`,
    opsUrl,
    env,
    metrics,
    rssBytes: () => rssBytes(proc.pid!),
    stop: (killAfterMs = 15_000) =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
        setTimeout(() => proc.kill('SIGKILL'), killAfterMs).unref();
      }),
  };
}

export interface BareServer {
  readonly proc: ChildProcess;
  readonly url: string;
  stats(): Promise<{
    rssBytes: number;
    heapUsedBytes: number;
    heapTotalBytes: number;
    connections: number;
    lagMs: { p50: number; p99: number; max: number };
  }>;
  stop(): Promise<void>;
}

/** The bare `ws` server (bare-ws-server.mjs), plain node, own process. */
export async function startBareServer(
  pingIntervalMs: number,
  gcProbe = false,
  execArgv: string[] = [],
  env: Record<string, string> = {},
): Promise<BareServer> {
  const script = fileURLToPath(new URL('./bare-ws-server.mjs', import.meta.url));
  const proc = track(
    fork(script, [], {
      env: { ...process.env, PING_INTERVAL_MS: String(pingIntervalMs), ...env },
      execArgv: [...(gcProbe ? GC_PROBE_ARGS : []), ...execArgv],
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { port: number }).port));
    proc.once('exit', () => reject(new Error('bare ws server exited before listening')));
  });
  return {
    proc,
    url: `ws://127.0.0.1:${port}`,
    stats: () =>
      new Promise((resolve) => {
        proc.once('message', (m) => resolve(m as Awaited<ReturnType<BareServer['stats']>>));
        proc.send({ cmd: 'stats' });
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

export interface MinimalGateway {
  readonly proc: ChildProcess;
  readonly url: string;
  stop(): Promise<void>;
}

/** A plain-node script of this folder that prints {"port":N} once it listens (the minimal gateway and its kin). */
async function startListeningScript(name: string, env: Record<string, string> = {}): Promise<MinimalGateway> {
  const script = fileURLToPath(new URL(`./${name}`, import.meta.url));
  const proc = track(
    fork(script, [], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { port: number }).port));
    proc.once('exit', () => reject(new Error(`${name} exited before listening`)));
  });
  return {
    proc,
    url: `ws://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

/** The minimal gateway (minimal-gateway.mjs): plain node, its own process, the CPU floor of an admission. */
export function startMinimalGateway(endpoint: string, table: string, secret: string): Promise<MinimalGateway> {
  return startListeningScript('minimal-gateway.mjs', { DYNAMODB_ENDPOINT: endpoint, DYNAMODB_TABLE: table, JWT_SECRET: secret });
}

/** grant-at-once.mjs: a ws server that grants every upgrade at once, the connection floor of an admission. */
export function startGrantAtOnce(): Promise<MinimalGateway> {
  return startListeningScript('grant-at-once.mjs');
}

/** Runs raw UpdateItems from a process of its own (raw-child.ts); `acquire` resolves with the call's own ms. */
export async function startRawChild(
  endpoint: string,
): Promise<{ proc: ChildProcess; acquire(table: string, user: string): Promise<number> }> {
  const script = fileURLToPath(new URL('./raw-child.ts', import.meta.url));
  const proc = track(
    fork(script, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, DYNAMODB_ENDPOINT: endpoint },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  await new Promise<void>((resolve, reject) => {
    proc.once('message', () => resolve());
    proc.once('exit', (code) => reject(new Error(`raw-child.ts exited (${code}) before it was ready`)));
  });
  return {
    proc,
    acquire: (table, user) =>
      new Promise((resolve, reject) => {
        proc.once('message', (m: number | { error: string }) => (typeof m === 'number' ? resolve(m) : reject(new Error(m.error))));
        proc.send({ table, user });
      }),
  };
}

export interface ClientGroup {
  /** Sockets granted (the first frame was `granted`). */
  readonly granted: number;
  readonly failed: number;
  /** Socket open to `granted` of every granted socket, ms. */
  readonly grantMs: number[];
  close(): Promise<void>;
}

const PER_PROCESS = 2500;

/**
 * Opens `count` idle leased sockets from child processes of at most 2500
 * sockets each (the open-files limit is per process), users `<prefix>-<i>`.
 */
export async function openClients(url: string, prefix: string, count: number, concurrency = 64, ratePerSec?: number): Promise<ClientGroup> {
  const script = fileURLToPath(new URL('./clients.ts', import.meta.url));
  const procs = Math.ceil(count / PER_PROCESS);
  const results = await Promise.all(
    Array.from({ length: procs }, async (_, p) => {
      const share = Math.floor(count / procs) + (p < count % procs ? 1 : 0);
      const proc = track(fork(script, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
      const order: OpenOrder & { cmd: string } = {
        cmd: 'open',
        url,
        userPrefix: `${prefix}-${p}`,
        count: share,
        concurrency: Math.ceil(concurrency / procs),
        ratePerSec: ratePerSec === undefined ? undefined : ratePerSec / procs,
      };
      const opened = await new Promise<{ granted: number; failed: number; grantMs: number[] }>((resolve, reject) => {
        proc.once('message', (m) => resolve(m as { granted: number; failed: number; grantMs: number[] }));
        proc.once('exit', (code) => reject(new Error(`client process exited (${code}) while opening`)));
        proc.send(order);
      });
      return { proc, ...opened };
    }),
  );
  return {
    granted: results.reduce((s, r) => s + r.granted, 0),
    failed: results.reduce((s, r) => s + r.failed, 0),
    grantMs: results.flatMap((r) => r.grantMs),
    close: async () => {
      await Promise.all(
        results.map(
          ({ proc }) =>
            new Promise<void>((resolve) => {
              if (proc.exitCode !== null) return resolve();
              proc.once('exit', () => resolve());
              proc.send({ cmd: 'close' });
              setTimeout(() => proc.kill('SIGKILL'), 10_000).unref();
            }),
        ),
      );
    },
  };
}
