/**
 * Writes whose outcome the gateway cannot know: a copy of a request that
 * lands after the SDK retried, a reply held until after the deadline, a
 * revocation that arrives before the grant it names. Each test puts the fault
 * proxy between a real gateway and DynamoDB Local and asserts what a viewer
 * would notice: a slot that never comes back, or one device too many playing.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { connect, eventually, type Device } from './helpers/devices.js';
import { gatewayBehindProxy, leaseEntries, metric, newTable, startGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The SDK gives up on an attempt after 300 ms and retries; the held copy lands 1.2 s after it was sent. */
const RETRYING = { DYNAMODB_REQUEST_TIMEOUT_MS: '300', RECONCILE_INTERVAL_MS: '500', UNCERTAIN_WRITE_HORIZON_MS: '10000' };
const LATE_MS = 1200;

const http = (gwUrl: string) => gwUrl.replace('ws://', 'http://');

describe('late copies of an acquire', () => {
  test('a copy that lands after the device played and closed does not take the slot for good', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: RETRYING });
    const token = await mintToken('lc-1', { maxStreams: 1 });
    proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: LATE_MS });
    const d = connect(gw.url, { token, device: 'tv' });
    assert.equal((await d.decision).type, 'granted', 'the SDK retry is granted');
    await d.close();
    // The first copy lands now, on a live instance, with no socket holding it.
    await sleep(LATE_MS + 200);
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'lc-1')).length === 0, 3000);
    const next = connect(gw.url, { token, device: 'phone' });
    assert.equal((await next.decision).type, 'granted', 'the viewer can play again on another device');
    await next.close();
    assert.ok(metric(await gw.metrics(), 'sigma_lease_repairs_total{kind="orphan"}') >= 1);
  });

  test('a denied attempt whose earlier copy lands after a slot frees does not lock the viewer out', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: RETRYING });
    const token = await mintToken('lc-2', { maxStreams: 2 });
    const held = [connect(gw.url, { token, device: 'a' }), connect(gw.url, { token, device: 'b' })];
    await Promise.all(held.map((d) => d.decision));
    proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: LATE_MS });
    const third = connect(gw.url, { token, device: 'c' });
    assert.equal((await third.decision).type, 'denied');
    await held[0].close();
    await sleep(LATE_MS + 200);
    // The late copy found n < limit and wrote c's entry; nobody plays on c.
    await eventually(async () => !(await leaseEntries(gw.endpoint, gw.table, 'lc-2')).includes('c'), 3000);
    const again = connect(gw.url, { token, device: 'd' });
    assert.equal((await again.decision).type, 'granted');
    await Promise.all([again.close(), held[1].close()]);
  });

  test("a REST kick, then the kicked admission's own late copy: the entry does not stay", async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: RETRYING });
    const token = await mintToken('lc-3', { maxStreams: 1 });
    proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: LATE_MS });
    const d = connect(gw.url, { token, device: 'tv' });
    assert.equal((await d.decision).type, 'granted');
    const kick = await fetch(`${http(gw.url)}/v1/streams/tv`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
    assert.equal(kick.status, 204);
    assert.equal((await d.closed).code, 4403);
    await sleep(LATE_MS + 200);
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'lc-3')).length === 0, 3000);
  });
});

describe('copies the SDK never sent (a retrying proxy or sidecar on the path to DynamoDB)', () => {
  /** The first attempt is answered at once, so the SDK never retries; a second copy lands `LATE_MS` later. */
  const COPIED = { RECONCILE_INTERVAL_MS: '500', UNCERTAIN_WRITE_HORIZON_MS: '10000' };

  test('a copy of a granted admission that lands after the release does not take the slot for good', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: COPIED });
    const token = await mintToken('dup-1', { maxStreams: 1 });
    proxy.set('duplicate', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: LATE_MS });
    const d = connect(gw.url, { token, device: 'tv' });
    assert.equal((await d.decision).type, 'granted');
    await d.close();
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'dup-1')).length === 0, 2000);
    assert.equal(metric(await gw.metrics(), 'sigma_uncertain_leases'), 0, 'nothing the gateway saw was uncertain');
    // The copy lands now and writes tv's entry back; no socket holds it and the SDK saw no retry.
    await sleep(LATE_MS + 200);
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'dup-1')).length === 0, 3000);
    assert.ok(metric(await gw.metrics(), 'sigma_lease_repairs_total{kind="orphan"}') >= 1);
    // Through another gateway, which never prunes this one's entries: the viewer plays again.
    const other = await startGateway({ table: gw.table });
    t.after(() => other.stop());
    const next = connect(other.url, { token, device: 'phone' });
    assert.equal((await next.decision).type, 'granted', 'the viewer is not locked out');
    await next.close();
  });

  test('a copy of a refused admission that lands after a slot frees does not lock the viewer out', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: COPIED });
    const token = await mintToken('dup-2', { maxStreams: 1 });
    const held = connect(gw.url, { token, device: 'a' });
    assert.equal((await held.decision).type, 'granted');
    proxy.set('duplicate', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: LATE_MS });
    const second = connect(gw.url, { token, device: 'b' });
    assert.equal((await second.decision).type, 'denied');
    await held.close();
    // The copy finds the slot free and writes b's entry; nobody plays on b.
    await sleep(LATE_MS + 200);
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'dup-2')).length === 0, 3000);
    const other = await startGateway({ table: gw.table });
    t.after(() => other.stop());
    const again = connect(other.url, { token, device: 'c' });
    assert.equal((await again.decision).type, 'granted', 'the viewer is not locked out');
    await again.close();
  });
});

