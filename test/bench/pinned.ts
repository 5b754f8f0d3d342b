/**
 * Phase 1b of `npm run bench`: phase 1 again with the gateway on core 0 alone (`taskset -c 0`) and DynamoDB
 * Local and this process on core 1: what the gateway adds when it does not queue behind the store for a core.
 * Other work on the machine is not pinned away, so core 0 is the gateway's only among our own processes.
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ensureTable } from '../../src/dynamo.js';
import { TEST_SECRET } from '../helpers/tokens.js';
import { measureLatency, type LatencyResult } from './admission.js';
import { progress } from './measure.js';
import { javaChildPid, startGateway, startGrantAtOnce, startMinimalGateway, startRawChild } from './procs.js';

/** Pins every thread of `pid` to `cpus` (taskset list syntax). */
function pin(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** Undefined on one core, or without this process's DynamoDB Local to pin. */
export async function measurePinnedLatency(opts: {
  endpoint: string;
  client: DynamoDBClient;
  table: string;
  count: number;
  warmup: number;
  env: Record<string, string>;
  /** The gateway's node flags (test/bench/pinned-probe.ts tries several). */
  execArgv?: string[];
  /** Only the gateway's main thread on core 0, its other threads on core 1 (a profiler's sampler must not queue behind it). */
  helpersElsewhere?: boolean;
}): Promise<LatencyResult | undefined> {
  const java = javaChildPid();
  const all = `0-${cpus().length - 1}`;
  if (java === undefined || cpus().length < 2) return undefined;
  pin(java, '1');
  pin(process.pid, '1');
  try {
    const gw = await startGateway({
      endpoint: opts.endpoint,
      table: opts.table,
      prefix: ['taskset', '-c', '0'],
      execArgv: opts.execArgv,
      env: opts.env,
    });
    if (opts.helpersElsewhere) {
      // Only the gateway's main thread stays on core 0; its other threads (V8's sampler and workers) go to core 1.
      pin(gw.proc.pid!, '1');
      execFileSync('taskset', ['-p', '-c', '0', String(gw.proc.pid!)], { stdio: 'ignore' });
    }
    // The minimal gateway on the same core: what ws, the SDK and a new connection add without any of our code.
    await ensureTable(opts.client, `${opts.table}-minimal`);
    const mg = await startMinimalGateway(opts.endpoint, `${opts.table}-minimal`, TEST_SECRET);
    pin(mg.proc.pid!, '0');
    // The floors, on core 0 too: a new connection and upgrade alone, and the raw call sent from core 0.
    const grantAtOnce = await startGrantAtOnce();
    pin(grantAtOnce.proc.pid!, '0');
    const rawChild = await startRawChild(opts.endpoint);
    pin(rawChild.proc.pid!, '0');
    try {
      progress(
        `pinned latency: ${opts.count} admissions alternating with raw UpdateItems, minimal-gateway admissions and the floors, all servers on core 0, DynamoDB Local and the client on core 1`,
      );
      return await measureLatency({
        url: gw.url,
        client: opts.client,
        table: opts.table,
        count: opts.count,
        warmup: opts.warmup,
        gatewayPid: gw.proc.pid!,
        metrics: () => gw.metrics(),
        minimalUrl: mg.url,
        floors: { grantAtOnceUrl: grantAtOnce.url, rawElsewhere: (user) => rawChild.acquire(opts.table, user) },
      });
    } finally {
      rawChild.proc.disconnect();
      await grantAtOnce.stop();
      await mg.stop();
      await gw.stop();
    }
  } finally {
    pin(java, all);
    pin(process.pid, all);
  }
}
