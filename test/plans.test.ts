/**
 * Plans as services sell them: last one wins, per-content and per-class caps,
 * paused players. Real gateways on DynamoDB Local; what a viewer's devices see
 * (frames, close codes and reasons) and what the user item holds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GetItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import WebSocket from 'ws';
import { StreamLease, StreamLimitError } from '../src/client/index.js';
import { connect, eventually, type Device } from './helpers/devices.js';
import { localClient } from './helpers/dynamodb-local.js';
import { leaseEntries, metric, startGateway, startPair, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function userItem(gw: TestGateway, userId: string): Promise<Record<string, AttributeValue>> {
  const client = localClient(gw.endpoint);
  try {
    return (
      (await client.send(new GetItemCommand({ TableName: gw.table, Key: { pk: { S: `user#${userId}` } }, ConsistentRead: true }))).Item ??
      {}
    );
  } finally {
    client.destroy();
  }
}

/** The item's content and class counts, zero ones left out, against what its entries say they should be. */
async function countsAgree(
  gw: TestGateway,
  userId: string,
): Promise<{ stored: Record<string, number>; fromEntries: Record<string, number> }> {
  const item = await userItem(gw, userId);
  const stored: Record<string, number> = {};
  const fromEntries: Record<string, number> = {};
  for (const [k, v] of Object.entries(item)) {
    if ((k.startsWith('c:') || k.startsWith('k:')) && Number(v.N) !== 0) stored[k] = Number(v.N);
    if (k.startsWith('lease:')) {
      const m = v.M!;
      if (m.contentId?.S) fromEntries[`c:${m.contentId.S}`] = (fromEntries[`c:${m.contentId.S}`] ?? 0) + 1;
      if (m.class?.S) fromEntries[`k:${m.class.S}`] = (fromEntries[`k:${m.class.S}`] ?? 0) + 1;
    }
  }
  return { stored, fromEntries };
}

describe('last one wins (stream_policy evict_oldest)', () => {
  test('the 4th device plays and the longest-playing one stops with 4403, saying why; never more than 3 entries', async (t) => {
    const [a, b] = await startPair();
    t.after(() => Promise.all([a.stop(), b.stop()]));
    const token = await mintToken('lastwins', { claims: { stream_policy: 'evict_oldest' } });
    const oldest = connect(a.url, { token, device: 'tv' });
    await oldest.decision;
    const others = [connect(a.url, { token, device: 'phone' }), connect(b.url, { token, device: 'laptop' })];
    await Promise.all(others.map((d) => d.decision));
    // Through the other gateway: the eviction travels by mailbox.
    const newest = connect(b.url, { token, device: 'tablet' });
    assert.equal((await newest.decision).type, 'granted');
    const close = await oldest.closed;
    assert.equal(close.code, 4403);
    assert.match(close.reason, /another device started playing/);
    assert.deepEqual(await leaseEntries(a.endpoint, a.table, 'lastwins'), ['laptop', 'phone', 'tablet']);
    assert.equal(metric(await b.metrics(), 'sigma_lease_denials_total{reason="limit"}'), 0);
    await Promise.all([...others, newest].map((d) => d.close()));
  });

  test('content and class caps still deny under evict_oldest', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const token = await mintToken('lastwins-caps', { claims: { stream_policy: 'evict_oldest', max_streams_per_content: 1 } });
    const first = connect(gw.url, { token, device: 'tv', content: 'final' });
    await first.decision;
    const second = connect(gw.url, { token, device: 'phone', content: 'final' });
    const denied = await second.decision;
    assert.equal(denied.reason, 'content_limit');
    assert.equal((await second.closed).code, 4429);
    assert.equal(first.ws.readyState, WebSocket.OPEN, 'nobody was evicted');
    await first.close();
  });
});

