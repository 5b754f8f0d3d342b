/**
 * Several regions (DYNAMODB_REGIONS): two DynamoDB Locals as "eu" and "us",
 * gateways whose own region is one or the other, each reaching each region
 * through its own fault proxy. Every user's leases live in the user's home
 * region only, so the cap is exact wherever the devices connect.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, describe, test } from 'node:test';
import { hashedHome } from '../src/regions.js';
import { Recorder } from './helpers/cluster.js';
import { appPing, connect, eventually, type Device } from './helpers/devices.js';
import { FAST_TIMINGS, leaseEntries, metric } from './helpers/gateway.js';
import {
  newTable,
  regionEndpoints,
  spawnRegionalGateway,
  startRegionalGateway,
  stopRegions,
  type RegionalGateway,
  type RegionName,
} from './helpers/regions.js';
import { newKeyPair } from './helpers/playback.js';
import { mintToken } from './helpers/tokens.js';

const HEARTBEAT_MS = Number(FAST_TIMINGS.INSTANCE_HEARTBEAT_MS);
const TTL_MS = Number(FAST_TIMINGS.INSTANCE_TTL_MS);
const ADMISSION_MS = Number(FAST_TIMINGS.ADMISSION_TIMEOUT_MS);
/** The revocation bound of the README: the owner reads its mailbox with its next beat. */
const REVOCATION_BOUND_MS = HEARTBEAT_MS + 1000;
/**
 * Many devices of one user at once: the per-user attempt limit is not what these tests are about, nor is
 * device liveness (a 300 ms pong timeout cuts test clients with 1006 on a loaded machine).
 */
const ENV = {
  CONNECT_RATE_PER_USER: '10000',
  CONNECT_BURST_PER_USER: '10000',
  MAX_STREAMS: '3',
  PING_INTERVAL_MS: '5000',
  PONG_TIMEOUT_MS: '5000',
};

/** A user id the hash homes in `region` (no claim needed). */
function hashedUser(prefix: string, region: RegionName): string {
  for (let i = 0; ; i++) if (hashedHome(`${prefix}-${i}`, ['eu', 'us']) === region) return `${prefix}-${i}`;
}

const other = (r: RegionName): RegionName => (r === 'eu' ? 'us' : 'eu');
const httpUrl = (gw: RegionalGateway): string => gw.url.replace('ws://', 'http://');

async function pair(
  t: { after(fn: () => Promise<void>): void },
  env: Record<string, string> = {},
): Promise<Record<RegionName, RegionalGateway>> {
  const table = newTable();
  const eu = await startRegionalGateway('eu', table, { ...ENV, ...env });
  t.after(() => eu.stop());
  const us = await startRegionalGateway('us', table, { ...ENV, ...env });
  t.after(() => us.stop());
  return { eu, us };
}

async function granted(device: Device): Promise<Device> {
  const frame = await device.decision;
  assert.equal(frame.type, 'granted', `device was ${String(frame.type)}`);
  return device;
}

after(stopRegions);

