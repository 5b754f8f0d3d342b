/**
 * Playback tokens at the gateway: what a player receives over the socket
 * (granted.playback, refresh frames, none after the lease ends), what the
 * media path gets from /.well-known/jwks.json and /v1/playback/authorize,
 * and the exported verifier (sigma-stream/verify) against the same keys;
 * nothing signed after drain (1012), a pause that gave the slot back, or
 * fencing (4408), whose deadline the last token never outlives.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { calculateJwkThumbprint, createLocalJWKSet, jwtVerify, SignJWT, type JWK } from 'jose';
import WebSocket from 'ws';
import { StreamLease } from '../src/client/index.js';
import { createPlaybackVerifier, PlaybackTokenError } from '../src/verify.js';
import { connect, eventually } from './helpers/devices.js';
import { dynamoEndpoint } from './helpers/dynamodb-local.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { metric, newTable, startGateway, type TestGateway } from './helpers/gateway.js';
import { newKeyPair, recordTokens, type KeyPair } from './helpers/playback.js';
import { mintToken } from './helpers/tokens.js';

const http = (gw: TestGateway): string => gw.url.replace('ws://', 'http://');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A fencing window (TTL - margin) of 7 s and tokens of at most 4 s: the token TTL is what binds. */
const TIMINGS = { INSTANCE_TTL_MS: '8000', FENCING_MARGIN_MS: '1000', PLAYBACK_TOKEN_TTL_MS: '4000' };

async function authorize(gw: TestGateway, token: string | undefined, opts: { live?: boolean; cookie?: boolean } = {}): Promise<Response> {
  const headers: Record<string, string> = {};
  if (token !== undefined) {
    if (opts.cookie) headers.Cookie = `theme=dark; sigma_playback=${token}`;
    else headers.Authorization = `Bearer ${token}`;
  }
  return fetch(`${http(gw)}/v1/playback/authorize${opts.live ? '?live=1' : ''}`, { headers });
}

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as { error: { code: string } }).error.code;
}

const getItems = async (gw: TestGateway): Promise<number> =>
  metric(await gw.metrics(), 'sigma_dynamodb_requests_total{operation="GetItem",outcome="ok"}');

