/**
 * Review of the return after a lost socket with `previous` (8ddeba5) and of the hand-off tried first once most
 * such returns find their ghost, with the mailbox notes' budget (33c4b8f). Each test is an attack: a viewer
 * locked out wrongly (4403 for a device nobody stopped, 4429 below the limit), a stop that does not stand, or
 * counts (`n`, `c:`) that drift from the entries, on both sides of the moving average's flip.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { startEmbeddedStore } from '../src/embedded-store.js';
import { connect, eventually } from './helpers/devices.js';
import { localClient } from './helpers/dynamodb-local.js';
import { gatewayBehindProxy, newTable, spawnGateway, startGateway, userItem, twoGateways, killableAndProxied } from './helpers/gateway.js';
import { tcpRelay } from './helpers/tcp-relay.js';
import { mintToken } from './helpers/tokens.js';

const BOUNDED = { timeout: 40_000 };

const stopOver = async (base: string, userId: string, device: string) =>
  fetch(`${base.replace('ws:', 'http:')}/v1/streams/${device}`, {
    method: 'DELETE',
    headers: { Authorization: `Bearer ${await mintToken(userId)}` },
  });

describe('review6: previous after a lost socket, the ghost average, the stop mark of a lost release', () => {
  test(
    "a stop of a killed gateway's ghost after its instance expired: the device's return with previous is refused",
    BOUNDED,
    async (t) => {
      const tbl = newTable();
      const a = await spawnGateway({ table: tbl });
      t.after(() => a.kill('SIGKILL'));
      const b = await startGateway({ table: tbl });
      t.after(() => b.stop());
      const token = await mintToken('expired');
      const tv = connect(a.url, { token, device: 'tv' });
      const leaseId = ((await tv.decision) as { leaseId: string }).leaseId;
      a.kill('SIGKILL');
      await tv.closed;
      // The tv is still listed (its ghost); A's instance item expires (INSTANCE_TTL_MS 3 s) while the tv waits.
      await sleep(3500);
      const res = await stopOver(b.url, 'expired', 'tv');
      const item = await userItem(b.endpoint, tbl, 'expired', { zeros: false });
      const back = connect(b.url, { token, device: 'tv', previous: leaseId });
      const answer = await back.decision.then(
        (d) => (d as { type: string }).type,
        (e: Error) => e.message,
      );
      await back.close();
      assert.equal(res.status, 204, 'the stop is done: the entry is gone, and the mark left for its return');
      assert.match(answer, /closed 4403/, `stop answered ${res.status}, item ${JSON.stringify(item)}: the return was ${answer}`);
    },
  );

  test("a stop whose release loses to the gateway's, racing the device's return with previous: the stop stands", BOUNDED, async (t) => {
    const tbl = newTable();
    const a = await startGateway({ table: tbl });
    t.after(() => a.stop());
    // The stop's two held writes (1.4 s) and its reads fit its deadline even on a loaded machine.
    const patient = { ADMISSION_TIMEOUT_MS: '6000', DYNAMODB_REQUEST_TIMEOUT_MS: '3000' };
    const { proxy, gw: b } = await gatewayBehindProxy(t, { table: tbl, env: patient });
    const token = await mintToken('race');
    const tv = connect(a.url, { token, device: 'tv' });
    const leaseId = ((await tv.decision) as { leaseId: string }).leaseId;
    // B's release and then its mark wait in the network; meanwhile the tv's socket is cut (A gives the entry back).
    proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, times: 2, delayMs: 700 });
    const stopping = stopOver(b.url, 'race', 'tv');
    while ((proxy.faulted.get('delay') ?? 0) === 0) await sleep(5);
    tv.ws.terminate();
    await eventually(async () => (await userItem(a.endpoint, tbl, 'race', { zeros: false })).n === 0);
    // B's release failed, it read the entry gone, and its mark is on its way: the tv comes back now.
    while ((proxy.faulted.get('delay') ?? 0) < 2) await sleep(5);
    const back = connect(a.url, { token, device: 'tv', previous: leaseId });
    const answer = await back.decision.then(
      (d) => (d as { type: string }).type,
      (e: Error) => e.message,
    );
    const res = await stopping;
    assert.equal(res.status, 204);
    const item = await userItem(a.endpoint, tbl, 'race', { zeros: false });
    // 204 says the tv was stopped: it must not be playing now (its return refused, or stopped in its turn).
    if (answer === 'granted') {
      const closed = await Promise.race([back.closed, sleep(3000).then(() => undefined)]);
      assert.equal(closed?.code, 4403, `the return plays on after a 204: ${JSON.stringify(item)}`);
    } else assert.match(answer, /4403/);
    await back.close();
  });

  test(
    "ghosts of a killed gateway coming back on another content, before and after the average flips: granted, counts follow; another device's stop refuses only that device",
    BOUNDED,
    async (t) => {
      const { a, b, table: tbl } = await killableAndProxied(t);
      const users = ['r6-0', 'r6-1', 'r6-2', 'r6-3', 'r6-4', 'r6-5', 'r6-6'];
      const held = [];
      for (const u of users) {
        const token = await mintToken(u, { maxStreams: 2 });
        const tv = connect(a.url, { token, device: 'tv', content: 'film' });
        const phone = connect(a.url, { token, device: 'phone', content: 'film' });
        held.push({
          u,
          token,
          tv,
          phone,
          tvLease: ((await tv.decision) as { leaseId: string }).leaseId,
          phoneLease: ((await phone.decision) as { leaseId: string }).leaseId,
        });
      }
      // r6-6 stops its phone (A alive): the mark names the phone's lease, not the tv's.
      assert.equal((await stopOver(b.url, 'r6-6', 'phone')).status, 204);
      assert.equal((await held[6].phone.closed).code, 4403);
      a.kill('SIGKILL');
      await Promise.all(held.map((h) => h.tv.closed));
      const back = [];
      for (const [i, h] of held.entries()) {
        // The first and the last come back on another content: the hand-off's condition fails (first: after the
        // admission's own write; last: first, the average having flipped), the slow path replaces the entry.
        const content = i === 0 || i === 6 ? 'news' : 'film';
        const tv = connect(b.url, { token: h.token, device: 'tv', content, previous: h.tvLease });
        const d = (await tv.decision) as { type: string; leaseId: string };
        assert.equal(d.type, 'granted', `${h.u} back`);
        back.push(tv);
        const item = await userItem(b.endpoint, tbl, h.u, { zeros: false });
        assert.equal(item.leases.tv, d.leaseId, `${h.u}: its entry is the new lease`);
        if (i < 6) {
          assert.equal(item.n, 2, `${h.u}: n`);
          assert.deepEqual(item.counts, content === 'news' ? { 'c:film': 1, 'c:news': 1 } : { 'c:film': 2 }, `${h.u}: counts`);
        } else {
          assert.equal(item.n, 1, `${h.u}: n (the phone was stopped)`);
          assert.deepEqual(item.counts, { 'c:news': 1 }, `${h.u}: counts`);
          assert.deepEqual(item.marks, { phone: h.phoneLease });
        }
      }
      // The stopped phone comes back with its old lease: refused; its tv plays on.
      const phone = connect(b.url, { token: held[6].token, device: 'phone', content: 'film', previous: held[6].phoneLease });
      await assert.rejects(phone.decision, /closed 4403/);
      // Another of r6-6's phones never stopped, back with previous naming the phone's lease? It is the same device id:
      // a NEW session (no previous) of the stopped phone is admitted.
      const fresh = connect(b.url, { token: held[6].token, device: 'phone', content: 'film' });
      assert.equal(((await fresh.decision) as { type: string }).type, 'granted');
      back.push(fresh);
      assert.equal((await userItem(b.endpoint, tbl, 'r6-6', { zeros: false })).n, 2);
      await Promise.all(back.map((tv) => tv.close()));
      await eventually(async () => (await userItem(b.endpoint, tbl, 'r6-6', { zeros: false })).n === 0);
    },
  );

  test(
    'with the average flipped (hand-off first), returns whose entries went back: admitted in the fast path, a stopped one refused, one at the limit denied, counts exact',
    BOUNDED,
    async (t) => {
      const { a, b, proxy, table: tbl } = await killableAndProxied(t);
      const ghosts = [];
      for (let i = 0; i < 6; i++) {
        const token = await mintToken(`flip-${i}`);
        const tv = connect(a.url, { token, device: 'tv' });
        ghosts.push({ token, tv, leaseId: ((await tv.decision) as { leaseId: string }).leaseId });
      }
      a.kill('SIGKILL');
      await Promise.all(ghosts.map((g) => g.tv.closed));
      const playing = [];
      for (const g of ghosts) {
        const tv = connect(b.url, { token: g.token, device: 'tv', previous: g.leaseId });
        assert.equal(((await tv.decision) as { type: string }).type, 'granted');
        playing.push(tv);
      }
      // Now a storm of returns whose gateway (B itself) gave the entry back: a cut seen at once.
      const storm = await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          const token = await mintToken(`cut-${i}`, { maxStreams: 1 });
          const tv = connect(b.url, { token, device: 'tv', content: 'film' });
          const leaseId = ((await tv.decision) as { leaseId: string }).leaseId;
          await tv.close(1000);
          return { token, leaseId, userId: `cut-${i}` };
        }),
      );
      await eventually(async () => {
        for (const s of storm) if ((await userItem(b.endpoint, tbl, s.userId, { zeros: false })).n !== 0) return false;
        return true;
      });
      // cut-0 was stopped meanwhile (its entry already gone: the stop's mark is written on its own?) — over REST
      // while away: DELETE of a device with no entry.
      const stopRes = await stopOver(b.url, 'cut-0', 'tv');
      // cut-1's slot was taken by its phone while away (limit 1).
      const phone = connect(b.url, { token: storm[1].token, device: 'phone', content: 'film' });
      assert.equal(((await phone.decision) as { type: string }).type, 'granted');
      playing.push(phone);
      proxy.resetCounts();
      const results = await Promise.all(
        storm.map(async (s) => {
          const tv = connect(b.url, { token: s.token, device: 'tv', content: 'film', previous: s.leaseId });
          const out = await tv.decision.then(
            (d) => (d as { type: string }).type,
            (e: Error) => e.message.replace(/ before a decision$/, '').slice(0, 12),
          );
          playing.push(tv);
          return out;
        }),
      );
      // A DELETE of a device with nothing playing leaves no mark: its return is admitted, as a new one would be.
      const first = stopRes.status === 204 ? 'closed 4403' : 'granted';
      assert.deepEqual(results, [first, 'denied', 'granted', 'granted', 'granted', 'granted', 'granted', 'granted']);
      for (const [i, s] of storm.entries()) {
        const item = await userItem(b.endpoint, tbl, s.userId, { zeros: false });
        if (i === 0 && first !== 'granted') assert.equal(item.n, 0, `${s.userId}: n`);
        else {
          assert.equal(item.n, 1, `${s.userId}: n`);
          assert.deepEqual(item.counts, { 'c:film': 1 }, `${s.userId}: counts`);
          assert.equal(Object.keys(item.leases).length, 1, `${s.userId}: one entry`);
        }
      }
      await Promise.all(playing.map((p) => p.close()));
    },
  );

  test(
    'replacements past the note budget: each replaced socket still closes (4409, by the reconcile), one warning, no socket left',
    BOUNDED,
    async (t) => {
      const [a, b] = await twoGateways(t);
      const N = 200;
      const tokens = await Promise.all(Array.from({ length: N }, (_, i) => mintToken(`budget-${i}`)));
      const olds = [];
      for (let i = 0; i < N; i += 50)
        olds.push(
          ...(await Promise.all(
            tokens.slice(i, i + 50).map(async (token) => {
              const d = connect(a.url, { token, device: 'tv' });
              await d.decision;
              return d;
            }),
          )),
        );
      // The same device (a copied id, or the device itself on a new socket) replaces each entry from B.
      const news = [];
      for (let i = 0; i < N; i += 50)
        news.push(
          ...(await Promise.all(
            tokens.slice(i, i + 50).map(async (token) => {
              const d = connect(b.url, { token, device: 'tv' });
              assert.equal(((await d.decision) as { type: string }).type, 'granted');
              return d;
            }),
          )),
        );
      const closed = await Promise.all(olds.map((d) => Promise.race([d.closed, sleep(8000).then(() => ({ code: 0 }))])));
      assert.deepEqual(
        closed.map((c) => c.code).filter((c) => c !== 4409),
        [],
        'every replaced socket closes with 4409 within a few reconcile rounds',
      );
      assert.equal(b.logs.filter((l) => l.includes('over its budget')).length, 1, 'one warning for the instance');
      await Promise.all(news.map((d) => d.close()));
    },
  );

  for (const store of ['DynamoDB Local', 'dynalite'] as const)
    test(`previous against each kind of stop mark, on ${store}: only a mark naming that lease refuses`, BOUNDED, async (t) => {
      const embedded = store === 'dynalite' ? await startEmbeddedStore() : undefined;
      t.after(() => embedded?.close());
      const tbl = newTable();
      const gw = await startGateway({ table: tbl, ...(embedded && { endpoint: embedded.endpoint }) });
      t.after(() => gw.stop());
      const client = localClient(gw.endpoint);
      t.after(() => client.destroy());
      const mark = async (userId: string, m: Record<string, { S: string } | { N: string }>) =>
        client.send(
          new UpdateItemCommand({
            TableName: tbl,
            Key: { pk: { S: `user#${userId}` } },
            UpdateExpression: 'SET #m = :m',
            ExpressionAttributeNames: { '#m': 'stop:tv' },
            ExpressionAttributeValues: { ':m': { M: m } },
          }),
        );
      const at = { N: String(Date.now()) };
      const [PREV, OTHER, OTHER2] = [randomUUID(), randomUUID(), randomUUID()];
      const tag = store === 'dynalite' ? 'dl' : 'ddb';
      const cases: Array<[string, Record<string, { S: string } | { N: string }> | undefined, string]> = [
        ['no-item', undefined, 'granted'],
        ['other-lease', { leaseId: { S: OTHER }, at }, 'granted'],
        ['other-handed', { leaseId: { S: OTHER }, handedLease: { S: OTHER2 }, at }, 'granted'],
        ['no-lease-id', { at }, 'granted'],
        ['names-it', { leaseId: { S: PREV }, at }, 'closed 4403'],
        ['handed-it', { leaseId: { S: OTHER }, handedLease: { S: PREV }, at }, 'closed 4403'],
        ['evicted-it', { leaseId: { S: PREV }, at, why: { S: 'evicted' } }, 'closed 4403'],
      ];
      const got: Record<string, string> = {};
      for (const [u, m] of cases) {
        if (m) await mark(`${tag}-${u}`, m);
        const d = connect(gw.url, { token: await mintToken(`${tag}-${u}`), device: 'tv', content: 'film', previous: PREV });
        got[u] = await d.decision.then(
          (x) => (x as { type: string }).type,
          (e: Error) => e.message.slice(0, 11),
        );
        const item = await userItem(gw.endpoint, tbl, `${tag}-${u}`, { zeros: false });
        assert.equal(item.n, got[u] === 'granted' ? 1 : 0, `${u}: n`);
        assert.deepEqual(item.counts, got[u] === 'granted' ? { 'c:film': 1 } : {}, `${u}: counts`);
        await d.close();
      }
      assert.deepEqual(got, Object.fromEntries(cases.map(([u, , want]) => [u, want])));
    });

  test(
    "returns with previous racing the old gateway's own ping-timeout release, at several delays: granted, counts exact, the new entry stays",
    BOUNDED,
    async (t) => {
      const [a, b] = await twoGateways(t);
      const tbl = a.table;
      const delays = [0, 300, 600, 900, 1200];
      await Promise.all(
        delays.map(async (delay) => {
          const relay = await tcpRelay(t, a.url);
          const userId = `race-ping-${delay}`;
          const token = await mintToken(userId);
          const tv = connect(relay.url, { token, device: 'tv', content: 'film' });
          const leaseId = ((await tv.decision) as { leaseId: string }).leaseId;
          relay.freeze();
          tv.ws.terminate();
          await sleep(delay);
          const back = connect(b.url, { token, device: 'tv', content: 'film', previous: leaseId });
          const d = (await back.decision) as { type: string; leaseId: string };
          assert.equal(d.type, 'granted', `${userId}`);
          // A's ping timeout (500 + 300 ms) ends the frozen socket; its release must not take the new entry.
          await sleep(2500);
          const item = await userItem(b.endpoint, tbl, userId, { zeros: false });
          assert.deepEqual(item.leases, { tv: d.leaseId }, `${userId}: the new entry stays`);
          assert.equal(item.n, 1, `${userId}: n`);
          assert.deepEqual(item.counts, { 'c:film': 1 }, `${userId}: counts`);
          assert.equal(back.ws.readyState, back.ws.OPEN, `${userId}: the return still plays`);
          await back.close();
        }),
      );
    },
  );

  test(
    'a late copy of the old admission lands after its release, then the return with previous: one entry, counts exact, stopped cleanly after',
    BOUNDED,
    async (t) => {
      const tbl = newTable();
      const { proxy, gw: a } = await gatewayBehindProxy(t, { table: tbl });
      const b = await startGateway({ table: tbl });
      t.after(() => b.stop());
      const token = await mintToken('dup');
      proxy.set('duplicate', { only: ['UpdateItem'], usersOnly: true, times: 1, delayMs: 800 });
      const tv = connect(a.url, { token, device: 'tv', content: 'film' });
      const leaseId = ((await tv.decision) as { leaseId: string }).leaseId;
      await tv.close(1000);
      await eventually(async () => (await userItem(b.endpoint, tbl, 'dup', { zeros: false })).n === 0);
      // The copy of the admission write lands after the release: the entry is back (an orphan of A).
      await eventually(async () => (await userItem(b.endpoint, tbl, 'dup', { zeros: false })).leases.tv === leaseId);
      const back = connect(b.url, { token, device: 'tv', content: 'film', previous: leaseId });
      const d = (await back.decision) as { type: string; leaseId: string };
      assert.equal(d.type, 'granted');
      await sleep(2500); // A's reconcile rounds (2 s) see the entry, now B's
      const item = await userItem(b.endpoint, tbl, 'dup', { zeros: false });
      assert.deepEqual(item.leases, { tv: d.leaseId });
      assert.equal(item.n, 1);
      assert.deepEqual(item.counts, { 'c:film': 1 });
      assert.equal(back.ws.readyState, back.ws.OPEN);
      assert.equal((await stopOver(b.url, 'dup', 'tv')).status, 204);
      assert.equal((await back.closed).code, 4403);
      const after = await userItem(b.endpoint, tbl, 'dup', { zeros: false });
      assert.equal(after.n, 0);
      assert.deepEqual(after.marks, { tv: d.leaseId });
    },
  );
});
