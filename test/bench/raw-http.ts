/**
 * `node --import tsx test/bench/raw-http.ts [ops]`: what the SDK's per-request work costs, and what the
 * hand-sent first attempt (src/direct.ts) saves of it. Client CPU per conditional UpdateItem (the gateway's
 * fast path) at concurrency 32 against one DynamoDB Local, in alternating rounds: a plain DynamoDBClient
 * (the baseline), the gateway's store client with every attempt through the SDK (`direct: false`),
 * and the gateway's store client as it runs (first attempt by hand). The figures are quoted in
 * docs/bench/notes.md.
 */
import { DynamoDBClient, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { createClient, ensureTable, send } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';
import { startDynamoLocal } from '../helpers/dynamodb-local.js';
import { compareClientCpu } from './measure.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const OPS = Number(process.argv[2] ?? 4000);
const local = await startDynamoLocal();
const table = `rawhttp-${Date.now()}`;
const metrics = new Metrics();

const command = (user: string) =>
  new UpdateItemCommand({
    TableName: table,
    Key: { pk: { S: `user#${user}` } },
    UpdateExpression: 'SET #lease = :lease ADD #n :one, #v :one',
    ConditionExpression: 'attribute_not_exists(#lease) AND (attribute_not_exists(#n) OR #n < :limit)',
    ExpressionAttributeNames: { '#lease': 'lease:tv', '#n': 'n', '#v': 'v' },
    ExpressionAttributeValues: { ':lease': { M: { leaseId: { S: user } } }, ':one': { N: '1' }, ':limit': { N: '3' } },
    ReturnValues: 'UPDATED_NEW',
    ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
  });

const plain = new DynamoDBClient({
  endpoint: local.endpoint,
  region: 'local',
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
});
const options = { endpoint: local.endpoint, requestTimeoutMs: 5000, maxAttempts: 3 };
const viaSdk = createClient({ ...options, direct: false });
const direct = createClient(options);
const ours = (client: DynamoDBClient) => async (user: string) => {
  const abort = new AbortController();
  await send(client, metrics, 'UpdateItem', command(user), abort.signal);
};
try {
  await ensureTable(plain, table);
  await compareClientCpu(
    [
      { name: 'plain DynamoDBClient, send(cmd)', run: async (user) => void (await plain.send(command(user))) },
      { name: 'createClient({ direct: false }), dynamo.ts send()', run: ours(viaSdk) },
      { name: 'createClient(), dynamo.ts send() (first attempt by hand)', run: ours(direct) },
    ],
    OPS,
    6,
  );
} finally {
  for (const c of [plain, viaSdk, direct]) c.destroy();
  await local.stop();
}
