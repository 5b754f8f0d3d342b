/**
 * Starts gateways for tests: in-process (fast, most tests) or as a child
 * process (for SIGTERM, SIGKILL, SIGSTOP). Both listen on port 0 on
 * 127.0.0.1 with shrunk timings, against DynamoDB Local with a fresh table
 * unless told to share one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { GetItemCommand, ScanCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { startApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { dynamoEndpoint, localClient } from './dynamodb-local.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { TEST_SECRET } from './tokens.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Timings small enough for a fast suite, inside every constraint config.ts checks. */
export const FAST_TIMINGS: Record<string, string> = {
  PING_INTERVAL_MS: '500',
  PONG_TIMEOUT_MS: '300',
  INSTANCE_HEARTBEAT_MS: '500',
  INSTANCE_TTL_MS: '3000',
  FENCING_MARGIN_MS: '1000',
  ADMISSION_TIMEOUT_MS: '1500',
  DYNAMODB_REQUEST_TIMEOUT_MS: '1000',
  RECONCILE_INTERVAL_MS: '2000',
  DRAIN_MS: '500',
};

export function newTable(): string {
  return `t-${randomUUID()}`;
}

export interface GatewayEnvOptions {
  table?: string;
  endpoint?: string;
  env?: Record<string, string>;
  /** Entry file for child processes (a mutant copy in negative controls). */
  entry?: string;
}

export async function gatewayEnv(opts: GatewayEnvOptions = {}): Promise<Record<string, string>> {
  return {
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: '0',
    OPS_PORT: '0',
    STORE: 'dynamodb',
    DYNAMODB_ENDPOINT: opts.endpoint ?? (await dynamoEndpoint()),
    DYNAMODB_TABLE: opts.table ?? newTable(),
    CREATE_TABLE: 'true',
    JWT_SECRET: TEST_SECRET,
    LOG_LEVEL: 'warn',
    // Every test client connects from 127.0.0.1: only the tests of the per-IP limit keep it.
    CONNECT_RATE_PER_IP: '100000',
    CONNECT_BURST_PER_IP: '100000',
    ...FAST_TIMINGS,
    ...opts.env,
  };
}

export interface TestGateway {
  readonly app: App;
  readonly url: string;
  readonly opsUrl: string;
  readonly table: string;
  readonly endpoint: string;
  readonly logs: string[];
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/** A gateway in this process. `stop()` is the graceful shutdown. */
export async function startGateway(opts: GatewayEnvOptions = {}): Promise<TestGateway> {
  const env = await gatewayEnv(opts);
  const logs: string[] = [];
  const log = createLogger('debug', {}, (line) => logs.push(line));
  const app = await startApp(loadConfig(env), log);
  const opsUrl = `http://127.0.0.1:${app.opsPort}`;
  return {
    app,
    url: `ws://127.0.0.1:${app.port}`,
    opsUrl,
    table: env.DYNAMODB_TABLE,
    endpoint: env.DYNAMODB_ENDPOINT,
    logs,
    metrics: async () => (await fetch(`${opsUrl}/metrics`)).text(),
    stop: () => app.shutdown(),
  };
}

/** A gateway in this process whose store requests all pass through its own fault proxy; both stop with the test. */
export async function gatewayBehindProxy(
  t: { after(fn: () => Promise<void>): void },
  opts: GatewayEnvOptions = {},
): Promise<{ proxy: FaultProxy; gw: TestGateway }> {
  const proxy = await startFaultProxy(await dynamoEndpoint());
  const gw = await startGateway({ ...opts, endpoint: proxy.endpoint });
  t.after(async () => {
    proxy.set('pass');
    await gw.stop();
    await proxy.close();
  });
  return { proxy, gw };
}

/**
 * Gateway A, to be drained in the test (`a.stop()`), and gateway B, where its players come back, on one
 * table: B stops with the test.
 */
export async function drainPair(
  t: { after(fn: () => Promise<void>): void },
  aEnv: Record<string, string>,
  env: Record<string, string> = {},
): Promise<{ a: TestGateway; b: TestGateway }> {
  const table = newTable();
  const a = await startGateway({ table, env: { ...env, ...aEnv } });
  const b = await startGateway({ table, env });
  t.after(() => b.stop());
  return { a, b };
}

/** Two in-process gateways sharing one table, as two replicas behind a load balancer. */
export async function startPair(opts: Omit<GatewayEnvOptions, 'table'> = {}): Promise<[TestGateway, TestGateway]> {
  const table = newTable();
  return [await startGateway({ ...opts, table }), await startGateway({ ...opts, table })];
}

/** The same two, both stopped when the test ends. */
export async function twoGateways(
  t: { after(fn: () => Promise<void>): void },
  env: Record<string, string> = {},
): Promise<[TestGateway, TestGateway]> {
  const [a, b] = await startPair({ env });
  t.after(async () => {
    await Promise.all([a.stop(), b.stop()]);
  });
  return [a, b];
}

export interface ChildGateway {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly httpUrl: string;
  readonly opsUrl: string;
  readonly table: string;
  readonly instanceId: string;
  /** Every stdout line, parsed when it is JSON. */
  readonly lines: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/** A gateway child process (`node --import tsx src/main.ts`); resolves once it listens. */
export async function spawnGateway(opts: GatewayEnvOptions = {}): Promise<ChildGateway> {
  const env = await gatewayEnv({ ...opts, env: { LOG_LEVEL: 'info', ...opts.env } });
  const proc = spawn(process.execPath, ['--import', 'tsx', opts.entry ?? 'src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (rec.msg === 'listening') resolve(rec);
        } catch {
          /* not JSON */
        }
      }
    });
    void exited.then(({ code }) => reject(new Error(`gateway exited (${code}) before listening:\n${stderr}`)));
  });
  const rec = await listening;
  const port = new URL(String(rec.lease).replace('ws://', 'http://')).port;
  const opsPort = new URL(String(rec.ops)).port;
  const child: ChildGateway = {
    proc,
    url: `ws://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    opsUrl: `http://127.0.0.1:${opsPort}`,
    table: env.DYNAMODB_TABLE,
    instanceId: String(rec.instanceId),
    lines,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
  return child;
}

