/**
 * A client child process for the reconnect storm: `count` players, each a
 * StreamLease of the player SDK (src/client) with its default backoff, one
 * user each. The gateway URL is the SDK's `url` function: 'switch' plays the
 * load balancer taking the draining gateway out of rotation.
 *
 * Protocol (IPC): {cmd:'open', ...} -> {type:'opened', granted, failed};
 * {cmd:'switch', url} -> {type:'progress', regranted} every second, then
 * {type:'regranted', grantUs[], denials, ended} once every player is granted
 * again or has ended; {cmd:'close'} stops every lease and exits.
 * Times are microseconds of CLOCK_MONOTONIC (process.hrtime), the same
 * clock in every process of the machine.
 */
import WebSocket from 'ws';
import { StreamLease } from '../../src/client/index.js';
import { mintToken } from '../helpers/tokens.js';

interface Order {
  cmd: string;
  url: string;
  userPrefix: string;
  count: number;
  concurrency: number;
}

let url = '';
const leases: StreamLease[] = [];
let switched = false;
const regrantUs: number[] = [];
let denials = 0;
let ended = 0;
let reported = false;
const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

function maybeReport(): void {
  if (reported || !switched || regrantUs.length + ended < leases.length) return;
  reported = true;
  process.send!({ type: 'regranted', grantUs: regrantUs, denials, ended });
}

async function open(order: Order): Promise<void> {
  url = order.url;
  const tokens = await Promise.all(Array.from({ length: order.count }, (_, i) => mintToken(`${order.userPrefix}-${i}`)));
  let next = 0;
  let granted = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: Math.min(order.concurrency, order.count) }, async () => {
      while (next < order.count) {
        const i = next++;
        const lease = new StreamLease({ url: () => url, getToken: () => tokens[i], deviceId: 'tv', WebSocket });
        leases.push(lease);
        let regranted = false;
        lease.on('granted', () => {
          if (!switched || regranted) return;
          regranted = true;
          regrantUs.push(nowUs());
          maybeReport();
        });
        lease.on('denied', () => {
          if (switched) denials++;
        });
        lease.on('state', (s) => {
          if (switched && !regranted && ['denied', 'revoked', 'replaced', 'ended'].includes(s)) {
            ended++;
            maybeReport();
          }
        });
        try {
          await lease.start();
          granted++;
        } catch {
          failed++;
        }
      }
    }),
  );
  process.send!({ type: 'opened', granted, failed });
}

process.on('message', (msg: Order) => {
  if (msg.cmd === 'open') void open(msg);
  if (msg.cmd === 'switch') {
    url = msg.url;
    switched = true;
    const timer = setInterval(
      () => (reported ? clearInterval(timer) : process.send!({ type: 'progress', regranted: regrantUs.length })),
      1000,
    );
  }
  if (msg.cmd === 'close') {
    for (const lease of leases) lease.stop();
    // Give the close frames a moment to leave, then go.
    setTimeout(() => process.exit(0), 500);
  }
});
process.on('disconnect', () => process.exit(0));
