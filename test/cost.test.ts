/**
 * What each step costs in DynamoDB requests, counted twice: by the gateway's
 * own sigma_dynamodb_requests_total and by a proxy in front of the store.
 * The README's cost table is this test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, eventually, type Device } from './helpers/devices.js';
import { dynamoEndpoint } from './helpers/dynamodb-local.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { newTable, spawnGateway, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

/** Sum of sigma_dynamodb_requests_total by operation. */
function requestsByOperation(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^sigma_dynamodb_requests_total\{operation="(\w+)",outcome="\w+"\} (\d+)/gm)) {
    out.set(m[1], (out.get(m[1]) ?? 0) + Number(m[2]));
  }
  return out;
}

describe('DynamoDB requests per step', () => {
  let proxy: FaultProxy;
  let otherProxy: FaultProxy;
  let gw: TestGateway;
  let other: TestGateway;
  // Slow heartbeats and no reconcile during the counted steps.
  const quiet = { INSTANCE_HEARTBEAT_MS: '60000', INSTANCE_TTL_MS: '240000', FENCING_MARGIN_MS: '60000', RECONCILE_INTERVAL_MS: '600000' };
  before(async () => {
    const endpoint = await dynamoEndpoint();
    const table = newTable();
    proxy = await startFaultProxy(endpoint);
    otherProxy = await startFaultProxy(endpoint);
    gw = await startGateway({ table, endpoint: proxy.endpoint, env: quiet });
    other = await startGateway({ table, endpoint: otherProxy.endpoint, env: quiet });
  });
  after(async () => {
    await Promise.all([gw.stop(), other.stop()]);
    await Promise.all([proxy.close(), otherProxy.close()]);
  });

  /** Runs a step and returns what reached the store, checking both counts agree. */
  async function cost(step: () => Promise<void>): Promise<Record<string, number>> {
    // What the previous step left in flight (a release after a close) lands first, or it is counted here.
    let before = requestsByOperation(await gw.metrics());
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const now = requestsByOperation(await gw.metrics());
      if (JSON.stringify([...now]) === JSON.stringify([...before])) break;
      before = now;
    }
    proxy.resetCounts();
    await step();
    const tally = async () => {
      const after = requestsByOperation(await gw.metrics());
      const seen = Object.fromEntries([...proxy.counts].sort());
      const counted = Object.fromEntries(
        [...after]
          .map(([op, n]) => [op, n - (before.get(op) ?? 0)] as const)
          .filter(([, n]) => n > 0)
          .sort(),
      );
      return { seen, counted };
    };
    // The gateway books a request when its answer is in: one whose reply is on its way is seen by the proxy first.
    await eventually(async () => {
      const { seen, counted } = await tally();
      return JSON.stringify(seen) === JSON.stringify(counted);
    }, 2000).catch(() => {});
    const { seen, counted } = await tally();
    assert.deepEqual(counted, seen, 'the gateway counts every request that reached the store');
    return seen;
  }

  test('admission below the limit: 1 UpdateItem; release: 1 UpdateItem', async () => {
    const token = await mintToken('yara');
    let d = connect(gw.url, { token, device: 'warmup' });
    await d.decision;
    await d.close();
    await eventually(() => proxy.counts.get('UpdateItem') === 2);
    // The gateway books a request when its reply is back: wait for that too, or it lands in the next step.
    await eventually(async () => requestsByOperation(await gw.metrics()).get('UpdateItem') === 2);

    assert.deepEqual(
      await cost(async () => {
        d = connect(gw.url, { token, device: 'tv' });
        await d.decision;
      }),
      { UpdateItem: 1 },
    );
    assert.deepEqual(
      await cost(async () => {
        await d.close();
        await eventually(() => proxy.counts.get('UpdateItem') === 1);
        await new Promise((r) => setTimeout(r, 100));
      }),
      { UpdateItem: 1 },
    );
  });

  test('a plan with every cap (total, per content, per class): still 1 UpdateItem per admission and per release', async () => {
    const token = await mintToken('plan-cost', {
      claims: { max_streams_per_content: 2, max_streams_by_class: { tv: 1, mobile: 2 }, device_class: 'mobile' },
    });
    let d: Device | undefined;
    assert.deepEqual(
      await cost(async () => {
        d = connect(gw.url, { token, device: 'phone', content: 'match' });
        assert.equal((await d.decision).type, 'granted');
      }),
      { UpdateItem: 1 },
    );
    assert.deepEqual(
      await cost(async () => {
        await d!.close();
        await eventually(() => proxy.counts.get('UpdateItem') === 1);
        await new Promise((r) => setTimeout(r, 100));
      }),
      { UpdateItem: 1 },
    );
  });

  test('denial: 1 UpdateItem when every lease is on this gateway, plus 1 BatchGetItem when others hold some', async (t) => {
    const token = await mintToken('zoe');
    const held = ['a', 'b', 'c'].map((device) => connect(gw.url, { token, device }));
    t.after(() => Promise.all(held.map((d) => d.close())));
    await Promise.all(held.map((d) => d.decision));
    assert.deepEqual(
      await cost(async () => {
        await connect(gw.url, { token, device: 'd' }).closed;
      }),
      { UpdateItem: 1 },
    );

    await held[0].close();
    await eventually(
      async () => (await connect(other.url, { token, device: 'remote' }).decision.catch(() => ({ type: 'x' }))).type === 'granted',
    );
    assert.deepEqual(
      await cost(async () => {
        await connect(gw.url, { token, device: 'd' }).closed;
      }),
      { BatchGetItem: 1, UpdateItem: 1 },
    );
  });

  test('the same device again through another gateway: a failed write, 1 BatchGetItem, the write and its mailbox note; with handoff on the same one: 1 write (and the no-op release)', async () => {
    const token = await mintToken('ruth');
    const first = connect(other.url, { token, device: 'tv' });
    await first.decision;
    let again: Device | undefined;
    const seen = await cost(async () => {
      again = connect(gw.url, { token, device: 'tv' });
      assert.equal((await again.decision).type, 'granted');
      // The note lands in the other gateway's mailbox (read with its next, slow, heartbeat).
      await eventually(() => proxy.counts.get('UpdateItem') === 3);
    });
    assert.deepEqual(seen, { BatchGetItem: 1, UpdateItem: 3 }, 'its instance was just read: no GetItem before the note');
    const { leaseId } = (await again!.decision) as { leaseId: string };
    let refreshed: Device | undefined;
    const handedOver = await cost(async () => {
      // A token-refresh socket through the other gateway: the SDK names the lease it replaces.
      refreshed = connect(gw.url, { token, device: 'tv', handoff: leaseId });
      assert.equal((await refreshed.decision).type, 'granted');
      assert.equal((await again!.closed).code, 4409);
      await eventually(() => proxy.counts.get('UpdateItem') === 2);
      await new Promise((r) => setTimeout(r, 200));
    });
    // Both sockets on gw: the hand-off reads nothing, the note is a local close, and the replaced socket's
    // conditional release (a revocation always sends one) finds the entry taken over and changes nothing.
    assert.deepEqual(handedOver, { UpdateItem: 2 });
    await Promise.all([refreshed!.close(), first.close()]);
  });

  test('drain: 1 UpdateItem marking the instance, none per lease; each return with handoff: 1 UpdateItem', async (t) => {
    const drainProxy = await startFaultProxy(await dynamoEndpoint());
    const draining = await startGateway({ table: gw.table, endpoint: drainProxy.endpoint, env: { ...quiet, DRAIN_MS: '200' } });
    t.after(() => drainProxy.close());
    const users = ['dana', 'eli', 'fay', 'gus', 'hal'];
    const held = await Promise.all(
      users.map(async (user) => {
        const token = await mintToken(user);
        const d = connect(draining.url, { token, device: 'tv' });
        return { token, leaseId: ((await d.decision) as { leaseId: string }).leaseId, device: d };
      }),
    );
    drainProxy.resetCounts();
    await draining.stop();
    assert.deepEqual(
      held.map((h) => h.device.closedAt !== undefined),
      users.map(() => true),
    );
    assert.deepEqual(
      Object.fromEntries([...drainProxy.counts].sort()),
      { DeleteItem: 1, UpdateItem: 1 },
      'the mark and the instance delete',
    );

    const back: Device[] = [];
    const seen = await cost(async () => {
      for (const h of held) {
        const d = connect(gw.url, { token: h.token, device: 'tv', handoff: h.leaseId });
        assert.equal((await d.decision).type, 'granted');
        back.push(d);
      }
      // Whether the drained instance wants a note for the entries replaced: read once, then known.
      await eventually(() => proxy.counts.get('GetItem') === 1);
    });
    assert.deepEqual(seen, { GetItem: 1, UpdateItem: users.length });
    await Promise.all(back.map((d) => d.close()));
  });

  /** A tv on a gateway that is then killed: its entry stays, its instance item not expired (slow heartbeats). */
  async function ghost(t: { after(fn: () => void): void }, userId: string): Promise<{ token: string; leaseId: string }> {
    const killed = await spawnGateway({ table: gw.table, env: quiet });
    t.after(() => killed.kill('SIGKILL'));
    const token = await mintToken(userId);
    const tv = connect(killed.url, { token, device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    killed.kill('SIGKILL');
    assert.equal((await tv.closed).code, 1006);
    return { token, leaseId };
  }

  /** The return of that tv through gw, with `param` naming its old lease, until the note to the killed one is sent. */
  async function comeBack(ghostOf: { token: string; leaseId: string }, param: 'handoff' | 'previous', updates: number) {
    let back: Device | undefined;
    const seen = await cost(async () => {
      back = connect(gw.url, { token: ghostOf.token, device: 'tv', [param]: ghostOf.leaseId });
      assert.equal((await back.decision).type, 'granted');
      // Its instance item has not expired: it may only be frozen, so the replaced socket there is told.
      await eventually(() => proxy.counts.get('UpdateItem') === updates);
    });
    await back!.close();
    return seen;
  }

  test('return with handoff to an entry whose gateway cannot give it back (killed, fenced): 1 UpdateItem, and while its instance item lives 1 GetItem and the note', async (t) => {
    assert.deepEqual(await comeBack(await ghost(t, 'ivy'), 'handoff', 2), { GetItem: 1, UpdateItem: 2 });
  });

  test('return with previous to an entry still there (its gateway killed): the failed write, the hand-off, 1 GetItem and the note', async (t) => {
    assert.deepEqual(await comeBack(await ghost(t, 'ivo'), 'previous', 3), { GetItem: 1, UpdateItem: 3 });
  });

  test('return with previous after a lost socket whose entry went back (its gateway saw it end): 1 UpdateItem', async () => {
    const token = await mintToken('jax');
    const tv = connect(gw.url, { token, device: 'tv' });
    const { leaseId } = (await tv.decision) as { leaseId: string };
    await tv.close();
    let back: Device | undefined;
    const seen = await cost(async () => {
      back = connect(gw.url, { token, device: 'tv', previous: leaseId });
      assert.equal((await back.decision).type, 'granted');
    });
    assert.deepEqual(seen, { UpdateItem: 1 }, 'the admission of a new device, its condition also looking for a stop mark');
    await back!.close();
  });

  test('heartbeat: 1 UpdateItem per beat per gateway, whatever the number of open streams', async (t) => {
    const endpoint = await dynamoEndpoint();
    const beatProxy = await startFaultProxy(endpoint);
    const beating = await startGateway({
      endpoint: beatProxy.endpoint,
      env: {
        INSTANCE_HEARTBEAT_MS: '400',
        INSTANCE_TTL_MS: '4000',
        ADMISSION_TIMEOUT_MS: '5000',
        RECONCILE_INTERVAL_MS: '600000',
        PING_INTERVAL_MS: '60000',
        PONG_TIMEOUT_MS: '10000',
      },
    });
    t.after(async () => {
      await beating.stop();
      await beatProxy.close();
    });
    const window = async (): Promise<number> => {
      beatProxy.resetCounts();
      await new Promise((r) => setTimeout(r, 2400));
      return beatProxy.total();
    };
    const idle = await window();
    const devices: Device[] = [];
    for (let i = 0; i < 40; i++) {
      const d = connect(beating.url, { token: await mintToken(`viewer-${i}`), device: 'tv' });
      assert.equal((await d.decision).type, 'granted');
      devices.push(d);
    }
    t.after(() => Promise.all(devices.map((d) => d.close())));
    const busy = await window();
    assert.ok(idle >= 4 && idle <= 8, `~6 beats in 2.4 s idle, saw ${idle}`);
    assert.ok(Math.abs(busy - idle) <= 1, `40 open streams cost no extra requests (idle ${idle}, busy ${busy})`);
    assert.deepEqual([...beatProxy.counts.keys()], ['UpdateItem']);
  });

  test('reconcile: 1 BatchGetItem per round while a user streams here or ended a stream within the horizon, none after', async (t) => {
    const readProxy = await startFaultProxy(await dynamoEndpoint());
    const env = { ...quiet, RECONCILE_INTERVAL_MS: '200', UNCERTAIN_WRITE_HORIZON_MS: '1200' };
    const reading = await startGateway({ endpoint: readProxy.endpoint, env });
    t.after(async () => {
      await reading.stop();
      await readProxy.close();
    });
    const reads = async (ms: number): Promise<number> => {
      readProxy.resetCounts();
      await new Promise((r) => setTimeout(r, ms));
      return readProxy.counts.get('BatchGetItem') ?? 0;
    };
    assert.equal(await reads(600), 0, 'nobody to read');
    const d = connect(reading.url, { token: await mintToken('reader'), device: 'tv' });
    assert.equal((await d.decision).type, 'granted');
    const streaming = await reads(1000);
    assert.ok(streaming >= 1 && streaming <= 6, `one read a round of 200 ms while it streams (at most 6 in 1 s), saw ${streaming}`);
    await d.close();
    // A late copy of its admission could still land (a proxy on the way may have copied it): read on.
    const ended = await reads(1000);
    assert.ok(ended >= 1 && ended <= 6, `still read within the horizon after it ended (at most 6 in 1 s), saw ${ended}`);
    // Past the horizon, and one read that began after it: nothing left to read.
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(await reads(800), 0, 'no reads after the horizon');
  });
});
