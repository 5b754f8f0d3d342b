/**
 * The player SDK in Node against real gateways (DynamoDB Local): what a
 * player observes through `sigma-stream/client`, and what the table holds.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import {
  backoffCapMs,
  StreamLease,
  tokenExpiryMs,
  StreamLimitError,
  TerminalCloseError,
  UnauthorizedError,
  type StreamLeaseEvents,
  type StreamLeaseOptions,
} from '../src/client/index.js';
import { eventually } from './helpers/devices.js';
import { COLD_STORE } from './helpers/cold-store.js';
import { dynamoEndpoint } from './helpers/dynamodb-local.js';
import { leaseEntries, metric, newTable, spawnGateway, startGateway, type ChildGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

type Recorded = { [K in keyof StreamLeaseEvents]: Array<StreamLeaseEvents[K] & { at: number }> };

/** A lease with shrunk timings that records every event it emits, stopped after the test. */
function newLease(t: TestContext, opts: Partial<StreamLeaseOptions> & Pick<StreamLeaseOptions, 'url' | 'getToken' | 'deviceId'>) {
  const lease = new StreamLease({
    WebSocket,
    backoff: { initialMs: 50, maxMs: 200, stableAfterMs: 500 },
    pingIntervalMs: 300,
    pongTimeoutMs: 300,
    decisionTimeoutMs: 1500,
    ...opts,
  });
  const events = { state: [], granted: [], denied: [], lost: [], reconnecting: [], revoked: [], replaced: [] } as unknown as Recorded;
  for (const type of Object.keys(events) as Array<keyof StreamLeaseEvents>) {
    lease.on(type, (payload) =>
      (events[type] as unknown[]).push(typeof payload === 'object' ? { ...payload, at: performance.now() } : payload),
    );
  }
  t.after(() => lease.stop());
  return { lease, events };
}

