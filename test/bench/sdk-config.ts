/**
 * `node --import tsx test/bench/sdk-config.ts [ops] [--denied]`: client CPU per
 * conditional UpdateItem (the gateway's fast path, test/bench/admission.ts
 * rawAcquire) for SDK client configurations, in alternating rounds against
 * one DynamoDB Local, concurrency 32. With `--denied` every write fails its
 * condition (a denial at the stream limit: all writes go to one user already
 * holding a lease), the SDK's error path. Used to decide src/dynamo.ts
 * createClient's options; the figures are quoted in docs/bench/notes.md and
 * docs/bench/sdk-trim.md.
 */
import { DynamoDBClient, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { createClient, ensureTable, isConditionFailure, send } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';
import { startDynamoLocal } from '../helpers/dynamodb-local.js';
import { compareClientCpu } from './measure.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const OPS = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 3000);
const DENIED = process.argv.includes('--denied');
const local = await startDynamoLocal();
const table = `sdkcfg-${Date.now()}`;

const metrics = new Metrics();

/** How a variant sends: as the SDK's docs do, with the SDK's abort option, or through src/dynamo.ts send(). */
type Way = 'plain' | 'sdk-signal' | 'our-send';

async function acquire(client: DynamoDBClient, key: string, way: Way): Promise<void> {
  const user = DENIED ? 'at-limit' : key;
  const cmd = new UpdateItemCommand({
    TableName: table,
    Key: { pk: { S: `user#${user}` } },
    UpdateExpression: 'SET #lease = :lease ADD #n :one, #v :one',
    ConditionExpression: 'attribute_not_exists(#lease) AND (attribute_not_exists(#n) OR #n < :limit)',
    ExpressionAttributeNames: { '#lease': 'lease:tv', '#n': 'n', '#v': 'v' },
    ExpressionAttributeValues: { ':lease': { M: { leaseId: { S: user } } }, ':one': { N: '1' }, ':limit': { N: '3' } },
    ReturnValues: 'UPDATED_NEW',
    ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
  });
  try {
    if (way === 'plain') await client.send(cmd);
    else if (way === 'sdk-signal') await client.send(cmd, { abortSignal: AbortSignal.timeout(5000) });
    else await send(client, metrics, 'UpdateItem', cmd, AbortSignal.timeout(5000));
  } catch (err) {
    if (!DENIED || !isConditionFailure(err)) throw err;
  }
}

type Variant = { name: string; client: DynamoDBClient; way: Way };
const options = { endpoint: local.endpoint, requestTimeoutMs: 5000, maxAttempts: 3 };
const variants: Variant[] = [
  {
    // The "plain SDK client": the SDK's defaults, send(cmd).
    name: 'plain DynamoDBClient, send(cmd)',
    client: new DynamoDBClient({
      endpoint: local.endpoint,
      region: 'local',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    }),
    way: 'plain',
  },
  { name: 'createClient, send(cmd, {abortSignal})', client: createClient(options), way: 'sdk-signal' },
  { name: 'createClient, send(cmd) (no signal)', client: createClient(options), way: 'plain' },
  {
    // The SDK's stack as it comes (no trimStack): what the trimmed stack saves.
    name: 'createClient untrimmed, dynamo.ts send() with a signal',
    client: createClient({ ...options, trimStack: false }),
    way: 'our-send',
  },
  { name: 'createClient, dynamo.ts send() with a signal', client: createClient(options), way: 'our-send' },
];
try {
  await ensureTable(variants[0].client, table);
  await compareClientCpu(
    variants.map((v) => ({ name: v.name, run: (key: string) => acquire(v.client, key, v.way) })),
    OPS,
    4,
  );
} finally {
  for (const v of variants) v.client.destroy();
  await local.stop();
}
