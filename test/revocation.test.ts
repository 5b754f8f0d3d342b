import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { connect, type Device } from './helpers/devices.js';
import { dynamoEndpoint, localClient } from './helpers/dynamodb-local.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { leaseEntries, metric, startGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

describe('revocation backstop and dead instances', () => {
  test('a lease removed without a mailbox note (lost write) is noticed by the reconcile loop: 4403', async (t) => {
    const gw = await startGateway({ env: { RECONCILE_INTERVAL_MS: '400' } });
    t.after(() => gw.stop());
    const token = await mintToken('wendy');
    const d = connect(gw.url, { token, device: 'tv' });
    await d.decision;
    // Someone removed the entry and the note to our mailbox never arrived.
    const client = localClient(gw.endpoint);
    t.after(() => client.destroy());
    await client.send(
      new UpdateItemCommand({
        TableName: gw.table,
        Key: { pk: { S: 'user#wendy' } },
        UpdateExpression: 'REMOVE #l ADD n :m, v :one',
        ExpressionAttributeNames: { '#l': 'lease:tv' },
        ExpressionAttributeValues: { ':m': { N: '-1' }, ':one': { N: '1' } },
      }),
    );
    const removedAt = performance.now();
    const close = await d.closed;
    assert.equal(close.code, 4403);
    assert.ok(d.closedAt! - removedAt <= 400 + 1000, `closed ${Math.round(d.closedAt! - removedAt)} ms after`);
    assert.match(await gw.metrics(), /sigma_revocations_total\{code="4403",path="reconcile"\} 1/);
  });

  test('leases of an instance whose item expired long ago but is still stored are pruned at the limit', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const client = localClient(gw.endpoint);
    t.after(() => client.destroy());
    const long = Date.now() - 3_600_000;
    // DynamoDB TTL deletes lazily: the item is still there, its expiresAt is in the past.
    await client.send(
      new PutItemCommand({
        TableName: gw.table,
        Item: {
          pk: { S: 'instance#ghost' },
          expiresAt: { N: String(long) },
          beatAt: { N: String(long - 20_000) },
          ttl: { N: String(Math.floor(long / 1000)) },
        },
      }),
    );
    const lease = (device: string) => ({
      M: { leaseId: { S: `old-${device}` }, instanceId: { S: 'ghost' }, acquiredAt: { N: String(long - 60_000) } },
    });
    await client.send(
      new PutItemCommand({
        TableName: gw.table,
        Item: { pk: { S: 'user#xena' }, n: { N: '3' }, v: { N: '7' }, 'lease:a': lease('a'), 'lease:b': lease('b'), 'lease:c': lease('c') },
      }),
    );
    const token = await mintToken('xena');
    const d = connect(gw.url, { token, device: 'new' });
    t.after(() => d.close());
    const frame = await d.decision;
    assert.equal(frame.type, 'granted');
    assert.equal(frame.active, 1);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'xena'), ['new']);
    const list = await fetch(gw.url.replace('ws', 'http') + '/v1/streams', { headers: { Authorization: `Bearer ${token}` } });
    assert.deepEqual(
      (await list.json()).streams.map((s: { deviceId: string }) => s.deviceId),
      ['new'],
    );
  });
});

describe('reconcile at scale', () => {
  test('a round that cannot finish in one interval says so and the next round continues where it stopped', async (t) => {
    const proxy = await startFaultProxy(await dynamoEndpoint());
    // Each batch of 100 users takes 1.5 s to read; a round may take one 1 s interval: 5 batches cannot fit.
    const gw = await startGateway({
      endpoint: proxy.endpoint,
      env: { RECONCILE_INTERVAL_MS: '1000', ADMISSION_TIMEOUT_MS: '3000', DYNAMODB_REQUEST_TIMEOUT_MS: '2500' },
    });
    t.after(async () => {
      proxy.set('pass');
      await gw.stop();
      await proxy.close();
    });
    const users = Array.from({ length: 500 }, (_, i) => `rs-${String(i).padStart(3, '0')}`);
    const devices: Device[] = [];
    for (let i = 0; i < users.length; i += 50) {
      const chunk = users.slice(i, i + 50).map(async (user) => {
        const d = connect(gw.url, { token: await mintToken(user), device: 'tv' });
        await d.decision;
        return d;
      });
      devices.push(...(await Promise.all(chunk)));
    }
    t.after(() => Promise.all(devices.map((d) => d.close())));
    proxy.set('delay', { only: ['BatchGetItem'], delayMs: 1500 });
    // The last user in the round's order loses its entry without a mailbox note.
    const client = localClient(gw.endpoint);
    t.after(() => client.destroy());
    await client.send(
      new UpdateItemCommand({
        TableName: gw.table,
        Key: { pk: { S: 'user#rs-499' } },
        UpdateExpression: 'REMOVE #l ADD n :m, v :one',
        ExpressionAttributeNames: { '#l': 'lease:tv' },
        ExpressionAttributeValues: { ':m': { N: '-1' }, ':one': { N: '1' } },
      }),
    );
    const close = await Promise.race([devices[499].closed, new Promise<{ code: number }>((r) => setTimeout(() => r({ code: 0 }), 12_000))]);
    assert.equal(close.code, 4403, 'the backstop reached the last user');
    assert.ok(metric(await gw.metrics(), 'sigma_reconcile_rounds_total{result="partial"}') >= 1);
    assert.ok(gw.logs.some((l) => l.includes('reconcile round did not finish')));
    assert.ok(
      devices.slice(0, 499).every((d) => d.ws.readyState === d.ws.OPEN),
      'nobody else was closed',
    );
  });
});
