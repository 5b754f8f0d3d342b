/**
 * The verified-token cache and the synchronous HS256 check (src/auth.ts).
 * What a player observes: a token that has expired, or whose key was
 * withdrawn or went stale, is refused with 4401 even though the gateway
 * verified it a moment ago; and the HS256 check gives the same verdict and
 * reason as jose on every kind of bad token.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { exportJWK, SignJWT } from 'jose';
import { Authenticator, AuthError, type Principal } from '../src/auth.js';
import { connect, eventually } from './helpers/devices.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken, TEST_SECRET, unsignedToken } from './helpers/tokens.js';

const nowSec = (): number => Math.floor(Date.now() / 1000);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Opens a lease with `token`, returns the first frame's type or the close code and reason. */
async function attempt(url: string, token: string, device = 'tv'): Promise<string> {
  const d = connect(url, { token, device });
  try {
    const decision = await d.decision;
    await d.close();
    return String(decision.type);
  } catch {
    const c = await d.closed;
    return `${c.code} ${c.reason}`;
  }
}

describe('verified-token cache (ES256 key): a cached token is still refused once it is no longer good', () => {
  // The cache serves keys jose checks; HS256 has its own synchronous check and no cache (src/auth.ts).
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const sign = (sub: string, times: { nbf?: number; exp: number }, claims: Record<string, unknown> = {}): Promise<string> => {
    const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'ES256' }).setSubject(sub).setExpirationTime(times.exp);
    return (times.nbf === undefined ? jwt : jwt.setNotBefore(times.nbf)).sign(privateKey);
  };
  let gw: TestGateway;
  before(
    async () =>
      (gw = await startGateway({
        env: { JWT_SECRET: '', JWT_PUBLIC_KEY: publicKey.export({ type: 'spki', format: 'pem' }).toString() },
      })),
  );
  after(() => gw.stop());

  test('a token verified while valid is refused with 4401 after its exp', async () => {
    const exp = nowSec() + 2;
    const token = await sign('erin', { exp });
    assert.equal(await attempt(gw.url, token), 'granted');
    // Verified (and cached) once more just before it expires.
    assert.equal(await attempt(gw.url, token), 'granted');
    while (Date.now() / 1000 < exp + 0.05) await sleep(100);
    assert.match(await attempt(gw.url, token), /^4401 .*expired/);
  });

  test('a token refused for its claims stays refused (a failure is never remembered as a success)', async () => {
    const token = await sign('frank', { exp: nowSec() + 60 }, { max_streams: 'lots' });
    for (let i = 0; i < 3; i++) assert.match(await attempt(gw.url, token), /^4401 .*max_streams/);
  });

  test('a token refused before its nbf is admitted once nbf has passed', async () => {
    const nbf = nowSec() + 2;
    const token = await sign('gina', { nbf, exp: nbf + 60 });
    assert.match(await attempt(gw.url, token), /^4401 .*not yet valid/);
    while (Date.now() / 1000 < nbf + 0.05) await sleep(100);
    assert.equal(await attempt(gw.url, token), 'granted');
  });
});

