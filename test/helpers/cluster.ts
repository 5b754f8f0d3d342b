/**
 * Several gateway child processes against one DynamoDB Local, each through
 * its own fault proxy, and a recorder that checks the limit afterwards from
 * what the devices saw.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect, type ConnectOptions, type Device } from './devices.js';
import { dynamoEndpoint } from './dynamodb-local.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { newTable, ROOT, spawnGateway, type ChildGateway } from './gateway.js';

export interface Node {
  readonly gateway: ChildGateway;
  readonly proxy: FaultProxy;
}

export interface Cluster {
  readonly nodes: Node[];
  readonly table: string;
  readonly endpoint: string;
  stop(): Promise<void>;
}

export async function startCluster(size: number, opts: { env?: Record<string, string>; entry?: string } = {}): Promise<Cluster> {
  const endpoint = await dynamoEndpoint();
  const table = newTable();
  const nodes: Node[] = [];
  for (let i = 0; i < size; i++) {
    const proxy = await startFaultProxy(endpoint);
    const gateway = await spawnGateway({ table, endpoint: proxy.endpoint, env: opts.env, entry: opts.entry });
    nodes.push({ gateway, proxy });
  }
  return {
    nodes,
    table,
    endpoint,
    async stop() {
      for (const { gateway, proxy } of nodes) {
        proxy.set('pass');
        gateway.kill('SIGCONT');
        gateway.kill('SIGKILL');
        await gateway.exited;
        await proxy.close();
      }
    },
  };
}

/**
 * A copy of src/ with one edit applied, for negative controls: the test runs
 * the real gateway with, say, the limit condition removed and shows that its
 * checks catch the violation. Throws if the edit no longer applies.
 */
export function mutantEntry(file: string, search: string, replace: string): string {
  mkdirSync(join(ROOT, 'test-output'), { recursive: true });
  const dir = mkdtempSync(join(ROOT, 'test-output', 'mutant-'));
  cpSync(join(ROOT, 'src'), join(dir, 'src'), { recursive: true });
  const path = join(dir, 'src', file);
  const text = readFileSync(path, 'utf8');
  if (!text.includes(search)) throw new Error(`mutant: "${search}" not found in src/${file}`);
  writeFileSync(path, text.replace(search, replace));
  return join(dir, 'src', 'main.ts');
}

interface Interval {
  user: string;
  device: string;
  gateway: number;
  grantedAt: number;
  closedAt: number;
  code?: number;
}

/**
 * Records what every device saw: when it was granted and when it was closed,
 * on the monotonic clock. `violations()` then finds every span of time in
 * which a user had more than `limit` devices playing.
 */
export class Recorder {
  readonly intervals: Interval[] = [];

  connect(base: string, gateway: number, user: string, opts: ConnectOptions): Device {
    const device = connect(base, opts);
    const entry: Interval = { user, device: opts.device, gateway, grantedAt: Number.NaN, closedAt: Number.POSITIVE_INFINITY };
    device.decision.then(
      (frame) => {
        if (frame.type === 'granted') {
          entry.grantedAt = performance.now();
          this.intervals.push(entry);
        }
      },
      () => {},
    );
    void device.closed.then((c) => {
      entry.closedAt = device.closedAt ?? performance.now();
      entry.code = c.code;
    });
    return device;
  }

  /** Spans where more than `limit` of a user's devices were playing at once, with their length in ms. */
  violations(limit: number): Array<{ user: string; from: number; to: number; ms: number; playing: number }> {
    const out: Array<{ user: string; from: number; to: number; ms: number; playing: number }> = [];
    const users = new Set(this.intervals.map((i) => i.user));
    for (const user of users) {
      const events: Array<[number, number]> = [];
      for (const i of this.intervals.filter((x) => x.user === user)) {
        events.push([i.grantedAt, +1], [i.closedAt, -1]);
      }
      // Closes before grants at the same instant: a hand-over is not an overlap.
      events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let playing = 0;
      let start = 0;
      let peak = 0;
      for (const [t, delta] of events) {
        const before = playing;
        playing += delta;
        if (before <= limit && playing > limit) {
          start = t;
          peak = playing;
        } else if (playing > limit) {
          peak = Math.max(peak, playing);
        } else if (before > limit && playing <= limit) {
          out.push({ user, from: start, to: t, ms: t - start, playing: peak });
        }
      }
    }
    return out;
  }
}
