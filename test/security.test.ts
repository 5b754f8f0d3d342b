/**
 * Hostile input and abuse. Every case checks what the attacker sees (status
 * or close code), that nothing that should stop at the edge reached the lease
 * store (counted at a proxy in front of it), and that a control device of
 * another user keeps its lease and answers pings throughout.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, afterEach, before, describe, test } from 'node:test';
import { exportJWK, SignJWT } from 'jose';
import WebSocket from 'ws';
import { appPing, connect, eventually, type Device } from './helpers/devices.js';
import { dynamoEndpoint } from './helpers/dynamodb-local.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { leaseEntries, metric, startGateway, type TestGateway } from './helpers/gateway.js';
import { frame, prng, rawConnect } from './helpers/raw-ws.js';
import { mintToken } from './helpers/tokens.js';

const ORIGIN = 'https://www.example.com';

interface Guarded {
  gw: TestGateway;
  proxy: FaultProxy;
  control: Device;
}

/** A gateway behind a counting proxy, with a control device that must survive every case. */
async function guarded(env: Record<string, string>): Promise<Guarded> {
  const proxy = await startFaultProxy(await dynamoEndpoint());
  // Roomy store timings: these cases load the machine, and fencing is not what they test.
  // No reconcile reads either: the store-request counts below must see only what the attacker caused.
  const roomy = {
    INSTANCE_HEARTBEAT_MS: '1000',
    INSTANCE_TTL_MS: '10000',
    FENCING_MARGIN_MS: '3000',
    ADMISSION_TIMEOUT_MS: '5000',
    RECONCILE_INTERVAL_MS: '600000',
  };
  const gw = await startGateway({ endpoint: proxy.endpoint, env: { ALLOWED_ORIGINS: ORIGIN, ...roomy, ...env } });
  const control = connect(gw.url, { token: await mintToken('control-user'), device: 'control' });
  assert.equal((await control.decision).type, 'granted');
  return { gw, proxy, control };
}

async function stopGuarded(g: Guarded): Promise<void> {
  await g.control.close();
  await g.gw.stop();
  await g.proxy.close();
}

/** A guarded gateway for one test, stopped when the test ends. */
async function guardedFor(t: { after(fn: () => Promise<void>): void }, env: Record<string, string>): Promise<Guarded> {
  const g = await guarded(env);
  t.after(() => stopGuarded(g));
  return g;
}

async function assertControlAlive(g: Guarded): Promise<void> {
  if (g.control.ws.readyState !== WebSocket.OPEN) {
    const close = await g.control.closed;
    assert.fail(`control device was closed: ${close.code} ${close.reason}`);
  }
  assert.ok(await appPing(g.control), 'control device answered');
  assert.deepEqual(await leaseEntries(g.gw.endpoint, g.gw.table, 'control-user'), ['control']);
}

/** Store requests about user items (heartbeats excluded) made while `fn` ran. */
async function storeRequestsDuring(g: Guarded, fn: () => Promise<void>): Promise<number> {
  // Let releases of earlier cases land first: quiet for 1 s.
  for (let last = -1; last !== g.proxy.userRequests();) {
    last = g.proxy.userRequests();
    await new Promise((r) => setTimeout(r, 1000));
  }
  const before = g.proxy.userRequests();
  await fn();
  return g.proxy.userRequests() - before;
}

function upgradeStatus(url: string, headers: Record<string, string>): Promise<{ status: number; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['sigma-stream.v1'], { headers });
    ws.on('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] });
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      resolve({ status: 101 });
      ws.close();
    });
    ws.on('error', (err) => reject(err));
  });
}