describe('verified-token cache with JWKS: a withdrawn or stale key ends every cached token it signed', () => {
  let server: Server;
  let jwksUrl: string;
  const keys = ['k1', 'k2'].map((kid) => ({ kid, ...generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) }));
  let published = ['k1'];
  let failing = false;
  const sign = (kid: string, sub: string, privateKey: KeyObject = keys.find((k) => k.kid === kid)!.privateKey) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid })
      .setSubject(sub)
      .setExpirationTime(nowSec() + 600)
      .sign(privateKey);

  before(async () => {
    const jwks = async (): Promise<string> =>
      JSON.stringify({
        keys: await Promise.all(
          keys
            .filter((k) => published.includes(k.kid))
            .map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: 'ES256', use: 'sig' })),
        ),
      });
    server = createServer((_req, res) => {
      if (failing) return void res.writeHead(503).end();
      void jwks().then((body) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    jwksUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/jwks.json`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test('rotation that withdraws k1: the k1 token verified a moment ago gets 4401', async (t) => {
    published = ['k1'];
    failing = false;
    const gw = await startGateway({ env: { JWT_SECRET: '', JWKS_URL: jwksUrl, JWKS_REFRESH_MS: '200', JWKS_COOLDOWN_MS: '100' } });
    t.after(() => gw.stop());
    await eventually(async () => (await fetch(`${gw.opsUrl}/readyz`)).status === 200, 5000);
    const token = await sign('k1', 'hank');
    assert.equal(await attempt(gw.url, token), 'granted');
    assert.equal(await attempt(gw.url, token), 'granted');
    published = ['k2'];
    // Several refreshes later the key set no longer holds k1.
    await sleep(800);
    assert.match(await attempt(gw.url, token), /^4401 .*unknown key/);
    assert.equal(await attempt(gw.url, await sign('k2', 'hank')), 'granted', 'the new key works');
  });

  test('a key set older than JWKS_MAX_STALE_MS: the cached token gets 4401 (keys unavailable)', async (t) => {
    published = ['k1'];
    failing = false;
    const gw = await startGateway({
      env: { JWT_SECRET: '', JWKS_URL: jwksUrl, JWKS_REFRESH_MS: '200', JWKS_MAX_STALE_MS: '600', JWKS_COOLDOWN_MS: '100' },
    });
    t.after(() => gw.stop());
    await eventually(async () => (await fetch(`${gw.opsUrl}/readyz`)).status === 200, 5000);
    const token = await sign('k1', 'ida');
    assert.equal(await attempt(gw.url, token), 'granted');
    failing = true;
    await sleep(1000);
    assert.match(await attempt(gw.url, token), /^4401 .*unavailable/);
    failing = false;
  });
});

describe('synchronous HS256 check: the same verdict and reason as jose', () => {
  const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
  /** Signs header and payload as given (raw strings are used verbatim), so malformed tokens can be built. */
  const raw = (header: unknown, payload: unknown, tweak: (t: string) => string = (t) => t): string => {
    const input = `${typeof header === 'string' ? header : b64(header)}.${typeof payload === 'string' ? payload : b64(payload)}`;
    return tweak(`${input}.${createHmac('sha256', TEST_SECRET).update(input).digest('base64url')}`);
  };
  const later = nowSec() + 600;
  const HS = { alg: 'HS256' };
  /** Carries the issuer and audience of the second configuration (the first ignores them). */
  const ok = { sub: 'jo', exp: later, iss: 'https://id.example.com', aud: 'sigma-stream' };
  const { sub: _sub, ...noSub } = ok;
  const { exp: _exp, ...noExp } = ok;
  const { iss: _iss, ...noIss } = ok;
  const { aud: _aud, ...noAud } = ok;
  const cases: Record<string, () => Promise<string> | string> = {
    valid: () => raw(HS, ok),
    'valid, with typ and iat': () => raw({ alg: 'HS256', typ: 'JWT' }, { ...ok, iat: nowSec() }),
    'jose-minted': () => mintToken('jo', { claims: { iss: ok.iss, aud: ok.aud } }),
    'bad signature': () => mintToken('jo', { secret: 'another-secret-another-secret-123456' }),
    'signature one byte short': () => raw(HS, ok, (t) => t.slice(0, -2)),
    'signature with padding': () => raw(HS, ok, (t) => `${t}=`),
    'signature in base64 (+ /)': () => raw(HS, ok, (t) => t.replace(/-/g, '+').replace(/_/g, '/')),
    'whitespace inside': () => raw(HS, ok, (t) => t.replace('.', ' .')),
    'four parts': () => raw(HS, ok, (t) => `${t}.x`),
    'two parts': () => raw(HS, ok, (t) => t.slice(0, t.lastIndexOf('.'))),
    'alg none': () => unsignedToken('jo'),
    'alg hs256 (case)': () => raw({ alg: 'hs256' }, ok),
    'alg HS512': () => raw({ alg: 'HS512' }, ok),
    'no alg': () => raw({ typ: 'JWT' }, ok),
    'crit b64 true': () => raw({ alg: 'HS256', crit: ['b64'], b64: true }, ok),
    'crit b64 false': () => raw({ alg: 'HS256', crit: ['b64'], b64: false }, ok),
    'crit unknown': () => raw({ alg: 'HS256', crit: ['exp'] }, ok),
    'crit empty': () => raw({ alg: 'HS256', crit: [] }, ok),
    'b64 false without crit': () => raw({ alg: 'HS256', b64: false }, ok),
    'header is an array': () => raw([HS], ok),
    'header not JSON': () => raw(b64('{alg'), ok),
    'header not UTF-8': () => raw(Buffer.from([0x7b, 0xff, 0x7d]).toString('base64url'), ok),
    'payload is an array': () => raw(HS, [ok]),
    'payload is a string': () => raw(HS, '"jo"'),
    'payload not UTF-8': () => raw(HS, Buffer.from([0x7b, 0xff, 0x7d]).toString('base64url')),
    'payload with unicode': () => raw(HS, { ...ok, name: 'Zoë 🎬' }),
    'missing exp': () => raw(HS, noExp),
    'missing sub': () => raw(HS, noSub),
    'missing iss': () => raw(HS, noIss),
    'missing aud': () => raw(HS, noAud),
    'sub a number': () => raw(HS, { ...ok, sub: 7 }),
    'sub empty': () => raw(HS, { ...ok, sub: '' }),
    'exp a string': () => raw(HS, { ...ok, exp: String(later) }),
    'exp null': () => raw(HS, { ...ok, exp: null }),
    'exp past': () => raw(HS, { ...ok, exp: nowSec() - 1 }),
    'exp now': () => raw(HS, { ...ok, exp: nowSec() }),
    'exp fractional': () => raw(HS, { ...ok, exp: later + 0.5 }),
    'exp 1e999': () => raw(HS, `${b64('{"sub":"jo","exp":1e999,"iss":"https://id.example.com","aud":"sigma-stream"}')}`),
    'nbf future': () => raw(HS, { ...ok, nbf: nowSec() + 60 }),
    'nbf now': () => raw(HS, { ...ok, nbf: nowSec() }),
    'nbf a string': () => raw(HS, { ...ok, nbf: String(nowSec()) }),
    'iat a string': () => raw(HS, { ...ok, iat: 'yesterday' }),
    'iat null': () => raw(HS, { ...ok, iat: null }),
    'iat future (no maxTokenAge: accepted)': () => raw(HS, { ...ok, iat: nowSec() + 600 }),
    'max_streams bad': () => raw(HS, { ...ok, max_streams: 0 }),
    'device_id a number': () => raw(HS, { ...ok, device_id: 5 }),
    'scope array': () => raw(HS, { ...ok, scope: ['admin', 3] }),
    'aud array, right': () => raw(HS, { ...ok, aud: ['x', 'sigma-stream'] }),
    'aud array of numbers': () => raw(HS, { ...ok, aud: [1, 2] }),
    'aud wrong': () => raw(HS, { ...ok, aud: 'someone-else' }),
    'aud an object': () => raw(HS, { ...ok, aud: { 0: 'sigma-stream' } }),
    'iss wrong': () => raw(HS, { ...ok, iss: 'https://evil.example.com' }),
    'iss array': () => raw(HS, { ...ok, iss: ['https://id.example.com'] }),
    'proto key in payload': () =>
      raw(HS, `${b64(`{"sub":"jo","exp":${later},"iss":"https://id.example.com","aud":"sigma-stream","__proto__":{"x":1}}`)}`),
    garbage: () => 'not-a-jwt',
  };
  const outcome = async (auth: Authenticator, token: string): Promise<Principal | string> => {
    try {
      return await auth.verify(token);
    } catch (err) {
      assert.ok(err instanceof AuthError, `only AuthErrors escape (${String(err)})`);
      return `${err.reason}: ${err.message}`;
    }
  };
  for (const cfg of [
    { name: 'no issuer or audience' },
    { name: 'issuer and audience', issuer: 'https://id.example.com', audience: 'sigma-stream' },
  ]) {
    test(`every case, ${cfg.name}`, async () => {
      const auth = { secret: TEST_SECRET, devSecret: false, issuer: cfg.issuer, audience: cfg.audience };
      const joseOnly = new Authenticator(auth, undefined, undefined, { syncHs256: false, cacheSize: 0 });
      const sync = new Authenticator(auth, undefined, undefined, { cacheSize: 0 });
      const cached = new Authenticator(auth);
      let accepted = 0;
      for (const [name, make] of Object.entries(cases)) {
        const token = await make();
        const expected = await outcome(joseOnly, token);
        assert.deepEqual(await outcome(sync, token), expected, `${name}: sync HS256 path`);
        for (let i = 0; i < 2; i++) assert.deepEqual(await outcome(cached, token), expected, `${name}: cached, try ${i + 1}`);
        if (typeof expected !== 'string') accepted++;
      }
      // The matrix must hold both verdicts, or it proves nothing.
      assert.ok(accepted >= 8 && accepted <= Object.keys(cases).length - 30, `${accepted} accepted of ${Object.keys(cases).length}`);
    });
  }
});
