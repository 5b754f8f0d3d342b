import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, eventually } from './helpers/devices.js';
import { leaseEntries, metric, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

describe('admission at the stream limit', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway();
  });
  after(() => gw.stop());

  test('grants up to the limit, then denies with the active devices and 4429', async (t) => {
    const token = await mintToken('alice');
    const devices = ['tv', 'phone', 'laptop'].map((device, i) => connect(gw.url, { token, device, content: `match-${i}` }));
    t.after(() => Promise.all(devices.map((d) => d.close())));
    const granted = await Promise.all(devices.map((d) => d.decision));
    for (const frame of granted) {
      assert.equal(frame.type, 'granted');
      assert.equal(frame.userId, 'alice');
      assert.equal(frame.limit, 3);
      assert.equal(typeof frame.leaseId, 'string');
    }
    assert.deepEqual(granted.map((f) => f.deviceId).sort(), ['laptop', 'phone', 'tv']);
    assert.deepEqual(granted.map((f) => f.active).sort(), [1, 2, 3]);

    const fourth = connect(gw.url, { token, device: 'tablet' });
    const denied = await fourth.decision;
    assert.equal(denied.type, 'denied');
    assert.equal(denied.reason, 'limit');
    assert.equal(denied.limit, 3);
    const active = denied.active as Array<{ deviceId: string; contentId: string; since: string }>;
    assert.deepEqual(active.map((a) => a.deviceId).sort(), ['laptop', 'phone', 'tv']);
    assert.ok(
      active.every((a) => /^\d{4}-\d\d-\d\dT.*Z$/.test(a.since)),
      'since is ISO 8601 UTC',
    );
    assert.ok(active.some((a) => a.contentId === 'match-0'));
    const close = await fourth.closed;
    assert.equal(close.code, 4429);
    assert.match(close.reason, /stream limit/);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'alice'), ['laptop', 'phone', 'tv']);
  });

  test('closing a socket frees its slot for another device', async (t) => {
    const token = await mintToken('bob');
    const devices = ['a', 'b', 'c'].map((device) => connect(gw.url, { token, device }));
    t.after(() => Promise.all(devices.map((d) => d.close())));
    await Promise.all(devices.map((d) => d.decision));
    assert.equal((await connect(gw.url, { token, device: 'd' }).closed).code, 4429);

    assert.equal((await devices[0].close(1000)).code, 1000);
    await eventually(async () => !(await leaseEntries(gw.endpoint, gw.table, 'bob')).includes('a'));
    const d = connect(gw.url, { token, device: 'd' });
    t.after(() => d.close());
    assert.equal((await d.decision).type, 'granted');
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'bob'), ['b', 'c', 'd']);
  });

  test('the max_streams claim overrides the default limit', async (t) => {
    const token = await mintToken('carol', { maxStreams: 1 });
    const first = connect(gw.url, { token, device: 'one' });
    t.after(() => first.close());
    assert.equal((await first.decision).limit, 1);
    const second = connect(gw.url, { token, device: 'two' });
    assert.equal((await second.decision).type, 'denied');
    assert.equal((await second.closed).code, 4429);
  });

  test('browsers carry the token in the subprotocol; the server selects sigma-stream.v1 only', async (t) => {
    const token = await mintToken('dave');
    const d = connect(gw.url, { token, device: 'browser', carriage: 'subprotocol' });
    t.after(() => d.close());
    assert.equal((await d.decision).type, 'granted');
    assert.equal(d.ws.protocol, 'sigma-stream.v1');
  });

  test('bad query parameters close with 1008 and a reason, writing nothing', async () => {
    const token = await mintToken('erin');
    for (const query of ['', 'device=', 'device=' + 'x'.repeat(129), 'device=a%20b', 'device=ok&content=bad/slash']) {
      const d = connect(gw.url, { token, device: 'ignored', query });
      const close = await d.closed;
      assert.equal(close.code, 1008, query);
      assert.match(close.reason, /must be/);
    }
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'erin'), []);
  });

  test('an app-level ping gets a pong; unknown messages get an error frame', async (t) => {
    const token = await mintToken('frank');
    const d = connect(gw.url, { token, device: 'tv' });
    t.after(() => d.close());
    await d.decision;
    d.ws.send(JSON.stringify({ type: 'ping' }));
    d.ws.send(JSON.stringify({ type: 'dance' }));
    d.ws.send('not json');
    // Playback token refreshes may come in between (every second under the test timings): not what is asked here.
    const answers = () => d.frames.slice(1).filter((f) => f.type !== 'playback');
    await eventually(() => answers().length >= 3);
    assert.deepEqual(
      answers().map((f) => f.type),
      ['pong', 'error', 'error'],
    );
    assert.equal(d.ws.readyState, d.ws.OPEN);
  });

  test('metrics follow sockets as they come and go', async () => {
    const token = await mintToken('grace');
    const before = await gw.metrics();
    const d = connect(gw.url, { token, device: 'tv' });
    await d.decision;
    const during = await gw.metrics();
    assert.equal(metric(during, 'sigma_streams_active'), metric(before, 'sigma_streams_active') + 1);
    assert.equal(metric(during, 'sigma_ws_connections'), metric(before, 'sigma_ws_connections') + 1);
    assert.equal(
      metric(during, 'sigma_lease_acquire_total{result="granted"}'),
      metric(before, 'sigma_lease_acquire_total{result="granted"}') + 1,
    );
    assert.ok(metric(during, 'sigma_dynamodb_requests_total{operation="UpdateItem",outcome="ok"}') > 0);
    assert.ok(during.includes('sigma_lease_acquire_duration_seconds_bucket'));
    assert.ok(during.includes('process_cpu_seconds_total'), 'default process metrics');
    await d.close();
    await eventually(async () => {
      const text = await gw.metrics();
      return (
        metric(text, 'sigma_streams_active') === metric(before, 'sigma_streams_active') &&
        metric(text, 'sigma_lease_release_total{reason="client_close"}') ===
          metric(before, 'sigma_lease_release_total{reason="client_close"}') + 1
      );
    });
  });
});