describe('hostile input at the edge', () => {
  let g: Guarded;
  before(async () => {
    // Slower pings than the other files: the fuzz below keeps this process (gateway and clients alike) busy.
    g = await guarded({
      HANDSHAKE_TIMEOUT_MS: '1000',
      MESSAGE_RATE_PER_SOCKET: '5',
      MESSAGE_BURST_PER_SOCKET: '20',
      PING_INTERVAL_MS: '3000',
      PONG_TIMEOUT_MS: '2000',
    });
  });
  afterEach(() => assertControlAlive(g));
  after(() => stopGuarded(g));

  test('evil and look-alike origins get 403 before any store work; listed and absent origins pass', async () => {
    const token = await mintToken('olivia');
    const url = `${g.gw.url}/v1/lease?device=tv`;
    const refused = await storeRequestsDuring(g, async () => {
      for (const origin of [
        'https://evil.example',
        'https://www.example.com.evil.com',
        'http://www.example.com',
        'https://www.example.com:8443',
        'https://wwwexample.com',
        'null',
      ]) {
        assert.equal((await upgradeStatus(url, { Origin: origin, Authorization: `Bearer ${token}` })).status, 403, origin);
      }
    });
    assert.equal(refused, 0);
    const browser = connect(g.gw.url, { token, device: 'browser', carriage: 'subprotocol', headers: { Origin: ORIGIN } });
    assert.equal((await browser.decision).type, 'granted');
    const native = connect(g.gw.url, { token, device: 'native' });
    assert.equal((await native.decision).type, 'granted');
    await Promise.all([browser.close(), native.close()]);
    assert.ok(metric(await g.gw.metrics(), 'sigma_rejections_total{reason="origin"}') >= 6);
  });

  test('REST answers CORS only for listed origins', async () => {
    const ok = await fetch(`${g.gw.url.replace('ws', 'http')}/v1/streams`, {
      method: 'OPTIONS',
      headers: { Origin: ORIGIN, 'Access-Control-Request-Method': 'DELETE' },
    });
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get('access-control-allow-origin'), ORIGIN);
    const evil = await fetch(`${g.gw.url.replace('ws', 'http')}/v1/streams`, {
      headers: { Origin: 'https://evil.example', Authorization: `Bearer ${await mintToken('olivia')}` },
    });
    assert.equal(evil.status, 403);
  });

  test('tokens: garbage, forged, expired, alg none, 9 KB: 4401 and zero store requests', async () => {
    const tokens = [
      'garbage',
      await mintToken('m', { secret: 'forged-forged-forged-forged-forged-1' }),
      await mintToken('m', { expiresIn: -5 }),
      'eyJhbGciOiJub25lIn0.eyJzdWIiOiJtIiwiZXhwIjo5OTk5OTk5OTk5fQ.',
      'x'.repeat(9 * 1024),
    ];
    const requests = await storeRequestsDuring(g, async () => {
      for (const token of tokens) assert.equal((await connect(g.gw.url, { token, device: 'tv' }).closed).code, 4401);
    });
    assert.equal(requests, 0);
    const text = await g.gw.metrics();
    assert.ok(metric(text, 'sigma_auth_failures_total{reason="malformed"}') >= 1);
    assert.ok(metric(text, 'sigma_auth_failures_total{reason="expired"}') >= 1);
  });

  test('an oversize frame closes with 1009; the lease is released', async () => {
    const token = await mintToken('big-talker');
    const d = connect(g.gw.url, { token, device: 'tv' });
    await d.decision;
    d.ws.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(5000) }));
    assert.equal((await d.closed).code, 1009);
    await eventually(async () => (await leaseEntries(g.gw.endpoint, g.gw.table, 'big-talker')).length === 0);
  });

  test('a message flood closes with 1008; app pings count', async () => {
    const token = await mintToken('flooder');
    const d = connect(g.gw.url, { token, device: 'tv' });
    await d.decision;
    for (let i = 0; i < 200; i++) d.ws.send(JSON.stringify({ type: 'ping' }));
    const close = await d.closed;
    assert.equal(close.code, 1008);
    assert.match(close.reason, /rate/);
    const pongs = d.frames.filter((f) => f.type === 'pong').length;
    assert.ok(pongs <= 21, `answered ${pongs} pings before cutting`);
    await eventually(async () => (await leaseEntries(g.gw.endpoint, g.gw.table, 'flooder')).length === 0);
  });

  for (const [name, bytes, code] of [
    ['invalid UTF-8 in a text frame', frame(0x1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 1007],
    ['an unmasked client frame', frame(0x1, Buffer.from('{"type":"ping"}'), { mask: false }), 1002],
    ['a reserved opcode', frame(0x3, Buffer.from('hi')), 1002],
    ['a reserved bit', frame(0x1, Buffer.from('{}'), { rsv: 4 }), 1002],
    ['a binary frame', frame(0x2, Buffer.from([1, 2, 3])), 1008],
  ] as const) {
    test(`raw socket: ${name} closes with ${code} and frees the lease`, async () => {
      const user = `raw-${code}-${name.length}`;
      const raw = await rawConnect(g.gw.app.port, '/v1/lease?device=tv', { Authorization: `Bearer ${await mintToken(user)}` });
      await eventually(() => raw.frames.some((f) => f.opcode === 0x1 && f.payload.toString().includes('granted')));
      raw.write(bytes);
      const end = await raw.ended;
      assert.equal(end.closeCode, code);
      await eventually(async () => (await leaseEntries(g.gw.endpoint, g.gw.table, user)).length === 0);
    });
  }

  test('300 random byte sequences after a valid handshake: each ends cleanly, no lease is left, the gateway serves on', async () => {
    const random = prng(0x5157);
    const users: string[] = [];
    for (let batch = 0; batch < 15; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const n = batch * 20 + i;
          const user = `fuzz-${n}`;
          users.push(user);
          const raw = await rawConnect(g.gw.app.port, `/v1/lease?device=d${n}`, { Authorization: `Bearer ${await mintToken(user)}` });
          const bytes = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 64) }, () => Math.floor(random() * 256)));
          raw.write(bytes);
          // Random bytes either break the framing (the server closes) or form an incomplete frame: then we leave.
          const ended = await Promise.race([raw.ended, new Promise((r) => setTimeout(() => r(undefined), 1000))]);
          if (ended === undefined) raw.socket.destroy();
          await raw.ended;
        }),
      );
    }
    // On a loaded machine some admissions time out mid-fuzz; their clean-up retries with backoff.
    await eventually(
      async () => {
        for (const user of users) if ((await leaseEntries(g.gw.endpoint, g.gw.table, user)).length > 0) return false;
        return true;
      },
      20_000,
      500,
    );
    await eventually(async () => metric(await g.gw.metrics(), 'sigma_streams_active') === 1, 5000);
  });

  test('slowloris: an upgrade whose headers never finish is cut after HANDSHAKE_TIMEOUT_MS, costing nothing', async () => {
    const requests = await storeRequestsDuring(g, async () => {
      const socket = tcpConnect(g.gw.app.port, '127.0.0.1');
      socket.on('error', () => {});
      const started = performance.now();
      socket.write('GET /v1/lease?device=slow HTTP/1.1\r\nHost: x\r\n');
      const drip = setInterval(() => socket.writable && socket.write('X-Slow: a\r\n'), 200);
      await new Promise((r) => socket.on('close', r));
      clearInterval(drip);
      const tookMs = performance.now() - started;
      assert.ok(tookMs < 1000 + 2500, `cut after ${Math.round(tookMs)} ms`);
    });
    assert.equal(requests, 0);
  });

  for (const target of ['//[bad/v1/lease?device=tv', 'http://a:99999/v1/lease?device=tv']) {
    test(`a request target URL parsing may reject (${target}) gets an answer, not a crash`, async () => {
      const status = await new Promise<string>((resolve) => {
        const socket = tcpConnect(g.gw.app.port, '127.0.0.1');
        let data = '';
        socket.on('data', (d) => {
          data += d.toString();
          socket.end();
        });
        socket.on('close', () => resolve(data.split('\r\n')[0]));
        socket.on('error', () => {});
        socket.write(
          `GET ${target} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
      });
      // Absolute-form targets are legal HTTP: only their path counts. A target that is no URL at all: 400.
      assert.match(status, target.startsWith('//') ? / 400 / : / 101 /);
    });
  }
});

describe('connection floods and blocklist', () => {
  let g: Guarded;
  before(async () => {
    g = await guarded({
      CONNECT_RATE_PER_IP: '5',
      CONNECT_BURST_PER_IP: '10',
      CONNECT_RATE_PER_USER: '2',
      CONNECT_BURST_PER_USER: '6',
      BLOCK_AFTER_REJECTIONS: '8',
      BLOCK_MS: '1500',
      TRUSTED_PROXY_HOPS: '0',
    });
  });
  after(() => stopGuarded(g));

  test('per-IP flood: 429 with Retry-After before the upgrade, then a temporary block; no store requests', async () => {
    await new Promise((r) => setTimeout(r, 2100)); // the control device's own connect refilled
    const statuses: number[] = [];
    const retryAfters: string[] = [];
    let retryAfter: string | undefined;
    const requests = await storeRequestsDuring(g, async () => {
      for (let i = 0; i < 30; i++) {
        // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
        const res = await upgradeStatus(`${g.gw.url}/v1/lease?device=tv`, { 'X-Forwarded-For': `203.0.113.${i}` });
        statuses.push(res.status);
        retryAfters.push(res.retryAfter ?? '-');
        if (res.status === 429) retryAfter ??= res.retryAfter;
      }
    });
    assert.equal(requests, 0, 'no token, no store');
    assert.ok(
      statuses.slice(0, 10).every((s) => s === 101),
      `burst passes: ${statuses.join(' ')}`,
    );
    // Past the burst: 429 (a token may refill now and then on a slow machine), then a block, which does not refill.
    assert.ok(statuses.slice(10).filter((s) => s === 429).length >= 15, `then 429: ${statuses.join(' ')}`);
    const blockedFrom = retryAfters.findIndex((r) => r === '2');
    assert.ok(blockedFrom > 0, `a block (Retry-After 2) follows: ${retryAfters.join(' ')}`);
    assert.ok(
      statuses.slice(blockedFrom).every((s) => s === 429),
      `nothing passes while blocked: ${statuses.join(' ')}`,
    );
    assert.ok(Number(retryAfter) >= 1);
    const text = await g.gw.metrics();
    assert.ok(metric(text, 'sigma_rejections_total{reason="ip_rate"}') >= 1);
    assert.ok(metric(text, 'sigma_rejections_total{reason="ip_blocked"}') >= 1, 'kept exceeding: blocked');
    await assertControlAlive(g);
    await new Promise((r) => setTimeout(r, 1600));
    assert.equal((await upgradeStatus(`${g.gw.url}/v1/lease?device=tv`, {})).status, 101, 'the block expires');
  });

  test('per-user flood: the burst reaches the stream limit, the rest get 1013 without store requests', async () => {
    await new Promise((r) => setTimeout(r, 2100));
    const token = await mintToken('greedy', { maxStreams: 2 });
    const devices: Device[] = [];
    const requests = await storeRequestsDuring(g, async () => {
      // 9 devices at once (the per-IP burst is 10) against a per-user burst of 6, refilling at 2 per second.
      for (let i = 0; i < 9; i++) devices.push(connect(g.gw.url, { token, device: `d${i}` }));
      await Promise.all(devices.map((d) => d.decision.catch(() => {})));
    });
    const outcomes = devices.map((d) => (d.frames[0]?.type as string | undefined) ?? 'refused');
    const count = (o: string) => outcomes.filter((x) => x === o).length;
    assert.equal(count('granted'), 2, outcomes.join(' '));
    assert.ok(count('refused') >= 2, outcomes.join(' '));
    for (const d of devices.filter((x) => x.frames.length === 0)) {
      const close = await d.closed;
      assert.equal(close.code, 1013);
      assert.match(close.reason, /too many connection attempts/);
    }
    assert.ok(requests <= 9 - count('refused'), `${requests} store requests for ${9 - count('refused')} attempts past the limiter`);
    assert.ok(metric(await g.gw.metrics(), 'sigma_rejections_total{reason="user_rate"}') >= 2);
    await Promise.all(devices.map((d) => d.close()));
    await assertControlAlive(g);
  });
});

describe('behind a trusted proxy', () => {
  test('X-Forwarded-For is believed for the configured number of hops only', async (t) => {
    const g = await guardedFor(t, { CONNECT_RATE_PER_IP: '1', CONNECT_BURST_PER_IP: '2', TRUSTED_PROXY_HOPS: '1' });
    const url = `${g.gw.url}/v1/lease?device=tv`;
    // Each client seen by our ingress has its own bucket...
    for (let i = 0; i < 5; i++) assert.equal((await upgradeStatus(url, { 'X-Forwarded-For': `198.51.100.${i}` })).status, 101);
    // ...and a client cannot escape its bucket by prepending addresses of its own.
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await upgradeStatus(url, { 'X-Forwarded-For': `10.0.0.${i}, 198.51.100.77` })).status);
    assert.deepEqual(statuses.slice(2), [429, 429]);
  });
});

describe('sockets and their limits', () => {
  test('MAX_CONNECTIONS: one socket more gets 503 before the upgrade', async (t) => {
    const g = await guardedFor(t, { MAX_CONNECTIONS: '2' });
    const second = connect(g.gw.url, { token: await mintToken('p'), device: 'tv' });
    await second.decision;
    const third = await upgradeStatus(`${g.gw.url}/v1/lease?device=x`, {});
    assert.equal(third.status, 503);
    await second.close();
    await assertControlAlive(g);
  });

  test('token expiry: 4401 at exp without re-auth; a fresh token for the same user keeps the socket', async (t) => {
    const g = await guardedFor(t, {});
    const short = await mintToken('ursula', { expiresIn: 2 });
    const lapsing = connect(g.gw.url, { token: short, device: 'tv' });
    const renewing = connect(g.gw.url, { token: short, device: 'phone' });
    await Promise.all([lapsing.decision, renewing.decision]);

    renewing.ws.send(JSON.stringify({ type: 'reauth', token: await mintToken('someone-else') }));
    await eventually(() => renewing.frames.some((f) => f.type === 'error' && f.code === 'reauth_failed'));
    await new Promise((r) => setTimeout(r, 1100)); // one re-auth per second
    renewing.ws.send(JSON.stringify({ type: 'reauth', token: await mintToken('ursula', { expiresIn: 60 }) }));
    await eventually(() => renewing.frames.some((f) => f.type === 'reauthed'));

    const close = await lapsing.closed;
    assert.equal(close.code, 4401);
    assert.match(close.reason, /expired/);
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(renewing.ws.readyState, WebSocket.OPEN, 're-authenticated socket plays on');
    assert.deepEqual(await leaseEntries(g.gw.endpoint, g.gw.table, 'ursula'), ['phone']);
    await renewing.close();
  });

  test('a token bound to a device (device_id claim) is refused for another device', async (t) => {
    const g = await guardedFor(t, {});
    const token = await mintToken('vicky', { claims: { device_id: 'tv' } });
    const wrong = connect(g.gw.url, { token, device: 'phone' });
    assert.equal((await wrong.closed).code, 4401);
    const right = connect(g.gw.url, { token, device: 'tv' });
    assert.equal((await right.decision).type, 'granted');
    await right.close();
  });
});

describe('JWKS', () => {
  let server: Server;
  let jwksPort: number;
  let keys: Array<{ kid: string; privateKey: KeyObject; publicKey: KeyObject }>;
  let published: string[];
  let failing = false;
  let fetches = 0;
  const key = (kid: string) => ({ kid, ...generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) });
  const sign = (kid: string, sub = 'walt') => {
    const k = keys.find((x) => x.kid === kid)!;
    return new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid })
      .setSubject(sub)
      .setExpirationTime(Math.floor(Date.now() / 1000) + 60)
      .sign(k.privateKey);
  };

  before(async () => {
    keys = [key('k1'), key('k2'), key('k3')];
    published = ['k1'];
    server = createServer((_req, res) => {
      fetches++;
      if (failing) {
        res.writeHead(503).end();
        return;
      }
      void Promise.all(
        keys
          .filter((k) => published.includes(k.kid))
          .map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: 'ES256', use: 'sig' })),
      ).then((set) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: set })));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    jwksPort = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test('rotation, outage, unknown kids and readiness', async (t) => {
    failing = true;
    const g = await startGateway({
      env: { JWT_SECRET: '', JWKS_URL: `http://127.0.0.1:${jwksPort}/jwks.json`, JWKS_COOLDOWN_MS: '300', JWKS_REFRESH_MS: '60000' },
    });
    t.after(() => g.stop());
    const ready = await fetch(`${g.opsUrl}/readyz`);
    assert.equal(ready.status, 503, 'readiness waits for the first key set');
    assert.match(await ready.text(), /signing keys/);
    failing = false;
    await eventually(async () => (await fetch(`${g.opsUrl}/readyz`)).status === 200, 5000);

    const first = connect(g.url, { token: await sign('k1'), device: 'tv' });
    assert.equal((await first.decision).type, 'granted');
    await first.close();

    // Rotation: the issuer publishes k2 and signs with it; one refetch picks it up.
    published = ['k1', 'k2'];
    await new Promise((r) => setTimeout(r, 350));
    const rotated = connect(g.url, { token: await sign('k2'), device: 'tv' });
    assert.equal((await rotated.decision).type, 'granted');
    await rotated.close();

    // Outage: the last good set keeps serving.
    failing = true;
    await new Promise((r) => setTimeout(r, 350));
    const during = connect(g.url, { token: await sign('k2'), device: 'tv' });
    assert.equal((await during.decision).type, 'granted');
    await during.close();

    // Unknown kids: refused, and a flood of them fetches at most once per cooldown.
    const before = fetches;
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      const d = connect(g.url, { token: await sign('k3'), device: `u${i}` });
      const close = await d.closed;
      assert.equal(close.code, 4401);
      assert.match(close.reason, /unknown key|unavailable/);
    }
    const allowed = 1 + Math.ceil((performance.now() - started) / 300);
    assert.ok(fetches - before <= allowed, `${fetches - before} fetches for 20 unknown-kid tokens (at most ${allowed})`);
    assert.equal((await fetch(`${g.opsUrl}/readyz`)).status, 200, 'still ready on the last good key set');
  });
});
