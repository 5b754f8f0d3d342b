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
}

const sockets: WebSocket[] = [];

function openOne(url: string, token: string, device: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/v1/lease?device=${device}`, ['sigma-stream.v1'], {
      headers: { Authorization: `Bearer ${token}` },
      perMessageDeflate: false,
    });
    sockets.push(ws);
    ws.on('error', () => resolve(false));
    ws.on('close', () => resolve(false));
    ws.once('message', (data) => resolve(JSON.parse(data.toString()).type === 'granted'));
  });
}

async function open(order: OpenOrder): Promise<void> {
  const tokens = await Promise.all(
    Array.from({ length: order.count }, (_, i) => mintToken(`${order.userPrefix}-${i}`)),
  );
  const started = performance.now();
  let next = 0;
  let granted = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: Math.min(order.concurrency, order.count) }, async () => {
      while (next < order.count) {
        const i = next++;
        if (await openOne(order.url, tokens[i], 'tv')) granted++;
        else failed++;
      }
    }),
  );
  process.send!({ type: 'opened', granted, failed, ms: performance.now() - started });
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
