/**
 * Phases 1 and 2: admission latency and throughput, each against the raw
 * store measured from this same process in the same run, interleaved in
 * rounds so both see the same machine noise.
 *
 * The raw operation is exactly the gateway's fast path: the conditional
 * UpdateItem that takes a slot below the limit, on the gateway's own table,
 * through a client configured like the gateway's and sent the way the
 * gateway sends it (src/dynamo.ts createClient and send(): the first attempt
 * by hand). A plain SDK client goes through the SDK as its docs show.
 */
import { DynamoDBClient, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import WebSocket from 'ws';
import { createClient, send } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';
import { mintToken } from '../helpers/tokens.js';
import { pool, progress, sample, summarize, type Summary } from './measure.js';
import { cpuSeconds, schedstat } from './procs.js';
import { closeAll } from './sockets.js';

export function rawClient(endpoint: string, requestTimeoutMs = 5000): DynamoDBClient {
  return createClient({ endpoint, requestTimeoutMs, maxAttempts: 1 });
}

/** The "plain SDK client": DynamoDBClient with the SDK's defaults, used as its docs show (`send(cmd)`). */
export function plainClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({ endpoint, region: 'local', credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
}

/** Books the raw calls' requests (send() always books one); nobody reads it. */
const rawMetrics = new Metrics();

/** The fast-path acquire of src/lease-store.ts, done directly (send() uses the client's hand-sent first attempt, if any). */
export async function rawAcquire(client: DynamoDBClient, table: string, userId: string): Promise<void> {
  await send(
    client,
    rawMetrics,
    'UpdateItem',
    new UpdateItemCommand({
      TableName: table,
      Key: { pk: { S: `user#${userId}` } },
      UpdateExpression: 'SET #lease = :lease ADD #n :one, #v :one',
      ConditionExpression: 'attribute_not_exists(#lease) AND (attribute_not_exists(#n) OR #n < :limit)',
      ExpressionAttributeNames: { '#lease': 'lease:tv', '#n': 'n', '#v': 'v' },
      ExpressionAttributeValues: {
        ':lease': { M: { leaseId: { S: `raw-${userId}` }, instanceId: { S: 'raw' }, acquiredAt: { N: String(Date.now()) } } },
        ':one': { N: '1' },
        ':limit': { N: '3' },
      },
      ReturnValues: 'UPDATED_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }),
  );
}

export interface Admission {
  ws: WebSocket;
  /** Socket open (constructor call) to the `granted` frame, ms. */
  ms: number;
  type: string;
}

/** Opens one leased socket and resolves on its first frame. */
export function admit(url: string, token: string, device = 'tv'): Promise<Admission> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const ws = new WebSocket(`${url}/v1/lease?device=${device}`, ['sigma-stream.v1'], {
      headers: { Authorization: `Bearer ${token}` },
      perMessageDeflate: false,
    });
    ws.on('error', reject);
    ws.on('close', (code) => reject(new Error(`closed ${code} before a decision`)));
    ws.once('message', (data: Buffer) => {
      const ms = performance.now() - started;
      resolve({ ws, ms, type: (JSON.parse(data.toString()) as { type: string }).type });
    });
  });
}

export const tokens = (prefix: string, n: number): Promise<string[]> =>
  Promise.all(Array.from({ length: n }, (_, i) => mintToken(`${prefix}-${i}`)));

export interface LatencyResult {
  raw: Summary;
  gateway: Summary;
  rawSamples: number[];
  gatewaySamples: number[];
  /** When each of gatewaySamples began, µs of the machine's monotonic clock (a profile's clock, test/bench/tail-probe.ts). */
  gatewayStartsUs: number[];
  /**
   * The gateway process per admission, from /proc/<pid>/schedstat: CPU it ran,
   * and time it sat runnable waiting for a core (the machine's contention, not its work).
   */
  gatewayCpuMsPerAdmission: number;
  gatewayRunQueueMsPerAdmission: number;
  /** The gateway's own upgrade-to-decision histogram (sigma_lease_acquire_duration_seconds), mean ms. */
  gatewayInsideMeanMs: number;
  /** The minimal gateway's admissions, interleaved (raw, gateway, minimal), when asked for. */
  minimal?: Summary;
  /** The floors, interleaved too, when asked for: a ws server that grants at once, and the raw call from another process. */
  grantAtOnce?: Summary;
  rawElsewhere?: Summary;
}

/** What no gateway can skip, measured beside it (test/bench/pinned.ts puts both on the gateway's core). */
export interface LatencyFloors {
  /** A ws server that answers each upgrade with its 101 and `granted` at once (test/bench/grant-at-once.mjs). */
  grantAtOnceUrl: string;
  /** The raw UpdateItem sent from another process (test/bench/raw-child.ts): resolves with its own ms. */
  rawElsewhere(user: string): Promise<number>;
}

/**
 * Sequential operations, one at a time (no queueing in the figure),
 * alternating raw and gateway one by one so both see the same moment of a
 * noisy machine. Admissions are held open until the end so releases do not
 * overlap the measurement.
 */
export async function measureLatency(opts: {
  url: string;
  client: DynamoDBClient;
  table: string;
  count: number;
  warmup: number;
  gatewayPid: number;
  metrics: () => Promise<string>;
  /** The minimal gateway's URL: its admissions join each pair, as the floor of what ws and the SDK add. */
  minimalUrl?: string;
  floors?: LatencyFloors;
}): Promise<LatencyResult> {
  const toks = await tokens('lat', opts.count + opts.warmup);
  const minimalToks = opts.minimalUrl === undefined ? [] : await tokens('lat-min', opts.count + opts.warmup);
  const minimal: number[] = [];
  const held: WebSocket[] = [];
  const raw: number[] = [];
  const gw: number[] = [];
  const starts: number[] = [];
  const grantAtOnce: number[] = [];
  const rawElsewhere: number[] = [];
  const floors = async (i: number, into?: [number[], number[]]): Promise<void> => {
    if (opts.floors === undefined) return;
    const c = await admit(opts.floors.grantAtOnceUrl, toks[0]);
    held.push(c.ws);
    const ms = await opts.floors.rawElsewhere(`lat-elsewhere-${i}`);
    into?.[0].push(c.ms);
    into?.[1].push(ms);
  };
  for (let i = 0; i < opts.warmup; i++) {
    await rawAcquire(opts.client, opts.table, `lat-warm-${i}`);
    await floors(-1 - i);
    held.push((await admit(opts.url, toks[opts.count + i])).ws);
    if (opts.minimalUrl !== undefined) held.push((await admit(opts.minimalUrl, minimalToks[opts.count + i])).ws);
  }
  const s0 = schedstat(opts.gatewayPid);
  const m0 = await opts.metrics();
  for (let i = 0; i < opts.count; i++) {
    const t0 = performance.now();
    await rawAcquire(opts.client, opts.table, `lat-raw-${i}`);
    raw.push(performance.now() - t0);
    starts.push(Number(process.hrtime.bigint() / 1000n));
    const a = await admit(opts.url, toks[i]);
    if (a.type !== 'granted') throw new Error(`latency phase: expected granted, got ${a.type}`);
    held.push(a.ws);
    gw.push(a.ms);
    if (opts.minimalUrl !== undefined) {
      // Interleaved, so all three see the same moment of the machine; the gateway idles meanwhile.
      const b = await admit(opts.minimalUrl, minimalToks[i]);
      held.push(b.ws);
      minimal.push(b.ms);
    }
    await floors(i, [grantAtOnce, rawElsewhere]);
    if ((i + 1) % Math.ceil(opts.count / 10) === 0) progress(`latency: ${i + 1}/${opts.count} pairs`);
  }
  const s1 = schedstat(opts.gatewayPid);
  const m1 = await opts.metrics();
  await closeAll(held);
  const inside = (m: string): [number, number] => [
    sample(m, 'sigma_lease_acquire_duration_seconds_sum'),
    sample(m, 'sigma_lease_acquire_duration_seconds_count'),
  ];
  const [sum0, n0] = inside(m0);
  const [sum1, n1] = inside(m1);
  return {
    raw: summarize(raw),
    gateway: summarize(gw),
    rawSamples: raw,
    gatewaySamples: gw,
    gatewayStartsUs: starts,
    gatewayCpuMsPerAdmission: (s1.cpuNs - s0.cpuNs) / 1e6 / opts.count,
    gatewayRunQueueMsPerAdmission: (s1.waitNs - s0.waitNs) / 1e6 / opts.count,
    gatewayInsideMeanMs: ((sum1 - sum0) / (n1 - n0)) * 1000,
    ...(minimal.length > 0 && { minimal: summarize(minimal) }),
    ...(grantAtOnce.length > 0 && { grantAtOnce: summarize(grantAtOnce), rawElsewhere: summarize(rawElsewhere) }),
  };
}

/** CPU seconds per 1000 operations, by process, over the measured rounds. */
export interface CpuShare {
  bench: number;
  gateway: number;
  dynamodbLocal: number;
  /** CPU seconds of the three per wall second: how busy the cores were with our own work. */
  coresBusy: number;
}

export interface ThroughputResult {
  raw: CpuShare;
  gatewayCpu: CpuShare;
  /** Rounds of the same UpdateItem from a {@link plainClient}, when asked for. */
  plain?: CpuShare & { perSec: number };
  concurrency: number;
  rounds: number;
  rawOps: number;
  rawPerSec: number;
  gatewayOps: number;
  gatewayPerSec: number;
  /** Admissions that did not end in `granted` (1013 when the store did not answer in time). */
  gatewayFailed: number;
}

/** Closed-loop load at fixed concurrency, in alternating rounds; distinct users, so always below the limit. */
export async function measureThroughput(opts: {
  url: string;
  client: DynamoDBClient;
  table: string;
  count: number;
  rounds: number;
  warmup: number;
  concurrency: number;
  gatewayPid: number;
  dynamodbPid?: number;
  /** Also run rounds from this client (the plain SDK client), in the same rotation. */
  plain?: DynamoDBClient;
}): Promise<ThroughputResult> {
  const perRound = Math.ceil(opts.count / opts.rounds);
  const toks = await tokens('tput', perRound * opts.rounds);
  let rawMs = 0;
  let gwMs = 0;
  let plainMs = 0;
  const cpu = { raw: [0, 0, 0], gateway: [0, 0, 0], plain: [0, 0, 0] };
  const pids = [opts.gatewayPid, opts.dynamodbPid];
  const read = (): number[] => [
    process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
    ...pids.map((p) => (p === undefined ? NaN : cpuSeconds(p))),
  ];
  const book = (into: number[], before: number[]): void => read().forEach((v, i) => (into[i] += v - before[i]));
  let failed = 0;
  const held: WebSocket[] = [];
  const rawRound = async (r: number): Promise<void> => {
    const [t0, c0] = [performance.now(), read()];
    await pool(perRound, opts.concurrency, (i) => rawAcquire(opts.client, opts.table, `tput-raw-${r}-${i}`));
    rawMs += performance.now() - t0;
    book(cpu.raw, c0);
  };
  const plainRound = async (r: number): Promise<void> => {
    if (opts.plain === undefined) return;
    const [t0, c0] = [performance.now(), read()];
    await pool(perRound, opts.concurrency, (i) => rawAcquire(opts.plain!, opts.table, `tput-plain-${r}-${i}`));
    plainMs += performance.now() - t0;
    book(cpu.plain, c0);
  };
  const gatewayRound = async (r: number): Promise<void> => {
    const [t0, c0] = [performance.now(), read()];
    await pool(perRound, opts.concurrency, async (i) => {
      const a = await admit(opts.url, toks[r * perRound + i]).catch(() => undefined);
      if (a) held.push(a.ws);
      if (a?.type !== 'granted') failed++;
    });
    gwMs += performance.now() - t0;
    book(cpu.gateway, c0);
  };
  // Warm both paths at full concurrency first (the JVM behind DynamoDB Local compiles its hot paths under load),
  // then alternate which goes first so neither always meets the store right after the other's burst.
  const warm = await tokens('tput-warm', opts.warmup);
  await pool(opts.warmup, opts.concurrency, (i) => rawAcquire(opts.client, opts.table, `tput-warm-${i}`));
  if (opts.plain) await pool(opts.warmup, opts.concurrency, (i) => rawAcquire(opts.plain!, opts.table, `tput-warm-plain-${i}`));
  await pool(opts.warmup, opts.concurrency, async (i) => {
    const a = await admit(opts.url, warm[i]).catch(() => undefined);
    if (a) held.push(a.ws);
  });
  // Each round rotates who goes first: raw, gateway, plain; gateway, plain, raw; plain, raw, gateway; ...
  const kinds = [rawRound, gatewayRound, plainRound];
  for (let r = 0; r < opts.rounds; r++) {
    for (let k = 0; k < kinds.length; k++) await kinds[(r + k) % kinds.length](r);
    progress(`throughput: round ${r + 1}/${opts.rounds}`);
  }
  await closeAll(held);
  const ops = perRound * opts.rounds;
  const share = (c: number[], ms: number): CpuShare => ({
    bench: (c[0] / ops) * 1000,
    gateway: (c[1] / ops) * 1000,
    dynamodbLocal: (c[2] / ops) * 1000,
    coresBusy: (c[0] + c[1] + (Number.isNaN(c[2]) ? 0 : c[2])) / (ms / 1000),
  });
  return {
    raw: share([cpu.raw[0], 0, cpu.raw[2]], rawMs),
    gatewayCpu: share(cpu.gateway, gwMs),
    ...(opts.plain && { plain: { ...share([cpu.plain[0], 0, cpu.plain[2]], plainMs), perSec: ops / (plainMs / 1000) } }),
    concurrency: opts.concurrency,
    rounds: opts.rounds,
    rawOps: ops,
    rawPerSec: ops / (rawMs / 1000),
    gatewayOps: ops - failed,
    gatewayPerSec: (ops - failed) / (gwMs / 1000),
    gatewayFailed: failed,
  };
}
