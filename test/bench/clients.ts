/**
 * A client child process for the memory phase: opens `count` leased sockets
 * (one user each) with bounded concurrency and holds them, answering pings,
 * until told to close. One process holds at most a few thousand sockets, far
 * below the 20000 open files a process may have here.
 *
 * Protocol (IPC): parent sends {cmd:'open', ...OpenOrder}; child answers
 * {type:'opened', granted, failed, ms}; parent sends {cmd:'close'}; child
 * closes everything, answers {type:'closed'} and exits.
 */
import WebSocket from 'ws';
import { mintToken } from '../helpers/tokens.js';
import { closeAll } from './sockets.js';

export interface OpenOrder {
  url: string;
  userPrefix: string;
  count: number;
  concurrency: number;
  /** Open-loop instead: one new socket every 1000/ratePerSec ms whatever the answers (kick-off), concurrency ignored. */
  ratePerSec?: number;
}

const sockets: WebSocket[] = [];

/** Socket open to `granted`, ms, of every granted socket (in the order they were opened). */
const grantMs: number[] = [];

function openOne(url: string, token: string, device: string): Promise<boolean> {
  const started = performance.now();
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/v1/lease?device=${device}`, ['sigma-stream.v1'], {
      headers: { Authorization: `Bearer ${token}` },
      perMessageDeflate: false,
    });
    sockets.push(ws);
    ws.on('error', () => resolve(false));
    ws.on('close', () => resolve(false));
    ws.once('message', (data: Buffer) => {
      const granted = (JSON.parse(data.toString()) as { type: string }).type === 'granted';
      if (granted) grantMs.push(performance.now() - started);
      resolve(granted);
    });
  });
}

async function open(order: OpenOrder): Promise<void> {
  const tokens = await Promise.all(Array.from({ length: order.count }, (_, i) => mintToken(`${order.userPrefix}-${i}`)));
  const started = performance.now();
  let next = 0;
  let granted = 0;
  let failed = 0;
  const count = (ok: boolean): void => void (ok ? granted++ : failed++);
  if (order.ratePerSec !== undefined) {
    const gapMs = 1000 / order.ratePerSec;
    const pending: Promise<void>[] = [];
    for (let i = 0; i < order.count; i++) {
      // Catch up after a late timer: the arrivals keep their schedule.
      const wait = started + i * gapMs - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      pending.push(openOne(order.url, tokens[i], 'tv').then(count));
    }
    await Promise.all(pending);
    process.send!({ type: 'opened', granted, failed, ms: performance.now() - started, grantMs });
    return;
  }
  await Promise.all(
    Array.from({ length: Math.min(order.concurrency, order.count) }, async () => {
      while (next < order.count) {
        const i = next++;
        if (await openOne(order.url, tokens[i], 'tv')) granted++;
        else failed++;
      }
    }),
  );
  process.send!({ type: 'opened', granted, failed, ms: performance.now() - started, grantMs });
}

async function closeAndExit(): Promise<void> {
  await closeAll(sockets);
  process.send!({ type: 'closed' }, () => process.exit(0));
}

process.on('message', (msg: { cmd: string } & OpenOrder) => {
  if (msg.cmd === 'open') void open(msg);
  if (msg.cmd === 'close') void closeAndExit();
});
// The parent died: nothing must be left behind.
process.on('disconnect', () => process.exit(0));