/** Every test is bounded: a hang shows up as that test failing, not as a stuck run. */
const BOUNDED = { timeout: 20_000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('StreamLease against one gateway', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway({ env: COLD_STORE });
  });
  after(() => gw.stop());
  const tokenFor = (user: string) => () => mintToken(user);

  test('start() resolves on granted; stop() gives the slot back', BOUNDED, async (t) => {
    const { lease, events } = newLease(t, { url: gw.url, getToken: tokenFor('ann'), deviceId: 'tv', contentId: 'match-1' });
    const grant = await lease.start();
    assert.equal(grant.userId, 'ann');
    assert.equal(grant.deviceId, 'tv');
    assert.equal(grant.limit, 3);
    assert.equal(grant.active, 1);
    assert.equal(lease.state, 'granted');
    assert.deepEqual(events.state, ['connecting', 'granted']);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'ann'), ['tv']);
    const list = await lease.listStreams();
    assert.deepEqual(
      list.streams.map((s) => [s.deviceId, s.contentId, s.leaseId]),
      [['tv', 'match-1', grant.leaseId]],
    );

    lease.stop();
    assert.equal(lease.state, 'stopped');
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'ann')).length === 0);
    assert.equal(events.lost.length, 0, 'stop() is not a loss');
  });

  test('at the limit start() rejects with StreamLimitError listing the active devices, and does not retry', BOUNDED, async (t) => {
    for (const deviceId of ['a', 'b', 'c'])
      await newLease(t, { url: gw.url, getToken: tokenFor('ben'), deviceId, contentId: `film-${deviceId}` }).lease.start();
    const deniedBefore = metric(await gw.metrics(), 'sigma_lease_acquire_total{result="denied"}');
    const { lease, events } = newLease(t, { url: gw.url, getToken: tokenFor('ben'), deviceId: 'd' });
    const err = await lease.start().then(
      () => assert.fail('granted over the limit'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof StreamLimitError);
    assert.equal(err.code, 'ERR_STREAM_LIMIT');
    assert.equal(err.limit, 3);
    assert.deepEqual(err.active.map((a) => `${a.deviceId}:${a.contentId}`).sort(), ['a:film-a', 'b:film-b', 'c:film-c']);
    assert.match(err.viewerMessage, /already watching on 3 devices/);
    assert.equal(events.denied.length, 1);
    assert.equal(lease.state, 'denied');
    await sleep(500); // more than twice the largest backoff
    assert.equal(metric(await gw.metrics(), 'sigma_lease_acquire_total{result="denied"}') - deniedBefore, 1, 'exactly one attempt');
    assert.equal(events.reconnecting.length, 0);
  });

  test('takeover stops the named device (4403: revoked, no reconnect) and plays here', BOUNDED, async (t) => {
    const leases = new Map<string, ReturnType<typeof newLease>>();
    for (const deviceId of ['a', 'b', 'c', 'd']) leases.set(deviceId, newLease(t, { url: gw.url, getToken: tokenFor('cat'), deviceId }));
    for (const id of ['a', 'b', 'c']) await leases.get(id)!.lease.start();
    const d = leases.get('d')!;
    await assert.rejects(d.lease.start(), StreamLimitError);

    const grant = await d.lease.takeover('b');
    assert.equal(grant.deviceId, 'd');
    const b = leases.get('b')!;
    await eventually(() => b.events.revoked.length === 1);
    assert.equal(b.events.revoked[0].code, 4403);
    assert.equal(b.events.revoked[0].viewerMessage, 'Playback was stopped from another device.');
    assert.deepEqual(
      b.events.lost.map((e) => [e.code, e.willReconnect]),
      [[4403, false]],
    );
    assert.equal(b.lease.state, 'revoked');
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'cat'), ['a', 'c', 'd']);
    await sleep(500);
    assert.equal(b.events.reconnecting.length, 0);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'cat'), ['a', 'c', 'd'], 'b did not come back');

    // 'oldest' takes a's slot; the takeover is not repeated by later reconnects.
    const e = newLease(t, { url: gw.url, getToken: tokenFor('cat'), deviceId: 'e' });
    await e.lease.takeover('oldest');
    await eventually(() => leases.get('a')!.events.revoked.length === 1);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'cat'), ['c', 'd', 'e']);
  });

  test('the same device id elsewhere closes this one with 4409: replaced, no reconnect', BOUNDED, async (t) => {
    const first = newLease(t, { url: gw.url, getToken: tokenFor('dan'), deviceId: 'tv' });
    await first.lease.start();
    const second = newLease(t, { url: gw.url, getToken: tokenFor('dan'), deviceId: 'tv' });
    const grant = await second.lease.start();
    await eventually(() => first.events.replaced.length === 1);
    assert.equal(first.lease.state, 'replaced');
    await sleep(500);
    assert.equal(first.events.reconnecting.length, 0);
    assert.deepEqual(
      (await second.lease.listStreams()).streams.map((s) => s.leaseId),
      [grant.leaseId],
    );
  });

  test('a terminal close during start() (1008) rejects with TerminalCloseError and is not retried', BOUNDED, async (t) => {
    const { lease, events } = newLease(t, { url: gw.url, getToken: tokenFor('eve'), deviceId: 'tv' });
    const err = await lease.takeover('tv').then(
      () => assert.fail('granted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TerminalCloseError);
    assert.equal(err.closeCode, 1008);
    assert.match(err.reason, /another device/);
    assert.equal(lease.state, 'ended');
    await sleep(500);
    assert.equal(events.reconnecting.length, 0);
    assert.deepEqual(events.state, ['connecting', 'ended']);
  });

  test('4401: one fresh token, then UnauthorizedError', BOUNDED, async (t) => {
    const asked: boolean[] = [];
    const bad = newLease(t, {
      url: gw.url,
      deviceId: 'tv',
      getToken: ({ refresh }) => (asked.push(refresh), mintToken('fay', { secret: 'not-the-gateway-secret-0123456789abcdef' })),
    });
    const err = await bad.lease.start().then(
      () => assert.fail('granted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof UnauthorizedError);
    assert.equal(err.closeCode, 4401);
    assert.deepEqual(asked, [false, true]);

    const seen: boolean[] = [];
    const good = newLease(t, {
      url: gw.url,
      deviceId: 'tv',
      getToken: ({ refresh }) => (seen.push(refresh), refresh ? mintToken('fay') : mintToken('fay', { expiresIn: -60 })),
    });
    assert.equal((await good.lease.start()).userId, 'fay');
    assert.deepEqual(seen, [false, true]);
  });

  test('a token about to expire is replaced on a new socket without a visible loss', BOUNDED, async (t) => {
    const asked: boolean[] = [];
    const { lease, events } = newLease(t, {
      url: gw.url,
      deviceId: 'tv',
      refreshBeforeExpiryMs: 2000,
      getToken: ({ refresh }) => (asked.push(refresh), mintToken('guy', { expiresIn: 3 })),
    });
    const first = await lease.start();
    await eventually(() => lease.grant !== undefined && lease.grant.leaseId !== first.leaseId, 4000);
    assert.deepEqual(asked.slice(0, 2), [false, true]);
    assert.deepEqual(events.state, ['connecting', 'granted'], 'never left granted');
    assert.equal(events.lost.length, 0);
    assert.deepEqual(
      (await lease.listStreams()).streams.map((s) => s.leaseId),
      [lease.grant!.leaseId],
      'one lease, the new one',
    );
  });

  test('with the reauth flag the lease outlives its first token without a visible loss', BOUNDED, async (t) => {
    // A gateway with re-authentication answers `reauthed` and keeps the socket; one without answers an
    // error frame and the SDK swaps sockets. Either way the viewer sees nothing.
    const asked: boolean[] = [];
    const tokens: string[] = [];
    const { lease, events } = newLease(t, {
      url: gw.url,
      deviceId: 'tv',
      reauth: true,
      refreshBeforeExpiryMs: 2000,
      getToken: async ({ refresh }) => (asked.push(refresh), (tokens[tokens.length] = await mintToken('gus', { expiresIn: 3 }))),
    });
    await lease.start();
    const firstExpiry = tokenExpiryMs(tokens[0])!;
    await eventually(() => asked.includes(true), 4000);
    await sleep(Math.max(0, firstExpiry - Date.now()) + 1000); // past the first token's exp
    assert.equal(lease.state, 'granted');
    assert.deepEqual(events.state, ['connecting', 'granted'], 'never left granted');
    assert.equal(events.lost.length, 0);
    assert.deepEqual(
      (await lease.listStreams()).streams.map((s) => s.leaseId),
      [lease.grant!.leaseId],
    );
  });
});

/** A port that accepts and drops every connection: each attempt ends in 1006. Records arrival times. */
async function droppingServer(t: TestContext): Promise<{ url: string; arrivals: number[] }> {
  const arrivals: number[] = [];
  const server = createServer((socket: Socket) => {
    arrivals.push(performance.now());
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`, arrivals };
}

describe('backoff', () => {
  test('full-jitter delays stay within min(max, initial * 2^n), grow to the cap, and stop with stop()', BOUNDED, async (t) => {
    const { url, arrivals } = await droppingServer(t);
    const opts = { initialMs: 40, maxMs: 160, stableAfterMs: 1000 };
    const { lease, events } = newLease(t, { url, getToken: () => 'x.e30.x', deviceId: 'tv', backoff: opts });
    void lease.start().catch(() => {});
    await eventually(() => arrivals.length >= 9, 5000);
    lease.stop();
    const stoppedAt = arrivals.length;

    const retries = events.reconnecting.slice(0, 8);
    assert.deepEqual(
      retries.map((r) => r.attempt),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.ok(retries.every((r) => r.code === 1006));
    for (const [i, r] of retries.entries()) {
      assert.ok(
        r.delayMs >= 0 && r.delayMs <= backoffCapMs(i, { ...opts }),
        `attempt ${r.attempt}: ${r.delayMs} ms within cap ${backoffCapMs(i, opts)}`,
      );
      const gap = arrivals[i + 1] - arrivals[i];
      assert.ok(gap >= r.delayMs - 2, `attempt ${r.attempt} came after its delay (${gap.toFixed(0)} >= ${r.delayMs})`);
      // Only a delay far from the one reported (another cap, a second timer) fails this; a loaded machine
      // may run the timer late by hundreds of ms, which is not what is under test.
      assert.ok(gap <= r.delayMs + 1000, `attempt ${r.attempt} came soon after its delay (${gap.toFixed(0)} vs ${r.delayMs})`);
    }
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((i) => backoffCapMs(i, opts)),
      [40, 80, 160, 160, 160],
    );
    assert.ok(new Set(retries.map((r) => r.delayMs)).size > 2, `jittered: ${retries.map((r) => r.delayMs)}`);
    await sleep(400);
    assert.equal(arrivals.length, stoppedAt, 'no attempt after stop()');
  });

  test('start() after a loss, while a retry is scheduled, waits for it instead of connecting at once', BOUNDED, async (t) => {
    // A stand-in gateway (only the SDK's timing is under test here): the first socket is granted and
    // then closed with 1012; every later one is dropped, so the lease keeps retrying.
    const arrivals: number[] = [];
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    t.after(() => new Promise<void>((r) => wss.close(() => r())));
    wss.on('connection', (ws) => {
      arrivals.push(performance.now());
      if (arrivals.length > 1) return ws.terminate();
      ws.send(JSON.stringify({ type: 'granted', leaseId: 'l1', userId: 'u', deviceId: 'tv', limit: 3, active: 1 }));
      setTimeout(() => ws.close(1012, 'gateway restarting'), 50);
    });
    await new Promise((r) => wss.once('listening', r));
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}`;
    const { lease, events } = newLease(t, { url, getToken: () => 'x.e30.x', deviceId: 'tv', backoff: { initialMs: 400, maxMs: 400 } });
    await lease.start();
    // A retry far enough away to tell "at once" from "when scheduled" (each has a 50% chance).
    const retry = (await eventually(() => events.reconnecting.find((r) => r.delayMs >= 200 && performance.now() - r.at < 20), 8000, 1))!;
    const before = arrivals.length;
    void lease.start().catch(() => {});
    await sleep(retry.delayMs - (performance.now() - retry.at) - 50);
    assert.equal(arrivals.length, before, 'no connection before the scheduled retry');
  });
});

describe('gateway restart and a dead gateway (child processes)', () => {
  const gateways: ChildGateway[] = [];
  after(() => gateways.forEach((g) => g.kill('SIGKILL')));

  test('1012 on SIGTERM: reconnects to the next gateway; a silent gateway is detected by the app ping', BOUNDED, async (t) => {
    const table = newTable();
    let current = await spawnGateway({ table, env: COLD_STORE });
    gateways.push(current);
    const { lease, events } = newLease(t, { url: () => current.url, getToken: () => mintToken('hal'), deviceId: 'tv' });
    const first = await lease.start();

    // Restart: the old gateway drains with 1012 and exits; the SDK retries (its port is gone) until a new one listens.
    current.kill('SIGTERM');
    await eventually(() => events.lost.length === 1, 5000);
    assert.deepEqual([events.lost[0].code, events.lost[0].willReconnect], [1012, true]);
    assert.equal((await current.exited).code, 0);
    const again = lease.start(); // while reconnecting: resolves with the grant the retries bring
    current = await spawnGateway({ table, env: COLD_STORE });
    gateways.push(current);
    await eventually(() => events.granted.length === 2, 10_000);
    assert.equal((await again).leaseId, events.granted[1].leaseId);
    assert.notEqual(events.granted[1].leaseId, first.leaseId);
    assert.ok(events.reconnecting.length >= 2, `retried while no gateway listened (${events.reconnecting.length})`);
    assert.deepEqual(await leaseEntries(await dynamoEndpoint(), table, 'hal'), ['tv'], 'one lease, no ghost of the old gateway');

    // Dead gateway: SIGSTOP keeps its TCP connections open but nothing answers.
    await sleep(600); // longer than stableAfterMs: the backoff starts over
    const stoppedAt = performance.now();
    current.kill('SIGSTOP');
    await eventually(() => events.lost.length === 2, 3000);
    const lost = events.lost[1];
    assert.equal(lost.code, 1006);
    assert.match(lost.reason, /no pong/);
    assert.equal(lost.willReconnect, true);
    assert.ok(lost.at - stoppedAt <= 300 + 300 + 300 + 200, `detected in ${(lost.at - stoppedAt).toFixed(0)} ms`);
    const retry = events.reconnecting.find((r) => r.at >= lost.at)!;
    assert.equal(retry.attempt, 1, 'a stable lease reset the backoff');
    assert.equal(lease.state, 'reconnecting');
  });
});
