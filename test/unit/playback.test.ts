/**
 * Playback tokens without a gateway: the PLAYBACK_* options (a bad value names
 * the variable), the signer (jose verifies what node:crypto signs; exp capped
 * by TTL, fencing deadline and the user's token), and the player adapters on
 * stand-ins shaped like hls.js, Shaka and dash.js.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { calculateJwkThumbprint, createLocalJWKSet, jwtVerify } from 'jose';
import { attachDashjsPlayback, type DashPlayerLike } from '../../src/client/adapters/dashjs.js';
import { hlsPlaybackConfig } from '../../src/client/adapters/hls.js';
import { attachShakaPlayback, type ShakaRequest } from '../../src/client/adapters/shaka.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { Metrics } from '../../src/metrics.js';
import { Playback, refreshDueAt } from '../../src/playback.js';

const pem = (kind: 'p256' | 'ed25519' | 'rsa' | 'p384') => {
  const pair =
    kind === 'p256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : kind === 'p384'
        ? generateKeyPairSync('ec', { namedCurve: 'P-384' })
        : kind === 'rsa'
          ? generateKeyPairSync('rsa', { modulusLength: 2048 })
          : generateKeyPairSync('ed25519');
  return {
    priv: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    pub: pair.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
};

function refuses(env: Record<string, string>, name: string): void {
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => err instanceof ConfigError && err.message.includes(name),
  );
}

describe('PLAYBACK_* options', () => {
  test('development without a key: one generated at start, flagged; defaults', () => {
    const p = loadConfig({}).playback!;
    assert.equal(p.generated, true);
    assert.equal(p.issuer, 'sigma-stream');
    assert.equal(p.audience, undefined);
    assert.equal(p.ttlMs, 60000);
    assert.deepEqual(p.previousKeys, []);
  });

  test('production without a key: the feature is off', () => {
    assert.equal(loadConfig({ NODE_ENV: 'production', AWS_REGION: 'eu-west-1', JWT_SECRET: 'x'.repeat(32) }).playback, undefined);
  });

  test('P-256 and Ed25519 keys load, with \\n escapes as in a .env file; previous keys kept', () => {
    const key = pem('ed25519');
    const old = pem('p256');
    const p = loadConfig({
      PLAYBACK_SIGNING_KEY: key.priv.replace(/\n/g, '\\n'),
      PLAYBACK_PUBLIC_KEYS: old.pub + pem('ed25519').pub,
      PLAYBACK_ISSUER: 'iss',
      PLAYBACK_AUDIENCE: 'aud',
      PLAYBACK_TOKEN_TTL_MS: '30000',
    }).playback!;
    assert.equal(p.generated, false);
    assert.equal(p.signingKey.asymmetricKeyType, 'ed25519');
    assert.equal(p.previousKeys.length, 2);
    assert.deepEqual([p.issuer, p.audience, p.ttlMs], ['iss', 'aud', 30000]);
  });

  test('bad keys are refused, naming the variable', () => {
    refuses({ PLAYBACK_SIGNING_KEY: 'not a key' }, 'PLAYBACK_SIGNING_KEY');
    refuses({ PLAYBACK_SIGNING_KEY: pem('p256').pub }, 'PLAYBACK_SIGNING_KEY');
    refuses({ PLAYBACK_SIGNING_KEY: pem('rsa').priv }, 'PLAYBACK_SIGNING_KEY');
    refuses({ PLAYBACK_SIGNING_KEY: pem('p384').priv }, 'PLAYBACK_SIGNING_KEY');
    refuses({ PLAYBACK_PUBLIC_KEYS: pem('p256').priv }, 'PLAYBACK_PUBLIC_KEYS');
    refuses({ PLAYBACK_PUBLIC_KEYS: 'garbage' }, 'PLAYBACK_PUBLIC_KEYS');
    refuses({ PLAYBACK_PUBLIC_KEYS: pem('rsa').pub }, 'PLAYBACK_PUBLIC_KEYS');
    refuses(
      { NODE_ENV: 'production', AWS_REGION: 'eu-west-1', JWT_SECRET: 'x'.repeat(32), PLAYBACK_PUBLIC_KEYS: pem('p256').pub },
      'PLAYBACK_SIGNING_KEY',
    );
    refuses({ PLAYBACK_TOKEN_TTL_MS: '1999' }, 'PLAYBACK_TOKEN_TTL_MS');
    refuses({ PLAYBACK_TOKEN_TTL_MS: '1m' }, 'PLAYBACK_TOKEN_TTL_MS');
  });
});

describe('the signer', () => {
  const lease = { userId: 'alice', deviceId: 'tv', leaseId: 'l-1', contentId: 'c-1' };
  for (const kind of ['p256', 'ed25519'] as const) {
    test(`${kind}: jose verifies the token; kid is the RFC 7638 thumbprint`, async () => {
      const config = loadConfig({ PLAYBACK_SIGNING_KEY: pem(kind).priv, PLAYBACK_AUDIENCE: 'media' }).playback!;
      const playback = new Playback(config, new Metrics());
      const now = Date.now();
      const grant = playback.issue(lease, now + 15_000, 0, now)!;
      const { payload, protectedHeader } = await jwtVerify(grant.token, createLocalJWKSet(playback.jwks as never), {
        issuer: 'sigma-stream',
        audience: 'media',
      });
      assert.equal(protectedHeader.alg, kind === 'p256' ? 'ES256' : 'EdDSA');
      assert.equal(protectedHeader.kid, await calculateJwkThumbprint(playback.jwks.keys[0] as never));
      assert.deepEqual([payload.sub, payload.sid, payload.dev, payload.cid], ['alice', 'l-1', 'tv', 'c-1']);
    });
  }

  test('exp: now + TTL, never past the fencing deadline or the user token; none without a deadline', () => {
    const playback = new Playback(loadConfig({ PLAYBACK_TOKEN_TTL_MS: '60000' }).playback!, new Metrics());
    const now = 1_800_000_000_500;
    const s = (ms: number) => Math.floor(ms / 1000);
    assert.equal(playback.issue(lease, now + 600_000, 0, now)!.exp, s(now + 60_000));
    assert.equal(playback.issue(lease, now + 12_345, 0, now)!.exp, s(now + 12_345));
    assert.equal(playback.issue(lease, now + 600_000, s(now) + 5, now)!.exp, s(now) + 5);
    assert.equal(playback.issue(lease, undefined, 0, now), undefined, 'not live: no token');
    assert.equal(playback.issue(lease, now + 400, 0, now), undefined, 'deadline within the second: no token');
    const odd = new Playback(loadConfig({ PLAYBACK_TOKEN_TTL_MS: '2500' }).playback!, new Metrics());
    for (const t of [1_800_000_000_000, 1_800_000_000_600, 1_800_000_000_999]) {
      const grant = odd.issue(lease, t + 600_000, 0, t)!;
      assert.ok(grant.exp - Math.floor(t / 1000) <= 2.5, `exp - iat ≤ 2.5 s at ${t % 1000} ms into the second`);
    }
  });

  test('the next token is due two ticks before half the lifetime', () => {
    assert.equal(refreshDueAt({ token: '', exp: 1010 }, 1_000_700, 100), 1_005_000 - 200);
  });
});

describe('player adapters', () => {
  const lease: { playbackToken: string | undefined; grant?: { leaseId: string } } = {
    playbackToken: 'tok-1',
    grant: { leaseId: 'lease-1' },
  };

  test('hls.js: xhrSetup opens and sets the header, fetchSetup adds it, nothing once the lease ended; CMCD session id', async () => {
    const config = hlsPlaybackConfig(lease, { contentId: 'c' });
    assert.deepEqual(config.cmcd, { sessionId: 'lease-1', contentId: 'c' });
    const calls: string[] = [];
    const xhr = {
      readyState: 0,
      open: (m: string, u: string) => ((xhr.readyState = 1), calls.push(`open ${m} ${u}`)),
      setRequestHeader: (k: string, v: string) => calls.push(`${k}: ${v}`),
    };
    await config.xhrSetup(xhr as unknown as XMLHttpRequest, '/seg1.ts');
    assert.deepEqual(calls, ['open GET /seg1.ts', 'Authorization: Bearer tok-1']);
    const req = await config.fetchSetup({ url: 'http://x/seg2.ts' }, { headers: { Range: 'bytes=0-1' } });
    assert.equal(req.headers.get('authorization'), 'Bearer tok-1');
    assert.equal(req.headers.get('range'), 'bytes=0-1');
    lease.playbackToken = undefined;
    calls.length = 0;
    xhr.readyState = 0;
    await config.xhrSetup(xhr as unknown as XMLHttpRequest, '/seg3.ts');
    assert.deepEqual(calls, []);
    const stale = await config.fetchSetup({ url: 'http://x/seg4.ts' }, { headers: { Authorization: 'Bearer stale' } });
    assert.equal(stale.headers.get('authorization'), null);
    lease.playbackToken = 'tok-1';
  });

  test('a request while the lease reconnects waits for the next token instead of going out without one', async () => {
    let release: (token: string | undefined) => void = () => {};
    const reconnecting = {
      playbackToken: undefined,
      grant: undefined,
      playbackTokenSoon: () => new Promise<string | undefined>((r) => (release = r)),
    };
    const config = hlsPlaybackConfig(reconnecting);
    let sent: Request | undefined;
    const pending = config.fetchSetup({ url: 'http://x/seg5.ts' }, {}).then((r) => (sent = r));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(sent, undefined, 'held while reconnecting');
    release('tok-2');
    await pending;
    assert.equal(sent!.headers.get('authorization'), 'Bearer tok-2');
  });

  test('Shaka: a request filter on every request type, CMCD sessionId, detach', async () => {
    const filters = new Set<(type: number, request: ShakaRequest) => Promise<void>>();
    let configured: unknown;
    const player = {
      getNetworkingEngine: () => ({
        registerRequestFilter: (f: never) => filters.add(f),
        unregisterRequestFilter: (f: never) => filters.delete(f),
      }),
      configure: (c: unknown) => (configured = c),
    };
    const detach = attachShakaPlayback(player, lease);
    assert.deepEqual(configured, { cmcd: { enabled: true, sessionId: 'lease-1' } });
    const request: ShakaRequest = { headers: {} };
    for (const f of filters) await f(2, request);
    assert.equal(request.headers.Authorization, 'Bearer tok-1');
    lease.playbackToken = undefined;
    for (const f of filters) await f(2, request);
    assert.equal(request.headers.Authorization, undefined, 'a retried request loses the stale token');
    lease.playbackToken = 'tok-1';
    detach();
    assert.equal(filters.size, 0);
  });

  test('dash.js: addRequestInterceptor (v5), the licence filter otherwise; CMCD sid', async () => {
    const interceptors = new Set<(r: { headers?: Record<string, string> }) => Promise<{ headers?: Record<string, string> }>>();
    let settings: unknown;
    const v5: DashPlayerLike = {
      addRequestInterceptor: (i) => void interceptors.add(i),
      removeRequestInterceptor: (i) => void interceptors.delete(i),
      updateSettings: (s) => (settings = s),
    };
    const detach = attachDashjsPlayback(v5, lease);
    assert.deepEqual(settings, { streaming: { cmcd: { enabled: true, sid: 'lease-1' } } });
    const [interceptor] = interceptors;
    assert.equal((await interceptor({ headers: { Accept: '*/*' } })).headers?.Authorization, 'Bearer tok-1');
    detach();
    assert.equal(interceptors.size, 0);
    const licence: unknown[] = [];
    attachDashjsPlayback({ registerLicenseRequestFilter: (f) => void licence.push(f), updateSettings: () => {} }, lease);
    assert.equal(licence.length, 1);
    assert.throws(() => attachDashjsPlayback({ updateSettings: () => {} }, lease), /addRequestInterceptor/);
  });
});
