/**
 * Edges of the admission pipeline: the deadline covers the token check, a
 * refused upgrade's socket may fail without taking the process down, and a
 * pong timeout equal to the ping interval is a valid setting.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { exportJWK, SignJWT } from 'jose';
import { connect, eventually } from './helpers/devices.js';
import { gatewayBehindProxy, leaseEntries, spawnGateway, startGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

test('the admission deadline covers the token check: a slow JWKS refetch ends in 1013 on time', async (t) => {
  const key = (kid: string) => ({ kid, ...generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) });
  const keys = [key('k1'), key('k2')];
  let published = ['k1'];
  let delayMs = 0;
  const jwks = createServer((_req, res) => {
    void Promise.all(
      keys
        .filter((k) => published.includes(k.kid))
        .map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: 'ES256', use: 'sig' })),
    ).then((set) =>
      setTimeout(() => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: set })), delayMs),
    );
  });
  await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => jwks.close(() => r())));
  const port = (jwks.address() as { port: number }).port;
  const gw = await startGateway({
    env: {
      JWT_SECRET: '',
      JWKS_URL: `http://127.0.0.1:${port}/jwks.json`,
      JWKS_COOLDOWN_MS: '0',
      JWKS_REFRESH_MS: '60000',
      ADMISSION_TIMEOUT_MS: '1000',
    },
  });
  t.after(() => gw.stop());
  await eventually(async () => (await fetch(`${gw.opsUrl}/readyz`)).status === 200, 5000);
  // The key rotates; the refetch the unknown kid triggers takes 2.5 s.
  published = ['k1', 'k2'];
  delayMs = 2500;
  const k2 = keys[1];
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid: 'k2' })
    .setSubject('slow-keys')
    .setExpirationTime(Math.floor(Date.now() / 1000) + 60)
    .sign(k2.privateKey);
  const started = performance.now();
  const d = connect(gw.url, { token, device: 'tv' });
  const close = await d.closed;
  const ms = performance.now() - started;
  assert.equal(close.code, 1013, `got ${close.code} ${close.reason}`);
  assert.match(close.reason, /token check took too long/);
  assert.ok(ms < 2000, `closed after ${Math.round(ms)} ms, deadline 1000 ms`);
  assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'slow-keys'), []);
});

test('a refused upgrade whose socket fails afterwards does not crash the gateway', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  // A server of our own hands upgrades to the gateway, then makes the refused socket fail as a reset would.
  const outcomes: string[] = [];
  const front = createServer();
  front.on('upgrade', (req, socket, head) => {
    gw.app.gateway.handleUpgrade(req, socket, head);
    try {
      socket.emit('error', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
      outcomes.push('handled');
    } catch {
      outcomes.push('unhandled: the process would crash');
    }
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => front.close(() => r())));
  const port = (front.address() as { port: number }).port;
  for (const path of ['/nope', '/v1/lease?device=tv']) {
    const sock = tcpConnect(port, '127.0.0.1');
    sock.on('error', () => {});
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${path === '/nope' ? '' : 'Origin: http://evil.example\r\n'}\r\n`,
    );
    await eventually(() => outcomes.length > 0, 2000, 10);
    sock.destroy();
    assert.deepEqual(outcomes.splice(0), ['handled'], path);
  }
  const d = connect(gw.url, { token: await mintToken('after-errors'), device: 'tv' });
  assert.equal((await d.decision).type, 'granted');
  await d.close();
});

test('the 101 and the granted frame reach the player in one piece: one write, one wake-up per admission', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const token = await mintToken('one-write');
  const sock = tcpConnect(Number(new URL(gw.url).port), '127.0.0.1');
  t.after(() => sock.destroy());
  const first = new Promise<string>((resolve) => sock.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
  sock.write(
    'GET /v1/lease?device=tv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sigma-stream.v1\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  );
  const chunk = await first;
  assert.match(chunk, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(chunk.slice(chunk.indexOf('\r\n\r\n')), /"type":"granted"/, 'the decision frame came in the same read as the 101');
});

test('a drain while the admission waits on a slow store still tells the player 1012, not a bare TCP close (1006)', async (t) => {
  // The store takes 3 s to answer the admission's write, more than ws's 2 s close timeout; the deadline is longer.
  const env = { ADMISSION_TIMEOUT_MS: '4000', DYNAMODB_REQUEST_TIMEOUT_MS: '4000', DRAIN_MS: '100' };
  const { proxy, gw } = await gatewayBehindProxy(t, { env });
  proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, delayMs: 3000 });
  const d = connect(gw.url, { token: await mintToken('slow-drain'), device: 'tv' });
  await eventually(() => (proxy.faulted.get('delay') ?? 0) >= 1, 2000);
  const stopping = gw.stop();
  const closed = await d.closed;
  await stopping;
  assert.deepEqual(closed, { code: 1012, reason: 'gateway restarting, reconnect' });
});

test('fencing while the admission waits on a blackholed store still tells the player 1013, not a bare TCP close (1006)', async (t) => {
  // Fenced about 2 s after the last acknowledged beat (INSTANCE_TTL_MS 3000 - FENCING_MARGIN_MS 1000); the
  // admission's own deadline is 6 s away, past ws's 2 s close timeout after the fence's close.
  const env = { ADMISSION_TIMEOUT_MS: '6000', DYNAMODB_REQUEST_TIMEOUT_MS: '6000' };
  const { proxy, gw } = await gatewayBehindProxy(t, { env });
  const token = await mintToken('fenced-early');
  proxy.set('blackhole');
  const d = connect(gw.url, { token, device: 'tv' });
  assert.deepEqual(await d.closed, { code: 1013, reason: 'lease store unavailable, try again later' });
});

test('a frame too big sent before the 101 is answered with the 101 and 1009 while the admission waits on a slow store', async (t) => {
  const env = { ADMISSION_TIMEOUT_MS: '4000', DYNAMODB_REQUEST_TIMEOUT_MS: '4000' };
  const { proxy, gw } = await gatewayBehindProxy(t, { env });
  proxy.set('delay', { only: ['UpdateItem'], usersOnly: true, delayMs: 3000 });
  const token = await mintToken('big-early');
  const sock = tcpConnect(Number(new URL(gw.url).port), '127.0.0.1');
  t.after(() => sock.destroy());
  sock.on('error', () => {});
  let received = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
  const ended = new Promise<void>((r) => sock.once('close', () => r()));
  sock.write(
    'GET /v1/lease?device=tv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sigma-stream.v1\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  );
  await eventually(() => (proxy.faulted.get('delay') ?? 0) >= 1, 2000);
  // A masked text frame announcing 65536 bytes, over MAX_PAYLOAD_BYTES (4096): ws refuses it from its header.
  sock.write(Buffer.from([0x81, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]));
  await ended;
  const text = received.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/, 'the 101 came');
  const frames = received.subarray(text.indexOf('\r\n\r\n') + 4);
  assert.equal(frames[0], 0x88, 'then a close frame');
  assert.equal(frames.readUInt16BE(2), 1009);
});

/**
 * Players that open TCP connections while the gateway's event loop is stopped (SIGSTOP here; a GC pause or a
 * starved CPU in a storm): how many complete the handshake within 800 ms, that is without a SYN the kernel
 * dropped and the client sends again after 1 s.
 */
