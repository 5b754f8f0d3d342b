/**
 * Review of the return after a lost socket (88fd6d5: the SDK named its old lease after 1006 and 4408, not
 * only after a drain's 1012; after the review, `previous` after a 1006, so a cut whose gateway released at
 * once costs no failed hand-off write) and of the stop mark that a takeover or an eviction now leaves (da6e72a).
 * Each test is an attack: a viewer locked out wrongly, a stop that does not stand, counts that drift, an
 * expression the embedded store refuses, a write more than the path needs.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { startEmbeddedStore } from '../src/embedded-store.js';
import { connect, eventually } from './helpers/devices.js';
import { localClient } from './helpers/dynamodb-local.js';
import { gatewayBehindProxy, newTable, spawnGateway, startGateway, userItem } from './helpers/gateway.js';
import { awayFromKilled, nextDecision, restStop, testLease } from './helpers/sdk.js';
import { tcpRelay } from './helpers/tcp-relay.js';
import { mintToken } from './helpers/tokens.js';

const BOUNDED = { timeout: 25_000 };

describe('the SDK after a lost socket', () => {
  test('stop() while away, then start(): a new session, so a stop mark of the old lease does not refuse it', BOUNDED, async (t) => {
    const { b, lease, comeBack } = await awayFromKilled(t, 'ada');
    // Her phone stops the tv while it is away (the mark for the old lease goes on the item) ...
    assert.equal(await restStop(b.url, 'ada'), 204);
    // ... and the viewer at the tv, seeing "reconnecting", presses stop and then play again.
    lease.stop();
    const decision = comeBack();
    await lease.start();
    assert.deepEqual(await decision, ['granted'], 'a fresh start() is a new session: no handoff, no 4403');
    assert.equal(lease.state, 'granted');
  });

  test('a new session of a device marked by an earlier takeover, away in its turn, keeps its slot on its return', BOUNDED, async (t) => {
    const tbl = newTable();
    const env = { MAX_STREAMS: '1' };
    const a = await spawnGateway({ table: tbl, env });
    t.after(() => a.kill('SIGKILL'));
    const b = await startGateway({ table: tbl, env });
    t.after(() => b.stop());
    let target = a.url;
    const lease = testLease(t, 'bea', () => target);
    const first = await lease.start();
    const lost = new Promise<{ code: number }>((r) => lease.on('lost', r));
    target = 'ws://127.0.0.1:1';
    a.kill('SIGKILL');
    assert.equal((await lost).code, 1006);
    const phone = connect(b.url, { token: await mintToken('bea'), device: 'phone', takeover: 'tv' });
    assert.equal((await phone.decision).type, 'granted');
    target = b.url;
    assert.equal((await nextDecision(lease))[1], 4403, 'the takeover stands');
    await phone.close();
    await eventually(async () => (await userItem(b.endpoint, tbl, 'bea')).n === 0);

    // A new session of the tv, on a gateway that dies in its turn: the mark still names the first lease.
    const c = await spawnGateway({ table: tbl, env });
    t.after(() => c.kill('SIGKILL'));
    target = c.url;
    const second = await lease.start();
    assert.notEqual(second.leaseId, first.leaseId);
    assert.deepEqual((await userItem(b.endpoint, tbl, 'bea')).marks, { tv: first.leaseId });
    const lostAgain = new Promise<{ code: number }>((r) => lease.on('lost', r));
    const back = nextDecision(lease);
    target = b.url;
    c.kill('SIGKILL');
    assert.equal((await lostAgain).code, 1006);
    assert.deepEqual(await back, ['granted'], 'its own new lease is not refused: the mark names the first one');
    const item = await userItem(b.endpoint, tbl, 'bea');
    assert.equal(item.n, 1);
    assert.deepEqual(Object.keys(item.leases), ['tv']);
  });

  test(
    'a network cut where the gateway gives the lease back at once: the return costs one write, as a new admission',
    BOUNDED,
    async (t) => {
      const tbl = newTable();
      const { proxy, gw: b } = await gatewayBehindProxy(t, { table: tbl });
      const relay = await tcpRelay(t, b.url);
      let target = relay.url;
      const lease = testLease(t, 'cid', () => target);
      await lease.start();
      const lost = new Promise<{ code: number }>((r) => lease.on('lost', r));
      target = 'ws://127.0.0.1:1';
      relay.cut();
      assert.equal((await lost).code, 1006);
      // The gateway saw the socket end and gave the slot back.
      await eventually(async () => (await userItem(b.endpoint, tbl, 'cid')).n === 0);
      proxy.resetCounts();
      const back = nextDecision(lease);
      target = relay.url;
      assert.deepEqual(await back, ['granted']);
      assert.equal(proxy.userRequests(), 1, 'one write on the user item, as without `previous`');
    },
  );

  test('a network cut where the gateway gives the lease back at once: the return is admitted, counts exact', BOUNDED, async (t) => {
    const tbl = newTable();
    const b = await startGateway({ table: tbl });
    t.after(() => b.stop());
    const relay = await tcpRelay(t, b.url);
    const lease = testLease(t, 'cyd', () => relay.url);
    const first = await lease.start();
    const back = new Promise<{ leaseId: string }>((r) => lease.on('granted', r));
    // No wait in between: the release and the return race.
    relay.cut();
    const second = await back;
    assert.notEqual(second.leaseId, first.leaseId);
    await eventually(async () => {
      const item = await userItem(b.endpoint, tbl, 'cyd');
      return item.n === 1 && item.leases.tv === second.leaseId;
    });
    assert.deepEqual((await userItem(b.endpoint, tbl, 'cyd')).marks, {});
  });
});

describe('stop marks of takeovers and evictions', () => {
  test('two takeovers in a row: each victim marked once, counts match the entries, nobody locked out', BOUNDED, async (t) => {
    const tbl = newTable();
    const gw = await startGateway({ table: tbl, env: { MAX_STREAMS: '2' } });
    t.after(() => gw.stop());
    const token = await mintToken('dan');
    const tv = connect(gw.url, { token, device: 'tv', content: 'film' });
    const laptop = connect(gw.url, { token, device: 'laptop', content: 'film' });
    await Promise.all([tv.decision, laptop.decision]);
    const tvLease = String((await tv.decision).leaseId);
    const phone = connect(gw.url, { token, device: 'phone', content: 'news', takeover: 'tv' });
    assert.equal((await phone.decision).type, 'granted');
    assert.equal((await tv.closed).code, 4403);
    const tablet = connect(gw.url, { token, device: 'tablet', content: 'news', takeover: 'laptop' });
    assert.equal((await tablet.decision).type, 'granted');
    assert.equal((await laptop.closed).code, 4403);
    const item = await userItem(gw.endpoint, tbl, 'dan');
    assert.equal(item.n, 2);
    assert.deepEqual(Object.keys(item.leases), ['phone', 'tablet']);
    assert.deepEqual(item.counts['c:film'] ?? 0, 0);
    assert.equal(item.counts['c:news'], 2);
    assert.deepEqual(Object.keys(item.marks), ['laptop', 'tv']);
    assert.equal(item.marks.tv, tvLease);
    // The tv, started anew (no handoff), takes over back: the mark of its old lease does not stand in its way.
    const again = connect(gw.url, { token, device: 'tv', content: 'film', takeover: 'phone' });
    assert.equal((await again.decision).type, 'granted');
    assert.equal((await phone.closed).code, 4403);
    const after = await userItem(gw.endpoint, tbl, 'dan');
    assert.equal(after.n, 2);
    assert.deepEqual(after.counts, { 'c:film': 1, 'c:news': 1 });
    assert.deepEqual(Object.keys(after.marks), ['laptop', 'phone', 'tv']);
    await Promise.all([again.close(), tablet.close()]);
  });

  test('evict_oldest where the oldest entry is the device itself, again: replaced, nobody evicted, no mark', BOUNDED, async (t) => {
    const tbl = newTable();
    const gw = await startGateway({ table: tbl });
    t.after(() => gw.stop());
    const plan = { claims: { stream_policy: 'evict_oldest' }, maxStreams: 2 };
    const token = await mintToken('eva', plan);
    const tv = connect(gw.url, { token, device: 'tv' });
    await tv.decision;
    const phone = connect(gw.url, { token, device: 'phone' });
    await phone.decision;
    // The tv again, without handoff (its player restarted): its own old entry is the oldest.
    const tv2 = connect(gw.url, { token, device: 'tv' });
    assert.equal((await tv2.decision).type, 'granted');
    assert.equal((await tv.closed).code, 4409);
    assert.equal(phone.closedAt, undefined, 'the phone is not evicted');
    const item = await userItem(gw.endpoint, tbl, 'eva');
    assert.equal(item.n, 2);
    assert.deepEqual(item.marks, {});
    await Promise.all([tv2.close(), phone.close()]);
  });

  test(
    'a takeover victim whose token-refresh socket (handoff = its lease) comes before its 4403 is refused, takes no slot',
    BOUNDED,
    async (t) => {
      const tbl = newTable();
      const env = { MAX_STREAMS: '1' };
      // The tv's gateway reads its mailbox late (its heartbeats are slow): the takeover's note waits there.
      const { proxy, gw: a } = await gatewayBehindProxy(t, { table: tbl, env });
      const b = await startGateway({ table: tbl, env });
      t.after(() => b.stop());
      const token = await mintToken('fay');
      const tv = connect(a.url, { token, device: 'tv' });
      const tvLease = String((await tv.decision).leaseId);
      proxy.set('delay', { delayMs: 700, only: ['UpdateItem'] });
      const phone = connect(b.url, { token, device: 'phone', takeover: 'tv' });
      assert.equal((await phone.decision).type, 'granted');
      // Its SDK swaps sockets for a fresh token, through B.
      const refresh = connect(b.url, { token, device: 'tv', handoff: tvLease });
      const closed = await refresh.closed;
      assert.equal(closed.code, 4403);
      const item = await userItem(b.endpoint, tbl, 'fay');
      assert.deepEqual(item.leases, { phone: String((await phone.decision).leaseId) });
      assert.equal(item.n, 1);
      proxy.set('pass');
      assert.equal((await tv.closed).code, 4403, 'the old socket hears it too, once its gateway reads the note');
      await phone.close();
    },
  );
});

describe('a takeover whose reply is lost', () => {
  test('the retry finds its own committed write: the victim is still told (4403), marked once, counts exact', BOUNDED, async (t) => {
    const tbl = newTable();
    const env = { MAX_STREAMS: '1' };
    const a = await startGateway({ table: tbl, env });
    t.after(() => a.stop());
    const { proxy, gw: b } = await gatewayBehindProxy(t, { table: tbl, env });
    const token = await mintToken('hal');
    const tv = connect(a.url, { token, device: 'tv', content: 'film' });
    const tvLease = String((await tv.decision).leaseId);
    // The takeover's read passes; its versioned write commits and its reply is lost; the SDK sends it again.
    proxy.set('drop-reply', { only: ['UpdateItem'], usersOnly: true, times: 1 });
    const phone = connect(b.url, { token, device: 'phone', content: 'news', takeover: 'tv' });
    assert.equal((await phone.decision).type, 'granted');
    assert.equal(proxy.faulted.get('drop-reply'), 1, 'the reply was lost');
    assert.equal((await tv.closed).code, 4403, 'the revocation the lost reply carried is still told');
    assert.match(await a.metrics(), /sigma_revocations_total\{code="4403",path="mailbox"\} 1/, 'by its note, not the backstop');
    const item = await userItem(b.endpoint, tbl, 'hal');
    assert.deepEqual(item.leases, { phone: String((await phone.decision).leaseId) });
    assert.deepEqual(item.marks, { tv: tvLease });
    assert.equal(item.n, 1);
    assert.deepEqual(item.counts, { 'c:film': 0, 'c:news': 1 });
    // The tv's return with its old lease hears the takeover, and takes nothing.
    const back = connect(b.url, { token, device: 'tv', content: 'film', handoff: tvLease });
    assert.equal((await back.closed).code, 4403);
    assert.equal((await userItem(b.endpoint, tbl, 'hal')).n, 1);
    await phone.close();
  });
});

describe('the embedded store (dynalite)', () => {
  test('a takeover that marks its victim and prunes a day-old mark, and an eviction after it, on dynalite', BOUNDED, async (t) => {
    const store = await startEmbeddedStore();
    t.after(() => store.close());
    const tbl = newTable();
    const gw = await startGateway({ table: tbl, endpoint: store.endpoint, env: { MAX_STREAMS: '1' } });
    t.after(() => gw.stop());
    const client = localClient(store.endpoint);
    t.after(() => client.destroy());
    const old = { M: { leaseId: { S: 'lease-old' }, at: { N: String(Date.now() - 25 * 3_600_000) } } };
    await client.send(
      new UpdateItemCommand({
        TableName: tbl,
        Key: { pk: { S: 'user#gus' } },
        UpdateExpression: 'SET #old = :old',
        ExpressionAttributeNames: { '#old': 'stop:laptop-1' },
        ExpressionAttributeValues: { ':old': old },
      }),
    );
    const token = await mintToken('gus');
    const tv = connect(gw.url, { token, device: 'tv', content: 'film' });
    const tvLease = String((await tv.decision).leaseId);
    const phone = connect(gw.url, { token, device: 'phone', content: 'film', takeover: 'tv' });
    assert.equal((await phone.decision).type, 'granted');
    assert.equal((await tv.closed).code, 4403);
    const item = await userItem(store.endpoint, tbl, 'gus');
    assert.deepEqual(item.marks, { tv: tvLease }, 'the victim marked, the day-old mark pruned, in one write');
    assert.equal(item.n, 1);
    assert.equal(item.counts['c:film'], 1);
    // The tv's return with its old lease hears the takeover.
    const back = connect(gw.url, { token, device: 'tv', handoff: tvLease });
    assert.equal((await back.closed).code, 4403);

    const plan = { claims: { stream_policy: 'evict_oldest' }, maxStreams: 1 };
    const evicting = await mintToken('gus', plan);
    const laptop = connect(gw.url, { token: evicting, device: 'laptop', content: 'news' });
    assert.equal((await laptop.decision).type, 'granted');
    assert.equal((await phone.closed).code, 4403);
    const after = await userItem(store.endpoint, tbl, 'gus');
    assert.deepEqual(Object.keys(after.marks), ['phone', 'tv']);
    assert.deepEqual(after.counts, { 'c:film': 0, 'c:news': 1 });
    assert.equal(after.n, 1);
    await laptop.close();
  });
});
