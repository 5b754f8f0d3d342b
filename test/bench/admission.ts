/**
 * Phases 1 and 2: admission latency and throughput, each against the raw
 * store measured from this same process in the same run, interleaved in
 * rounds so both see the same machine noise.
 *
 * The raw operation is exactly the gateway's fast path: the conditional
 * UpdateItem that takes a slot below the limit, on the gateway's own table,
 * through a client configured like the gateway's (src/dynamo.ts).
 */
import { UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import WebSocket from 'ws';
import { createClient } from '../../src/dynamo.js';
import { mintToken } from '../helpers/tokens.js';
import { pool, progress, summarize, type Summary } from './measure.js';

export function rawClient(endpoint: string): DynamoDBClient {
  return createClient({ endpoint, requestTimeoutMs: 5000, maxAttempts: 1 });
}

/** The fast-path acquire of src/lease-store.ts, done directly. */
export async function rawAcquire(client: DynamoDBClient, table: string, userId: string): Promise<void> {
  await client.send(
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
    ws.once('message', (data) => {
      const ms = performance.now() - started;
      resolve({ ws, ms, type: (JSON.parse(data.toString()) as { type: string }).type });
    });
  });
}

export function closeAll(sockets: readonly WebSocket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          ws.once('close', () => resolve());
          ws.close(1000);
        }),
    ),
  ).then(() => undefined);
}

export const tokens = (prefix: string, n: number): Promise<string[]> =>
  Promise.all(Array.from({ length: n }, (_, i) => mintToken(`${prefix}-${i}`)));

export interface LatencyResult {
  rounds: number;
  raw: Summary;
  gateway: Summary;
  rawSamples: number[];
  gatewaySamples: number[];
}

/**
 * Sequential admissions, one at a time (no queueing in the figure), held
 * open until the end so releases do not overlap the measurement.
 */
export async function measureLatency(opts: {
  url: string;
  client: DynamoDBClient;
  table: string;
  count: number;
  rounds: number;
  warmup: number;
}): Promise<LatencyResult> {
  const perRound = Math.ceil(opts.count / opts.rounds);
  const toks = await tokens('lat', opts.count + opts.warmup);
  const held: WebSocket[] = [];
  const raw: number[] = [];
  const gw: number[] = [];
  for (let i = 0; i < opts.warmup; i++) {
    await rawAcquire(opts.client, opts.table, `lat-warm-${i}`);
    held.push((await admit(opts.url, toks[opts.count + i])).ws);
  }
  for (let r = 0; r < opts.rounds; r++) {
    for (let i = r * perRound; i < Math.min(opts.count, (r + 1) * perRound); i++) {
      const t0 = performance.now();
      await rawAcquire(opts.client, opts.table, `lat-raw-${i}`);
      raw.push(performance.now() - t0);
    }
    for (let i = r * perRound; i < Math.min(opts.count, (r + 1) * perRound); i++) {
      const a = await admit(opts.url, toks[i]);
      if (a.type !== 'granted') throw new Error(`latency phase: expected granted, got ${a.type}`);
      held.push(a.ws);
      gw.push(a.ms);
    }
    progress(`latency: round ${r + 1}/${opts.rounds} (${gw.length} admissions)`);
  }
  await closeAll(held);
  return { rounds: opts.rounds, raw: summarize(raw), gateway: summarize(gw), rawSamples: raw, gatewaySamples: gw };
}

export interface ThroughputResult {
  concurrency: number;
  rounds: number;
  rawOps: number;
  rawPerSec: number;
  gatewayOps: number;
  gatewayPerSec: number;
  gatewayDenied: number;
}

/** Closed-loop load at fixed concurrency, in alternating rounds; distinct users, so always below the limit. */
export async function measureThroughput(opts: {
  url: string;
  client: DynamoDBClient;
  table: string;
  count: number;
  rounds: number;
  concurrency: number;
}): Promise<ThroughputResult> {
  const perRound = Math.ceil(opts.count / opts.rounds);
  const toks = await tokens('tput', perRound * opts.rounds);
  let rawMs = 0;
  let gwMs = 0;
  let denied = 0;
  const held: WebSocket[] = [];
  for (let r = 0; r < opts.rounds; r++) {
    let t0 = performance.now();
    await pool(perRound, opts.concurrency, (i) => rawAcquire(opts.client, opts.table, `tput-raw-${r}-${i}`));
    rawMs += performance.now() - t0;
    t0 = performance.now();
    await pool(perRound, opts.concurrency, async (i) => {
      const a = await admit(opts.url, toks[r * perRound + i]);
      held.push(a.ws);
      if (a.type !== 'granted') denied++;
    });
    gwMs += performance.now() - t0;
    progress(`throughput: round ${r + 1}/${opts.rounds}`);
  }
  await closeAll(held);
  const ops = perRound * opts.rounds;
  return {
    concurrency: opts.concurrency,
    rounds: opts.rounds,
    rawOps: ops,
    rawPerSec: ops / (rawMs / 1000),
    gatewayOps: ops,
    gatewayPerSec: ops / (gwMs / 1000),
    gatewayDenied: denied,
  };
}