async function handshakesWhileFrozen(env: Record<string, string>, players: number): Promise<number> {
  const gw = await spawnGateway({ env });
  const port = Number(new URL(gw.url).port);
  gw.kill('SIGSTOP');
  const sockets = Array.from({ length: players }, () => tcpConnect(port, '127.0.0.1').on('error', () => {}));
  let connected = 0;
  for (const s of sockets) s.once('connect', () => connected++);
  await new Promise((r) => setTimeout(r, 800));
  for (const s of sockets) s.destroy();
  gw.kill('SIGCONT');
  gw.kill('SIGKILL');
  await gw.exited;
  return connected;
}

test('a reconnect storm queues in the kernel while the gateway is busy: LISTEN_BACKLOG connections, not 511', async () => {
  const players = 1500;
  // Linux caps a listen backlog at net.core.somaxconn (4096 by default) and queues one more than the backlog.
  const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  assert.equal(await handshakesWhileFrozen({}, players), Math.min(players, Math.min(4096, somaxconn) + 1));
  // Node's default backlog: most of the storm would wait 1 s or more for its SYN to be sent again.
  assert.equal(await handshakesWhileFrozen({ LISTEN_BACKLOG: '511' }, players), Math.min(players, Math.min(511, somaxconn) + 1));
});

test('PONG_TIMEOUT_MS equal to PING_INTERVAL_MS is accepted and still frees a silent device', async (t) => {
  const gw = await startGateway({ env: { PING_INTERVAL_MS: '400', PONG_TIMEOUT_MS: '400' } });
  t.after(() => gw.stop());
  const token = await mintToken('equal-ping');
  const silent = connect(gw.url, { token, device: 'dead', autoPong: false });
  const alive = connect(gw.url, { token, device: 'alive' });
  await Promise.all([silent.decision, alive.decision]);
  const started = performance.now();
  await silent.closed;
  assert.ok(performance.now() - started < 400 + 400 + 500, 'freed within interval + timeout (+ slack)');
  await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'equal-ping')).join() === 'alive', 2000);
  assert.equal(alive.ws.readyState, alive.ws.OPEN, 'a device that answers keeps playing');
  await alive.close();
});
