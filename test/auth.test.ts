import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { connect } from './helpers/devices.js';
import { scanTable, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken, TEST_SECRET, unsignedToken } from './helpers/tokens.js';

const now = () => Math.floor(Date.now() / 1000);
const key = new TextEncoder().encode(TEST_SECRET);

describe('tokens: every bad token gets 4401 with a reason and writes nothing', () => {
  let gw: TestGateway;
  let audienceGw: TestGateway;
  before(async () => {
    gw = await startGateway();
    audienceGw = await startGateway({ env: { JWT_AUDIENCE: 'sigma-stream', JWT_ISSUER: 'https://id.example.com' } });
  });
  after(() => Promise.all([gw.stop(), audienceGw.stop()]));

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cases: Array<{ name: string; token: () => Promise<string | undefined>; reason: RegExp; target?: 'audience' }> = [
    { name: 'no token', token: async () => undefined, reason: /missing/ },
    { name: 'bad signature', token: () => mintToken('mallory', { secret: 'another-secret-another-secret-123456' }), reason: /signature/ },
    { name: 'expired', token: () => mintToken('mallory', { expiresIn: -60 }), reason: /expired/ },
    { name: 'alg none', token: async () => unsignedToken('mallory'), reason: /algorithm|malformed/ },
    {
      name: 'RS256 where HS256 is pinned',
      token: () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'RS256' })
          .setSubject('mallory')
          .setExpirationTime(now() + 60)
          .sign(rsa.privateKey),
      reason: /algorithm/,
    },
    {
      name: 'missing exp',
      token: () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('mallory').sign(key),
      reason: /"exp"/,
    },
    {
      name: 'missing sub',
      token: () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setExpirationTime(now() + 60)
          .sign(key),
      reason: /"sub"/,
    },
    {
      name: 'not yet valid',
      token: () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject('mallory')
          .setNotBefore(now() + 600)
          .setExpirationTime(now() + 900)
          .sign(key),
      reason: /not yet valid/,
    },
    { name: 'bad max_streams claim', token: () => mintToken('mallory', { claims: { max_streams: 'lots' } }), reason: /max_streams/ },
    { name: 'garbage', token: async () => 'not-a-jwt', reason: /malformed/ },
    { name: 'huge token', token: async () => 'a'.repeat(9000), reason: /too large/ },
    {
      name: 'wrong audience',
      token: () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject('mallory')
          .setAudience('someone-else')
          .setIssuer('https://id.example.com')
          .setExpirationTime(now() + 60)
          .sign(key),
      reason: /"aud"/,
      target: 'audience',
    },
    {
      name: 'wrong issuer',
      token: () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject('mallory')
          .setAudience('sigma-stream')
          .setIssuer('https://evil.example.com')
          .setExpirationTime(now() + 60)
          .sign(key),
      reason: /"iss"/,
      target: 'audience',
    },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const target = c.target === 'audience' ? audienceGw : gw;
      const token = await c.token();
      const d = connect(target.url, { token, device: 'tv', carriage: token === undefined ? 'none' : 'header' });
      const close = await d.closed;
      assert.equal(close.code, 4401);
      assert.match(close.reason, c.reason);
      assert.equal(d.frames.length, 0);
      const users = (await scanTable(target.endpoint, target.table)).filter((i) => i.pk.S!.startsWith('user#'));
      assert.deepEqual(users, [], 'no user item written');
    });
  }

  test('the same bad token in the subprotocol gets 4401 after the upgrade (browsers can read it)', async () => {
    const d = connect(gw.url, { token: await mintToken('mallory', { expiresIn: -60 }), device: 'tv', carriage: 'subprotocol' });
    const close = await d.closed;
    assert.equal(close.code, 4401);
    assert.equal(d.ws.protocol, 'sigma-stream.v1', 'the upgrade succeeded and never echoed the token');
  });

  test('a valid token for the issuer and audience is admitted', async (t) => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('trent')
      .setAudience('sigma-stream')
      .setIssuer('https://id.example.com')
      .setExpirationTime(now() + 60)
      .sign(key);
    const d = connect(audienceGw.url, { token, device: 'tv' });
    t.after(() => d.close());
    assert.equal((await d.decision).type, 'granted');
  });

  test('the token never appears in the logs', () => {
    const logs = gw.logs.join('\n') + audienceGw.logs.join('\n');
    assert.ok(logs.length > 0);
    assert.doesNotMatch(logs, /eyJ[\w-]+\.[\w-]+/);
  });
});

describe('asymmetric keys are pinned to their type', () => {
  test('ES256 public key: ES256 tokens pass, HS256 signed with the PEM text (key confusion) fails', async (t) => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = ec.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const gw = await startGateway({ env: { JWT_SECRET: '', JWT_PUBLIC_KEY: pem } });
    t.after(() => gw.stop());
    const good = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256' })
      .setSubject('ivan')
      .setExpirationTime(now() + 60)
      .sign(ec.privateKey);
    const d = connect(gw.url, { token: good, device: 'tv' });
    t.after(() => d.close());
    assert.equal((await d.decision).type, 'granted');
    const confused = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('ivan')
      .setExpirationTime(now() + 60)
      .sign(new TextEncoder().encode(pem));
    const bad = connect(gw.url, { token: confused, device: 'phone' });
    const close = await bad.closed;
    assert.equal(close.code, 4401);
    assert.match(close.reason, /algorithm/);
  });
});