describe('per-content and per-class caps', () => {
  test('one device per event: a second device on the same content is denied content_limit; other content plays', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const token = await mintToken('ppv', { claims: { max_streams_per_content: 1 } });
    const tv = connect(gw.url, { token, device: 'tv', content: 'fight-night' });
    await tv.decision;
    const phone = connect(gw.url, { token, device: 'phone', content: 'fight-night' });
    const denied = await phone.decision;
    assert.deepEqual([denied.reason, denied.cap, denied.mustStop], ['content_limit', 1, 1]);
    const close = await phone.closed;
    assert.equal(close.code, 4429);
    assert.match(close.reason, /this content plays on at most 1/);
    const other = connect(gw.url, { token, device: 'laptop', content: 'news' });
    assert.equal((await other.decision).type, 'granted');
    assert.equal(metric(await gw.metrics(), 'sigma_lease_denials_total{reason="content_limit"}'), 1);
    await Promise.all([tv.close(), other.close()]);
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'ppv')).length === 0, 2000);
    assert.deepEqual((await countsAgree(gw, 'ppv')).stored, {}, 'the counts went back to zero with the releases');
  });

  test('1 TV + 2 mobile: a second TV is denied class_limit; a device without a class counts against the total only', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const plan = { max_streams_by_class: { tv: 1, mobile: 2 } };
    const token = await mintToken('family', { maxStreams: 4, claims: plan });
    const tv = connect(gw.url, { token, device: 'tv', query: 'device=tv&class=tv' });
    await tv.decision;
    const tv2 = connect(gw.url, { token, device: 'kitchen', query: 'device=kitchen&class=tv' });
    const denied = await tv2.decision;
    assert.deepEqual([denied.reason, denied.cap, denied.class], ['class_limit', 1, 'tv']);
    assert.match((await tv2.closed).reason, /your plan allows 1 tv/);
    const noClass = connect(gw.url, { token, device: 'laptop' });
    assert.equal((await noClass.decision).type, 'granted');
    const phones = ['p1', 'p2', 'p3'].map((device) => connect(gw.url, { token, device, query: `device=${device}&class=mobile` }));
    const decisions = await Promise.all(phones.map((d) => d.decision));
    assert.deepEqual(decisions.map((f) => f.type).sort(), ['denied', 'granted', 'granted']);
    const listed = (decisions.find((f) => f.type === 'denied')!.active as Array<{ deviceId: string; class: string | null }>).map(
      (a) => `${a.deviceId}:${a.class}`,
    );
    assert.ok(listed.includes('tv:tv') && listed.includes('laptop:null'), `active lists classes: ${listed.join(',')}`);
    assert.deepEqual((await countsAgree(gw, 'family')).stored, (await countsAgree(gw, 'family')).fromEntries);
    await Promise.all([tv, noClass, ...phones].map((d) => d.close()));
  });

  test('a class in the token and a different class in the query are refused with 1008', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const token = await mintToken('classy', { claims: { device_class: 'tv' } });
    const d = connect(gw.url, { token, device: 'x', query: 'device=x&class=mobile' });
    const close = await d.closed;
    assert.equal(close.code, 1008);
    assert.match(close.reason, /differs from the token's device_class/);
    const bad = connect(gw.url, { token: await mintToken('classy', { claims: { max_streams_by_class: { tv: 0 } } }), device: 'y' });
    assert.equal((await bad.closed).code, 4401);
  });

  test('20 devices at once over two gateways, half on each content: exactly 2 per content, class caps held, every round', async (t) => {
    const [a, b] = await startPair();
    t.after(() => Promise.all([a.stop(), b.stop()]));
    for (let round = 0; round < 4; round++) {
      const user = `race-plan-${round}`;
      const token = await mintToken(user, {
        maxStreams: 5,
        claims: { max_streams_per_content: 2, max_streams_by_class: { tv: 1, mobile: 2 } },
      });
      const devices: Array<{ d: Device; content: string; cls?: string }> = Array.from({ length: 20 }, (_, i) => {
        const content = i % 2 === 0 ? 'A' : 'B';
        const cls = i % 4 === 0 ? 'tv' : i % 4 === 1 ? 'mobile' : undefined;
        const query = `device=d${i}&content=${content}${cls ? `&class=${cls}` : ''}`;
        return { d: connect((i % 3 === 0 ? a : b).url, { token, device: `d${i}`, query }), content, cls };
      });
      const frames = await Promise.all(devices.map(({ d }) => d.decision.catch(() => ({ type: 'closed' }))));
      const granted = devices.filter((_, i) => frames[i].type === 'granted');
      const per = (f: (x: (typeof devices)[number]) => string | undefined, v: string) => granted.filter((x) => f(x) === v).length;
      assert.equal(
        per((x) => x.content, 'A'),
        2,
        `round ${round}: content A`,
      );
      assert.equal(
        per((x) => x.content, 'B'),
        2,
        `round ${round}: content B`,
      );
      assert.ok(per((x) => x.cls, 'tv') <= 1 && per((x) => x.cls, 'mobile') <= 2, `round ${round}: classes`);
      const { stored, fromEntries } = await countsAgree(a, user);
      assert.deepEqual(stored, fromEntries, `round ${round}: the counts never drift from the entries`);
      await Promise.all(devices.map(({ d }) => d.close()));
    }
  });
});

