/**
 * @sigma-stream/client as a player team gets it: `npm pack` of packages/client
 * (its prepack builds from src/client/), installed from the tarball into an
 * empty temporary project, then used from plain Node and from headless
 * Chromium (Debian's, through playwright-core) against a real gateway.
 * Nothing here imports the SDK from src/: only the installed tarball.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { Browser } from 'playwright-core';
import { COLD_STORE } from './helpers/cold-store.js';
import { eventually } from './helpers/devices.js';
import { leaseEntries, ROOT, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';
import { launchChromium } from './helpers/chromium.js';

const PACKAGE_DIR = join(ROOT, 'packages/client');
const NAME = '@sigma-stream/client';
const BOUNDED = { timeout: 60_000 };

/** Runs a command to completion; its output is part of the failure message. */
function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`, { cause: err });
  }
}

/** Node in the consumer project, with a script on stdin: stdout is one JSON line per step. */
function node(cwd: string, script: string, env: Record<string, string>): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-'], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`consumer script exited ${code}\n${out}\n${err}`));
      else
        resolve(
          out
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as Record<string, unknown>),
        );
    });
    child.stdin.end(script);
  });
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

/** A static file server for the consumer project: what a team without a bundler would deploy. */
function serve(dir: string, pages: Record<string, string>): Promise<Server> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (pages[path] !== undefined) {
      res.writeHead(200, { 'Content-Type': TYPES['.html'] });
      res.end(pages[path]);
      return;
    }
    const file = normalize(join(dir, path));
    if (!file.startsWith(dir) || !statSync(file, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('@sigma-stream/client from its tarball', () => {
  let work: string;
  let project: string;
  let tarball: string;
  let gw: TestGateway;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'sigma-client-pkg-'));
    // prepack builds dist/ from src/client/ first: the tarball is what `npm publish` would upload.
    run('npm', ['pack', '--silent', '--pack-destination', work], PACKAGE_DIR);
    tarball = join(
      work,
      readdirSync(work).find((f) => f.endsWith('.tgz'))!,
    );
    project = join(work, 'player');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'a-player', private: true, type: 'module' }));
    // No network needed: the package has no dependencies, so nothing else is fetched.
    run('npm', ['install', '--no-audit', '--no-fund', '--offline', tarball], project);
    gw = await startGateway({ env: COLD_STORE });
  });
  after(async () => {
    await gw?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('the installed package has no dependencies and ships ESM, a minified browser build and declarations', () => {
    const installed = join(project, 'node_modules', NAME);
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    assert.equal(manifest.dependencies, undefined, 'no runtime dependencies');
    assert.equal(manifest.type, 'module');
    // Only our package landed in node_modules (npm's own lock file aside).
    const modules = readdirSync(join(project, 'node_modules')).filter((f) => !f.startsWith('.'));
    assert.deepEqual(modules, ['@sigma-stream']);
    for (const file of ['dist/index.js', 'dist/browser/index.js', 'dist/types/client/index.d.ts']) {
      assert.ok(statSync(join(installed, file), { throwIfNoEntry: false })?.isFile(), `${file} in the tarball`);
    }
    const min = readFileSync(join(installed, 'dist/browser/index.js'), 'utf8');
    assert.ok(min.split('\n').length < 10, 'the browser build is minified');
    // The SDK is src/client/ itself, not a copy that could drift: nothing but the build lives in the package folder.
    const tracked = run('git', ['ls-files', 'packages/client'], ROOT).trim().split('\n');
    assert.ok(
      tracked.every((f) => !/\.(ts|js)$/.test(f) || /(build|check)\.mjs$|\.size-limit\.js$/.test(f)),
      `no SDK source under packages/client: ${tracked.join(', ')}`,
    );
  });

  test('types resolve for a TypeScript player with moduleResolution nodenext', () => {
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          lib: ['es2022', 'dom'],
          types: [],
        },
        files: ['player.ts'],
      }),
    );
    writeFileSync(
      join(project, 'player.ts'),
      [
        `import { StreamLease, StreamLimitError, reconnectRule, type Grant } from '${NAME}';`,
        `import * as browser from '${NAME}/browser';`,
        `const lease = new StreamLease({ url: 'wss://example.com', getToken: () => 'x', deviceId: 'tv' });`,
        `lease.on('granted', (g: Grant) => g.limit.toFixed());`,
        `const rule: 'no' | 'backoff' | 'jitter' | 'new-token' = reconnectRule(4429);`,
        `export const checks = [lease, rule, StreamLimitError, browser.StreamLease];`,
        // A wrong use must fail, or this test proves nothing.
        `// @ts-expect-error deviceId is a string`,
        `new StreamLease({ url: 'wss://example.com', getToken: () => 'x', deviceId: 42 });`,
      ].join('\n'),
    );
    run(join(ROOT, 'node_modules/.bin/tsc'), ['-p', project], project);
  });

  test('plain Node: a player takes a lease, sees it listed, is denied a second at max_streams 1, stops', BOUNDED, async () => {
    // ws comes from this repository by path: the consumer project holds only the tarball.
    const ws = pathToFileURL(join(ROOT, 'node_modules/ws/wrapper.mjs')).href;
    const steps = await node(
      project,
      `
      import WebSocket from ${JSON.stringify(ws)};
      import { StreamLease, StreamLimitError } from '${NAME}';
      const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
      const base = { url: process.env.GATEWAY, getToken: () => process.env.TOKEN, WebSocket };
      const tv = new StreamLease({ ...base, deviceId: 'node-tv', contentId: 'match-1' });
      const grant = await tv.start();
      say({ step: 'granted', grant, state: tv.state });
      say({ step: 'listed', list: await tv.listStreams() });
      const phone = new StreamLease({ ...base, deviceId: 'node-phone' });
      try {
        await phone.start();
        say({ step: 'second granted' });
      } catch (err) {
        say({ step: 'denied', isLimit: err instanceof StreamLimitError, code: err.code, active: err.active, message: err.viewerMessage });
      }
      tv.stop();
      say({ step: 'stopped', state: tv.state });
      `,
      { GATEWAY: gw.url, TOKEN: await mintToken('pkg-node', { maxStreams: 1 }) },
    );
    const [granted, listed, denied, stopped] = steps;
    assert.equal(granted.step, 'granted');
    assert.deepEqual(
      { ...(granted.grant as Record<string, unknown>), leaseId: undefined, viewerMessage: undefined },
      { leaseId: undefined, userId: 'pkg-node', deviceId: 'node-tv', limit: 1, active: 1, viewerMessage: undefined },
    );
    assert.equal(granted.state, 'granted');
    const list = listed.list as { streams: Array<{ deviceId: string; contentId: string }> };
    assert.deepEqual(
      list.streams.map((s) => [s.deviceId, s.contentId]),
      [['node-tv', 'match-1']],
    );
    assert.equal(denied.step, 'denied');
    assert.equal(denied.isLimit, true, 'StreamLimitError from the package');
    assert.equal(denied.code, 'ERR_STREAM_LIMIT');
    assert.deepEqual(
      (denied.active as Array<{ deviceId: string }>).map((a) => a.deviceId),
      ['node-tv'],
    );
    assert.equal(stopped.state, 'stopped');
    await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'pkg-node')).length === 0, 5000);
  });

  describe('Chromium, from the minified browser build with an import map', () => {
    let browser: Browser;
    let site: Server;
    before(async () => {
      const page = `<!doctype html><meta charset="utf-8"><title>player</title>
<script type="importmap">{"imports":{"${NAME}":"/node_modules/${NAME}/dist/browser/index.js"}}</script>
<script type="module">
  import { StreamLease, StreamLimitError } from '${NAME}';
  window.play = async (url, token) => {
    const out = {};
    const tv = new StreamLease({ url, getToken: () => token, contentId: 'match-2' });
    const grant = await tv.start();
    out.grant = { userId: grant.userId, deviceId: grant.deviceId, limit: grant.limit, active: grant.active };
    out.storedDeviceId = localStorage.getItem('sigma-stream.deviceId');
    const other = new StreamLease({ url, getToken: () => token, deviceId: 'browser-2' });
    try { await other.start(); out.second = 'granted'; }
    catch (err) { out.second = { isLimit: err instanceof StreamLimitError, active: err.active.map((a) => a.deviceId), message: err.viewerMessage }; }
    tv.stop();
    out.state = tv.state;
    return out;
  };
  document.title = 'ready';
</script>`;
      site = await serve(project, { '/': page });
      browser = await launchChromium();
    });
    after(async () => {
      await browser?.close();
      await new Promise((r) => site?.close(r));
    });

    test(
      'a page plays, its device id is kept in localStorage, the second device is denied, the token stays out of URLs',
      BOUNDED,
      async () => {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(String(e)));
        const sockets: string[] = [];
        page.on('websocket', (s) => sockets.push(s.url()));
        await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`);
        await page.waitForFunction(() => document.title === 'ready', undefined, { timeout: 10_000 });
        const token = await mintToken('pkg-browser', { maxStreams: 1 });
        const out = (await page.evaluate(
          ([url, t]) => (window as unknown as { play: (u: string, t: string) => Promise<unknown> }).play(url, t),
          [gw.url, token],
        )) as {
          grant: { userId: string; deviceId: string; limit: number; active: number };
          storedDeviceId: string;
          second: { isLimit: boolean; active: string[]; message: string };
          state: string;
        };
        assert.equal(out.grant.userId, 'pkg-browser');
        assert.match(out.grant.deviceId, /^web-/);
        assert.equal(out.storedDeviceId, out.grant.deviceId, 'the browser keeps its device id');
        assert.deepEqual([out.grant.limit, out.grant.active], [1, 1]);
        assert.equal(out.second.isLimit, true);
        assert.deepEqual(out.second.active, [out.grant.deviceId]);
        assert.match(out.second.message, /1 device/);
        assert.equal(out.state, 'stopped');
        assert.equal(sockets.length, 2);
        for (const url of sockets) assert.ok(!url.includes(token) && !/bearer|token|eyJ/i.test(url), `no token in ${url}`);
        assert.deepEqual(errors, []);
        await eventually(async () => (await leaseEntries(gw.endpoint, gw.table, 'pkg-browser')).length === 0, 5000);
        await page.close();
      },
    );
  });
});
