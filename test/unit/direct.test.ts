/**
 * The hand-sent first attempt of an UpdateItem (src/direct.ts) against a recording HTTP server: it sends
 * what the SDK sends (body, target, signed headers), takes only a 200 or a failed condition as they come, and
 * hands everything else to the SDK's retries with the attempt counted.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { test } from 'node:test';
import { createClient, isConditionFailure, send } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';
import { json, ok, recorder, updateItem as command, type Answer } from '../helpers/store-recorder.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const error =
  (type: string, status = 400, extra: object = {}): Answer =>
  (_req, res) =>
    json(res, status, { __type: `com.amazonaws.dynamodb.v20120810#${type}`, message: type, ...extra });

const signedHeaders = (h: IncomingHttpHeaders): string => /SignedHeaders=([^,]+)/.exec(String(h.authorization))?.[1] ?? '';

test('the first attempt sends the body, target and signed headers the SDK sends', async () => {
  const r = await recorder(ok);
  const direct = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
  const sdk = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3, direct: false });
  try {
    const metrics = new Metrics();
    const out = await send<{ Attributes: unknown; $metadata: { attempts: number } }>(direct, metrics, 'UpdateItem', command());
    await send(sdk, metrics, 'UpdateItem', command());
    assert.deepEqual(out.Attributes, { n: { N: '1' } });
    assert.equal(out.$metadata.attempts, 1);
    const [mine, theirs] = r.seen;
    assert.deepEqual(JSON.parse(mine.body), JSON.parse(theirs.body), 'the same JSON');
    for (const h of ['content-type', 'x-amz-target', 'host']) assert.equal(mine.headers[h], theirs.headers[h], h);
    assert.equal(mine.headers['x-amz-content-sha256'], createHash('sha256').update(mine.body).digest('hex'));
    assert.match(String(mine.headers.authorization), /^AWS4-HMAC-SHA256 Credential=local\/\d{8}\/local\/dynamodb\/aws4_request, /);
    // Every header the SDK signs that we send is signed by us too (the SDK adds its own invocation headers).
    const ours = new Set(signedHeaders(mine.headers).split(';'));
    for (const h of ['content-type', 'host', 'x-amz-content-sha256', 'x-amz-date', 'x-amz-target']) assert.ok(ours.has(h), h);
    assert.match(await metrics.registry.metrics(), /sigma_dynamodb_requests_total\{operation="UpdateItem",outcome="ok"\} 2/);
  } finally {
    direct.destroy();
    sdk.destroy();
    r.server.close();
  }
});

test('a failed condition comes back as the SDK shapes it, with the item, in one request', async () => {
  const r = await recorder(error('ConditionalCheckFailedException', 400, { Item: { n: { N: '3' } } }));
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
  try {
    await assert.rejects(send(client, new Metrics(), 'UpdateItem', command()), (err: unknown) => {
      assert.ok(isConditionFailure(err));
      assert.deepEqual(err.Item, { n: { N: '3' } });
      assert.equal((err as unknown as { $metadata: { attempts: number } }).$metadata.attempts, 1);
      return true;
    });
    assert.equal(r.seen.length, 1);
  } finally {
    client.destroy();
    r.server.close();
  }
});

test('a throttled first attempt goes to the SDK, which retries; a 5xx counts as an attempt that may have landed', async () => {
  for (const [answer, attempts] of [
    [error('ProvisionedThroughputExceededException'), 1],
    [error('InternalServerError', 500), 2],
  ] as const) {
    const r = await recorder((req, res, n) => (n === 1 ? answer(req, res, n) : ok(req, res, n)));
    const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
    try {
      const out = await send<{ $metadata: { attempts: number } }>(client, new Metrics(), 'UpdateItem', command());
      assert.equal(r.seen.length, 2, 'the SDK sent it again');
      assert.deepEqual(JSON.parse(r.seen[1].body), JSON.parse(r.seen[0].body));
      assert.equal(out.$metadata.attempts, attempts, 'a write whose first attempt may have landed is seen as retried');
    } finally {
      client.destroy();
      r.server.close();
    }
  }
});

test('a first attempt with no answer in time goes to the SDK as a retry; an abort ends the call', { timeout: 10_000 }, async () => {
  const r = await recorder((req, res, n) => (n === 1 ? undefined : ok(req, res, n)));
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 200, maxAttempts: 3 });
  try {
    const out = await send<{ $metadata: { attempts: number } }>(client, new Metrics(), 'UpdateItem', command());
    assert.equal(out.$metadata.attempts, 2);
    const stuck = await recorder(() => undefined);
    const slow = createClient({ endpoint: stuck.endpoint, requestTimeoutMs: 60_000, maxAttempts: 3 });
    try {
      const started = performance.now();
      await assert.rejects(send(slow, new Metrics(), 'UpdateItem', command(), AbortSignal.timeout(100)), /timeout/);
      assert.ok(performance.now() - started < 5000, 'the abort, not the request timeout, ended it');
    } finally {
      slow.destroy();
      stuck.server.closeAllConnections();
      stuck.server.close();
    }
  } finally {
    client.destroy();
    r.server.closeAllConnections();
    r.server.close();
  }
});
