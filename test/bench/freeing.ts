/**
 * Phase 5: how long a slot stays taken after its holder is gone, against the
 * configured bounds, with shrunk timings. "Free" is what a user observes:
 * another device of the same user (limit 1) is granted.
 */
import WebSocket from 'ws';
import { mintToken } from '../helpers/tokens.js';
import { admit } from './admission.js';
import { progress, sleep, summarize, type Summary } from './measure.js';
import { startGateway } from './procs.js';

export interface FreeingResult {
  trials: number;
  pollMs: number;
  deadDevice: { pingIntervalMs: number; pongTimeoutMs: number; boundMs: number; ms: Summary; samples: number[] };
  crashedGateway: { heartbeatMs: number; instanceTtlMs: number; fencingMarginMs: number; boundMs: number; ms: Summary; samples: number[] };
}

/** Tries a new device of the user every `pollMs` until it is granted; resolves with the monotonic time of the grant. */
async function pollUntilGranted(url: string, token: string, pollMs: number, deadlineMs: number): Promise<number> {
  const until = performance.now() + deadlineMs;
  for (let k = 0; performance.now() < until; k++) {
    const a = await admit(url, token, 'probe').catch(() => undefined);
    if (a?.type === 'granted') {
      const at = performance.now();
      a.ws.close(1000);
      return at;
    }
    a?.ws.terminate();
    await sleep(pollMs);
  }
  throw new Error(`slot not free within ${deadlineMs} ms`);
}

export async function measureFreeing(opts: { endpoint: string; table: string; trials: number }): Promise<FreeingResult> {
  const pollMs = 50;
  const dead = { PING_INTERVAL_MS: 1000, PONG_TIMEOUT_MS: 500 };
  const crash = { INSTANCE_HEARTBEAT_MS: 500, INSTANCE_TTL_MS: 3000, FENCING_MARGIN_MS: 1000 };
  const strings = (o: Record<string, number>): Record<string, string> =>
    Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
  const deadBound = dead.PING_INTERVAL_MS + dead.PONG_TIMEOUT_MS + 1000;
  const crashBound = crash.INSTANCE_TTL_MS + 2000;

  // Dead devices: granted, then silent (no pongs). Started spread over one ping interval to sample every phase of the sweep.
  progress(`freeing: ${opts.trials} dead devices`);
  const g = await startGateway({ endpoint: opts.endpoint, table: opts.table, env: strings(dead) });
  let deadSamples: number[];
  try {
    deadSamples = await Promise.all(
      Array.from({ length: opts.trials }, async (_, i) => {
        await sleep((i * dead.PING_INTERVAL_MS) / opts.trials);
        const token = await mintToken(`dead-${i}`, { maxStreams: 1 });
        const grantedAt = await new Promise<number>((resolve, reject) => {
          const ws = new WebSocket(`${g.url}/v1/lease?device=tv`, ['sigma-stream.v1'], {
            headers: { Authorization: `Bearer ${token}` },
            autoPong: false,
          });
          ws.on('error', () => {});
          ws.once('message', (d: Buffer) =>
            (JSON.parse(d.toString()) as { type: string }).type === 'granted'
              ? resolve(performance.now())
              : reject(new Error('dead device not granted')),
          );
        });
        return (await pollUntilGranted(g.url, token, pollMs, deadBound * 4)) - grantedAt;
      }),
    );
  } finally {
    await g.stop();
  }

  // Crashed gateway: A holds one slot for each user; A is SIGKILLed; B admits a new device of each user.
  progress(`freeing: SIGKILL a gateway holding ${opts.trials} slots`);
  const a = await startGateway({ endpoint: opts.endpoint, table: opts.table, env: strings(crash) });
  const b = await startGateway({ endpoint: opts.endpoint, table: opts.table, env: strings(crash) });
  let crashSamples: number[];
  try {
    const toks = await Promise.all(Array.from({ length: opts.trials }, (_, i) => mintToken(`crash-${i}`, { maxStreams: 1 })));
    const held = await Promise.all(toks.map((t) => admit(a.url, t, 'tv')));
    if (held.some((h) => h.type !== 'granted')) throw new Error('crash: holder not granted');
    // Let a few heartbeats pass, so the kill lands at a random point of the beat cycle.
    await sleep(crash.INSTANCE_HEARTBEAT_MS * 2 + Math.random() * crash.INSTANCE_HEARTBEAT_MS);
    const killedAt = performance.now();
    a.proc.kill('SIGKILL');
    crashSamples = await Promise.all(toks.map(async (t) => (await pollUntilGranted(b.url, t, pollMs, crashBound * 3)) - killedAt));
    for (const h of held) h.ws.terminate();
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
  return {
    trials: opts.trials,
    pollMs,
    deadDevice: {
      pingIntervalMs: dead.PING_INTERVAL_MS,
      pongTimeoutMs: dead.PONG_TIMEOUT_MS,
      boundMs: deadBound,
      ms: summarize(deadSamples),
      samples: deadSamples,
    },
    crashedGateway: {
      heartbeatMs: crash.INSTANCE_HEARTBEAT_MS,
      instanceTtlMs: crash.INSTANCE_TTL_MS,
      fencingMarginMs: crash.FENCING_MARGIN_MS,
      boundMs: crashBound,
      ms: summarize(crashSamples),
      samples: crashSamples,
    },
  };
}
