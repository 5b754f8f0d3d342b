/**
 * The Shaka Player and dash.js adapters with the real players (their npm builds) in headless Chromium, on
 * the real media path: nginx serves the DASH test stream behind auth_request to the gateway's playback check,
 * so a segment plays only if its request carries a live playback token. Each player plays with its adapter
 * (every request with the token, CMCD's session id the lease id) and is refused without it (the control).
 * The page comes from a server of its own, as a player team's site would.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from './helpers/chromium.js';
import { ROOT, startGateway, type TestGateway } from './helpers/gateway.js';
import { NGINX, startOrigin, type Origin } from './helpers/playback.js';
import { mintToken } from './helpers/tokens.js';

const PLAYERS = {
  shaka: join(ROOT, 'node_modules', 'shaka-player', 'dist', 'shaka-player.compiled.js'),
  dashjs: join(ROOT, 'node_modules', 'dashjs', 'dist', 'modern', 'umd', 'dash.all.min.js'),
} as const;
type Player = keyof typeof PLAYERS;

/** The player site: /<player>/page.html, the player's own build, and test/fixtures/players/page.ts bundled with the SDK. */
async function startSite(): Promise<{ url: string; server: Server }> {
  const esbuild = await import('esbuild');
  const built = await esbuild.build({
    entryPoints: [join(ROOT, 'test', 'fixtures', 'players', 'page.ts')],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    write: false,
    logLevel: 'silent',
  });
  const files: Record<string, [string, string]> = { '/page.js': ['text/javascript', built.outputFiles[0].text] };
  for (const [player, path] of Object.entries(PLAYERS)) {
    files[`/${player}/player.js`] = ['text/javascript', readFileSync(path, 'utf8')];
    files[`/${player}/page.html`] = [
      'text/html',
      '<!doctype html><body><video width="96" height="54"></video><script src="player.js"></script><script src="../page.js"></script></body>',
    ];
  }
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://x').pathname];
    if (file === undefined) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': file[0], 'Cache-Control': 'no-store' }).end(file[1]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe(
  'Shaka Player and dash.js on nginx behind the playback check, in headless Chromium',
  { skip: NGINX ? false : 'nginx not installed' },
  () => {
    let gw: TestGateway;
    let origin: Origin;
    let browser: Browser;
    let site: { url: string; server: Server };
    before(async () => {
      gw = await startGateway();
      origin = await startOrigin(gw.url.replace('ws://', 'http://'));
      site = await startSite();
      browser = await launchChromium();
    });
    after(async () => {
      await browser?.close();
      site?.server.close();
      await origin?.stop();
      await gw?.stop();
    });

    interface Opened {
      page: Page;
      /** GETs the player sent to the media origin, with their Authorization header. */
      media: Array<{ url: string; auth?: string }>;
      logs: string[];
    }

    async function open(player: Player, user: string, bare: boolean): Promise<Opened> {
      const page = await browser.newPage();
      const logs: string[] = [];
      page.on('pageerror', (err) => logs.push(String(err)));
      page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
      const media: Opened['media'] = [];
      page.on('request', (req) => {
        if (req.url().startsWith(`${origin.url}/dash/`) && req.method() === 'GET')
          media.push({ url: req.url(), auth: req.headers().authorization });
      });
      const q = new URLSearchParams({
        player,
        gateway: gw.url,
        token: await mintToken(user),
        device: 'tv',
        media: `${origin.url}/dash/index.mpd`,
        ...(bare && { bare: '1' }),
      });
      await page.goto(`${site.url}/${player}/page.html?${q}`);
      return { page, media, logs };
    }

    /** Waits for the page's state; on a timeout, says where it was and what the page logged. */
    async function reach({ page, logs }: Opened, want: string): Promise<void> {
      const until = Date.now() + 30_000;
      for (;;) {
        const at = await page.locator('body').evaluate((b) => `${b.dataset.state} ${b.dataset.detail ?? ''}`);
        if (at.startsWith(`${want} `)) return;
        assert.ok(Date.now() < until, `never ${want}: the page is ${at}; it logged: ${logs.slice(0, 5).join(' | ')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    const currentTime = (page: Page): Promise<number> => page.locator('video').evaluate((v) => (v as HTMLVideoElement).currentTime);

    for (const player of ['shaka', 'dashjs'] as const) {
      test(
        `${player}: plays with the adapter, every request with the playback token and CMCD's session id`,
        { timeout: 60_000 },
        async () => {
          const opened = await open(player, `${player}-viewer`, false);
          const { page, media } = opened;
          await reach(opened, 'playing');
          const t0 = await currentTime(page);
          await page.waitForFunction((t) => document.querySelector('video')!.currentTime > t + 1, t0, { timeout: 15_000 });
          const leaseId = await page.locator('body').getAttribute('data-lease');
          assert.ok(leaseId, 'the page holds a lease');
          const segments = media.filter((m) => /\/seg\d+\.m4s/.test(m.url));
          assert.ok(
            media.some((m) => m.url.includes('/index.mpd')),
            'the manifest came through the check',
          );
          assert.ok(segments.length >= 2, `segments came through the check (${segments.length})`);
          for (const m of media) assert.match(m.auth ?? '', /^Bearer eyJ/, `the playback token on ${m.url}`);
          assert.ok(
            segments.every((m) => decodeURIComponent(m.url).includes(`sid="${leaseId}"`)),
            `CMCD's session id is the lease id on every segment: ${segments.map((m) => m.url).join(' ')}`,
          );
          await page.close();
        },
      );

      test(`${player} without the adapter is refused by the origin (the control)`, { timeout: 60_000 }, async () => {
        const opened = await open(player, `${player}-bare`, true);
        await reach(opened, 'media-error');
        assert.equal(await currentTime(opened.page), 0, 'nothing played');
        assert.ok(opened.media.length >= 1 && opened.media.every((m) => m.auth === undefined), 'it asked without a token');
        await opened.page.close();
      });
    }
  },
);
