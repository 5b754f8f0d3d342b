import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, beforeEach, describe, test } from 'node:test';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { connect, eventually } from './helpers/devices.js';
import { dynamoEndpoint, localClient } from './helpers/dynamodb-local.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { FAST_TIMINGS, leaseEntries, metric, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const DEADLINE = Number(FAST_TIMINGS.ADMISSION_TIMEOUT_MS);

/** The user item's own count of lease entries: a double count would show here. */
async function storedCount(endpoint: string, table: string, userId: string): Promise<number> {
  const client = localClient(endpoint);
  try {
    const out = await client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: `user#${userId}` } }, ConsistentRead: true }));
    return Number(out.Item?.n?.N ?? 0);
  } finally {
    client.destroy();
  }
}

test('a write that lands after its admission gave up (and after its clean-up release) is swept by reconcile', async (t) => {
  const lateProxy = await startFaultProxy(await dynamoEndpoint());
  // One attempt per request, so the held-back write is the only one and the clean-up release passes.
  // Liveness is not under test: a loaded machine must not turn the 1013 into a ping timeout (1006).
  const gw = await startGateway({
    endpoint: lateProxy.endpoint,
    env: {
      DYNAMODB_MAX_ATTEMPTS: '1',
      DYNAMODB_REQUEST_TIMEOUT_MS: '5000',
      RECONCILE_INTERVAL_MS: '500',
      PING_INTERVAL_MS: '5000',
      PONG_TIMEOUT_MS: '3000',
    },
  });
  t.after(async () => {
    await gw.stop();
    await lateProxy.close();
  });
  const token = await mintToken('late', { maxStreams: 1 });
  lateProxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: DEADLINE + 1000 });
  const d = connect(gw.url, { token, device: 'tv' });
  assert.equal((await d.closed).code, 1013);
  // The write reaches the store after the deadline and after the release found nothing to remove, and
  // reconcile recognises the abandoned lease id and gives the slot back. The entry may live for less than a
  // poll, so the repair is what shows it landed.
  await eventually(async () => metric(await gw.metrics(), 'sigma_lease_repairs_total{kind="orphan"}') >= 1, 8000, 50);
  await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'late')).length === 0, 5000);
  const next = connect(gw.url, { token, device: 'phone' });
  assert.equal((await next.decision).type, 'granted');
  await next.close();
});

describe('the lease store failing under one gateway', () => {
  let proxy: FaultProxy;
  let gw: TestGateway;
  let endpoint: string;
  before(async () => {
    endpoint = await dynamoEndpoint();
    proxy = await startFaultProxy(endpoint);
    gw = await startGateway({ endpoint: proxy.endpoint });
  });
  after(async () => {
    proxy.set('pass');
    await gw.stop();
    await proxy.close();
  });
  beforeEach(async () => {
    proxy.set('pass');
    // A previous case may have fenced the gateway: wait until it admits again.
    await eventually(async () => (await fetch(`${gw.opsUrl}/readyz`)).status === 200, 10_000);
    // ...and has just beaten, so a fault below cannot fence it before the admission deadline.
    await eventually(async () => metric(await gw.metrics(), 'sigma_instance_heartbeat_age_seconds') < 0.2, 5000, 10);
  });

  for (const mode of ['blackhole', 'throttle', 'error500', 'delay'] as const) {
    test(`${mode}: admission fails closed with 1013 within the admission deadline, nothing hangs`, async () => {
      proxy.set(mode, { only: ['UpdateItem', 'GetItem', 'BatchGetItem'], delayMs: DEADLINE * 3 });
      const token = await mintToken(`outage-${mode}`);
      const started = performance.now();
      const d = connect(gw.url, { token, device: 'tv' });
      const close = await d.closed;
      const tookMs = performance.now() - started;
      assert.equal(close.code, 1013);
      assert.match(close.reason, /unavailable/);
      assert.ok(tookMs < DEADLINE + 500, `answered after ${Math.round(tookMs)} ms (deadline ${DEADLINE} ms)`);
      proxy.set('pass');
      await eventually(async () => metric(await gw.metrics(), 'sigma_admissions_in_flight') === 0, 5000);
      // The clean-up of the uncertain write leaves no orphan lease once the store is back.
      await eventually(async () => (await leaseEntries(endpoint, gw.table, `outage-${mode}`)).length === 0, 10_000);
      await eventually(async () => (await fetch(`${gw.opsUrl}/readyz`)).status === 200, 10_000);
      const again = connect(gw.url, { token, device: 'tv' });
      assert.equal((await again.decision).type, 'granted', 'admits again after healing');
      await again.close();
    });
  }

  test('commit-then-drop on acquire: the retry recognises its own write (no double count, no refusal)', async () => {
    const token = await mintToken('lucky', { maxStreams: 1 });
    proxy.set('drop-reply', { only: ['UpdateItem'], usersOnly: true, times: 1 });
    const d = connect(gw.url, { token, device: 'tv' });
    const frame = await d.decision;
    assert.equal(frame.type, 'granted', 'the conditional failure on retry was our own committed write');
    assert.deepEqual(await leaseEntries(endpoint, gw.table, 'lucky'), ['tv']);
    assert.equal(await storedCount(endpoint, gw.table, 'lucky'), 1);
    assert.ok(metric(await gw.metrics(), 'sigma_dynamodb_requests_total{operation="UpdateItem",outcome="conditional_failed"}') >= 1);

    proxy.set('drop-reply', { only: ['UpdateItem'], usersOnly: true, times: 1 });
    await d.close();
    await eventually(async () => (await leaseEntries(endpoint, gw.table, 'lucky')).length === 0);
    assert.equal(await storedCount(endpoint, gw.table, 'lucky'), 0, 'release counted once');
    const next = connect(gw.url, { token, device: 'phone' });
    assert.equal((await next.decision).type, 'granted', 'no orphan lease holds the only slot');
    await next.close();
  });
});

test('a throttled first attempt is sent again by the SDK and booked as a hand-over; DYNAMODB_DIRECT_WRITES=false sends every attempt through the SDK', async (t) => {
  for (const direct of ['true', 'false']) {
    const proxy = await startFaultProxy(await dynamoEndpoint());
    const gw = await startGateway({ endpoint: proxy.endpoint, env: { DYNAMODB_DIRECT_WRITES: direct } });
    t.after(async () => {
      await gw.stop();
      await proxy.close();
    });
    proxy.set('throttle', { only: ['UpdateItem'], usersOnly: true, times: 1 });
    const tv = connect(gw.url, { token: await mintToken(`throttled-${direct}`), device: 'tv' });
    assert.equal((await tv.decision).type, 'granted');
    assert.equal(proxy.faulted.get('throttle'), 1);
    const handovers = metric(await gw.metrics(), 'sigma_dynamodb_handovers_total{reason="throttled"}');
    assert.equal(handovers, direct === 'true' ? 1 : 0, `DYNAMODB_DIRECT_WRITES=${direct}`);
    await tv.close();
  }
});
