/**
 * The demo page in headless Chromium (Debian's package, driven by
 * playwright-core): what a viewer sees when a fourth device hits the limit of
 * three, and the takeover from the denial dialog. Screenshots land in
 * test-output/ (a CI artifact).
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { COLD_STORE } from './helpers/cold-store.js';
import { leaseEntries, ROOT, startGateway, type TestGateway } from './helpers/gateway.js';
import { launchChromium } from './helpers/chromium.js';

const OUTPUT = join(ROOT, 'test-output');

test('with a configured JWT_SECRET the demo page is served but its token route does not exist', { timeout: 20_000 }, async () => {
  const gw = await startGateway({ env: COLD_STORE });
  try {
    const http = gw.url.replace('ws://', 'http://');
    const page = await fetch(`${http}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /Start playback on a new device/);
    const token = await fetch(`${http}/demo/token?user=alice`, { method: 'POST' });
    assert.equal(token.status, 404);
    assert.doesNotMatch(await token.text(), /eyJ/);
  } finally {
    await gw.stop();
  }
});

describe('demo page in headless Chromium', () => {
  let gw: TestGateway;
  let browser: Browser;
  before(async () => {
    // An empty JWT_SECRET means the development secret: the only way the demo's token route exists.
    gw = await startGateway({ env: { ...COLD_STORE, JWT_SECRET: '' } });
    browser = await launchChromium();
    mkdirSync(OUTPUT, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await gw?.stop();
  });

  test('three devices play, the fourth is denied with the list, and takes the place of one', { timeout: 60_000 }, async () => {
    const page = await browser.newPage({ viewport: { width: 1180, height: 760 } });
    const socketUrls: string[] = [];
    const tokens: string[] = [];
    page.on('websocket', (ws) => socketUrls.push(ws.url()));
    page.on('response', (res) => {
      if (new URL(res.url()).pathname === '/demo/token')
        void res.json().then(
          (b: { token: string }) => tokens.push(b.token),
          () => {},
        );
    });
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(String(err)));

    await page.goto(gw.url.replace('ws://', 'http://') + '/');
    const count = (state: string) => page.locator(`.card[data-state="${state}"]`).count();
    // Locators, not waitForFunction: the page's CSP (no eval) applies to the test's code too.
    const cards = (state: string) => page.locator(`.card[data-state="${state}"]`);
    const seen = (selector: string) => page.locator(selector).first().waitFor({ timeout: 10_000 });
    const counterShows = (n: number) => page.locator('#count', { hasText: new RegExp(`^${n}$`) }).waitFor({ timeout: 10_000 });

    for (let i = 1; i <= 3; i++) {
      await page.click('#start');
      await cards('granted')
        .nth(i - 1)
        .waitFor({ timeout: 10_000 });
    }
    await page.click('#start');
    await seen('.card[data-state="denied"]');
    await counterShows(3);
    const dialog = page.locator('dialog#denied');
    assert.equal(await dialog.isVisible(), true, 'the denial dialog is open');
    const playing = await page
      .locator('.card[data-state="granted"]')
      .evaluateAll((cards) => cards.map((c) => (c as HTMLElement).dataset.device!));
    const listed = await dialog.locator('li').evaluateAll((items) => items.map((li) => (li as HTMLElement).dataset.device!));
    assert.deepEqual([...listed].sort(), [...playing].sort(), 'the dialog lists the three playing devices');
    assert.match(await page.locator('#denied-message').innerText(), /already watching on 3 devices/);
    const fourth = (await page.locator('.card[data-state="denied"]').getAttribute('data-device'))!;
    await page.screenshot({ path: join(OUTPUT, 'demo-denied.png') });

    // Stop the first listed device from the dialog: the fourth plays in its place.
    const victim = listed[0];
    await dialog.locator(`li[data-device="${victim}"] button.takeover`).click();
    await seen(`.card[data-device="${fourth}"][data-state="granted"]`);
    await seen(`.card[data-device="${victim}"][data-state="revoked"]`);
    assert.match(await page.locator(`.card[data-device="${victim}"] .message`).innerText(), /stopped from another device/);
    assert.equal(await count('granted'), 3);
    await counterShows(3);
    assert.deepEqual(await leaseEntries(gw.endpoint, gw.table, 'alice'), [...playing.filter((d) => d !== victim), fourth].sort());
    await page.screenshot({ path: join(OUTPUT, 'demo-takeover.png') });

    assert.ok(socketUrls.length >= 5, `the page opened its sockets (${socketUrls.length})`);
    assert.ok(tokens.length > 0, 'the page fetched tokens');
    for (const url of socketUrls) {
      assert.ok(!tokens.some((t) => url.includes(t) || url.includes(t.split('.')[1])), `no token in ${url}`);
      assert.doesNotMatch(url, /bearer|token|eyJ/i);
    }
    assert.deepEqual(pageErrors, []);
    await page.close();
  });
});
