/**
 * Review of the drain hand-off (f20eb90): what a draining gateway's entries
 * must still do when another device of their user asks for their slot on
 * purpose (takeover, evict_oldest). Entries of a draining instance give way
 * to a device that would otherwise be refused; they must not swallow a
 * revocation the viewer asked for.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connect } from './helpers/devices.js';
import { drainPair, gatewayBehindProxy, leaseEntries, newTable, startGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const BOUNDED = { timeout: 20_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('drain hand-off under takeover and evict_oldest', () => {
  test("a takeover of a draining gateway's device closes it with 4403: it does not come back and take the slot", BOUNDED, async (t) => {
    // Three sockets over 3 s on A: the filler at 0, the tv at 1 s, the phone at 2 s.
    const { a, b } = await drainPair(t, { DRAIN_MS: '3000' });
    const token = await mintToken('rae', { maxStreams: 2 });
    const filler = connect(a.url, { token: await mintToken('sam'), device: 'tv' });
    const tv = connect(a.url, { token, device: 'tv' });
    const phone = connect(a.url, { token, device: 'phone' });
    await Promise.all([filler.decision, tv.decision, phone.decision]);
    const stopping = a.stop();
    await filler.closed;
    // The viewer, at her limit, stops the tv from her laptop while A drains.
    const laptop = connect(b.url, { token, device: 'laptop', takeover: 'tv' });
    assert.equal((await laptop.decision).type, 'granted');
    const { code, reason } = await tv.closed;
    assert.equal(code, 4403, reason);
    // The phone was not asked for: it keeps its entry for its hand-off.
    assert.deepEqual((await leaseEntries(b.endpoint, b.table, 'rae')).sort(), ['laptop', 'phone']);
    await stopping;
    await laptop.close();
  });

  test('a takeover of a playing device is honoured even when a draining entry could make room', BOUNDED, async (t) => {
    const { a, b } = await drainPair(t, { DRAIN_MS: '3000' });
    const token = await mintToken('tia', { maxStreams: 2 });
    const filler = connect(a.url, { token: await mintToken('udo'), device: 'tv' });
    const tv = connect(a.url, { token, device: 'tv' });
    await Promise.all([filler.decision, tv.decision]);
    const phone = connect(b.url, { token, device: 'phone' });
    await phone.decision;
    const stopping = a.stop();
    await filler.closed;
    // She stops the phone to play on the laptop; the tv on A is only restarting.
    const laptop = connect(b.url, { token, device: 'laptop', takeover: 'phone' });
    assert.equal((await laptop.decision).type, 'granted');
    const { code, reason } = await phone.closed;
    assert.equal(code, 4403, reason);
    const { leaseId } = (await tv.decision) as { leaseId: string };
    assert.equal((await tv.closed).code, 1012);
    const back = connect(b.url, { token, device: 'tv', handoff: leaseId });
    const decision = await back.decision;
    assert.equal(decision.type, 'granted', JSON.stringify(decision));
    await stopping;
    await Promise.all([laptop.close(), back.close()]);
  });

  test('evict_oldest stops the oldest device even when it is on a draining gateway, not a bystander', BOUNDED, async (t) => {
    const { a, b } = await drainPair(t, { DRAIN_MS: '3000' });
    const token = await mintToken('vic', { maxStreams: 2, claims: { stream_policy: 'evict_oldest' } });
    const filler = connect(a.url, { token: await mintToken('wes'), device: 'tv' });
    const tv = connect(a.url, { token, device: 'tv' });
    await Promise.all([filler.decision, tv.decision]);
    const phone = connect(b.url, { token, device: 'phone' });
    await phone.decision;
    const stopping = a.stop();
    await filler.closed;
    // The laptop starts: the tv played longest, so the tv stops (as it would without a drain).
    const laptop = connect(b.url, { token, device: 'laptop' });
    assert.equal((await laptop.decision).type, 'granted');
    const { code, reason } = await tv.closed;
    assert.equal(code, 4403, reason);
    assert.deepEqual((await leaseEntries(b.endpoint, b.table, 'vic')).sort(), ['laptop', 'phone']);
    assert.equal(phone.closedAt, undefined, 'the phone keeps playing');
    await stopping;
    await Promise.all([laptop.close(), phone.close()]);
  });
  test(
    "a device that takes a draining device's slot stops it at once: no stream over the limit for the rest of the drain",
    BOUNDED,
    async (t) => {
      const { a, b } = await drainPair(t, { DRAIN_MS: '3000' });
      const token = await mintToken('xia', { maxStreams: 1 });
      const filler = connect(a.url, { token: await mintToken('yan'), device: 'tv' });
      const tv = connect(a.url, { token, device: 'tv' });
      await Promise.all([filler.decision, tv.decision]);
      const stopping = a.stop();
      await filler.closed;
      // The tv still plays on A (its 1012 is due 1.5 s in); the phone needs its slot and gets it.
      const phone = connect(b.url, { token, device: 'phone' });
      assert.equal((await phone.decision).type, 'granted');
      const { code, reason } = await tv.closed;
      assert.equal(code, 4403, reason);
      await stopping;
      await phone.close();
    },
  );

  test('draining devices give way one by one, the oldest first, only as many as the new device needs', BOUNDED, async (t) => {
    const { a, b } = await drainPair(t, { DRAIN_MS: '3000' });
    const token = await mintToken('zoe', { maxStreams: 2 });
    const filler = connect(a.url, { token: await mintToken('abe'), device: 'tv' });
    await filler.decision;
    const tv = connect(a.url, { token, device: 'tv' });
    await tv.decision;
    const phone = connect(a.url, { token, device: 'phone' });
    const { leaseId } = (await phone.decision) as { leaseId: string };
    const stopping = a.stop();
    await filler.closed;
    const laptop = connect(b.url, { token, device: 'laptop' });
    assert.equal((await laptop.decision).type, 'granted');
    assert.equal((await tv.closed).code, 4403, 'the oldest gave way');
    assert.deepEqual((await leaseEntries(b.endpoint, b.table, 'zoe')).sort(), ['laptop', 'phone']);
    // The phone keeps its slot through its hand-off.
    assert.equal((await phone.closed).code, 1012);
    const back = connect(b.url, { token, device: 'phone', handoff: leaseId });
    const decision = await back.decision;
    assert.equal(decision.type, 'granted', JSON.stringify(decision));
    await stopping;
    await Promise.all([laptop.close(), back.close()]);
  });
  test('a hand-off that committed after its admission deadline still tells the socket it replaced', BOUNDED, async (t) => {
    const tbl = newTable();
    // The replaced socket's gateway (not draining: a copied lease id) would only find out by reconcile, a minute later.
    const a = await startGateway({ table: tbl, env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => a.stop());
    const { proxy, gw: b } = await gatewayBehindProxy(t, { table: tbl, env: { DYNAMODB_REQUEST_TIMEOUT_MS: '5000' } });
    const token = await mintToken('bea', { maxStreams: 1 });
    const tv = connect(a.url, { token, device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    // The hand-off's write commits but its reply arrives after the 1.5 s deadline.
    proxy.set('hold-reply', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 2500 });
    const copy = connect(b.url, { token, device: 'tv', handoff: leaseId });
    assert.equal((await copy.closed).code, 1013);
    const close = await Promise.race([tv.closed, sleep(5000).then(() => ({ code: 0, reason: 'still playing' }))]);
    assert.equal(close.code, 4409, close.reason);
  });

  test('a hand-off whose reply is lost tells the socket it replaced through its mailbox, not a reconcile later', BOUNDED, async (t) => {
    const tbl = newTable();
    const a = await startGateway({ table: tbl, env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => a.stop());
    const { proxy, gw: b } = await gatewayBehindProxy(t, { table: tbl });
    const token = await mintToken('cal', { maxStreams: 1 });
    const tv = connect(a.url, { token, device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    proxy.set('drop-reply', { only: ['UpdateItem'], usersOnly: true, times: 1 });
    const back = connect(b.url, { token, device: 'tv', handoff: leaseId });
    assert.equal((await back.decision).type, 'granted');
    const close = await Promise.race([tv.closed, sleep(5000).then(() => ({ code: 0, reason: 'still playing' }))]);
    assert.equal(close.code, 4409, close.reason);
    assert.match(await a.metrics(), /sigma_revocations_total\{code="4409",path="mailbox"\} 1/);
    await back.close();
  });
  test('a same-device replacement still tells the old socket when the read of its instance fails', BOUNDED, async (t) => {
    const tbl = newTable();
    const a = await startGateway({ table: tbl, env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => a.stop());
    const { proxy, gw: b } = await gatewayBehindProxy(t, { table: tbl });
    const token = await mintToken('dee', { maxStreams: 1 });
    const tv = connect(a.url, { token, device: 'tv' });
    await tv.decision;
    // Whether A closes the socket on its own is read with one GetItem: the store refuses it (every attempt).
    proxy.set('error500', { only: ['GetItem'] });
    const again = connect(b.url, { token, device: 'tv' });
    assert.equal((await again.decision).type, 'granted');
    const close = await Promise.race([tv.closed, sleep(5000).then(() => ({ code: 0, reason: 'still playing' }))]);
    assert.equal(close.code, 4409, close.reason);
    proxy.set('pass');
    await again.close();
  });
  test(
    'a hand-off keeps when the stream started: evict_oldest still stops the longest-playing device after a deploy',
    BOUNDED,
    async (t) => {
      const { a, b } = await drainPair(t, { DRAIN_MS: '200' });
      const token = await mintToken('eli', { maxStreams: 2, claims: { stream_policy: 'evict_oldest' } });
      const tv = connect(a.url, { token, device: 'tv' });
      const tvLease = ((await tv.decision) as { leaseId: string }).leaseId;
      await sleep(50);
      const phone = connect(a.url, { token, device: 'phone' });
      const phoneLease = ((await phone.decision) as { leaseId: string }).leaseId;
      await a.stop();
      // The phone happens to come back first.
      const phoneBack = connect(b.url, { token, device: 'phone', handoff: phoneLease });
      assert.equal((await phoneBack.decision).type, 'granted');
      await sleep(50);
      const tvBack = connect(b.url, { token, device: 'tv', handoff: tvLease });
      assert.equal((await tvBack.decision).type, 'granted');
      // The tv has played longest: it stops, as it would have without the deploy.
      const laptop = connect(b.url, { token, device: 'laptop' });
      assert.equal((await laptop.decision).type, 'granted');
      const stopped = await Promise.race([tvBack.closed.then((c) => ['tv', c.code]), phoneBack.closed.then((c) => ['phone', c.code])]);
      assert.deepEqual(stopped, ['tv', 4403]);
      await Promise.all([phoneBack.close(), laptop.close()]);
    },
  );
});