describe('playback tokens over the socket and at the authorize check', () => {
  let gw: TestGateway;
  let keys: KeyPair;
  let previous: KeyPair;
  before(async () => {
    keys = newKeyPair('p256');
    previous = newKeyPair('ed25519');
    gw = await startGateway({
      env: { ...TIMINGS, PLAYBACK_SIGNING_KEY: keys.privatePem, PLAYBACK_PUBLIC_KEYS: previous.publicPem, PLAYBACK_AUDIENCE: 'media' },
    });
  });
  after(() => gw?.stop());

  test('granted carries a token: ES256, kid = RFC 7638 thumbprint, typ, claims, exp within TTL and fencing deadline', async () => {
    const token = await mintToken('alice');
    const device = connect(gw.url, { token, device: 'tv', content: 'match-1' });
    const seen = recordTokens(device);
    const granted = await device.decision;
    assert.equal(granted.type, 'granted');
    const playback = granted.playback as { token: string; exp: number };
    assert.equal(typeof playback.token, 'string');
    const deadline = gw.app.instance.fencingDeadline!;

    const jwksRes = await fetch(`${http(gw)}/.well-known/jwks.json`);
    assert.equal(jwksRes.status, 200);
    assert.match(jwksRes.headers.get('cache-control') ?? '', /max-age=\d+/);
    const jwks = (await jwksRes.json()) as { keys: JWK[] };
    assert.equal(jwks.keys.length, 2, 'current and previous key');
    const { payload, protectedHeader } = await jwtVerify(playback.token, createLocalJWKSet(jwks), {
      issuer: 'sigma-stream',
      audience: 'media',
    });
    assert.equal(protectedHeader.alg, 'ES256');
    assert.equal(protectedHeader.typ, 'sigma-playback+jwt');
    assert.equal(protectedHeader.kid, await calculateJwkThumbprint(jwks.keys[0]));
    assert.equal(jwks.keys[1].kid, await calculateJwkThumbprint(jwks.keys[1]));
    assert.equal(jwks.keys[1].alg, 'EdDSA');
    assert.deepEqual(
      { sub: payload.sub, sid: payload.sid, dev: payload.dev, cid: payload.cid, aud: payload.aud },
      { sub: 'alice', sid: granted.leaseId, dev: 'tv', cid: 'match-1', aud: 'media' },
    );
    assert.equal(payload.exp, playback.exp);
    const { exp, iat } = payload as { exp: number; iat: number };
    assert.ok(exp - iat <= 4, `exp - iat = ${exp - iat} s, TTL 4 s`);
    assert.ok(exp * 1000 <= deadline, 'exp not later than the fencing deadline');
    assert.ok(!JSON.stringify(jwks).includes('"d"'), 'no private part published');

    // Refreshes, each before half of the previous token's lifetime.
    await eventually(() => seen.length >= 4, 10_000);
    for (let i = 1; i < seen.length; i++) {
      const prev = seen[i - 1].claims as { iat: number; exp: number };
      assert.ok(
        seen[i].at < ((prev.iat + prev.exp) / 2) * 1000,
        `token ${i} arrived ${seen[i].at - prev.iat * 1000} ms after the previous iat (lifetime ${prev.exp - prev.iat} s)`,
      );
      assert.equal(seen[i].claims.sid, granted.leaseId);
    }
    const frames = device.frames.filter((f) => f.type === 'playback');
    assert.ok(frames.every((f) => Object.keys(f).sort().join() === 'exp,token,type'));
    await device.close();
  });

  test('authorize: 204 with headers (bearer and cookie), 401 missing / invalid / expired, no store request', async () => {
    const device = connect(gw.url, { token: await mintToken('bob'), device: 'phone' });
    const granted = await device.decision;
    const token = (granted.playback as { token: string }).token;
    const before = await getItems(gw);

    for (const cookie of [false, true]) {
      const ok = await authorize(gw, token, { cookie });
      assert.equal(ok.status, 204);
      assert.equal(ok.headers.get('x-sigma-user'), 'bob');
      assert.equal(ok.headers.get('x-sigma-device'), 'phone');
      assert.equal(ok.headers.get('x-sigma-lease'), granted.leaseId);
    }
    // A user id a header cannot carry as it is: percent-encoded, never a 500.
    const unicode = connect(gw.url, { token: await mintToken('用户-1'), device: 'tablet' });
    const unicodeToken = ((await unicode.decision).playback as { token: string }).token;
    const encoded = await authorize(gw, unicodeToken);
    assert.equal(encoded.status, 204);
    assert.equal(decodeURIComponent(encoded.headers.get('x-sigma-user')!), '用户-1');
    await unicode.close();
    const missing = await authorize(gw, undefined);
    assert.equal(missing.status, 401);
    assert.equal(await errorCode(missing), 'missing');
    assert.match(missing.headers.get('www-authenticate') ?? '', /^Bearer/);

    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: 'bob', sid: String(granted.leaseId), dev: 'phone', aud: 'media', iss: 'sigma-stream' };
    const sign = (key: KeyPair, payload: Record<string, unknown>, header: Record<string, unknown> = {}) =>
      new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'sigma-playback+jwt', ...header }).sign(key.privateKey);
    const jwks = (await (await fetch(`${http(gw)}/.well-known/jwks.json`)).json()) as { keys: JWK[] };
    const kid = jwks.keys[0].kid;
    const invalid = [
      'not-a-token',
      token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA'), // signature broken
      await sign(newKeyPair('p256'), { ...claims, iat: now, exp: now + 30 }, { kid }), // another key, our kid
      await sign(keys, { ...claims, iss: 'someone-else', iat: now, exp: now + 30 }, { kid }),
      await sign(keys, { ...claims, aud: 'other', iat: now, exp: now + 30 }, { kid }),
      await sign(keys, { ...claims, iat: now, exp: now + 30 }, { kid, typ: 'JWT' }),
      await mintToken('bob'), // the user's own HS256 token is no playback token
    ];
    for (const bad of invalid) {
      const res = await authorize(gw, bad);
      assert.equal(res.status, 401, bad.slice(0, 40));
      assert.equal(await errorCode(res), 'invalid', bad.slice(0, 40));
    }
    const expired = await authorize(gw, await sign(keys, { ...claims, iat: now - 60, exp: now - 1 }, { kid }));
    assert.equal(expired.status, 401);
    assert.equal(await errorCode(expired), 'expired');
    assert.equal(await getItems(gw), before, 'the stateless check reads nothing');

    const text = await gw.metrics();
    assert.ok(metric(text, 'sigma_playback_authorize_total{result="ok"}') >= 2);
    assert.ok(metric(text, 'sigma_playback_authorize_total{result="invalid"}') >= invalid.length);
    assert.ok(metric(text, 'sigma_playback_authorize_total{result="expired"}') >= 1);
    assert.ok(metric(text, 'sigma_playback_authorize_total{result="missing"}') >= 1);
    assert.ok(metric(text, 'sigma_playback_tokens_issued_total') >= 1);
    await device.close();
  });

  test("live=1: answered from this gateway's sessions; a stopped device gets 403 lease_gone at once", async () => {
    const device = connect(gw.url, { token: await mintToken('carol'), device: 'tv' });
    const token = ((await device.decision).playback as { token: string }).token;
    const before = await getItems(gw);
    assert.equal((await authorize(gw, token, { live: true })).status, 204);
    assert.equal(await getItems(gw), before, 'held here: no read');
    const stop = await fetch(`${http(gw)}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${await mintToken('carol')}` },
    });
    assert.equal(stop.status, 204);
    const gone = await authorize(gw, token, { live: true });
    assert.equal(gone.status, 403);
    assert.equal(await errorCode(gone), 'lease_gone');
    assert.equal((await authorize(gw, token)).status, 204, 'the stateless check still passes until exp: that is the bound');
    assert.equal((await device.closed).code, 4403);
    assert.ok(metric(await gw.metrics(), 'sigma_playback_authorize_total{result="lease_gone"}') >= 1);
  });

  test('no token is signed after release, 4409, 4403 or 4401, however long the wait', async () => {
    const issued = async () => metric(await gw.metrics(), 'sigma_playback_tokens_issued_total');
    const a = connect(gw.url, { token: await mintToken('dave'), device: 'a' });
    const b = connect(gw.url, { token: await mintToken('dave'), device: 'b' });
    const c = connect(gw.url, { token: await mintToken('dave', { expiresIn: 2 }), device: 'c' });
    const seenC = recordTokens(c);
    await Promise.all([a.decision, b.decision, c.decision]);
    const again = connect(gw.url, { token: await mintToken('dave'), device: 'a' }); // a: 4409
    await again.decision;
    await fetch(`${http(gw)}/v1/streams/b`, { method: 'DELETE', headers: { Authorization: `Bearer ${await mintToken('dave')}` } }); // b: 4403
    assert.equal((await a.closed).code, 4409);
    assert.equal((await b.closed).code, 4403);
    assert.equal((await c.closed).code, 4401, 'the user token expired');
    const userExp = seenC.length > 0 ? (seenC[0].claims.exp as number) : 0;
    for (const t of seenC) assert.ok((t.claims.exp as number) <= userExp + 2, 'never past the user token');
    await again.close(); // release
    await sleep(300);
    const settled = await issued();
    await sleep(5000); // longer than a whole token lifetime
    assert.equal(await issued(), settled, 'nothing was signed for a lease that ended');
  });
});

