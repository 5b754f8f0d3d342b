/**
 * `node --import tsx test/bench/storm-probe.ts [players] [rawPerSec]`: the
 * reconnect storm of `npm run bench` (phase 7) on its own, for working on it:
 * prints the result, B's DynamoDB requests by outcome included. The floor
 * uses `rawPerSec` (default 2000) instead of a measured phase 2. LISTEN_BACKLOG in the environment goes to
 * both gateways (511, Node's default, to see what the listen queue costs). STORM_SIGNAL=SIGKILL kills A
 * instead of draining it: its players come back from a lost socket (1006).
 */
import { ensureTable } from '../../src/dynamo.js';
import { rawClient } from './admission.js';
import { dynamoLocal, stopAll } from './procs.js';
import { measureStorm } from './storm.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const devices = Number(process.argv[2] ?? 3000);
const rawPerSec = Number(process.argv[3] ?? 2000);
const local = await dynamoLocal();
const client = rawClient(local.endpoint);
const table = `storm-probe-${Date.now()}`;
try {
  await ensureTable(client, table);
  const r = await measureStorm({
    endpoint: local.endpoint,
    table,
    devices,
    drainMs: 5000,
    rawPerSec,
    signal: process.env.STORM_SIGNAL === 'SIGKILL' ? 'SIGKILL' : 'SIGTERM',
    env: {
      ADMISSION_TIMEOUT_MS: '10000',
      DYNAMODB_REQUEST_TIMEOUT_MS: '5000',
      ...(process.env.LISTEN_BACKLOG && { LISTEN_BACKLOG: process.env.LISTEN_BACKLOG }),
    },
  });
  const { t0Us: _t0, t1Us: _t1, ...shown } = r;
  process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
} finally {
  client.destroy();
  await stopAll();
}
process.exit(0);
