/**
 * A real player on the real media path: the demo player page (hls.js in a
 * <video>, bundled with the SDK) in headless Chromium plays the test stream
 * from nginx, which asks the gateway about every request (auth_request). After
 * a takeover from another device the video stops advancing within the token
 * lifetime plus one segment: for the honest page (it stops on 4403) and for a
 * page whose SDK is patched to ignore close codes and keep its last token.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { ROOT, startGateway, type TestGateway } from './helpers/gateway.js';
import { NGINX, SEGMENT_SECONDS, startOrigin, type Origin } from './helpers/playback.js';
import { launchChromium } from './helpers/chromium.js';

const OUTPUT = join(ROOT, 'test-output');
const TTL_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The cheat: the SDK never hears a close, and hands out its last token whatever its expiry. */
function patchSdk(bundle: string): string {
  const patched = bundle
    .replace(
      'addEventListener("close", (event) => __privateMethod(this, _Connection_instances, end_fn)',
      'addEventListener("sigma-ignored-close", (event) => __privateMethod(this, _Connection_instances, end_fn)',
    )
    .replace(
      /return __privateGet\(this, _state\) === "granted" && p !== void 0 && p\.exp \* 1e3 > Date\.now\(\) \? p\.token : void 0;/,
      'return p !== void 0 ? p.token : void 0;',
    )
    .replaceAll('__privateSet(this, _playback, void 0)', 'void 0');
  assert.ok(
    patched.includes('sigma-ignored-close') && patched.includes('return p !== void 0 ? p.token : void 0;'),
    'the patch applies to this bundle',
  );
  return patched;
}

describe(
  'the demo player on nginx behind the playback check, in headless Chromium',
  { skip: NGINX ? false : 'nginx not installed' },
  () => {
    let gw: TestGateway;
    let origin: Origin;
    let browser: Browser;
    let http: string;
    before(async () => {
      // The development secret (empty JWT_SECRET) gives the demo its token route.
      gw = await startGateway({
        env: {
          JWT_SECRET: '',
          PLAYBACK_TOKEN_TTL_MS: String(TTL_MS),
          INSTANCE_HEARTBEAT_MS: '1000',
          INSTANCE_TTL_MS: '8000',
          FENCING_MARGIN_MS: '2000',
          DYNAMODB_REQUEST_TIMEOUT_MS: '2000',
        },
      });
      http = gw.url.replace('ws://', 'http://');
      origin = await startOrigin(http);
      browser = await launchChromium();
      mkdirSync(OUTPUT, { recursive: true });
    });
    after(async () => {
      await browser?.close();
      await origin?.stop();
      await gw?.stop();
    });

    async function open(user: string, device: string, opts: { takeover?: string; cheat?: boolean } = {}): Promise<Page> {
      const page = await browser.newPage({ viewport: { width: 640, height: 400 } });
      if (opts.cheat) {
        await page.route('**/demo/player.js', async (route) => {
          const res = await route.fetch();
          await route.fulfill({ response: res, body: patchSdk(await res.text()) });
        });
      }
      // The demo plan `event` allows one device per content: the second device on the same content must take over.
      const q = new URLSearchParams({
        media: `${origin.url}/hls/index.m3u8`,
        user,
        device,
        content: 'match-1',
        plan: 'event',
        ...(opts.takeover && { takeover: opts.takeover }),
      });
      await page.goto(`${http}/demo/player.html?${q}`);
      return page;
    }

    const currentTime = (page: Page): Promise<number> => page.locator('video').evaluate((v) => (v as HTMLVideoElement).currentTime);

    async function advancing(page: Page, what: string): Promise<void> {
      await page.locator('body[data-state="playing"]').waitFor({ timeout: 15_000 });
      const until = Date.now() + 15_000;
      while ((await currentTime(page)) < 1) {
        assert.ok(Date.now() < until, `${what}: the video never started`);
        await sleep(100);
      }
      const t0 = await currentTime(page);
      await sleep(1500);
      assert.ok((await currentTime(page)) > t0, `${what}: currentTime advances while leased`);
    }

    /** Samples currentTime until it has not moved for 1.5 s; returns when it last moved (wall ms). */
    async function stopsAdvancing(page: Page, limitMs: number): Promise<number> {
      let last = await currentTime(page);
      let movedAt = Date.now();
      const until = Date.now() + limitMs;
      while (Date.now() - movedAt < 1500) {
        assert.ok(Date.now() < until, `still playing ${limitMs} ms later (currentTime ${last})`);
        await sleep(100);
        const now = await currentTime(page);
        if (now !== last) {
          last = now;
          movedAt = Date.now();
        }
      }
      return movedAt;
    }

    for (const cheat of [false, true]) {
      const what = cheat ? 'a page whose SDK ignores close codes' : 'the honest page';
      test(`${what}: plays while leased, stops within TTL + one segment of a takeover`, { timeout: 90_000 }, async (t) => {
        const user = cheat ? 'mallory' : 'victor';
        const tv = await open(user, 'tv', { cheat });
        await advancing(tv, 'tv');

        const phone = await open(user, 'phone', { takeover: 'tv' });
        await phone.locator('body[data-state="playing"]').waitFor({ timeout: 15_000 });
        const takenAt = Date.now();
        if (!cheat) await tv.locator('body[data-state="stopped"]').waitFor({ timeout: 5000 });
        else assert.equal(await tv.locator('body').getAttribute('data-state'), 'playing', 'the cheating page never heard the 4403');

        const stoppedAt = await stopsAdvancing(tv, TTL_MS + SEGMENT_SECONDS * 1000 + 10_000);
        // + 1 s for sampling (100 ms), a late decoder and hls.js topping its 1 s buffer up to just under two segments.
        const bound = TTL_MS + SEGMENT_SECONDS * 1000 + 1000;
        t.diagnostic(`video stopped advancing ${stoppedAt - takenAt} ms after the takeover (bound ${bound} ms)`);
        assert.ok(stoppedAt - takenAt <= bound, `${what}: stopped ${stoppedAt - takenAt} ms after the takeover (bound ${bound} ms)`);
        await advancing(phone, 'phone');
        await tv.screenshot({ path: join(OUTPUT, `playback-${cheat ? 'cheat' : 'honest'}-tv.png`) });
        await tv.close();
        await phone.close();
      });
    }
  },
);
