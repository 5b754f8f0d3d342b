import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { connect, eventually } from './helpers/devices.js';
import { leaseEntries, metric, startPair, FAST_TIMINGS, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const PING = Number(FAST_TIMINGS.PING_INTERVAL_MS);
const PONG = Number(FAST_TIMINGS.PONG_TIMEOUT_MS);

describe('liveness and same-device reconnect', () => {
  let gw: TestGateway;
  let other: TestGateway;
  before(async () => {
    [gw, other] = await startPair();
  });
  after(() => Promise.all([gw.stop(), other.stop()]));

  test('a device that stops answering pings loses its lease within interval + timeout', async () => {
    const token = await mintToken('sleepy');
    const dead = connect(gw.url, { token, device: 'frozen', autoPong: false });
    assert.equal((await dead.decision).type, 'granted');
    const grantedAt = performance.now();
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'sleepy')).length === 0, PING + PONG + 2000);
    const freedAfter = performance.now() - grantedAt;
    assert.ok(freedAfter <= PING + PONG + 1000, `freed after ${Math.round(freedAfter)} ms`);
    const close = await dead.closed;
    assert.equal(close.code, 1006, 'terminated without a close frame');
    assert.ok(metric(await gw.metrics(), 'sigma_lease_release_total{reason="ping_timeout"}') >= 1);
  });

  test('a device that answers pings keeps its lease across many ping rounds', async (t) => {
    const token = await mintToken('awake');
    const d = connect(gw.url, { token, device: 'tv' });
    t.after(() => d.close());
    await d.decision;
    await new Promise((r) => setTimeout(r, 3 * (PING + PONG)));
    assert.equal(d.ws.readyState, d.ws.OPEN);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'awake'), ['tv']);
  });

  for (const where of ['the same gateway', 'another gateway'] as const) {
    test(`the same device connecting again through ${where} replaces its own lease (4409 on the old socket)`, async (t) => {
      const user = `mover-${where.length}`;
      const token = await mintToken(user, { maxStreams: 1 });
      const first = connect(gw.url, { token, device: 'phone' });
      const firstGrant = await first.decision;
      const second = connect(where === 'the same gateway' ? gw.url : other.url, { token, device: 'phone' });
      t.after(() => second.close());
      const secondGrant = await second.decision;
      assert.equal(secondGrant.type, 'granted', 'never refused because of its own ghost');
      assert.notEqual(secondGrant.leaseId, firstGrant.leaseId);
      const close = await first.closed;
      assert.equal(close.code, 4409);
      assert.match(close.reason, /replaced/);
      assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, user), ['phone']);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(second.ws.readyState, second.ws.OPEN, 'the old socket closing does not release the new lease');
      assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, user), ['phone']);
    });
  }
});
