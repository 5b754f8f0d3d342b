/**
 * The instance lease's heartbeat at its edges: the last interval before the
 * fencing deadline, a margin close to the TTL, and a heartbeat delayed in the
 * network until after the instance expired and another gateway acted on it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { connect, eventually } from './helpers/devices.js';
import { dynamoEndpoint, localClient } from './helpers/dynamodb-local.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { metric, newTable, spawnGateway, startGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';
import { LeaseStore } from '../src/lease-store.js';
import { Metrics } from '../src/metrics.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('heartbeats near the fencing deadline', () => {
  test('a margin close to the TTL (500 ms beat, 3 s TTL, 2.2 s margin) does not fence on a healthy store', async (t) => {
    const gw = await startGateway({ env: { INSTANCE_HEARTBEAT_MS: '500', INSTANCE_TTL_MS: '3000', FENCING_MARGIN_MS: '2200' } });
    t.after(() => gw.stop());
    const d = connect(gw.url, { token: await mintToken('hb-1'), device: 'tv' });
    assert.equal((await d.decision).type, 'granted');
    await sleep(4000);
    assert.equal(metric(await gw.metrics(), 'sigma_fencing_events_total'), 0);
    assert.equal(d.ws.readyState, d.ws.OPEN, 'the device still plays');
    await d.close();
  });

  test('an outage that ends in the last heartbeat interval before the deadline does not fence', async (t) => {
    const proxy = await startFaultProxy(await dynamoEndpoint());
    // Danger point 2 s after the last acknowledged beat; beats every 500 ms.
    // One attempt per request: the beat held when the outage ends fails, and a new one must be sent in time.
    const gw = await startGateway({
      endpoint: proxy.endpoint,
      env: { INSTANCE_HEARTBEAT_MS: '500', INSTANCE_TTL_MS: '3000', FENCING_MARGIN_MS: '1000', DYNAMODB_MAX_ATTEMPTS: '1' },
    });
    t.after(async () => {
      proxy.set('pass');
      await gw.stop();
      await proxy.close();
    });
    const d = connect(gw.url, { token: await mintToken('hb-2'), device: 'tv' });
    assert.equal((await d.decision).type, 'granted');
    proxy.set('blackhole');
    // Heal once less than one heartbeat interval is left before the fencing deadline.
    await eventually(async () => metric(await gw.metrics(), 'sigma_instance_heartbeat_age_seconds') >= 1.6, 3000, 10);
    proxy.set('pass');
    await sleep(1500);
    assert.equal(metric(await gw.metrics(), 'sigma_fencing_events_total'), 0, 'a beat was sent and acknowledged in time');
    assert.equal(d.ws.readyState, d.ws.OPEN);
    await d.close();
  });
});

describe('a heartbeat that arrives after its instance expired', () => {
  test('cannot revive an instance whose leases another gateway has already taken', async (t) => {
    const table = newTable();
    const endpoint = await dynamoEndpoint();
    const a = await spawnGateway({ table });
    t.after(async () => {
      a.kill('SIGCONT');
      a.kill('SIGKILL');
      await a.exited;
    });
    const token = await mintToken('revive', { maxStreams: 1 });
    const tv = connect(a.url, { token, device: 'tv' });
    assert.equal((await tv.decision).type, 'granted');
    // A freezes; the copy of its last beat is somewhere in the network.
    a.kill('SIGSTOP');
    const lateSentAt = Date.now();
    await sleep(3000 + 300);
    const b = await startGateway({ table });
    t.after(() => b.stop());
    const phone = connect(b.url, { token, device: 'phone' });
    assert.equal((await phone.decision).type, 'granted', 'B judged A dead and took the slot');

    // The late copy: exactly the request A sent before it froze.
    const store = new LeaseStore(localClient(endpoint), new Metrics(), { table, selfInstanceId: () => 'test' });
    await assert.rejects(store.heartbeat(a.instanceId, lateSentAt, 3000, []), { name: 'ConditionalCheckFailedException' });
    const client = localClient(endpoint);
    t.after(() => client.destroy());
    const item = (
      await client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: `instance#${a.instanceId}` } }, ConsistentRead: true }))
    ).Item;
    assert.ok(item === undefined || Number(item.expiresAt.N) < Date.now(), 'A stays expired');

    a.kill('SIGCONT');
    assert.equal((await tv.closed).code, 4408, 'A fences when it wakes');
    assert.equal(phone.ws.readyState, phone.ws.OPEN);
    await phone.close();
  });
});