describe('live=1 on a gateway that does not hold the lease: one strongly consistent read', () => {
  test('204 while held elsewhere, 403 lease_gone once released; one GetItem each', async () => {
    const keys = newKeyPair('ed25519');
    const table = newTable();
    const env = { ...TIMINGS, PLAYBACK_SIGNING_KEY: keys.privatePem };
    const a = await startGateway({ table, env });
    const b = await startGateway({ table, env });
    try {
      const device = connect(a.url, { token: await mintToken('erin'), device: 'tv' });
      const granted = await device.decision;
      const token = (granted.playback as { token: string }).token;
      const header = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()) as { alg: string };
      assert.equal(header.alg, 'EdDSA');
      assert.equal((await authorize(b, token)).status, 204, 'same key: the other replica verifies it');
      const before = await getItems(b);
      assert.equal((await authorize(b, token, { live: true })).status, 204);
      assert.equal(await getItems(b), before + 1, 'one GetItem');
      await device.close();
      await eventually(async () => (await authorize(b, token, { live: true })).status === 403);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('sigma-stream/verify', () => {
  let gw: TestGateway;
  let keys: KeyPair;
  before(async () => {
    keys = newKeyPair('p256');
    gw = await startGateway({ env: { ...TIMINGS, PLAYBACK_SIGNING_KEY: keys.privatePem, PLAYBACK_ISSUER: 'streams.example' } });
  });
  after(() => gw?.stop());

  const codeOf = async (p: Promise<unknown>): Promise<string | undefined> => {
    try {
      await p;
      return undefined;
    } catch (err) {
      assert.ok(err instanceof PlaybackTokenError, String(err));
      return err.code;
    }
  };

  test('from the JWKS URL and from PEM keys: claims, or an error with a stable code', async () => {
    const device = connect(gw.url, { token: await mintToken('frank'), device: 'tv', content: 'c1' });
    const granted = await device.decision;
    const token = (granted.playback as { token: string }).token;
    const fromUrl = createPlaybackVerifier({ jwksUrl: `${http(gw)}/.well-known/jwks.json`, issuer: 'streams.example' });
    const fromKeys = createPlaybackVerifier({ keys: [newKeyPair().publicPem, keys.publicPem], issuer: 'streams.example' });
    for (const verify of [fromUrl, fromKeys]) {
      const claims = await verify(token);
      assert.equal(claims.sid, granted.leaseId);
      assert.equal(claims.cid, 'c1');
      assert.equal(await codeOf(verify(undefined)), 'missing');
      assert.equal(await codeOf(verify('x.y.z')), 'invalid');
    }
    assert.equal(await codeOf(createPlaybackVerifier({ keys: keys.publicPem })(token)), 'invalid', 'default issuer sigma-stream');
    assert.equal(
      await codeOf(createPlaybackVerifier({ keys: keys.publicPem, issuer: 'streams.example', audience: 'media' })(token)),
      'invalid',
    );
    const now = Math.floor(Date.now() / 1000);
    const stale = await new SignJWT({ sub: 'frank', sid: 'l', dev: 'tv' })
      .setProtectedHeader({
        alg: 'ES256',
        typ: 'sigma-playback+jwt',
        kid: (granted.playback as { token: string }).token && JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).kid,
      })
      .setIssuer('streams.example')
      .setIssuedAt(now - 10)
      .setExpirationTime(now - 2)
      .sign(keys.privateKey);
    assert.equal(await codeOf(fromKeys(stale)), 'expired');
    const lenient = createPlaybackVerifier({ keys: keys.publicPem, issuer: 'streams.example', clockToleranceSec: 10 });
    assert.equal((await lenient(stale)).sub, 'frank', 'clock tolerance');
    assert.equal(
      await codeOf(createPlaybackVerifier({ jwksUrl: 'http://127.0.0.1:9/jwks.json', issuer: 'streams.example' })(token)),
      'keys_unavailable',
    );
    await device.close();
  });
});

test('a gateway that drains (1012) signs nothing more', async () => {
  const gw = await startGateway({ env: { ...TIMINGS, PLAYBACK_SIGNING_KEY: newKeyPair().privatePem } });
  const issued = async (): Promise<number> => (await gw.app.metrics.playbackTokensIssued.get()).values[0]?.value ?? 0;
  const device = connect(gw.url, { token: await mintToken('gina'), device: 'tv' });
  await device.decision;
  const stopped = gw.stop();
  assert.equal((await device.closed).code, 1012);
  const atClose = await issued();
  await stopped;
  await sleep(3000);
  assert.equal(await issued(), atClose);
});

test('a paused stream whose slot was given back gets no token until it resumes; then granted carries one', async () => {
  const gw = await startGateway({ env: { ...TIMINGS, PAUSE_RELEASE_MS: '300', PLAYBACK_SIGNING_KEY: newKeyPair().privatePem } });
  try {
    const device = connect(gw.url, { token: await mintToken('hana'), device: 'tv' });
    await device.decision;
    device.ws.send(JSON.stringify({ type: 'pause' }));
    await eventually(() => device.frames.some((f) => f.type === 'released'), 5000);
    const releasedAt = device.frames.findIndex((f) => f.type === 'released');
    await sleep(3000); // longer than half a token lifetime: a held lease would have had a refresh
    assert.deepEqual(
      device.frames.slice(releasedAt).filter((f) => f.type === 'playback'),
      [],
      'no token while released',
    );
    device.ws.send(JSON.stringify({ type: 'resume' }));
    const regranted = await eventually(() => device.frames.slice(releasedAt).find((f) => f.type === 'granted'), 5000);
    assert.equal(typeof (regranted!.playback as { token: string }).token, 'string');
    await device.close();
  } finally {
    await gw.stop();
  }
});

test('a gateway that loses the store fences (4408): its last token expires by then, and it signs nothing more', async () => {
  const proxy = await startFaultProxy(await dynamoEndpoint());
  // FAST_TIMINGS: a 2 s fencing window (3 s TTL - 1 s margin) caps every token, whatever the 60 s TTL.
  const gw = await startGateway({ endpoint: proxy.endpoint, env: { PLAYBACK_SIGNING_KEY: newKeyPair().privatePem } });
  try {
    const device = connect(gw.url, { token: await mintToken('ines'), device: 'tv' });
    const seen = recordTokens(device);
    await device.decision;
    await sleep(1000);
    proxy.set('blackhole');
    const closed = await device.closed;
    const closedAt = Date.now();
    assert.equal(closed.code, 4408);
    const last = seen.at(-1)!;
    assert.ok(last.exp * 1000 <= closedAt + 50, `the last token expired ${closedAt - last.exp * 1000} ms before the 4408`);
    const issued = async (): Promise<number> => (await gw.app.metrics.playbackTokensIssued.get()).values[0]?.value ?? 0;
    const atFence = await issued();
    await sleep(2500);
    assert.equal(await issued(), atFence, 'nothing signed after fencing');
  } finally {
    proxy.set('pass');
    await gw.stop();
    await proxy.close();
  }
});

test('the SDK: lease.playbackToken, the playback event, playbackTokenSoon; nothing once the lease is revoked', async () => {
  const gw = await startGateway({ env: { ...TIMINGS, PLAYBACK_SIGNING_KEY: newKeyPair().privatePem } });
  try {
    const lease = new StreamLease({ url: gw.url, getToken: () => mintToken('jun'), deviceId: 'tv', WebSocket });
    const events: Array<{ token: string; exp: number; leaseId: string }> = [];
    lease.on('playback', (e) => events.push(e));
    assert.equal(await lease.playbackTokenSoon(), undefined, 'idle: no token, no wait');
    const started = lease.start();
    const soon = lease.playbackTokenSoon();
    const grant = await started;
    const first = await soon;
    assert.equal(first, lease.playbackToken, 'a request made while connecting gets the first token');
    assert.equal(events[0].leaseId, grant.leaseId);
    await eventually(() => events.length >= 2, 10_000);
    assert.equal(lease.playbackToken, events.at(-1)!.token, 'the getter follows the refreshes');
    assert.equal((await authorize(gw, lease.playbackToken)).status, 204);
    const stop = await fetch(`${http(gw)}/v1/streams/tv`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${await mintToken('jun')}` },
    });
    assert.equal(stop.status, 204);
    await eventually(() => lease.state === 'revoked');
    assert.equal(lease.playbackToken, undefined, 'revoked: no token for the player');
    assert.equal(await lease.playbackTokenSoon(), undefined);
  } finally {
    await gw.stop();
  }
});