describe('paused players', () => {
  test('with PAUSE_RELEASE_MS a long pause gives the slot back and keeps the socket; resume admits again or is denied', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '400' } });
    t.after(() => gw.stop());
    const token = await mintToken('pauser', { maxStreams: 1 });
    const tv = connect(gw.url, { token, device: 'tv' });
    const first = await tv.decision;
    tv.ws.send(JSON.stringify({ type: 'pause' }));
    await eventually(() => tv.frames.some((f) => f.type === 'released' && f.reason === 'paused'), 3000);
    assert.equal(tv.ws.readyState, WebSocket.OPEN, 'the socket stays open');
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'pauser'), []);
    // The slot is free for another device; resume is then denied like any admission.
    const phone = connect(gw.url, { token, device: 'phone' });
    assert.equal((await phone.decision).type, 'granted');
    tv.ws.send(JSON.stringify({ type: 'resume' }));
    assert.equal((await tv.closed).code, 4429);
    assert.ok(tv.frames.some((f) => f.type === 'denied' && f.reason === 'limit'));
    await phone.close();
    // Once free again, a paused device that resumes gets a new lease id.
    const tablet = connect(gw.url, { token, device: 'tablet' });
    const granted = await tablet.decision;
    tablet.ws.send(JSON.stringify({ type: 'pause' }));
    await eventually(() => tablet.frames.some((f) => f.type === 'released'), 3000);
    tablet.ws.send(JSON.stringify({ type: 'resume' }));
    await eventually(() => tablet.frames.filter((f) => f.type === 'granted').length === 2, 3000);
    const again = tablet.frames.filter((f) => f.type === 'granted')[1];
    assert.notEqual(again.leaseId, granted.leaseId);
    assert.notEqual(first.leaseId, granted.leaseId);
    assert.equal(metric(await gw.metrics(), 'sigma_lease_release_total{reason="paused"}'), 2);
    await tablet.close();
  });

  test('a paused socket whose slot went back is replaced (4409) when the same device plays again here', { timeout: 10_000 }, async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '300' } });
    t.after(() => gw.stop());
    const token = await mintToken('two-tabs');
    const old = connect(gw.url, { token, device: 'tv' });
    await old.decision;
    old.ws.send(JSON.stringify({ type: 'pause' }));
    await eventually(() => old.frames.some((f) => f.type === 'released'), 3000);
    const again = connect(gw.url, { token, device: 'tv' });
    assert.equal((await again.decision).type, 'granted');
    // Left open, the stale socket could resume later and take the slot back from the one playing now.
    assert.deepEqual(await old.closed, { code: 4409, reason: 'replaced: this device connected again elsewhere' });
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'two-tabs'), ['tv']);
    assert.equal(again.ws.readyState, WebSocket.OPEN);
    await again.close();
  });

  test('resuming before the release keeps the original lease; with the default 0 a pause never releases', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '600' } });
    t.after(() => gw.stop());
    const token = await mintToken('brief-pause');
    const d = connect(gw.url, { token, device: 'tv' });
    const granted = await d.decision;
    d.ws.send(JSON.stringify({ type: 'pause' }));
    await sleep(200);
    d.ws.send(JSON.stringify({ type: 'resume' }));
    await sleep(900);
    assert.ok(!d.frames.some((f) => f.type === 'released'));
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'brief-pause'), ['tv']);
    assert.equal(d.frames.filter((f) => f.type === 'granted').length, 1);
    assert.equal(granted.type, 'granted');
    await d.close();

    const keeps = await startGateway();
    t.after(() => keeps.stop());
    const e = connect(keeps.url, { token, device: 'tv' });
    await e.decision;
    e.ws.send(JSON.stringify({ type: 'pause' }));
    await sleep(1200);
    assert.ok(!e.frames.some((f) => f.type === 'released'), 'paused streams keep counting by default');
    await e.close();
  });

  test('a pause survives token refreshes faster than PAUSE_RELEASE_MS: the slot still goes back', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '1500' } });
    t.after(() => gw.stop());
    // Every token lives 2 s, so the SDK swaps sockets about once a second: a pause clock restarted on each new
    // socket would never reach 1.5 s.
    const tv = new StreamLease({
      url: gw.url,
      getToken: () => mintToken('refreshing-pause', { maxStreams: 1, expiresIn: 2 }),
      deviceId: 'tv',
      WebSocket: WebSocket,
    });
    t.after(() => tv.stop());
    await tv.start();
    const released = new Promise((r) => tv.on('released', r));
    tv.pause();
    const outcome = await Promise.race([released.then(() => 'released'), sleep(6000).then(() => 'still counting 6 s into a 1.5 s pause')]);
    assert.equal(outcome, 'released');
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'refreshing-pause')).length === 0, 2000);
  });
});

