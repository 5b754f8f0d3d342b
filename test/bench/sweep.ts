/**
 * Phase 6: the ping sweep. One gateway (PING_INTERVAL_MS=2000) holds idle
 * leased sockets at each level (the first, 100, is the baseline); a control
 * device of another user sends an app ping every 25 ms (one in flight) over
 * a window of several sweeps, and its round trips at each level are set
 * against the baseline's. Every admission and every pong waits behind a
 * sweep that runs in one go, which is what this shows.
 */
import WebSocket from 'ws';
import { mintToken } from '../helpers/tokens.js';
import { admit } from './admission.js';
import { progress, sample, sleep, summarize, type Summary } from './measure.js';
import { cpuSeconds, openClients, startGateway, type ClientGroup } from './procs.js';
import { PRODUCTION_TIMINGS } from './storm.js';

export interface SweepLevel {
  /** Idle leased sockets held (the control device not included). */
  sockets: number;
  rtt: Summary;
  /** App pings of the control device that got no pong within 5 s. */
  lostPongs: number;
  /** Idle sockets the gateway closed for a missing protocol pong in the window (sigma_lease_release_total{reason="ping_timeout"}). */
  pingTimeouts: number;
  /** Gateway CPU per sweep in the window (/proc), ms. */
  cpuMsPerSweep: number;
  /** nodejs_eventloop_lag_max_seconds over the window, ms. */
  lagMaxMs: number;
}

export interface SweepResult {
  pingIntervalMs: number;
  pongTimeoutMs: number;
  windowS: number;
  pingEveryMs: number;
  levels: SweepLevel[];
}

/** App-level ping round trips of one device, one ping in flight, every `everyMs`, until stop(). */
export function controlPinger(ws: WebSocket, everyMs: number): { stop(): { rtts: number[]; lost: number } } {
  const rtts: number[] = [];
  let sentAt: number | undefined;
  let lost = 0;
  const onMessage = (d: Buffer): void => {
    if (sentAt !== undefined && (JSON.parse(d.toString()) as { type: string }).type === 'pong') {
      rtts.push(performance.now() - sentAt);
      sentAt = undefined;
    }
  };
  ws.on('message', onMessage);
  const timer = setInterval(() => {
    if (sentAt !== undefined && performance.now() - sentAt < 5000) return;
    if (sentAt !== undefined) lost++;
    sentAt = performance.now();
    ws.send('{"type":"ping"}');
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      ws.off('message', onMessage);
      if (sentAt !== undefined && performance.now() - sentAt >= 5000) lost++;
      return { rtts, lost };
    },
  };
}

export async function measureSweep(opts: {
  endpoint: string;
  table: string;
  levels: number[];
  windowS: number;
  settleMs: number;
  env: Record<string, string>;
}): Promise<SweepResult> {
  const pingIntervalMs = 2000;
  const pongTimeoutMs = 1000;
  const pingEveryMs = 25;
  const gw = await startGateway({
    endpoint: opts.endpoint,
    table: opts.table,
    env: {
      ...PRODUCTION_TIMINGS,
      ...opts.env,
      PING_INTERVAL_MS: String(pingIntervalMs),
      PONG_TIMEOUT_MS: String(pongTimeoutMs),
      MAX_CONNECTIONS: '30000',
      // The control device pings 40 times a second; the message limit is not what is measured.
      MESSAGE_RATE_PER_SOCKET: '100',
      MESSAGE_BURST_PER_SOCKET: '100',
    },
  });
  const groups: ClientGroup[] = [];
  const levels: SweepLevel[] = [];
  let control: WebSocket | undefined;
  try {
    control = (await admit(gw.url, await mintToken('sweep-control'), 'tv')).ws;
    let held = 0;
    for (const level of opts.levels) {
      progress(`sweep: opening idle sockets up to ${level}`);
      for (let attempt = 0; held < level; attempt++) {
        if (attempt === 4) throw new Error(`sweep: only ${held} of ${level} sockets granted`);
        const group = await openClients(gw.url, `sweep-${level}-${attempt}`, level - held, 128);
        groups.push(group);
        held += group.granted;
      }
      // Let the admission burst's garbage and the first sweeps over the new sockets pass.
      await sleep(opts.settleMs);
      const timeouts = async (): Promise<number> => sample(await gw.metrics(), 'sigma_lease_release_total', { reason: 'ping_timeout' });
      const t0 = await timeouts(); // the scrape also resets the event-loop lag window
      const c0 = cpuSeconds(gw.proc.pid!);
      const pinger = controlPinger(control, pingEveryMs);
      const w0 = performance.now();
      await sleep(opts.windowS * 1000);
      const { rtts, lost } = pinger.stop();
      const seconds = (performance.now() - w0) / 1000;
      const cpuMs = (cpuSeconds(gw.proc.pid!) - c0) * 1000;
      const text = await gw.metrics();
      const entry: SweepLevel = {
        sockets: held,
        rtt: summarize(rtts),
        lostPongs: lost,
        pingTimeouts: sample(text, 'sigma_lease_release_total', { reason: 'ping_timeout' }) - t0,
        cpuMsPerSweep: cpuMs / (seconds / (pingIntervalMs / 1000)),
        lagMaxMs: sample(text, 'nodejs_eventloop_lag_max_seconds') * 1000,
      };
      levels.push(entry);
      progress(
        `sweep: ${held} sockets: control RTT p99 ${entry.rtt.p99.toFixed(1)} ms, max ${entry.rtt.max.toFixed(1)} ms, ${lost} pongs lost, ${entry.pingTimeouts} ping timeouts, ${entry.cpuMsPerSweep.toFixed(0)} CPU-ms per sweep`,
      );
    }
  } finally {
    // SIGKILL, not a drain: releasing 20 000 leases one write each would take the store half a minute, and
    // this table is thrown away. The clients' sockets then close at once.
    await new Promise<void>((resolve) =>
      gw.proc.exitCode !== null ? resolve() : (gw.proc.once('exit', () => resolve()), gw.proc.kill('SIGKILL')),
    );
    control?.terminate();
    await Promise.all(groups.map((g) => g.close()));
  }
  return { pingIntervalMs, pongTimeoutMs, windowS: opts.windowS, pingEveryMs, levels };
}
