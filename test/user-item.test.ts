/**
 * The user item under stress: large plans full of dead entries, a count that
 * drifted from its entries, and a plan lowered below the devices playing.
 * Each test seeds DynamoDB Local directly and asserts what the viewer sees
 * and what the item holds afterwards.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GetItemCommand, PutItemCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { connect, eventually } from './helpers/devices.js';
import { localClient } from './helpers/dynamodb-local.js';
import { leaseEntries, metric, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

async function userItem(gw: TestGateway, userId: string): Promise<Record<string, AttributeValue> | undefined> {
  const client = localClient(gw.endpoint);
  try {
    return (await client.send(new GetItemCommand({ TableName: gw.table, Key: { pk: { S: `user#${userId}` } }, ConsistentRead: true })))
      .Item;
  } finally {
    client.destroy();
  }
}

async function setCount(gw: TestGateway, userId: string, n: number): Promise<void> {
  const client = localClient(gw.endpoint);
  try {
    await client.send(
      new UpdateItemCommand({
        TableName: gw.table,
        Key: { pk: { S: `user#${userId}` } },
        UpdateExpression: 'SET n = :n',
        ExpressionAttributeValues: { ':n': { N: String(n) } },
      }),
    );
  } finally {
    client.destroy();
  }
}

const count = (item: Record<string, AttributeValue> | undefined) => Number(item?.n?.N ?? 0);
const entries = (item: Record<string, AttributeValue> | undefined) => Object.keys(item ?? {}).filter((k) => k.startsWith('lease:')).length;

describe('large plans', () => {
  test('700 dead entries at the limit: the admission is granted and prunes in bounded writes (no 4 KB expression error)', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const client = localClient(gw.endpoint);
    t.after(() => client.destroy());
    const long = Date.now() - 3_600_000;
    await client.send(new PutItemCommand({ TableName: gw.table, Item: { pk: { S: 'instance#ghost' }, expiresAt: { N: String(long) } } }));
    const item: Record<string, AttributeValue> = { pk: { S: 'user#big' }, n: { N: '700' }, v: { N: '1' } };
    for (let i = 0; i < 700; i++) {
      item[`lease:dead-${i}`] = { M: { leaseId: { S: `old-${i}` }, instanceId: { S: 'ghost' }, acquiredAt: { N: String(long) } } };
    }
    await client.send(new PutItemCommand({ TableName: gw.table, Item: item }));
    const token = await mintToken('big', { maxStreams: 700 });
    const d = connect(gw.url, { token, device: 'tv' });
    const frame = await d.decision;
    assert.equal(frame.type, 'granted', `got ${JSON.stringify(frame)}`);
    const after = await userItem(gw, 'big');
    assert.equal(count(after), entries(after), 'n counts the entries left');
    assert.ok(entries(after) < 700, 'some dead entries were removed');
    await d.close();
  });
});

describe('a count that drifted from its entries', () => {
  test('a release never takes n below zero', async (t) => {
    const gw = await startGateway({ env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => gw.stop());
    const token = await mintToken('drift-1');
    const a = connect(gw.url, { token, device: 'a' });
    const b = connect(gw.url, { token, device: 'b' });
    await Promise.all([a.decision, b.decision]);
    await setCount(gw, 'drift-1', 0);
    await a.close();
    await eventually(async () => !(await leaseEntries(gw.endpoint, gw.table, 'drift-1')).includes('a'), 2000);
    const item = await userItem(gw, 'drift-1');
    assert.equal(count(item), 1, 'the count is recomputed from the entries, not decremented to -1');
    await b.close();
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'drift-1')).length === 0, 2000);
    assert.equal(count(await userItem(gw, 'drift-1')), 0);
  });

  test('reconcile repairs a low count before it over-admits for long', async (t) => {
    const gw = await startGateway({ env: { RECONCILE_INTERVAL_MS: '300' } });
    t.after(() => gw.stop());
    const token = await mintToken('drift-2', { maxStreams: 2 });
    const held = [connect(gw.url, { token, device: 'a' }), connect(gw.url, { token, device: 'b' })];
    await Promise.all(held.map((d) => d.decision));
    await setCount(gw, 'drift-2', 0);
    await eventually(async () => count(await userItem(gw, 'drift-2')) === 2, 3000);
    const third = connect(gw.url, { token, device: 'c' });
    assert.equal((await third.decision).type, 'denied');
    assert.ok(metric(await gw.metrics(), 'sigma_lease_repairs_total{kind="count"}') >= 1);
    await Promise.all(held.map((d) => d.close()));
  });
});

describe('a plan lowered below the devices playing', () => {
  test('playing devices keep playing; a new device is denied with mustStop and the full list, takeover revokes nobody', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const big = await mintToken('down', { maxStreams: 3 });
    const held = ['a', 'b', 'c'].map((device) => connect(gw.url, { token: big, device }));
    await Promise.all(held.map((d) => d.decision));
    const small = await mintToken('down', { maxStreams: 1 });
    const plain = connect(gw.url, { token: small, device: 'd' });
    const denied = await plain.decision;
    assert.equal(denied.type, 'denied');
    assert.equal(denied.mustStop, 3);
    assert.equal((await plain.closed).code, 4429);
    const takeover = connect(gw.url, { token: small, device: 'e', takeover: 'oldest' });
    const refused = await takeover.decision;
    assert.equal(refused.type, 'denied');
    assert.equal(refused.mustStop, 3, 'one revocation cannot make room, so nobody is revoked');
    // Sorted here: three simultaneous connects may share a millisecond of acquiredAt.
    assert.deepEqual(
      (refused.active as Array<{ deviceId: string }>).map((a) => a.deviceId).sort(),
      ['a', 'b', 'c'],
      'the takeover target is listed too',
    );
    assert.equal((await takeover.closed).code, 4429);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'down'), ['a', 'b', 'c']);
    assert.ok(
      held.every((d) => d.ws.readyState === d.ws.OPEN),
      'no playing device was stopped',
    );
    await Promise.all(held.map((d) => d.close()));
  });

  test('at the limit exactly, takeover still makes room and the denial of a named unknown device lists everyone', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const token = await mintToken('even', { maxStreams: 2 });
    const held = ['a', 'b'].map((device) => connect(gw.url, { token, device }));
    await Promise.all(held.map((d) => d.decision));
    const nobody = connect(gw.url, { token, device: 'c', takeover: 'zzz' });
    const denied = await nobody.decision;
    assert.equal(denied.mustStop, 1);
    assert.deepEqual((denied.active as Array<{ deviceId: string }>).map((a) => a.deviceId).sort(), ['a', 'b']);
    const taker = connect(gw.url, { token, device: 'c', takeover: 'a' });
    assert.equal((await taker.decision).type, 'granted');
    assert.equal((await held[0].closed).code, 4403);
    await Promise.all([taker.close(), held[1].close()]);
  });
});
