/**
 * Adversarial review of issues 10 and 12: each test names a window the README
 * says is closed and shows a viewer-visible failure (a slot that never comes
 * back, a playing device stopped by a paused one). Real gateways on DynamoDB
 * Local, the fault proxy in between, real sockets and the real SDK.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { GetItemCommand, PutItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import WebSocket, { WebSocketServer } from 'ws';
import { LeaseStoppedError, StreamLease } from '../src/client/index.js';
import { connect, eventually } from './helpers/devices.js';
import { localClient } from './helpers/dynamodb-local.js';
import { gatewayBehindProxy, leaseEntries, newTable, startGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('doubts', () => {
  test('a late copy that lands inside the horizon, after the last re-check of its doubt, is still released', async (t) => {
    // Reconcile rounds are run by hand (the timer is a minute away), so the order is exact: release,
    // a round that finds nothing, the late copy lands (inside the horizon), the horizon passes, a round.
    // README: "its entry released within RECONCILE_INTERVAL_MS of landing, if it lands within
    // UNCERTAIN_WRITE_HORIZON_MS". Today the round drops the expired doubt before it reads.
    const HORIZON_MS = 1500;
    const LATE_MS = 1500;
    const { proxy, gw } = await gatewayBehindProxy(t, {
      env: {
        DYNAMODB_REQUEST_TIMEOUT_MS: '300',
        ADMISSION_TIMEOUT_MS: '3000',
        RECONCILE_INTERVAL_MS: '60000',
        UNCERTAIN_WRITE_HORIZON_MS: String(HORIZON_MS),
      },
    });
    const keeper = gw.app.gateway.keeper;
    const token = await mintToken('rv-doubt', { maxStreams: 1 });
    proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: LATE_MS });
    const d = connect(gw.url, { token, device: 'tv' });
    assert.equal((await d.decision).type, 'granted', 'the SDK retry is granted');
    const closedAt = performance.now();
    await d.close();
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'rv-doubt')).length === 0, 1000, 10);
    await keeper.reconcile(); // the last round before the copy lands: nothing to release
    const landed = await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'rv-doubt')).includes('tv'), 2000, 10);
    const landedAfterMs = performance.now() - closedAt;
    assert.ok(
      landed && landedAfterMs < HORIZON_MS,
      `the late copy landed ${Math.round(landedAfterMs)} ms after the release, inside the horizon`,
    );
    await sleep(closedAt + HORIZON_MS + 100 - performance.now());
    await keeper.reconcile(); // the first round after the copy landed
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'rv-doubt')).length === 0, 2000, 50);
    const next = connect(gw.url, { token, device: 'phone' });
    assert.equal((await next.decision).type, 'granted', 'the viewer can play again');
    await next.close();
  });
});

describe('SDK: a paused stream whose slot went back', () => {
  test('its socket ends (token expiry 4401): the SDK does not take a slot again while the player stays paused', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '300' } });
    t.after(() => gw.stop());
    const plan = { maxStreams: 1, claims: { stream_policy: 'evict_oldest' } };
    // The paused device's first token expires 3 s from now; the refreshed one lasts an hour.
    const shortToken = await mintToken('rv-paused', { ...plan, expiresIn: 3 });
    const longToken = await mintToken('rv-paused', plan);
    const tv = new StreamLease({
      url: gw.url,
      getToken: ({ refresh }) => (refresh ? longToken : shortToken),
      deviceId: 'tv',
      WebSocket: WebSocket,
      backoff: { initialMs: 50, maxMs: 200, stableAfterMs: 500 },
    });
    t.after(() => tv.stop());
    await tv.start();
    const released = new Promise((r) => tv.on('released', r));
    tv.pause();
    await released;
    // The viewer watches on the phone now: the paused TV gave its slot back.
    const phone = connect(gw.url, { token: longToken, device: 'phone' });
    assert.equal((await phone.decision).type, 'granted');
    // The TV's token expires (4401). The player is still paused and never called resume() or start().
    await sleep(4500);
    const closed = await Promise.race([phone.closed, sleep(0).then(() => undefined)]);
    assert.equal(closed, undefined, `the playing phone was stopped by the paused TV: ${JSON.stringify(closed)}`);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'rv-paused'), ['phone'], 'only the playing device holds a slot');
    assert.notEqual(tv.state, 'granted', 'a paused player is not granted behind its back');
    await phone.close();
  });

  test('a token refresh (make before break) during a pause: the new socket is paused too, and the slot still goes back', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '1500' } });
    t.after(() => gw.stop());
    // A 2 s token: the SDK swaps sockets about halfway through its life, before the pause has lasted 1.5 s.
    const shortToken = await mintToken('rv-refresh', { maxStreams: 1, expiresIn: 2 });
    const longToken = await mintToken('rv-refresh', { maxStreams: 1 });
    const tv = new StreamLease({
      url: gw.url,
      getToken: ({ refresh }) => (refresh ? longToken : shortToken),
      deviceId: 'tv',
      WebSocket: WebSocket,
    });
    t.after(() => tv.stop());
    await tv.start();
    const released = new Promise((r) => tv.on('released', r));
    tv.pause();
    const outcome = await Promise.race([released.then(() => 'released'), sleep(5000).then(() => 'still counting 5 s into a 1.5 s pause')]);
    assert.equal(outcome, 'released');
    // The release write goes out as the frame does; give it the time it takes to land.
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'rv-refresh')).length === 0, 2000);
  });

  test('stop() while a resume() is on its way settles the resume promise', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '300' } });
    t.after(() => gw.stop());
    const token = await mintToken('rv-stop-resume', { maxStreams: 1 });
    const tv = new StreamLease({ url: gw.url, getToken: () => token, deviceId: 'tv', WebSocket });
    await tv.start();
    const released = new Promise((r) => tv.on('released', r));
    tv.pause();
    await released;
    const resumed = tv.resume().then(
      () => 'granted',
      (err: Error) => (err instanceof LeaseStoppedError ? 'LeaseStoppedError' : String(err)),
    );
    tv.stop();
    const outcome = await Promise.race([resumed, sleep(2000).then(() => 'still pending 2 s after stop()')]);
    assert.equal(outcome, 'LeaseStoppedError');
  });

  test('the slot goes back while a token-refresh socket is on its way: resume() still gets an answer', async (t) => {
    // A scripted gateway (real sockets) replays the race: the refresh socket arrives, the old socket is
    // released (the pause lasted PAUSE_RELEASE_MS just then), then the refresh socket is granted. The real
    // gateway answers `resume` only on a released session; on a leased one it keeps the lease, silently.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    const sockets: WebSocket[] = [];
    t.after(() => {
      for (const ws of sockets) ws.terminate();
      return new Promise<void>((r) => wss.close(() => r()));
    });
    const leased = new Set<WebSocket>();
    wss.on('connection', (ws) => {
      sockets.push(ws);
      const grant = (leaseId: string) => {
        leased.add(ws);
        ws.send(JSON.stringify({ type: 'granted', leaseId, userId: 'u', deviceId: 'tv', limit: 1, active: 1 }));
      };
      ws.on('message', (data) => {
        const frame = JSON.parse((data as Buffer).toString()) as { type: string };
        if (frame.type === 'resume' && !leased.has(ws)) grant(`resumed-${sockets.indexOf(ws)}`);
      });
      if (sockets.length === 1) return grant('l1');
      // The refresh socket: release the first one now, grant this one a moment later.
      leased.delete(sockets[0]);
      sockets[0].send(JSON.stringify({ type: 'released', reason: 'paused' }));
      setTimeout(() => ws.readyState === ws.OPEN && grant('l2'), 30);
    });
    await new Promise((r) => wss.once('listening', r));
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}`;
    // A token that expires in 2 s: the SDK opens the refresh socket about 1 s in.
    const token = await mintToken('u', { expiresIn: 2 });
    const tv = new StreamLease({ url, getToken: () => token, deviceId: 'tv', WebSocket });
    t.after(() => tv.stop());
    await tv.start();
    tv.pause();
    await eventually(() => tv.state === 'released', 4000, 10);
    await sleep(200); // the refresh socket's grant has arrived by now
    const outcome = await Promise.race([
      tv.resume().then(() => 'granted'),
      sleep(1500).then(() => `resume() unanswered, state ${tv.state}`),
    ]);
    assert.equal(outcome, 'granted');
  });

  test('start() on a released lease does not open a second socket beside the open one', async (t) => {
    const gw = await startGateway({ env: { PAUSE_RELEASE_MS: '300' } });
    t.after(() => gw.stop());
    const token = await mintToken('rv-restart', { maxStreams: 2 });
    const tv = new StreamLease({ url: gw.url, getToken: () => token, deviceId: 'tv', WebSocket: WebSocket });
    t.after(() => tv.stop());
    await tv.start();
    const released = new Promise((r) => tv.on('released', r));
    tv.pause();
    await released;
    await tv.start();
    await sleep(300);
    assert.equal(gw.app.gateway.connections, 1, 'one socket per device');
    tv.stop();
    await eventually(() => gw.app.gateway.connections === 0, 2000);
  });
});

describe('one write with the most the slow path ever puts in it', () => {
  test('150 dead entries, each on its own content and class: the prune write (100 removals, 200 count deltas) is accepted', async (t) => {
    const gw = await startGateway({ env: { ADMISSION_TIMEOUT_MS: '5000' } }); // a loaded machine: the point is the expression, not the time
    t.after(() => gw.stop());
    const item: Record<string, AttributeValue> = { pk: { S: 'user#rv-wide' }, n: { N: '150' }, v: { N: '1' } };
    for (let i = 0; i < 150; i++) {
      const content = `content-${String(i).padStart(3, '0')}-${'x'.repeat(100)}`;
      const cls = `class-${String(i).padStart(3, '0')}-${'y'.repeat(100)}`;
      item[`lease:device-${i}-${'z'.repeat(100)}`] = {
        M: {
          leaseId: { S: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` },
          instanceId: { S: 'instance-long-gone' },
          acquiredAt: { N: String(Date.now() - 60_000) },
          contentId: { S: content },
          class: { S: cls },
          counted: { BOOL: true },
        },
      };
      item[`c:${content}`] = { N: '1' };
      item[`k:${cls}`] = { N: '1' };
    }
    const client = localClient(gw.endpoint);
    try {
      await client.send(new PutItemCommand({ TableName: gw.table, Item: item }));
    } finally {
      client.destroy();
    }
    const token = await mintToken('rv-wide', { maxStreams: 1, claims: { max_streams_per_content: 1, max_streams_by_class: { tv: 1 } } });
    const d = connect(gw.url, { token, device: 'tv', query: 'device=tv&content=news&class=tv' });
    const decision = await d.decision.catch((e: Error) => ({ type: e.message }));
    assert.equal(decision.type, 'granted', 'the viewer plays once the dead entries are pruned');
    assert.equal((await leaseEntries(gw.endpoint, gw.table, 'rv-wide')).length, 51, '100 pruned, 50 left for the next write');
    await d.close();
  });
});

describe("evict_oldest when the evicting write's reply is lost", () => {
  test('the evicted device is told why (another device started playing), as when the reply arrives', async (t) => {
    const table = newTable();
    const victimGw = await startGateway({ table, env: { RECONCILE_INTERVAL_MS: '60000' } });
    t.after(() => victimGw.stop());
    const { proxy, gw: takerGw } = await gatewayBehindProxy(t, { table, env: { DYNAMODB_REQUEST_TIMEOUT_MS: '5000' } });
    const token = await mintToken('rv-evict', { maxStreams: 1, claims: { stream_policy: 'evict_oldest' } });
    const victim = connect(victimGw.url, { token, device: 'tv' });
    assert.equal((await victim.decision).type, 'granted');
    // The fast path is refused at once; the instance read is slowed so the proxy can switch to holding
    // the reply of the slow path's write (it commits: tv removed, phone added) past the 1.5 s deadline.
    proxy.set('delay', { only: ['BatchGetItem'], times: 1, delayMs: 300 });
    const taker = connect(takerGw.url, { token, device: 'phone' });
    await eventually(() => (proxy.counts.get('BatchGetItem') ?? 0) >= 1, 3000, 2);
    proxy.set('hold-reply', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 2500 });
    assert.equal((await taker.closed).code, 1013);
    const close = await Promise.race([victim.closed, sleep(5000).then(() => ({ code: 0, reason: 'still playing' }))]);
    assert.equal(close.code, 4403);
    assert.match(close.reason, /another device started playing/, 'the same words as an eviction whose reply arrived');
  });
});

describe('class caps are looked up as own properties', () => {
  test('a device of class "constructor" (or "toString") under a plan with class caps is admitted like any uncapped class', async (t) => {
    const gw = await startGateway();
    t.after(() => gw.stop());
    const token = await mintToken('rv-proto', { maxStreams: 3, claims: { max_streams_by_class: { tv: 1 } } });
    for (const cls of ['constructor', 'toString', '__proto__']) {
      const d = connect(gw.url, { token, device: `d-${cls}`, query: `device=d-${cls}&class=${cls}` });
      const decision = await d.decision.catch((e: Error) => ({ type: e.message }));
      assert.equal(decision.type, 'granted', `class ${cls}`);
      await d.close();
    }
  });
});

describe('zero counts on the user item', () => {
  test('short streams on many contents do not pile up zero counts without bound', async (t) => {
    const gw = await startGateway({ env: { RECONCILE_INTERVAL_MS: '500', CONNECT_RATE_PER_USER: '1000', CONNECT_BURST_PER_USER: '1000' } });
    t.after(() => gw.stop());
    const token = await mintToken('rv-zeros', { maxStreams: 2 });
    // Each stream ends before a reconcile round sees the user (a clip, a trailer, a zap through channels).
    for (let i = 0; i < 30; i++) {
      const d = connect(gw.url, { token, device: 'tv', content: `clip-${i}` });
      assert.equal((await d.decision).type, 'granted');
      await d.close();
    }
    await sleep(2000); // four rounds
    const client = localClient(gw.endpoint);
    try {
      const out = await client.send(new GetItemCommand({ TableName: gw.table, Key: { pk: { S: 'user#rv-zeros' } }, ConsistentRead: true }));
      const zeros = Object.keys(out.Item ?? {}).filter((k) => k.startsWith('c:'));
      assert.ok(
        zeros.length <= 8,
        `${zeros.length} zero counts kept (ZERO_COUNTS_KEPT is 8): the item grows with every content ever watched`,
      );
    } finally {
      client.destroy();
    }
  });

  test('a user item near 400 KB of zero counts does not lock the viewer out for good', async (t) => {
    const gw = await startGateway({ env: { RECONCILE_INTERVAL_MS: '500' } });
    t.after(() => gw.stop());
    // What years of the pile-up above leave: about 3 100 content ids of 128 characters at 0.
    const item: Record<string, AttributeValue> = { pk: { S: 'user#rv-full' }, n: { N: '0' }, v: { N: '1' } };
    for (let i = 0; i < 3124; i++) item[`c:${String(i).padStart(6, '0')}${'x'.repeat(122)}`] = { N: '0' };
    const client = localClient(gw.endpoint);
    try {
      await client.send(new PutItemCommand({ TableName: gw.table, Item: item }));
    } finally {
      client.destroy();
    }
    const token = await mintToken('rv-full', { maxStreams: 2 });
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const d = connect(gw.url, { token, device: 'tv', content: `new-${i}-${'y'.repeat(100)}` });
      outcomes.push(String((await d.decision.catch((e: Error) => ({ type: e.message }))).type));
      await d.close();
      await sleep(700);
    }
    // Sound today: the first admission fails (1013, the item would pass 400 KB), its doubt's read runs repairCount,
    // which removes 100 zeros, and the next admissions are granted.
    assert.ok(
      outcomes.slice(1).every((o) => o === 'granted'),
      `the viewer can play again: ${outcomes.join(' | ')}`,
    );
  });
});