/**
 * A user's item as tests compare it: `n`, the entries' lease ids and the stop marks' lease ids by device, and the
 * content and class counts (without those at 0 when `zeros` is false).
 */
export async function userItem(endpoint: string, table: string, userId: string, opts: { zeros?: boolean } = {}) {
  const item = (await scanTable(endpoint, table)).find((i) => i.pk.S === `user#${userId}`) ?? {};
  const byDevice = (prefix: string): Record<string, string> =>
    Object.fromEntries(
      Object.entries(item)
        .filter(([k]) => k.startsWith(prefix))
        .map(([k, v]) => [k.slice(prefix.length), v.M?.leaseId?.S ?? '?'] as const)
        .sort(([a], [b]) => a.localeCompare(b)),
    );
  return {
    n: Number(item.n?.N ?? 0),
    leases: byDevice('lease:'),
    counts: Object.fromEntries(
      Object.entries(item)
        .filter(([k, v]) => (k.startsWith('c:') || k.startsWith('k:')) && (opts.zeros !== false || Number(v.N) !== 0))
        .map(([k, v]) => [k, Number(v.N)]),
    ),
    marks: byDevice('stop:'),
  };
}

/**
 * Gateway A, a child process the test kills (SIGKILL on its end too), and gateway B in this process behind its
 * own fault proxy, on one new table: where A's devices come back, with B's store requests counted.
 */
export async function killableAndProxied(t: {
  after(fn: () => void | Promise<void>): void;
}): Promise<{ a: ChildGateway; b: TestGateway; proxy: FaultProxy; table: string }> {
  const table = newTable();
  const a = await spawnGateway({ table });
  t.after(() => a.kill('SIGKILL'));
  const { proxy, gw: b } = await gatewayBehindProxy(t, { table });
  return { a, b, proxy, table };
}

/** Every item of a table, as DynamoDB Local holds it now. */
export async function scanTable(endpoint: string, table: string): Promise<Array<Record<string, AttributeValue>>> {
  const client = localClient(endpoint);
  try {
    const out = await client.send(new ScanCommand({ TableName: table, ConsistentRead: true }));
    return out.Items ?? [];
  } finally {
    client.destroy();
  }
}

/** Device ids holding a lease entry in a user's item. */
export async function leaseEntries(endpoint: string, table: string, userId: string): Promise<string[]> {
  const client = localClient(endpoint);
  try {
    const out = await client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: `user#${userId}` } }, ConsistentRead: true }));
    return Object.keys(out.Item ?? {})
      .filter((k) => k.startsWith('lease:'))
      .map((k) => k.slice('lease:'.length))
      .sort();
  } finally {
    client.destroy();
  }
}

/** Value of one sample in Prometheus text, e.g. metric(text, 'sigma_lease_acquire_total{result="granted"}'). */
export function metric(text: string, sample: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(sample + ' ')) return Number(line.slice(sample.length + 1));
  }
  return 0;
}