describe('several regions: every user has one home region', () => {
  test('20 devices of one user at once through gateways in both regions: exactly N every round, written in the home region only', async (t) => {
    // A longer TTL: a starved machine should not fence the gateways mid-round (this is not a fencing test).
    const gws = await pair(t, { INSTANCE_TTL_MS: '10000', FENCING_MARGIN_MS: '3000' });
    const table = gws.eu.table;
    const ends = await regionEndpoints();
    const recorder = new Recorder();
    const fencings = async (): Promise<number> =>
      metric(await gws.eu.metrics(), 'sigma_fencing_events_total') + metric(await gws.us.metrics(), 'sigma_fencing_events_total');
    const users: Array<{ user: string; home: RegionName; claims?: Record<string, unknown> }> = [
      { user: 'rosa', home: 'us', claims: { home_region: 'us' } },
      { user: hashedUser('hash', 'eu'), home: 'eu' },
      { user: hashedUser('hash', 'us'), home: 'us' },
    ];
    for (const { user, home, claims } of users) {
      const token = await mintToken(user, { claims });
      for (let round = 0; round < 3; round++) {
        const fencedBefore = await fencings();
        const devices = Array.from({ length: 20 }, (_, i) =>
          recorder.connect(i % 2 === 0 ? gws.eu.url : gws.us.url, i % 2, user, { token, device: `r${round}-d${i}` }),
        );
        const frames = await Promise.all(devices.map((d) => d.decision.catch(() => ({ type: 'closed' }))));
        const grants = frames.filter((f) => f.type === 'granted').length;
        const denials = frames.filter((f) => f.type === 'denied').length;
        // Devices closed before a decision: 1013 when an admission missed its deadline on a loaded machine.
        const undecided = await Promise.all(devices.filter((_, i) => frames[i].type === 'closed').map((d) => d.closed));
        const seen = `${grants} granted, ${denials} denied, closed ${undecided.map((c) => c.code).join(' ') || 'none'}`;
        assert.deepEqual(await leaseEntries(ends[other(home)], table, user), [], 'nothing in the other region');
        if ((await fencings()) === fencedBefore && undecided.length === 0) {
          assert.equal(grants, 3, `${user} round ${round}: ${seen}`);
          assert.equal(denials, 17, `${user} round ${round}: ${seen}`);
          assert.equal((await leaseEntries(ends[home], table, user)).length, 3, 'entries in the home region');
        } else {
          // A gateway starved past its fencing deadline closed its sockets and others took the slots, or an
          // admission missed its deadline: the count per round says nothing then. The timeline below still
          // must never show more than N at once.
          t.diagnostic(
            `${user} round ${round}: ${seen} (a fencing or a missed deadline on a loaded machine); only the timeline is checked`,
          );
        }
        await Promise.all(devices.map((d) => d.close()));
        await eventually(async () => (await leaseEntries(ends[home], table, user)).length === 0, 15_000);
      }
    }
    assert.deepEqual(recorder.violations(3), [], 'never more than N playing at once, from what the devices saw');
  });

  test('takeover, kick and reconnect across regions close the revoked socket within the revocation bound', async (t) => {
    const gws = await pair(t);
    for (const home of ['eu', 'us'] as const) {
      // The user's devices play through the gateway of the other region; the takeover comes through the home one.
      const remote = gws[other(home)];
      const local = gws[home];
      const user = `taker-${home}`;
      const token = await mintToken(user, { maxStreams: 2, claims: { home_region: home } });
      const a = await granted(connect(remote.url, { token, device: 'a' }));
      const b = await granted(connect(remote.url, { token, device: 'b' }));
      const c = connect(local.url, { token, device: 'c', takeover: 'a' });
      t.after(() => c.close());
      await granted(c);
      const takenAt = performance.now();
      assert.deepEqual(await a.closed, { code: 4403, reason: 'revoked: playback was stopped from another device or by support' });
      assert.ok(a.closedAt! - takenAt <= REVOCATION_BOUND_MS, `takeover: closed ${Math.round(a.closedAt! - takenAt)} ms after`);

      const res = await fetch(`${httpUrl(local)}/v1/streams/b`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
      assert.equal(res.status, 204);
      const kickedAt = performance.now();
      assert.equal((await b.closed).code, 4403);
      assert.ok(b.closedAt! - kickedAt <= REVOCATION_BOUND_MS, `kick: closed ${Math.round(b.closedAt! - kickedAt)} ms after`);

      // The same device again, now through the other region's gateway: the old socket is replaced.
      const again = connect(remote.url, { token, device: 'c' });
      t.after(() => again.close());
      await granted(again);
      const replacedAt = performance.now();
      assert.equal((await c.closed).code, 4409);
      assert.ok(c.closedAt! - replacedAt <= REVOCATION_BOUND_MS, `reconnect: closed ${Math.round(c.closedAt! - replacedAt)} ms after`);
      await again.close();
    }
  });

  test('a gateway SIGKILLed in region us: its slots of eu-homed users are free within the TTL', async (t) => {
    const table = newTable();
    const child = await spawnRegionalGateway('us', table, ENV);
    t.after(async () => {
      child.kill('SIGKILL');
      await child.exited;
      for (const p of Object.values(child.proxies)) await p.close();
    });
    const eu = await startRegionalGateway('eu', table, ENV);
    t.after(() => eu.stop());
    const token = await mintToken('kira', { claims: { home_region: 'eu' } });
    for (const device of ['a', 'b', 'c']) await granted(connect(child.url, { token, device }));
    const full = connect(eu.url, { token, device: 'early' });
    assert.equal((await full.decision).type, 'denied');

    child.kill('SIGKILL');
    await child.exited;
    const killedAt = performance.now();
    let freedAt = Number.NaN;
    const d = (await eventually(
      async () => {
        const attempt = connect(eu.url, { token, device: 'after' });
        const frame = await attempt.decision.catch(() => ({ type: 'closed' }));
        if (frame.type === 'granted') {
          freedAt = performance.now();
          return attempt;
        }
        await attempt.closed;
        return undefined;
      },
      TTL_MS + 3000,
      100,
    ))!;
    t.after(() => d.close());
    assert.ok(freedAt - killedAt <= TTL_MS + 1000, `slot freed ${Math.round(freedAt - killedAt)} ms after the kill (TTL ${TTL_MS} ms)`);
  });

  test('region eu blackholed: eu-homed users get 1013 within the deadline everywhere, us-homed users keep playing, nothing leaks when eu returns', async (t) => {
    const gws = await pair(t);
    const ends = await regionEndpoints();
    const euToken = await mintToken('elke', { claims: { home_region: 'eu' } });
    const usToken = await mintToken('ugo', { claims: { home_region: 'us' } });
    const euPlaying = await granted(connect(gws.us.url, { token: euToken, device: 'before' }));
    const usPlaying = await granted(connect(gws.eu.url, { token: usToken, device: 'before' }));
    t.after(() => usPlaying.close());

    for (const gw of Object.values(gws)) gw.proxies.eu.set('blackhole');
    for (const gw of Object.values(gws)) {
      const started = performance.now();
      const d = connect(gw.url, { token: euToken, device: `during-${gw.own}` });
      assert.deepEqual(await d.closed, { code: 1013, reason: 'lease store unavailable, try again later' });
      assert.ok(d.closedAt! - started <= ADMISSION_MS + 500, `${gw.own}: 1013 after ${Math.round(d.closedAt! - started)} ms`);
      const u = connect(gw.url, { token: usToken, device: `during-${gw.own}` });
      t.after(() => u.close());
      await granted(u);
    }
    // The us gateway cannot beat in eu: its eu-homed socket goes (4408) before anyone may hand the slot out.
    assert.equal((await euPlaying.closed).code, 4408);
    assert.ok(await appPing(usPlaying), 'the us-homed socket on the eu gateway keeps playing');
    assert.ok(metric(await gws.eu.metrics(), 'sigma_dynamodb_requests_total{operation="UpdateItem",outcome="timeout",region="eu"}') > 0);

    for (const gw of Object.values(gws)) gw.proxies.eu.set('pass');
    // Both gateways re-register in eu; then the user gets all N slots again (the fenced entry is pruned).
    const back: Device[] = [];
    for (const [i, gw] of [gws.eu, gws.us, gws.eu].entries()) {
      back.push(
        (await eventually(
          async () => {
            const d = connect(gw.url, { token: euToken, device: `after-${i}` });
            const frame = await d.decision.catch(() => ({ type: 'closed' }));
            if (frame.type === 'granted') return d;
            await d.closed;
            return undefined;
          },
          TTL_MS + 3000,
          100,
        ))!,
      );
    }
    assert.deepEqual(await leaseEntries(ends.eu, gws.eu.table, 'elke'), ['after-0', 'after-1', 'after-2']);
    await Promise.all(back.map((d) => d.close()));
    await eventually(async () => (await leaseEntries(ends.eu, gws.eu.table, 'elke')).length === 0, 5000);
    assert.deepEqual(await leaseEntries(ends.us, gws.eu.table, 'elke'), []);
  });

  test('region eu unreachable from the us gateway only: it closes its eu-homed sockets (4408) before the eu gateway hands their slots out; its us-homed sockets keep playing', async (t) => {
    const gws = await pair(t);
    const euToken = await mintToken('emil', { claims: { home_region: 'eu' } });
    const usToken = await mintToken('uma', { claims: { home_region: 'us' } });
    const euDevices = await Promise.all(['a', 'b', 'c'].map((device) => granted(connect(gws.us.url, { token: euToken, device }))));
    const usDevices = await Promise.all(['a', 'b'].map((device) => granted(connect(gws.us.url, { token: usToken, device }))));
    t.after(() => Promise.all(usDevices.map((d) => d.close())).then(() => {}));

    gws.us.proxies.eu.set('blackhole');
    const cutAt = performance.now();
    let handedOutAt = Number.NaN;
    const taker = (await eventually(
      async () => {
        const d = connect(gws.eu.url, { token: euToken, device: 'taker' });
        const frame = await d.decision.catch(() => ({ type: 'closed' }));
        if (frame.type === 'granted') {
          handedOutAt = performance.now();
          return d;
        }
        await d.closed;
        return undefined;
      },
      TTL_MS + 3000,
      50,
    ))!;
    t.after(() => taker.close());
    const closes = await Promise.all(euDevices.map((d) => d.closed));
    for (const c of closes) assert.deepEqual(c, { code: 4408, reason: 'lease lost: gateway lost contact with the lease store' });
    const lastClose = Math.max(...euDevices.map((d) => d.closedAt!));
    assert.ok(
      lastClose < handedOutAt,
      `fenced ${Math.round(lastClose - cutAt)} ms after the cut, slot handed out ${Math.round(handedOutAt - cutAt)} ms after`,
    );

    for (const d of usDevices) assert.ok(await appPing(d), 'us-homed sockets keep playing');
    await granted(connect(gws.us.url, { token: usToken, device: 'new' })).then((d) => d.close());
    const refused = connect(gws.us.url, { token: euToken, device: 'new' });
    assert.equal((await refused.closed).code, 1013);
    const text = await gws.us.metrics();
    assert.ok(metric(text, 'sigma_fencing_events_total') >= 1);
    assert.ok(metric(text, 'sigma_instance_heartbeat_age_seconds{region="eu"}') >= (TTL_MS - 1000) / 1000 - 0.5);
    assert.ok(metric(text, 'sigma_instance_heartbeat_age_seconds{region="us"}') < 1.5);
  });

  test('cost: an admission is one write in the home region, for a home and for a remote user; heartbeats one write per region per beat', async (t) => {
    const gw = await startRegionalGateway('eu', newTable(), ENV);
    t.after(() => gw.stop());
    const home = await mintToken('hanna', { claims: { home_region: 'eu' } });
    const remoteUser = hashedUser('roamer', 'us');
    const remote = await mintToken(remoteUser);
    for (const [token, region] of [
      [home, 'eu'],
      [remote, 'us'],
    ] as const) {
      for (const p of Object.values(gw.proxies)) p.resetCounts();
      const d = await granted(connect(gw.url, { token, device: 'tv' }));
      assert.equal(gw.proxies[region].userRequests(), 1, `${region}: one request on the user item`);
      assert.equal(gw.proxies[other(region)].userRequests(), 0, `${other(region)}: none`);
      await d.close();
      await eventually(() => gw.proxies[region].userRequests() === 2);
      assert.equal(gw.proxies[other(region)].userRequests(), 0);
    }
    const text = await gw.metrics();
    for (const region of ['eu', 'us']) {
      assert.match(
        text,
        new RegExp(`^sigma_dynamodb_requests_total\\{operation="UpdateItem",outcome="ok",region="${region}"\\} [1-9]`, 'm'),
      );
      assert.match(text, new RegExp(`^sigma_instance_heartbeat_age_seconds\\{region="${region}"\\} `, 'm'));
    }

    for (const p of Object.values(gw.proxies)) p.resetCounts();
    const windowMs = 10 * HEARTBEAT_MS;
    await new Promise((r) => setTimeout(r, windowMs));
    const beats = (p: RegionalGateway['proxies'][RegionName]): number => (p.counts.get('UpdateItem') ?? 0) - p.userRequests();
    for (const region of ['eu', 'us'] as const) {
      const n = beats(gw.proxies[region]);
      assert.ok(n >= 8 && n <= 12, `${region}: ${n} heartbeats in ${windowMs} ms at one per ${HEARTBEAT_MS} ms`);
    }
  });

  test('playback live check on a gateway that does not hold the lease: found in the hashed home, else in the claimed region', async (t) => {
    const env = { PLAYBACK_SIGNING_KEY: newKeyPair('ed25519').privatePem };
    const table = newTable();
    const eu = await startRegionalGateway('eu', table, { ...ENV, ...env });
    t.after(() => eu.stop());
    const us = await startRegionalGateway('us', table, { ...ENV, ...env });
    t.after(() => us.stop());
    // Homed in us by claim while the hash says eu: the check must look past the hashed home.
    const user = hashedUser('claimed', 'eu');
    const device = await granted(connect(us.url, { token: await mintToken(user, { claims: { home_region: 'us' } }), device: 'tv' }));
    const token = (device.frames[0].playback as { token: string }).token;
    const live = (): Promise<Response> =>
      fetch(`${httpUrl(eu)}/v1/playback/authorize?live=1`, { headers: { Authorization: `Bearer ${token}` } });
    for (const p of Object.values(eu.proxies)) p.resetCounts();
    assert.equal((await live()).status, 204);
    assert.equal(eu.proxies.eu.userRequests(), 1, 'the hashed home first');
    assert.equal(eu.proxies.us.userRequests(), 1, 'then the claimed region, where the lease is');
    await device.close();
    await eventually(async () => (await live()).status === 403);
    // A hashed user: one read, in its home.
    const plain = await granted(connect(us.url, { token: await mintToken(hashedUser('plain', 'eu')), device: 'tv' }));
    t.after(() => plain.close());
    const plainToken = (plain.frames[0].playback as { token: string }).token;
    for (const p of Object.values(eu.proxies)) p.resetCounts();
    const res = await fetch(`${httpUrl(eu)}/v1/playback/authorize?live=1`, { headers: { Authorization: `Bearer ${plainToken}` } });
    assert.equal(res.status, 204);
    assert.equal(eu.proxies.eu.userRequests() + eu.proxies.us.userRequests(), 1);
  });

  test("an operator finds and stops a claim-homed user's device without naming the region", async (t) => {
    const table = newTable();
    const eu = await startRegionalGateway('eu', table, ENV);
    t.after(() => eu.stop());
    // Homed in us by claim while the hash says eu: support staff only know the user id.
    const user = hashedUser('support-case', 'eu');
    const device = await granted(connect(eu.url, { token: await mintToken(user, { claims: { home_region: 'us' } }), device: 'tv' }));
    const admin = { Authorization: `Bearer ${await mintToken('ops', { scope: 'sigma:admin' })}` };
    const listed = await fetch(`${httpUrl(eu)}/v1/users/${user}/streams`, { headers: admin });
    assert.equal(listed.status, 200);
    assert.deepEqual(
      ((await listed.json()) as { streams: Array<{ deviceId: string }> }).streams.map((s) => s.deviceId),
      ['tv'],
    );
    const stopped = await fetch(`${httpUrl(eu)}/v1/users/${user}/streams/tv`, { method: 'DELETE', headers: admin });
    assert.equal(stopped.status, 204);
    assert.equal((await device.closed).code, 4403);
    const again = await fetch(`${httpUrl(eu)}/v1/users/${user}/streams/tv`, { method: 'DELETE', headers: admin });
    assert.equal(again.status, 404);
    assert.equal(((await again.json()) as { error: { code: string } }).error.code, 'no_stream');
  });

  test('a token naming an unknown home_region is refused with 4401 and a reason; REST says 401, and an operator naming no region 400', async (t) => {
    const gw = await startRegionalGateway('eu', newTable(), ENV);
    t.after(() => gw.stop());
    const token = await mintToken('mars-fan', { claims: { home_region: 'mars' } });
    const d = connect(gw.url, { token, device: 'tv' });
    assert.deepEqual(await d.closed, { code: 4401, reason: 'token names home_region "mars", not one of eu, us' });
    assert.match(await gw.metrics(), /sigma_auth_failures_total\{reason="claim"\} 1/);
    const res = await fetch(`${httpUrl(gw)}/v1/streams`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { message: string } }).error.message, 'token names home_region "mars", not one of eu, us');

    const admin = await mintToken('ops', { scope: 'sigma:admin' });
    const bad = await fetch(`${httpUrl(gw)}/v1/users/someone/streams?region=mars`, { headers: { Authorization: `Bearer ${admin}` } });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'bad_region');
    // An operator finds a claim-homed user's streams by naming the region.
    const us = await mintToken('ulla', { claims: { home_region: 'us' } });
    const playing = await granted(connect(gw.url, { token: us, device: 'tv' }));
    t.after(() => playing.close());
    const listed = await fetch(`${httpUrl(gw)}/v1/users/ulla/streams?region=us`, { headers: { Authorization: `Bearer ${admin}` } });
    assert.deepEqual(
      ((await listed.json()) as { streams: Array<{ deviceId: string }> }).streams.map((s) => s.deviceId),
      ['tv'],
    );
  });
});
