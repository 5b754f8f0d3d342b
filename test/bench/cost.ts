/**
 * Phase 4: DynamoDB requests per admission, per release and per denial, from
 * the gateways' own counters and, independently, from the counting proxy in
 * front of DynamoDB Local; and the common alternative's steady-state cost,
 * simulated against the same store: every stream renews its own lease item
 * with a conditional UpdateItem every 10 s (or 30 s).
 */
import { BatchWriteItemCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type WebSocket from 'ws';
import { mintToken } from '../helpers/tokens.js';
import { admit, tokens } from './admission.js';
import { diff, type CountingProxy, type Counts } from './count-proxy.js';
import { pool, progress, sample, sleep } from './measure.js';
import { startGateway, type BenchGateway } from './procs.js';
import { closeAll } from './sockets.js';

const OPS = ['UpdateItem', 'PutItem', 'DeleteItem', 'GetItem', 'BatchGetItem'];

async function gatewayCounts(gateways: readonly BenchGateway[]): Promise<Counts> {
  const out: Counts = {};
  for (const gw of gateways) {
    const text = await gw.metrics();
    for (const op of OPS) {
      for (const outcome of ['ok', 'conditional_failed', 'throttled', 'timeout', 'error']) {
        const v = sample(text, 'sigma_dynamodb_requests_total', { operation: op, outcome });
        if (v) out[`${op}:${outcome}`] = (out[`${op}:${outcome}`] ?? 0) + v;
      }
    }
  }
  return out;
}

export interface PerOperation {
  /** What was done, how many times. */
  step: string;
  count: number;
  /** Gateway counters (operation:outcome) per step. */
  gateway: Counts;
  /** Proxy counts (operation and operation:item kind) per step. */
  proxy: Counts;
  /** Write requests per step, by the proxy. */
  writesPerStep: number;
  /** Requests of any kind per step, by the proxy. */
  requestsPerStep: number;
  /** Both books agree on the total number of requests. */
  agree: boolean;
}

const perStep = (c: Counts, n: number): Counts => Object.fromEntries(Object.entries(c).map(([k, v]) => [k, v / n]));
const WRITES = ['UpdateItem', 'PutItem', 'DeleteItem'];

async function step(
  name: string,
  count: number,
  gateways: readonly BenchGateway[],
  proxy: CountingProxy,
  act: () => Promise<void>,
): Promise<PerOperation> {
  const [g0, p0] = [await gatewayCounts(gateways), proxy.snapshot()];
  await act();
  const [g1, p1] = [await gatewayCounts(gateways), proxy.snapshot()];
  const g = diff(g1, g0);
  const p = diff(p1, p0);
  const gTotal = Object.values(g).reduce((s, v) => s + v, 0);
  const pTotal = OPS.reduce((s, op) => s + (p[op] ?? 0), 0);
  return {
    step: name,
    count,
    gateway: perStep(g, count),
    proxy: perStep(p, count),
    writesPerStep: WRITES.reduce((s, op) => s + (p[op] ?? 0), 0) / count,
    requestsPerStep: pTotal / count,
    agree: gTotal === pTotal,
  };
}

/** Waits until the gateway has booked `expected` UpdateItem answers (a release is written after the close). */
async function quiet(gw: BenchGateway, expected: number): Promise<void> {
  const until = performance.now() + 30_000;
  while (sample(await gw.metrics(), 'sigma_dynamodb_requests_total', { operation: 'UpdateItem' }) < expected && performance.now() < until) {
    await sleep(50);
  }
}

export async function measurePerOperation(opts: { proxy: CountingProxy; table: string; count: number }): Promise<PerOperation[]> {
  // Heartbeats far apart so the windows below hold only what the steps cause (the proxy tells them apart anyway).
  const env = {
    INSTANCE_HEARTBEAT_MS: '60000',
    INSTANCE_TTL_MS: '240000',
    FENCING_MARGIN_MS: '60000',
    PING_INTERVAL_MS: '60000',
    PONG_TIMEOUT_MS: '10000',
    ADMISSION_TIMEOUT_MS: '10000',
    DYNAMODB_REQUEST_TIMEOUT_MS: '5000',
  };
  const a = await startGateway({ endpoint: opts.proxy.endpoint, table: opts.table, env });
  const b = await startGateway({ endpoint: opts.proxy.endpoint, table: opts.table, env });
  const both = [a, b];
  const n = opts.count;
  const out: PerOperation[] = [];
  try {
    const toks = await tokens('cost', n);
    const held: WebSocket[] = [];
    out.push(
      await step('admission below the limit', n, both, opts.proxy, async () => {
        await pool(n, 16, async (i) => {
          const r = await admit(a.url, toks[i]);
          if (r.type !== 'granted') throw new Error(`cost: expected granted, got ${r.type}`);
          held.push(r.ws);
        });
      }),
    );
    const before = sample(await a.metrics(), 'sigma_dynamodb_requests_total', { operation: 'UpdateItem' });
    out.push(
      await step('release (client closes)', n, both, opts.proxy, async () => {
        await closeAll(held);
        await quiet(a, before + n);
      }),
    );

    // Denials: users with max_streams = 1 whose one slot is held on gateway A.
    const limited = await Promise.all(Array.from({ length: n }, (_, i) => mintToken(`deny-${i}`, { maxStreams: 1 })));
    const holders: WebSocket[] = [];
    await pool(n, 16, async (i) => {
      holders.push((await admit(a.url, limited[i], 'tv')).ws);
    });
    for (const [name, gw, device] of [
      ['denial, holder on the same gateway', a, 'phone'],
      ['denial, holder on another gateway', b, 'tablet'],
    ] as const) {
      out.push(
        await step(name, n, both, opts.proxy, async () => {
          await pool(n, 16, async (i) => {
            const r = await admit(gw.url, limited[i], device);
            if (r.type !== 'denied') throw new Error(`cost: expected denied, got ${r.type}`);
            await new Promise<void>((resolve) => (r.ws.readyState === r.ws.CLOSED ? resolve() : r.ws.once('close', () => resolve())));
          });
        }),
      );
    }
    await closeAll(holders);
    progress(`cost: per-operation counts done (${n} of each)`);
  } finally {
    await Promise.all(both.map((gw) => gw.stop()));
  }
  return out;
}

export interface RenewalRun {
  streams: number;
  periodS: number;
  windowS: number;
  /** Renewal writes the proxy saw in the window. */
  writes: number;
  writesPerStreamHour: number;
  /** Most renewals waiting for the store at once: large when the store could not keep up. */
  maxInFlight: number;
}

/**
 * The common design, simulated: `streams` lease items, each renewed by a
 * conditional UpdateItem (this holder still owns it) every `periodS`, the
 * renewals spread evenly over the period. Runs for `windowS` and counts what
 * reached the store at the proxy.
 */
export async function simulateRenewal(opts: {
  client: DynamoDBClient;
  proxy: CountingProxy;
  table: string;
  streams: number;
  periodS: number;
  windowS: number;
}): Promise<RenewalRun> {
  const pk = (i: number): string => `stream#${opts.periodS}-${opts.streams}-${i}`;
  // Seed the lease items (25 per batch); not counted.
  const batches = Math.ceil(opts.streams / 25);
  await pool(batches, 8, async (b) => {
    const items = [];
    for (let i = b * 25; i < Math.min(opts.streams, (b + 1) * 25); i++) {
      items.push({
        PutRequest: { Item: { pk: { S: pk(i) }, holder: { S: `h${i}` }, expiresAt: { N: String(Date.now() + 3 * opts.periodS * 1000) } } },
      });
    }
    await opts.client.send(new BatchWriteItemCommand({ RequestItems: { [opts.table]: items } }));
  });
  const p0 = opts.proxy.snapshot();
  const started = performance.now();
  const periodMs = opts.periodS * 1000;
  const windowMs = opts.windowS * 1000;
  let next = 0;
  let maxInFlight = 0;
  const inFlight = new Set<Promise<unknown>>();
  // Renewal j is stream j mod N, due at j/N of a period: every stream once per period, spread evenly.
  // A 10 ms tick sends whatever is due; the store's answers are not awaited, as a real fleet would not.
  while (performance.now() - started < windowMs) {
    const due = ((performance.now() - started) / periodMs) * opts.streams;
    while (next < due) {
      const i = next++ % opts.streams;
      const p = opts.client
        .send(
          new UpdateItemCommand({
            TableName: opts.table,
            Key: { pk: { S: pk(i) } },
            UpdateExpression: 'SET expiresAt = :e',
            ConditionExpression: 'holder = :h',
            ExpressionAttributeValues: { ':e': { N: String(Date.now() + 3 * periodMs) }, ':h': { S: `h${i}` } },
          }),
        )
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    maxInFlight = Math.max(maxInFlight, inFlight.size);
    await sleep(10);
  }
  await Promise.all(inFlight);
  const d = diff(opts.proxy.snapshot(), p0);
  const writes = d['UpdateItem:stream'] ?? 0;
  return {
    streams: opts.streams,
    periodS: opts.periodS,
    windowS: opts.windowS,
    writes,
    writesPerStreamHour: writes / (opts.streams * (opts.windowS / 3600)),
    maxInFlight,
  };
}
