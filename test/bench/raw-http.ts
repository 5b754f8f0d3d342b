/**
 * `node --import tsx test/bench/raw-http.ts [ops]`: what the SDK's per-request work costs, and what the
 * hand-sent first attempt (src/direct.ts) saves of it. Client CPU per conditional UpdateItem (the gateway's
 * fast path) at concurrency 32 against one DynamoDB Local, in alternating rounds: a plain DynamoDBClient
 * (the baseline), the gateway's store client with every attempt through the SDK (`direct: false`),
 * and the gateway's store client as it runs (first attempt by hand). The figures are quoted in
 * docs/bench/notes.md.
 */
import { createClient, ensureTable } from '../../src/dynamo.js';
import { startDynamoLocal } from '../helpers/dynamodb-local.js';
import { plainClient, rawAcquire } from './admission.js';
import { compareClientCpu } from './measure.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const OPS = Number(process.argv[2] ?? 4000);
const local = await startDynamoLocal();
const table = `rawhttp-${Date.now()}`;

const plain = plainClient(local.endpoint);
const options = { endpoint: local.endpoint, requestTimeoutMs: 5000, maxAttempts: 3 };
const viaSdk = createClient({ ...options, direct: false });
const direct = createClient(options);
try {
  await ensureTable(plain, table);
  await compareClientCpu(
    [
      // rawAcquire goes through dynamo.ts send(): the SDK for the plain client, the hand-sent first attempt for ours.
      { name: 'plain DynamoDBClient, send(cmd)', run: (user) => rawAcquire(plain, table, user) },
      { name: 'createClient({ direct: false }), dynamo.ts send()', run: (user) => rawAcquire(viaSdk, table, user) },
      { name: 'createClient(), dynamo.ts send() (first attempt by hand)', run: (user) => rawAcquire(direct, table, user) },
    ],
    OPS,
    6,
  );
} finally {
  for (const c of [plain, viaSdk, direct]) c.destroy();
  await local.stop();
}
