/**
 * Review of "a stop that lands between a device's 1012 and its return is final" (23f5977): the stop's
 * `stop:<device>` mark was written only when the kick's read found the lease's instance draining. A kick
 * is a read and then a write; a drain that begins in between (mark, then 1012) got a stop without the mark,
 * and the device came back with its handoff and played on. So did the SDK's token-refresh socket, which
 * carries the lease it holds as its handoff, when a stop of a running gateway's lease came just before it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { connect, eventually } from './helpers/devices.js';
import { localClient } from './helpers/dynamodb-local.js';
import { gatewayBehindProxy, leaseEntries, newTable, scanTable, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const BOUNDED = { timeout: 20_000 };

/** Two earlier stops of devices since gone (a browser without storage gets a new device id each visit): 25 and 1 h ago. */
async function earlierMarks(t: { after(fn: () => void): void }, gw: TestGateway, userId: string): Promise<void> {
  const client = localClient(gw.endpoint);
  t.after(() => client.destroy());
  const mark = (id: string, hoursAgo: number) => ({ M: { leaseId: { S: id }, at: { N: String(Date.now() - hoursAgo * 3_600_000) } } });
  await client.send(
    new UpdateItemCommand({
      TableName: gw.table,
      Key: { pk: { S: `user#${userId}` } },
      UpdateExpression: 'SET #old = :old, #recent = :recent',
      ExpressionAttributeNames: { '#old': 'stop:laptop-1', '#recent': 'stop:laptop-2' },
      ExpressionAttributeValues: { ':old': mark('lease-old', 25), ':recent': mark('lease-recent', 1) },
    }),
  );
}