describe('the SDK', () => {
  test('StreamLimitError carries reason and mustStop, and says it in words; pause and resume', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '300' } });
    t.after(() => gw.stop());
    const token = await mintToken('sdk-plan', { maxStreams: 2, claims: { max_streams_per_content: 1, max_streams_by_class: { tv: 1 } } });
    const lease = (deviceId: string, contentId: string, deviceClass?: string) =>
      new StreamLease({ url: gw.url, getToken: () => token, deviceId, contentId, deviceClass, WebSocket: WebSocket });
    const tv = lease('tv', 'final', 'tv');
    t.after(() => tv.stop());
    await tv.start();
    const phone = lease('phone', 'final');
    const err = await phone.start().catch((e: unknown) => e);
    assert.ok(err instanceof StreamLimitError);
    assert.equal(err.reason, 'content_limit');
    assert.equal(err.mustStop, 1);
    assert.equal(err.viewerMessage, 'You can watch this event on one device at a time. To watch here, stop playback on one of them.');
    const kitchen = lease('kitchen', 'news', 'tv');
    const classErr = await kitchen.start().catch((e: unknown) => e);
    assert.ok(classErr instanceof StreamLimitError);
    assert.equal(classErr.reason, 'class_limit');
    assert.match(classErr.viewerMessage, /^Your plan allows 1 TV at a time/);

    const released = new Promise((r) => tv.on('released', r));
    tv.pause();
    await released;
    assert.equal(tv.state, 'released');
    const grant = await tv.resume();
    assert.equal(tv.state, 'granted');
    assert.ok(grant.leaseId);
    tv.stop();
  });
});
