import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { connect } from './helpers/devices.js';
import { FAST_TIMINGS, leaseEntries, startPair, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const HEARTBEAT = Number(FAST_TIMINGS.INSTANCE_HEARTBEAT_MS);

function http(gw: TestGateway): string {
  return gw.url.replace('ws://', 'http://');
}

async function api(
  gw: TestGateway,
  method: string,
  path: string,
  token?: string,
  init: RequestInit = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(http(gw) + path, {
    method,
    ...init,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(init.headers as Record<string, string>) },
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

describe('REST: see and stop devices', () => {
  let a: TestGateway;
  let b: TestGateway;
  before(async () => {
    [a, b] = await startPair();
  });
  after(() => Promise.all([a.stop(), b.stop()]));

  test("GET /v1/streams lists the caller's live streams", async (t) => {
    const token = await mintToken('lena', { maxStreams: 4 });
    const tv = connect(a.url, { token, device: 'tv', content: 'film-1' });
    const phone = connect(b.url, { token, device: 'phone' });
    t.after(() => Promise.all([tv.close(), phone.close()]));
    const grants = await Promise.all([tv.decision, phone.decision]);
    const { status, body } = await api(a, 'GET', '/v1/streams', token);
    assert.equal(status, 200);
    assert.equal(body.userId, 'lena');
    assert.equal(body.limit, 4);
    assert.deepEqual(body.streams.map((s: any) => s.deviceId).sort(), ['phone', 'tv']);
    const tvView = body.streams.find((s: any) => s.deviceId === 'tv');
    assert.equal(tvView.contentId, 'film-1');
    assert.equal(tvView.leaseId, grants[0].leaseId);
    assert.match(tvView.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  test('DELETE /v1/streams/<device> stops a device on another gateway with 4403 within heartbeat + 1 s', async (t) => {
    const token = await mintToken('mona');
    const tv = connect(a.url, { token, device: 'tv' });
    const phone = connect(a.url, { token, device: 'phone' });
    t.after(() => phone.close());
    await Promise.all([tv.decision, phone.decision]);
    const sentAt = performance.now();
    const res = await api(b, 'DELETE', '/v1/streams/tv', token);
    assert.equal(res.status, 204);
    const close = await tv.closed;
    const tookMs = tv.closedAt! - sentAt;
    assert.equal(close.code, 4403);
    assert.match(close.reason, /revoked/);
    assert.ok(tookMs <= HEARTBEAT + 1000, `closed after ${Math.round(tookMs)} ms`);
    assert.deepEqual(await leaseEntries(a.endpoint, a.table, 'mona'), ['phone']);
    assert.equal(phone.ws.readyState, phone.ws.OPEN, 'the other device plays on');
    assert.equal((await api(b, 'DELETE', '/v1/streams/tv', token)).status, 404, 'already stopped');
  });

  test("operators with sigma:admin see and stop any user's devices; others get 403", async (t) => {
    const user = await mintToken('nina');
    const tv = connect(a.url, { token: user, device: 'tv' });
    await tv.decision;
    t.after(() => tv.close());
    for (const scope of ['openid sigma:admin', ['sigma:admin']]) {
      const admin = await mintToken('support-1', { scope });
      const list = await api(b, 'GET', '/v1/users/nina/streams', admin);
      assert.equal(list.status, 200, JSON.stringify(scope));
      assert.deepEqual(
        list.body.streams.map((s: any) => s.deviceId),
        ['tv'],
      );
    }
    const notAdmin = await mintToken('nosy', { scope: 'sigma:user sigma:administrator' });
    const denied = await api(b, 'GET', '/v1/users/nina/streams', notAdmin);
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error.code, 'forbidden');
    assert.equal((await api(b, 'DELETE', '/v1/users/nina/streams/tv', notAdmin)).status, 403);
    assert.equal(tv.ws.readyState, tv.ws.OPEN);

    const admin = await mintToken('support-1', { scope: 'sigma:admin' });
    assert.equal((await api(b, 'DELETE', '/v1/users/nina/streams/tv', admin)).status, 204);
    assert.equal((await tv.closed).code, 4403);
  });

  test('errors are JSON with a stable code and the right status, never a stack trace', async () => {
    const token = await mintToken('olga');
    const cases: Array<[string, string, string | undefined, number, string, RequestInit?]> = [
      ['GET', '/v1/streams', undefined, 401, 'unauthorized'],
      ['GET', '/v1/streams', 'garbage', 401, 'unauthorized'],
      ['POST', '/v1/streams', token, 405, 'method_not_allowed'],
      ['GET', '/v1/streams/tv', token, 405, 'method_not_allowed'],
      ['DELETE', '/v1/streams/bad%20device', token, 400, 'bad_device'],
      ['DELETE', '/v1/streams/%E0%A4%A', token, 400, 'bad_path'],
      ['DELETE', '/v1/streams/nothing-here', token, 404, 'no_stream'],
      ['GET', '/v1/nowhere', token, 404, 'not_found'],
      ['DELETE', '/v1/streams/tv', token, 413, 'body_too_large', { body: 'x'.repeat(5000) }],
    ];
    for (const [method, path, tok, status, code, init] of cases) {
      const res = await api(a, method, path, tok, init);
      assert.equal(res.status, status, `${method} ${path}`);
      assert.equal(res.body.error.code, code, `${method} ${path}`);
      assert.equal(typeof res.body.error.message, 'string');
      assert.doesNotMatch(JSON.stringify(res.body), /at \w+ \(|\.ts:\d+/);
    }
    const res = await api(a, 'GET', '/v1/streams');
    assert.equal(res.headers.get('www-authenticate'), 'Bearer');
    assert.equal(res.headers.get('allow'), null);
    assert.equal((await api(a, 'POST', '/v1/streams', token)).headers.get('allow'), 'GET');
  });
});