/** The stop marks on a user's item, by attribute name, sorted. */
async function marksOf(gw: TestGateway, userId: string): Promise<Record<string, Record<string, AttributeValue>>> {
  const item = (await scanTable(gw.endpoint, gw.table)).find((i) => i.pk.S === `user#${userId}`) ?? {};
  return Object.fromEntries(
    Object.entries(item)
      .filter(([k]) => k.startsWith('stop:'))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => [k, v.M ?? {}]),
  );
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a REST stop racing a drain', () => {
  test(
    'a stop whose read saw the gateway running and whose write lands after its 1012 is final: the return hears 4403',
    BOUNDED,
    async (t) => {
      const table = newTable();
      const a = await startGateway({ table, env: { DRAIN_MS: '4000' } });
      const { proxy, gw: b } = await gatewayBehindProxy(t, { table });
      const tv = connect(a.url, { token: await mintToken('mia'), device: 'tv' });
      // A second socket keeps A draining (and its instance item in place) after the tv's 1012.
      const other = connect(a.url, { token: await mintToken('moe'), device: 'tv' });
      const { leaseId } = (await tv.decision) as { leaseId: string };
      await other.decision;
      // The kick through B reads the item and A's instance (running), then its write waits 1.5 s in the network.
      proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 1500 });
      const kick = fetch(`${b.url.replace('ws:', 'http:')}/v1/streams/tv`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${await mintToken('mia')}` },
      });
      while ((proxy.faulted.get('delay') ?? 0) === 0) await sleep(10);
      // Meanwhile A begins its drain: marks its instance draining, and the tv gets its 1012 first.
      const stopping = a.stop();
      assert.equal((await tv.closed).code, 1012);
      assert.equal((await kick).status, 204, 'the stop landed, after the 1012');
      const back = connect(b.url, { token: await mintToken('mia'), device: 'tv', handoff: leaseId });
      await assert.rejects(back.decision, /closed 4403/, 'no decision frame: the stop stands');
      assert.deepEqual(await back.closed, { code: 4403, reason: 'revoked: playback was stopped from another device or by support' });
      await stopping;
    },
  );

  test('a stop that lands while the return is on the slow path (its content changed) is final too', BOUNDED, async (t) => {
    const table = newTable();
    const a = await startGateway({ table, env: { DRAIN_MS: '4000' } });
    const { proxy, gw: b } = await gatewayBehindProxy(t, { table });
    const tv = connect(a.url, { token: await mintToken('pia'), device: 'tv' });
    const other = connect(a.url, { token: await mintToken('pip'), device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    await other.decision;
    const stopping = a.stop();
    assert.equal((await tv.closed).code, 1012);
    // Back on another content: the hand-off's one write fails its condition, and the slow path reads A's
    // instance (held 1 s in the network) before it writes under the version it read.
    proxy.set('delay', { only: ['BatchGetItem'], times: 1, delayMs: 1000 });
    const back = connect(b.url, { token: await mintToken('pia'), device: 'tv', content: 'film', handoff: leaseId });
    while ((proxy.faulted.get('delay') ?? 0) === 0) await sleep(10);
    // In between, pia stops the tv from her phone: the entry goes, the mark stays.
    const res = await fetch(`${b.url.replace('ws:', 'http:')}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${await mintToken('pia')}` },
    });
    assert.equal(res.status, 204);
    await assert.rejects(back.decision, /closed 4403/, 'no decision frame: the stop stands');
    assert.equal((await back.closed).code, 4403);
    await stopping;
  });

  test("a token-refresh socket that carries a stopped lease's id hears 4403, not a grant it would swap to", BOUNDED, async (t) => {
    // The SDK's refresh socket sends handoff=<the lease it holds>; granted, it closes the old socket itself and
    // ignores that socket's 4403. A stop that lands just before it (its note not read yet by A) must stand.
    const table = newTable();
    const a = await startGateway({ table });
    t.after(() => a.stop());
    const b = await startGateway({ table });
    t.after(() => b.stop());
    const tv = connect(a.url, { token: await mintToken('nia'), device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    const res = await fetch(`${b.url.replace('ws:', 'http:')}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${await mintToken('nia')}` },
    });
    assert.equal(res.status, 204);
    const refresh = connect(b.url, { token: await mintToken('nia'), device: 'tv', handoff: leaseId });
    await assert.rejects(refresh.decision, /closed 4403/, 'no grant for a stopped lease');
    assert.equal((await refresh.closed).code, 4403);
    assert.equal((await tv.closed).code, 4403, 'and the old socket is told through its mailbox');
  });

  test('a stop of an entry found with n at 0 (the release that recounts) leaves the mark too', BOUNDED, async (t) => {
    // The second branch of release: REMOVE, SET of the count and the mark, ADD, in one expression DynamoDB accepts.
    const table = newTable();
    const a = await startGateway({ table });
    t.after(() => a.stop());
    const tv = connect(a.url, { token: await mintToken('oda'), device: 'tv', content: 'film' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    const client = localClient(a.endpoint);
    t.after(() => client.destroy());
    await client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { pk: { S: 'user#oda' } },
        UpdateExpression: 'SET n = :zero',
        ExpressionAttributeValues: { ':zero': { N: '0' } },
      }),
    );
    const res = await fetch(`${a.url.replace('ws:', 'http:')}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${await mintToken('oda')}` },
    });
    assert.equal(res.status, 204);
    assert.equal((await tv.closed).code, 4403);
    const item = (await scanTable(a.endpoint, table)).find((i) => i.pk.S === 'user#oda')!;
    assert.equal(item['lease:tv'], undefined);
    assert.equal(item.n.N, '0');
    assert.equal(item['c:film'].N, '0');
    assert.equal(item['stop:tv']?.M?.leaseId.S, leaseId);
  });

  test('a stop of a hand-off that committed after its 1013 stands: the retry with the old handoff hears 4403', BOUNDED, async (t) => {
    const tbl = newTable();
    const a = await startGateway({ table: tbl });
    t.after(() => a.stop());
    // B's reconcile does not come round during the test: the committed entry stays until the stop takes it.
    const { proxy, gw: b } = await gatewayBehindProxy(t, {
      table: tbl,
      env: { DYNAMODB_REQUEST_TIMEOUT_MS: '6000', RECONCILE_INTERVAL_MS: '60000' },
    });
    const token = await mintToken('ros');
    const tv = connect(a.url, { token, device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    // The return's hand-off commits (a new lease id on the entry), but its reply comes after the deadline: 1013.
    proxy.set('hold-reply', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 5000 });
    const back = connect(b.url, { token, device: 'tv', handoff: leaseId });
    // Once the hand-off is in, B's cleanup of it cannot reach the store until the stop is done (else it may win).
    await eventually(() => proxy.faulted.get('hold-reply') === 1);
    proxy.set('blackhole', { usersOnly: true });
    assert.equal((await back.closed).code, 1013);
    // Ros stops the tv: the entry she stops carries the lease id the hand-off gave it, which the tv never heard.
    const res = await fetch(`${a.url.replace('ws:', 'http:')}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 204);
    proxy.set('pass');
    const retry = connect(b.url, { token, device: 'tv', handoff: leaseId });
    await assert.rejects(retry.decision, /closed 4403/, 'no decision frame: the stop stands');
    assert.deepEqual(await retry.closed, { code: 4403, reason: 'revoked: playback was stopped from another device or by support' });
    assert.deepEqual(await leaseEntries(b.endpoint, tbl, 'ros'), [], 'nothing taken');
  });

  test('a stop whose write loses to the gateway giving the lease back (its socket ended) still leaves its mark', BOUNDED, async (t) => {
    const tbl = newTable();
    const { proxy, gw: a } = await gatewayBehindProxy(t, { table: tbl });
    const b = await startGateway({ table: tbl });
    t.after(() => b.stop());
    const token = await mintToken('sol');
    const tv = connect(b.url, { token, device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    // The stop (through A) has read the entry; its write is on its way when the tv's socket ends and B releases.
    proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 1000 });
    const stopping = fetch(`${a.url.replace('ws:', 'http:')}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${token}` },
    });
    await eventually(() => proxy.faulted.get('delay') === 1);
    await tv.close();
    await eventually(async () => (await leaseEntries(b.endpoint, tbl, 'sol')).length === 0);
    assert.equal((await stopping).status, 204, 'the stop is answered as done');
    // The tv, whose socket was lost, comes back with it as `previous`: the stop stands.
    const back = connect(b.url, { token, device: 'tv', previous: leaseId });
    await assert.rejects(back.decision, /closed 4403/);
    assert.deepEqual(await leaseEntries(b.endpoint, tbl, 'sol'), [], 'nothing taken');
  });
});

