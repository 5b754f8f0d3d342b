import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { connect, eventually } from './helpers/devices.js';
import { dynamoEndpoint, freePort } from './helpers/dynamodb-local.js';
import {
  FAST_TIMINGS,
  gatewayBehindProxy,
  leaseEntries,
  metric,
  newTable,
  ROOT,
  scanTable,
  spawnGateway,
  startGateway,
} from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const TTL = Number(FAST_TIMINGS.INSTANCE_TTL_MS);
const MARGIN = Number(FAST_TIMINGS.FENCING_MARGIN_MS);

describe('process lifecycle', () => {
  test('SIGTERM drains with 1012, hands every lease over, deletes the instance item and exits 0', async () => {
    const gw = await spawnGateway({ env: { DRAIN_MS: '1000' } });
    const token = await mintToken('tess');
    const devices = ['a', 'b', 'c'].map((device) => connect(gw.url, { token, device }));
    await Promise.all(devices.map((d) => d.decision));
    const endpoint = await dynamoEndpoint();
    const before = await scanTable(endpoint, gw.table);
    assert.equal(before.filter((i) => i.pk.S!.startsWith('instance#')).length, 1);

    const sentAt = performance.now();
    gw.kill('SIGTERM');
    const closes = await Promise.all(devices.map((d) => d.closed));
    assert.deepEqual(
      closes.map((c) => c.code),
      [1012, 1012, 1012],
    );
    const { code } = await gw.exited;
    const tookMs = performance.now() - sentAt;
    assert.equal(code, 0);
    assert.ok(tookMs < 1000 + 3000, `exited after ${Math.round(tookMs)} ms`);
    const spread = Math.max(...devices.map((d) => d.closedAt!)) - Math.min(...devices.map((d) => d.closedAt!));
    assert.ok(spread >= 200, `closes spread over the drain window (${Math.round(spread)} ms)`);

    const items = await scanTable(endpoint, gw.table);
    assert.deepEqual(
      items.filter((i) => i.pk.S!.startsWith('instance#')),
      [],
      'instance item deleted',
    );
    // Nothing was given back: the entries wait for their devices' hand-off and died with the instance item.
    assert.deepEqual(await leaseEntries(endpoint, gw.table, 'tess'), ['a', 'b', 'c']);
    assert.ok(gw.lines.some((l) => l.includes('"msg":"stopped"')));
    const b = await startGateway({ table: gw.table });
    try {
      const others = ['d', 'e', 'f'].map((device) => connect(b.url, { token, device }));
      assert.deepEqual(
        (await Promise.all(others.map((d) => d.decision))).map((f) => f.type),
        ['granted', 'granted', 'granted'],
        'devices that did not come back hold no slot',
      );
      await Promise.all(others.map((d) => d.close()));
    } finally {
      await b.stop();
    }
  });

  test('with DRAIN_HANDOFF=false the drain gives each lease back before it closes the socket: a device back at once elsewhere gets the fast path', async (t) => {
    const table = newTable();
    // A's store answers 300 ms late: a release sent after the close would still be on its way when the device is back.
    const { proxy, gw: a } = await gatewayBehindProxy(t, { table, env: { DRAIN_MS: '600', DRAIN_HANDOFF: 'false' } });
    const b = await startGateway({ table });
    t.after(() => b.stop());
    const token = await mintToken('hugo');
    const devices = ['tv', 'phone'].map((device) => connect(a.url, { token, device }));
    await Promise.all(devices.map((d) => d.decision));
    proxy.set('delay', { delayMs: 300 });
    const endpoint = await dynamoEndpoint();

    const stopping = a.stop();
    const back = await Promise.all(
      devices.map(async (d, i) => {
        const { code } = await d.closed;
        // What the table holds the moment the device hears 1012, and the device reconnecting at once through B.
        const left = await leaseEntries(endpoint, table, 'hugo');
        const again = connect(b.url, { token, device: ['tv', 'phone'][i] });
        return { code, left, decision: (await again.decision).type, again };
      }),
    );
    await stopping;
    for (const [i, r] of back.entries()) {
      assert.equal(r.code, 1012);
      assert.ok(
        !r.left.includes(['tv', 'phone'][i]),
        `the ${['tv', 'phone'][i]}'s lease was gone when it heard 1012 (left: ${r.left.join(', ')})`,
      );
      assert.equal(r.decision, 'granted');
    }
    // Each return was one conditional write that succeeded: no failed condition, so no replacement of a stale entry.
    const text = await (await fetch(`${b.opsUrl}/metrics`)).text();
    assert.equal(metric(text, 'sigma_dynamodb_requests_total{operation="UpdateItem",outcome="conditional_failed"}'), 0);
    await Promise.all(back.map((r) => r.again.close()));
  });

  test('a drain whose store does not answer still closes every socket in time, and the releases land once it is back', async (t) => {
    const drainMs = 400;
    const requestTimeoutMs = 300;
    const { proxy, gw } = await gatewayBehindProxy(t, {
      env: { DRAIN_MS: String(drainMs), DYNAMODB_REQUEST_TIMEOUT_MS: String(requestTimeoutMs) },
    });
    const token = await mintToken('vera');
    const devices = ['tv', 'phone', 'tablet'].map((device) => connect(gw.url, { token, device }));
    await Promise.all(devices.map((d) => d.decision));
    proxy.set('blackhole');
    const startedAt = performance.now();
    const stopping = gw.stop();
    const closes = await Promise.all(devices.map((d) => d.closed));
    const lastMs = Math.max(...devices.map((d) => d.closedAt!)) - startedAt;
    assert.deepEqual(
      closes.map((c) => c.code),
      [1012, 1012, 1012],
    );
    // The README's bound: DRAIN_MS + max(DRAIN_MS, DYNAMODB_REQUEST_TIMEOUT_MS), plus a second for the machine.
    assert.ok(lastMs < drainMs + Math.max(drainMs, requestTimeoutMs) + 1000, `last 1012 after ${Math.round(lastMs)} ms`);
    proxy.set('pass');
    await stopping;
    assert.deepEqual(await leaseEntries(await dynamoEndpoint(), gw.table, 'vera'), [], 'every release landed once the store answered');
  });

  test('/readyz turns 503 at once when draining, and new upgrades get 503', async () => {
    const gw = await startGateway({ env: { DRAIN_MS: '1500' } });
    const token = await mintToken('rita');
    // Two sockets: their closes are spread over the window, so the gateway is still draining below.
    const devices = ['tv', 'phone'].map((device) => connect(gw.url, { token, device }));
    await Promise.all(devices.map((d) => d.decision));
    assert.equal((await fetch(`${gw.opsUrl}/readyz`)).status, 200);
    assert.equal((await fetch(`${gw.opsUrl}/healthz`)).status, 200);
    const stopping = gw.stop();
    const late = connect(gw.url, { token, device: 'laptop' });
    const refused = new Promise<number>((resolve) => late.ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
    const ready = await fetch(`${gw.opsUrl}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(await ready.text(), /draining/);
    assert.equal(await refused, 503);
    assert.deepEqual(
      (await Promise.all(devices.map((d) => d.closed))).map((c) => c.code),
      [1012, 1012],
    );
    await stopping;
  });

  test("a SIGKILLed gateway's slots are taken over by another gateway within the instance TTL", async () => {
    const table = newTable();
    const victim = await spawnGateway({ table });
    const token = await mintToken('kyle');
    const devices = ['a', 'b', 'c'].map((device) => connect(victim.url, { token, device }));
    await Promise.all(devices.map((d) => d.decision));
    const survivor = await startGateway({ table });
    try {
      assert.equal((await connect(survivor.url, { token, device: 'd' }).closed).code, 4429);
      victim.kill('SIGKILL');
      const killedAt = performance.now();
      await victim.exited;
      let admittedAt = 0;
      await eventually(
        async () => {
          const d = connect(survivor.url, { token, device: 'd' });
          const frame = await d.decision.catch(() => ({ type: 'closed' }));
          if (frame.type === 'granted') {
            admittedAt = performance.now();
            await d.close();
            return true;
          }
          return false;
        },
        TTL + 4000,
        100,
      );
      const after = admittedAt - killedAt;
      assert.ok(after >= TTL - MARGIN, `admitted ${Math.round(after)} ms after SIGKILL (not before TTL - margin)`);
      assert.ok(after <= TTL + 2000, `admitted ${Math.round(after)} ms after SIGKILL (TTL ${TTL} ms)`);
    } finally {
      await survivor.stop();
    }
  });

  test('a fresh clone serves on the embedded store with no configuration', async () => {
    const port = await freePort();
    const opsPort = await freePort();
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      OPS_PORT: String(opsPort),
      HOST: '127.0.0.1',
    };
    const proc = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await eventually(() => out.includes('"msg":"listening"'), 20_000);
      assert.match(out, /"store":"embedded"/);
      assert.match(out, /npm run --silent token/, 'tells a newcomer how to try it');
      const tokenProc = spawn(process.execPath, ['--import', 'tsx', 'src/token-cli.ts', 'newcomer'], {
        cwd: ROOT,
        env,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let token = '';
      tokenProc.stdout.on('data', (d: Buffer) => (token += d.toString()));
      await new Promise((r) => tokenProc.on('exit', r));
      const d = connect(`ws://127.0.0.1:${port}`, { token: token.trim(), device: 'laptop' });
      assert.equal((await d.decision).type, 'granted');
      await d.close();
      assert.equal((await fetch(`http://127.0.0.1:${opsPort}/readyz`)).status, 200);
    } finally {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.on('exit', r));
    }
  });
});
