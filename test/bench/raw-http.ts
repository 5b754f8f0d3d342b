/**
 * `node --import tsx test/bench/raw-http.ts [ops]`: what the SDK's per-request work costs. Client CPU per
 * conditional UpdateItem (the gateway's fast path) at concurrency 32 against one DynamoDB Local, in
 * alternating rounds: the gateway's store client (src/dynamo.ts createClient and send() with a signal)
 * against a hand-written request (the same JSON, SigV4 by @smithy/signature-v4, node:http with a
 * keep-alive agent, JSON.parse of the answer; no retries). Evidence for docs/bench/notes.md, not a
 * proposal to ship the second.
 */
import { createHash, createHmac } from 'node:crypto';
import { Agent, request } from 'node:http';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { SignatureV4 } from '@smithy/signature-v4';
import { createClient, ensureTable, send } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';
import { startDynamoLocal } from '../helpers/dynamodb-local.js';
import { compareClientCpu } from './measure.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const OPS = Number(process.argv[2] ?? 4000);
const local = await startDynamoLocal();
const table = `rawhttp-${Date.now()}`;
const url = new URL(local.endpoint);
const metrics = new Metrics();

const input = (user: string) => ({
  TableName: table,
  Key: { pk: { S: `user#${user}` } },
  UpdateExpression: 'SET #lease = :lease ADD #n :one, #v :one',
  ConditionExpression: 'attribute_not_exists(#lease) AND (attribute_not_exists(#n) OR #n < :limit)',
  ExpressionAttributeNames: { '#lease': 'lease:tv', '#n': 'n', '#v': 'v' },
  ExpressionAttributeValues: { ':lease': { M: { leaseId: { S: user } } }, ':one': { N: '1' }, ':limit': { N: '3' } },
  ReturnValues: 'UPDATED_NEW' as const,
  ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
});

type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: SourceData): string | Buffer =>
  typeof d === 'string' ? d : d instanceof ArrayBuffer ? Buffer.from(d) : Buffer.from(d.buffer, d.byteOffset, d.byteLength);

/** SHA-256 and HMAC-SHA256 from node:crypto, in the shape @smithy/signature-v4 asks for. */
class Sha256 {
  readonly #h: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: SourceData) {
    this.#h = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: SourceData): void {
    this.#h.update(bytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#h.digest()));
  }
}
const signer = new SignatureV4({
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  region: 'local',
  service: 'dynamodb',
  sha256: Sha256,
});
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

async function handWritten(user: string): Promise<void> {
  const body = JSON.stringify(input(user));
  const signed = await signer.sign({
    method: 'POST',
    protocol: 'http:',
    hostname: url.hostname,
    port: Number(url.port),
    path: '/',
    query: {},
    headers: {
      host: url.host,
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': 'DynamoDB_20120810.UpdateItem',
      'content-length': String(Buffer.byteLength(body)),
    },
    body,
  });
  await new Promise<void>((resolve, reject) => {
    const req = request({ agent, host: url.hostname, port: url.port, method: 'POST', path: '/', headers: signed.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        JSON.parse(Buffer.concat(chunks).toString());
        if (res.statusCode === 200) resolve();
        else reject(new Error(`status ${res.statusCode}`));
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const client = createClient({ endpoint: local.endpoint, requestTimeoutMs: 5000, maxAttempts: 3 });
async function ours(user: string): Promise<void> {
  await send(client, metrics, 'UpdateItem', new UpdateItemCommand(input(user)), AbortSignal.timeout(5000));
}
const variants = [
  { name: 'createClient, dynamo.ts send() with a signal', run: ours },
  { name: 'hand-written signed request, node:http', run: handWritten },
];
try {
  await ensureTable(client, table);
  await compareClientCpu(variants, OPS, 6);
} finally {
  client.destroy();
  agent.destroy();
  await local.stop();
}
