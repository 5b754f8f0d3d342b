/**
 * The lease on a real media path: Debian's nginx serves the test HLS stream
 * (test/fixtures/hls, made by test/fixtures/make-streams.sh with ffmpeg) behind
 * auth_request to the gateway's /v1/playback/authorize, with the configuration
 * docs/media-path.md gives. What a player observes is the HTTP status of each
 * manifest, segment and licence request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect } from './helpers/devices.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { NGINX, startOrigin, type Origin } from './helpers/playback.js';
import { mintToken } from './helpers/tokens.js';

const TTL_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('nginx auth_request in front of the test stream', { skip: NGINX ? false : 'nginx not installed' }, () => {
  let gw: TestGateway;
  let origin: Origin;
  before(async () => {
    gw = await startGateway({ env: { INSTANCE_TTL_MS: '8000', FENCING_MARGIN_MS: '1000', PLAYBACK_TOKEN_TTL_MS: String(TTL_MS) } });
    origin = await startOrigin(gw.url.replace('ws://', 'http://'));
  });
  after(async () => {
    await origin?.stop();
    await gw?.stop();
  });

  const get = (path: string, token?: string, cookie = false): Promise<Response> =>
    fetch(`${origin.url}${path}`, {
      headers: token === undefined ? {} : cookie ? { Cookie: `sigma_playback=${token}` } : { Authorization: `Bearer ${token}` },
    });

  test('manifest and segments: 200 with a live token (header or cookie), 401 without or with a forged one', async () => {
    const device = connect(gw.url, { token: await mintToken('alice'), device: 'tv' });
    const token = ((await device.decision).playback as { token: string }).token;
    for (const path of ['/hls/index.m3u8', '/hls/init.mp4', '/hls/seg000.m4s', '/hls/seg007.m4s']) {
      const ok = await get(path, token);
      assert.equal(ok.status, 200, path);
      assert.ok((await ok.arrayBuffer()).byteLength > 0);
      assert.equal((await get(path, token, true)).status, 200, `${path} by cookie`);
      assert.equal((await get(path)).status, 401, `${path} without a token`);
      assert.equal((await get(path, token.slice(0, -3) + 'xyz')).status, 401, `${path} forged`);
    }
    const manifest = await (await get('/hls/index.m3u8', token)).text();
    assert.match(manifest, /#EXT-X-MAP:URI="init.mp4"\n#EXTINF:1\.0+,\nseg000\.m4s/);
    assert.equal((await get('/open/seg000.m4s')).status, 200, 'the baseline location has no check');
    await device.close();
  });

  test('a player that ignores 4403 and keeps fetching with its last token is refused within the token lifetime', async () => {
    const tv = connect(gw.url, { token: await mintToken('bob', { maxStreams: 1 }), device: 'tv' });
    let last = (await tv.decision).playback as { token: string; exp: number };
    tv.ws.on('message', (data) => {
      const f = JSON.parse((data as Buffer).toString()) as { type: string; token: string; exp: number };
      if (f.type === 'playback') last = f;
    });
    await sleep(1200); // at least one refresh
    const granted = await get('/licence', last.token);
    assert.equal(granted.status, 200, 'licence while the lease is held');
    assert.match(await granted.text(), /test licence/);
    assert.match(granted.headers.get('x-sigma-lease') ?? '', /^[0-9a-f-]{36}$/, 'auth_request_set passes the lease id on');

    const phone = connect(gw.url, { token: await mintToken('bob', { maxStreams: 1 }), device: 'phone', takeover: 'tv' });
    let phoneToken = ((await phone.decision).playback as { token: string }).token;
    phone.ws.on('message', (data) => {
      const f = JSON.parse((data as Buffer).toString()) as { type: string; token: string };
      if (f.type === 'playback') phoneToken = f.token;
    });
    const takenAt = Date.now();
    assert.equal((await tv.closed).code, 4403);
    // The licence-style location checks the lease itself: refused at once.
    const licence = await get('/licence', last.token);
    assert.equal(licence.status, 403, 'live=1 refuses the old lease at once');
    assert.equal((await get('/licence', phoneToken)).status, 200);

    // The cheating player: same token, one segment request every 100 ms.
    const statuses: Array<{ at: number; status: number }> = [];
    for (let i = 0; ; i++) {
      const res = await get(`/hls/seg${String(i % 40).padStart(3, '0')}.m4s`, last.token);
      await res.arrayBuffer();
      statuses.push({ at: Date.now(), status: res.status });
      if (res.status !== 200) break;
      assert.ok(Date.now() < takenAt + TTL_MS + 2000, 'still served long after the token lifetime');
      await sleep(100);
    }
    const refused = statuses.at(-1)!;
    assert.equal(refused.status, 401);
    assert.ok(refused.at <= last.exp * 1000 + 1000, `refused ${refused.at - last.exp * 1000} ms after the last token's exp`);
    assert.ok(refused.at - takenAt <= TTL_MS + 1000, `refused ${refused.at - takenAt} ms after the takeover (TTL ${TTL_MS} ms)`);
    assert.equal((await get('/hls/seg000.m4s', phoneToken)).status, 200, 'the new device plays on, with its refreshed token');
    await phone.close();
  });
});