describe('what sigma_uncertain_leases counts', () => {
  test('a same-device replacement and a REST kick whose writes were answered at once are not uncertain', async (t) => {
    const gw = await startGateway({ env: { UNCERTAIN_WRITE_HORIZON_MS: '60000' } });
    t.after(() => gw.stop());
    const token = await mintToken('certain-1');
    const first = connect(gw.url, { token, device: 'tv' });
    assert.equal((await first.decision).type, 'granted');
    // The same device again (a token refresh swaps sockets): the first socket closes with 4409.
    const again = connect(gw.url, { token, device: 'tv' });
    assert.equal((await again.decision).type, 'granted');
    assert.equal((await first.closed).code, 4409);
    // A REST kick of the second one: 4403.
    const kicked = await fetch(`${http(gw.url)}/v1/streams/tv`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
    assert.equal(kicked.status, 204);
    assert.equal((await again.closed).code, 4403);
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'certain-1')).length === 0, 2000);
    // Every write was answered on its first attempt, each grant processed before its revocation.
    assert.equal(metric(await gw.metrics(), 'sigma_uncertain_leases'), 0);
  });
});

describe('revocations that arrive before the grant they name', () => {
  /** Device `first`'s write commits at once but its reply is held; `second` arrives meanwhile. */
  async function heldGrant(
    t: { after(fn: () => Promise<void>): void },
    user: string,
    second: (gw: string, token: string) => Promise<Device | number>,
  ) {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: { RECONCILE_INTERVAL_MS: '60000' } });
    const token = await mintToken(user, { maxStreams: 1 });
    proxy.set('hold-reply', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 700 });
    const first = connect(gw.url, { token, device: 'tv' });
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, user)).includes('tv'), 2000, 10);
    const other = await second(gw.url, token);
    const close = await Promise.race([first.closed, sleep(4000).then(() => ({ code: 0, reason: 'still open 4 s later' }))]);
    return { first, other, close, gw };
  }

  test('takeover on the same gateway: the victim closes with 4403 instead of playing beside the taker', async (t) => {
    const { first, other, close } = await heldGrant(t, 'early-1', async (url, token) => {
      const taker = connect(url, { token, device: 'phone', takeover: 'tv' });
      assert.equal((await taker.decision).type, 'granted');
      return taker;
    });
    assert.equal(close.code, 4403);
    assert.ok(!first.frames.some((f) => f.type === 'granted'), 'the victim is never told it plays');
    await (other as Device).close();
  });

  test('same device again on the same gateway: the first socket closes with 4409', async (t) => {
    const { first, other, close } = await heldGrant(t, 'early-2', async (url, token) => {
      const again = connect(url, { token, device: 'tv' });
      assert.equal((await again.decision).type, 'granted');
      return again;
    });
    assert.equal(close.code, 4409);
    assert.ok(!first.frames.some((f) => f.type === 'granted'));
    await (other as Device).close();
  });

  test('REST kick on the same gateway: the kicked socket closes with 4403 and the slot is free', async (t) => {
    const { close, gw } = await heldGrant(t, 'early-3', async (url, token) => {
      const res = await fetch(`${http(url)}/v1/streams/tv`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
      return res.status;
    });
    assert.equal(close.code, 4403);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'early-3'), []);
  });
});

describe('writes that meant to revoke someone and whose outcome was unknown', () => {
  test('a takeover that committed after its admission deadline still stops its victim on the other gateway', async (t) => {
    const table = newTable();
    // The victim's gateway would only find out by reconcile, a minute later.
    const victimGw = await startGateway({ table, env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => victimGw.stop());
    const { proxy, gw: takerGw } = await gatewayBehindProxy(t, { table, env: { DYNAMODB_REQUEST_TIMEOUT_MS: '5000' } });
    const token = await mintToken('unk-1', { maxStreams: 1 });
    const victim = connect(victimGw.url, { token, device: 'tv' });
    await victim.decision;
    // The takeover's write commits (tv removed, phone added) but its reply arrives after the 1.5 s deadline.
    proxy.set('hold-reply', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 2500 });
    const taker = connect(takerGw.url, { token, device: 'phone', takeover: 'tv' });
    assert.equal((await taker.closed).code, 1013);
    const started = performance.now();
    const close = await Promise.race([victim.closed, sleep(5000).then(() => ({ code: 0, reason: 'still playing' }))]);
    assert.equal(close.code, 4403, `victim closed ${Math.round(performance.now() - started)} ms after the taker's 1013`);
    // Nobody is left holding the slot: the taker's uncertain entry was given back too.
    await eventually(async () => (await leaseEntries(takerGw.endpoint, takerGw.table, 'unk-1')).length === 0, 3000);
  });

  test('a REST kick whose reply was lost (503) still stops the kicked device', async (t) => {
    const table = newTable();
    const victimGw = await startGateway({ table, env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => victimGw.stop());
    const { proxy, gw: restGw } = await gatewayBehindProxy(t, { table, env: { DYNAMODB_REQUEST_TIMEOUT_MS: '5000' } });
    const token = await mintToken('unk-2', { maxStreams: 2 });
    const victim = connect(victimGw.url, { token, device: 'tv' });
    await victim.decision;
    proxy.set('hold-reply', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 2500 });
    const res = await fetch(`${http(restGw.url)}/v1/streams/tv`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 503);
    const close = await Promise.race([victim.closed, sleep(5000).then(() => ({ code: 0, reason: 'still playing' }))]);
    assert.equal(close.code, 4403);
  });
});
