/**
 * `node --import tsx test/bench/sweep-probe.ts [levels...]`: the ping sweep of `npm run bench` (phase 6) on its
 * own, for working on it: prints each level's control round trip and the gateway's event-loop lag.
 */
import { ensureTable } from '../../src/dynamo.js';
import { rawClient } from './admission.js';
import { dynamoLocal, stopAll } from './procs.js';
import { PATIENT } from './storm.js';
import { measureSweep } from './sweep.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const levels = process.argv.slice(2).map(Number);
const local = await dynamoLocal();
const client = rawClient(local.endpoint);
const table = `sweep-probe-${Date.now()}`;
try {
  await ensureTable(client, table);
  const r = await measureSweep({
    endpoint: local.endpoint,
    table,
    levels: levels.length > 0 ? levels : [100, 10_000],
    windowS: 20,
    settleMs: 4000,
    env: PATIENT,
  });
  process.stdout.write(JSON.stringify(r, null, 2) + '\n');
} finally {
  client.destroy();
  await stopAll();
}
process.exit(0);