describe('stop marks on the user item', () => {
  test(
    'a stop prunes the marks of earlier stops older than a day: the item does not grow with every stopped device',
    BOUNDED,
    async (t) => {
      const table = newTable();
      const gw = await startGateway({ table });
      t.after(() => gw.stop());
      const tv = connect(gw.url, { token: await mintToken('pru'), device: 'tv' });
      const { leaseId } = (await tv.decision) as { leaseId: string };
      await earlierMarks(t, gw, 'pru');
      const res = await fetch(`${gw.url.replace('ws:', 'http:')}/v1/streams/tv`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${await mintToken('pru')}` },
      });
      assert.equal(res.status, 204);
      assert.equal((await tv.closed).code, 4403);
      const marks = await marksOf(gw, 'pru');
      assert.deepEqual(Object.keys(marks), ['stop:laptop-2', 'stop:tv'], 'the day-old mark is gone, the recent one and the new one stay');
      assert.equal(marks['stop:tv'].leaseId?.S, leaseId);
    },
  );

  test(
    'a takeover marks its victim, an eviction marks its own as evicted, and each prunes day-old marks like a stop',
    BOUNDED,
    async (t) => {
      const gw = await startGateway({ env: { MAX_STREAMS: '1' } });
      t.after(() => gw.stop());
      const plan = { claims: { stream_policy: 'evict_oldest' } };
      const tv = connect(gw.url, { token: await mintToken('tak', plan), device: 'tv' });
      const { leaseId: tvLease } = (await tv.decision) as { leaseId: string };
      await earlierMarks(t, gw, 'tak');
      const phone = connect(gw.url, { token: await mintToken('tak', plan), device: 'phone', takeover: 'tv' });
      const { leaseId: phoneLease } = (await phone.decision) as { leaseId: string };
      assert.equal((await tv.closed).code, 4403);
      let marks = await marksOf(gw, 'tak');
      assert.deepEqual(Object.keys(marks), ['stop:laptop-2', 'stop:tv'], 'the day-old mark is gone, the recent one and the new one stay');
      assert.deepEqual([marks['stop:tv'].leaseId?.S, marks['stop:tv'].why], [tvLease, undefined]);

      // The laptop starts: the plan stops the longest-playing device, the phone.
      const laptop = connect(gw.url, { token: await mintToken('tak', plan), device: 'laptop' });
      assert.equal((await laptop.decision).type, 'granted');
      assert.equal((await phone.closed).code, 4403);
      marks = await marksOf(gw, 'tak');
      assert.deepEqual(Object.keys(marks), ['stop:laptop-2', 'stop:phone', 'stop:tv']);
      assert.deepEqual([marks['stop:phone'].leaseId?.S, marks['stop:phone'].why?.S], [phoneLease, 'evicted']);
      await laptop.close();
    },
  );
});
