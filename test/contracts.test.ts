/**
 * The machine-readable contracts, checked against the code and a running
 * gateway so they cannot drift:
 *
 *   docs/openapi.yaml   validated by @readme/openapi-parser (OpenAPI 3.1); every
 *                       route the two servers answer is in it (probed black-box),
 *                       and every operation in it is answered with a documented
 *                       status and a body that fits the documented schema
 *   docs/asyncapi.yaml  validated by @asyncapi/parser (AsyncAPI 3); its close codes
 *                       are the catalog of src/close-codes.ts with the same
 *                       reconnect rules; every frame a live gateway sends fits one
 *                       documented message, and every documented message is seen
 *
 * Also: the development banner names URLs the gateway answers.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Parser as AsyncApiParser } from '@asyncapi/parser';
import { dereference, validate } from '@readme/openapi-parser';
import { Ajv as Ajv07 } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';
import { ERROR_FRAME_CODES, reconnectRule } from '../src/client/protocol.js';
import { CLOSE } from '../src/close-codes.js';
import { DEV_JWT_SECRET } from '../src/config.js';
import { HTTP_ERRORS } from '../src/http-errors.js';
import { COLD_STORE } from './helpers/cold-store.js';
import { connect, eventually, type Device } from './helpers/devices.js';
import { gatewayEnv, ROOT, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

const OPENAPI_FILE = join(ROOT, 'docs/openapi.yaml');
const ASYNCAPI_FILE = join(ROOT, 'docs/asyncapi.yaml');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
type Method = (typeof METHODS)[number];

interface Operation {
  'x-sigma-status'?: string;
  'x-sigma-availability'?: string;
  responses: Record<string, { description?: string; headers?: Record<string, unknown>; content?: Record<string, { schema?: object }> }>;
}
interface OpenApi {
  paths: Record<string, Partial<Record<Method, Operation>> & { servers?: Array<{ url: string }> }>;
}

/** Which server a path is on: the ops port when its path item names the ops server. */
const onOps = (item: OpenApi['paths'][string]): boolean => (item.servers ?? []).some((s) => s.url.includes('{opsPort}'));

/** `/v1/users/{userId}/streams` -> a regex matching one concrete path. */
function templateRegex(template: string): RegExp {
  const escaped = template.split(/\{[^}]+\}/).map((s) => s.replace(/[.*+?^$()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${escaped.join('[^/]+')}$`);
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  type: string;
  body: string;
}

async function call(base: string, path: string, method = 'GET', headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  const res = await fetch(base + path, { method, headers, body, redirect: 'manual' });
  const text = method === 'HEAD' ? '' : await res.text();
  return {
    status: res.status,
    headers: Object.fromEntries(res.headers),
    type: (res.headers.get('content-type') ?? '').split(';')[0],
    body: text,
  };
}

/** A plain HTTP 404 meaning "no route here" on either server (other 404s carry another error code). */
function notARoute(a: Answer): boolean {
  if (a.status !== 404) return false;
  if (a.type !== 'application/json') return true;
  return (JSON.parse(a.body) as { error?: { code?: string } }).error?.code === 'not_found';
}

/** Status of a WebSocket handshake at `path`: 101 when upgraded (the socket is closed at once). */
function upgradeStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Runs `work` over `items` with at most `n` in flight. */
async function pool<T, R>(items: T[], n: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await work(items[i]);
      }
    }),
  );
  return out;
}

describe('docs/openapi.yaml against the servers', () => {
  let raw: OpenApi;
  let api: OpenApi;
  let gw: TestGateway;
  let pub: string;
  let ops: string;
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats.default(ajv);
  const token = (user: string, opts: Parameters<typeof mintToken>[1] = {}) => mintToken(user, { secret: DEV_JWT_SECRET, ...opts });

  before(async () => {
    raw = parse(readFileSync(OPENAPI_FILE, 'utf8')) as OpenApi;
    const copy: any = structuredClone(raw);
    api = await dereference(copy);
    // The development secret: the demo page and its token route exist, as on a developer's machine.
    gw = await startGateway({ env: { ...COLD_STORE, JWT_SECRET: '' } });
    pub = `http://127.0.0.1:${gw.app.port}`;
    ops = gw.opsUrl;
  });
  after(() => gw?.stop());

  const operations = () =>
    Object.entries(api.paths).flatMap(([path, item]) =>
      METHODS.filter((m) => item[m]).map((m) => ({ path, method: m, op: item[m]!, ops: onOps(item) })),
    );

  test('is a valid OpenAPI 3.1 document (a real parser, no warnings)', async () => {
    const result = await validate(structuredClone(raw) as never);
    assert.equal(result.valid, true, JSON.stringify(result, null, 2));
    assert.deepEqual(result.warnings, []);
    assert.match(String((raw as unknown as { openapi: string }).openapi), /^3\.1\./);
  });

  test('every route the servers answer is in it (black-box probe of both ports)', { timeout: 60_000 }, async () => {
    // Candidate segments: every path literal in src/ (any file, so new route files count), every segment
    // compared in code that reads requests, the document's segments, and filler.
    const words = new Set<string>(['x', 'v1', 'v2', 'api', 'admin', 'index.html', '.well-known']);
    for (const file of readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'))) {
      const source = readFileSync(join(ROOT, 'src', file), 'utf8');
      for (const m of source.matchAll(/['"`](\/[A-Za-z0-9._-]*(?:\/[A-Za-z0-9._-]+)*)['"`]/g)) {
        for (const seg of m[1].split('/')) if (seg) words.add(seg);
      }
      if (/IncomingMessage|req\.url/.test(source)) for (const m of source.matchAll(/=== '([A-Za-z0-9._-]+)'/g)) words.add(m[1]);
    }
    for (const path of Object.keys(raw.paths)) for (const seg of path.split('/')) if (seg && !seg.startsWith('{')) words.add(seg);
    const vocab = [...words];
    // `//x` too: a request target that URL parsing could read as a host.
    const candidates = new Set<string>(['/', '//x', '//demo/demo.css']);
    for (const a of vocab) {
      candidates.add(`/${a}`);
      for (const b of vocab) candidates.add(`/${a}/${b}`);
    }
    // Deeper: every prefix of a documented path (parameters filled in), extended by one more segment.
    for (const path of Object.keys(raw.paths)) {
      const segs = path
        .split('/')
        .slice(1)
        .map((s) => (s.startsWith('{') ? 'x' : s));
      for (let i = 1; i <= segs.length; i++) for (const w of vocab) candidates.add(`/${[...segs.slice(0, i), w].join('/')}`);
    }
    const documented = Object.entries(api.paths).map(([path, item]) => ({ path, item, re: templateRegex(path), ops: onOps(item) }));
    const find = (path: string, opsPort: boolean) => documented.find((d) => d.ops === opsPort && d.re.test(path));
    const paths = [...candidates];
    assert.ok(paths.length > 200, `probing ${paths.length} paths`);
    process.stdout.write(`# probing ${paths.length} paths over ${vocab.length} segments on each port\n`);

    const undocumented: string[] = [];
    for (const [base, opsPort] of [
      [pub, false],
      [ops, true],
    ] as const) {
      const answers = await pool(paths, 8, (p) => call(base, p));
      answers.forEach((a, i) => {
        const d = find(paths[i], opsPort);
        if (notARoute(a)) return;
        if (!d) undocumented.push(`${opsPort ? 'ops' : 'public'} GET ${paths[i]} -> ${a.status}`);
        else if (!d.item.get) {
          // Answered but GET is not documented: only a 405 naming the documented methods is fine.
          const allow = (a.headers.allow ?? '').toLowerCase().split(/,\s*/);
          if (a.status !== 405 || !allow.every((m) => d.item[m as Method]))
            undocumented.push(`${paths[i]}: GET -> ${a.status}, Allow ${a.headers.allow}`);
        }
      });
    }
    // WebSocket handshakes: only the documented upgrade path switches protocols.
    const shallow = paths.filter((p) => p.split('/').length <= 3);
    const upgrades = await pool(shallow, 8, (p) => upgradeStatus(gw.app.port, `${p}?device=probe`));
    shallow.forEach((p, i) => {
      if (upgrades[i] === 101 && p !== '/v1/lease') undocumented.push(`upgrade ${p} -> 101`);
    });
    assert.deepEqual(undocumented, [], 'routes answered but missing from docs/openapi.yaml');
    assert.equal(await upgradeStatus(gw.app.port, '/v1/lease?device=probe'), 101);
  });

  test('every operation in it is answered with a documented status, headers and body', { timeout: 60_000 }, async () => {
    const alice = await token('alice');
    const admin = await token('operator-1', { scope: 'sigma:admin' });
    const auth = (t: string) => ({ Authorization: `Bearer ${t}` });
    const tv: Device = connect(gw.url, { token: alice, device: 'tv', content: 'match-1' });
    const phone: Device = connect(gw.url, { token: alice, device: 'phone' });
    assert.equal((await tv.decision).type, 'granted');
    assert.equal((await phone.decision).type, 'granted');
    /** The freshest playback token a device holds (granted, then playback frames); read when a case runs. */
    const playbackOf = (d: Device) => (): string => {
      const f = d.frames.filter((x) => x.type === 'playback' || x.type === 'granted').at(-1) as {
        token?: string;
        playback?: { token: string };
      };
      return f.token ?? f.playback!.token;
    };
    const tvPlayback = playbackOf(tv);
    const phonePlayback = playbackOf(phone);

    /** One request per case: operation (template + method), the request, and the status it must get. */
    const cases: Array<{
      op: string;
      path: string;
      method?: string;
      headers?: Record<string, string> | (() => Record<string, string>);
      body?: string;
      expect: number;
      ops?: boolean;
    }> = [
      // A GET without Upgrade (a proxy that dropped the header, a browser tab): 426, saying what is missing.
      { op: 'get /v1/lease', path: '/v1/lease?device=tv', expect: 426 },
      { op: 'get /v1/streams', path: '/v1/streams', headers: auth(alice), expect: 200 },
      { op: 'get /v1/streams', path: '/v1/streams', expect: 401 },
      { op: 'get /v1/streams', path: '/v1/streams', method: 'POST', headers: auth(alice), expect: 405 },
      {
        op: 'delete /v1/streams/{deviceId}',
        path: '/v1/streams/tv',
        method: 'DELETE',
        headers: auth(alice),
        body: 'x'.repeat(2000),
        expect: 413,
      },
      { op: 'options /v1/streams', path: '/v1/streams', method: 'OPTIONS', headers: { Origin: 'https://player.example.com' }, expect: 204 },
      { op: 'delete /v1/streams/{deviceId}', path: '/v1/streams/bad%20id', method: 'DELETE', headers: auth(alice), expect: 400 },
      { op: 'delete /v1/streams/{deviceId}', path: '/v1/streams/nothing-here', method: 'DELETE', headers: auth(alice), expect: 404 },
      { op: 'get /v1/playback/authorize', path: '/v1/playback/authorize?live=1', headers: () => auth(phonePlayback()), expect: 204 },
      { op: 'delete /v1/streams/{deviceId}', path: '/v1/streams/phone', method: 'DELETE', headers: auth(alice), expect: 204 },
      { op: 'get /v1/playback/authorize', path: '/v1/playback/authorize?live=1', headers: () => auth(phonePlayback()), expect: 403 },
      { op: 'get /v1/playback/authorize', path: '/v1/playback/authorize', expect: 401 },
      { op: 'get /v1/playback/authorize', path: '/v1/playback/authorize', headers: () => auth(tvPlayback()), expect: 204 },
      { op: 'get /.well-known/jwks.json', path: '/.well-known/jwks.json', expect: 200 },
      { op: 'get /.well-known/jwks.json', path: '/.well-known/jwks.json', method: 'POST', expect: 405 },
      {
        op: 'options /v1/streams/{deviceId}',
        path: '/v1/streams/tv',
        method: 'OPTIONS',
        headers: { Origin: 'https://player.example.com' },
        expect: 204,
      },
      { op: 'get /v1/users/{userId}/streams', path: '/v1/users/alice/streams', headers: auth(admin), expect: 200 },
      { op: 'get /v1/users/{userId}/streams', path: '/v1/users/alice/streams', headers: auth(alice), expect: 403 },
      {
        op: 'options /v1/users/{userId}/streams',
        path: '/v1/users/alice/streams',
        method: 'OPTIONS',
        headers: { Origin: 'https://ops.example.com' },
        expect: 204,
      },
      {
        op: 'delete /v1/users/{userId}/streams/{deviceId}',
        path: '/v1/users/alice/streams/tv',
        method: 'DELETE',
        headers: auth(admin),
        expect: 204,
      },
      {
        op: 'delete /v1/users/{userId}/streams/{deviceId}',
        path: '/v1/users/alice/streams/tv',
        method: 'DELETE',
        headers: auth(admin),
        expect: 404,
      },
      {
        op: 'options /v1/users/{userId}/streams/{deviceId}',
        path: '/v1/users/alice/streams/tv',
        method: 'OPTIONS',
        headers: { Origin: 'https://ops.example.com' },
        expect: 204,
      },
      { op: 'get /metrics', path: '/metrics', ops: true, expect: 200 },
      { op: 'get /metrics', path: '/metrics', method: 'POST', ops: true, expect: 405 },
      { op: 'head /metrics', path: '/metrics', method: 'HEAD', ops: true, expect: 200 },
      { op: 'get /healthz', path: '/healthz', ops: true, expect: 200 },
      { op: 'head /healthz', path: '/healthz', method: 'HEAD', ops: true, expect: 200 },
      { op: 'get /readyz', path: '/readyz', ops: true, expect: 200 },
      { op: 'head /readyz', path: '/readyz', method: 'HEAD', ops: true, expect: 200 },
      { op: 'get /', path: '/', expect: 200 },
      { op: 'get /demo/demo.css', path: '/demo/demo.css', expect: 200 },
      { op: 'get /demo/page.js', path: '/demo/page.js', expect: 200 },
      { op: 'get /demo/player.html', path: '/demo/player.html', expect: 200 },
      { op: 'get /demo/player.js', path: '/demo/player.js', expect: 200 },
      { op: 'post /demo/token', path: '/demo/token?user=alice', method: 'POST', expect: 200 },
      { op: 'post /demo/token', path: '/demo/token?user=not%20ok', method: 'POST', expect: 400 },
      { op: 'post /demo/token', path: '/demo/token?user=alice', expect: 405 },
    ];

    const exercised = new Set<string>();
    for (const c of cases) {
      const [method, template] = c.op.split(' ') as [Method, string];
      const op = api.paths[template]?.[method];
      assert.ok(op, `${c.op} is in the document`);
      assert.equal(onOps(api.paths[template]), c.ops === true, `${c.op}: on the ${c.ops ? 'ops' : 'public'} port`);
      assert.match(c.path.split('?')[0], templateRegex(template));
      const a = await call(c.ops ? ops : pub, c.path, c.method ?? 'GET', typeof c.headers === 'function' ? c.headers() : c.headers, c.body);
      const what = `${c.method ?? 'GET'} ${c.path} (${c.op})`;
      assert.equal(a.status, c.expect, `${what}: ${a.body.slice(0, 200)}`);
      const documented = op.responses[String(a.status)];
      assert.ok(documented, `${what}: status ${a.status} is documented`);
      for (const name of Object.keys(documented.headers ?? {})) {
        if (name === 'Retry-After' || name.startsWith('X-')) continue;
        assert.ok(a.headers[name.toLowerCase()] !== undefined, `${what}: header ${name}`);
        const schema = (documented.headers![name] as { schema?: object }).schema;
        if (schema)
          assert.ok(
            ajv.validate(schema, a.headers[name.toLowerCase()]),
            `${what}: header ${name}=${a.headers[name.toLowerCase()]}: ${ajv.errorsText()}`,
          );
      }
      if (documented.content) {
        const media = documented.content[a.type];
        assert.ok(media, `${what}: content type ${a.type} is documented (${Object.keys(documented.content)})`);
        if (media.schema && a.body !== '') {
          const value = a.type === 'application/json' ? JSON.parse(a.body) : a.body;
          assert.ok(
            ajv.validate(media.schema, value),
            `${what}: body does not fit the schema: ${ajv.errorsText()}\n${a.body.slice(0, 300)}`,
          );
        }
      }
      exercised.add(c.op);
    }
    // The upgrade itself: the documented 101 and subprotocol answer.
    const browser = connect(gw.url, { token: alice, device: 'laptop', carriage: 'subprotocol' });
    assert.equal((await browser.decision).type, 'granted');
    assert.equal(browser.ws.protocol, 'sigma-stream.v1');
    await browser.close();
    exercised.add('get /v1/lease');
    await tv.close();
    await phone.close();

    const served = operations().filter((o) => o.op['x-sigma-status'] !== 'planned');
    assert.deepEqual(
      served.map((o) => `${o.method} ${o.path}`).filter((k) => !exercised.has(k)),
      [],
      'operations no case exercises',
    );
  });

  test('every HTTP error code of src/http-errors.ts is documented under its status', () => {
    const missing: string[] = [];
    for (const [code, { status }] of Object.entries(HTTP_ERRORS)) {
      const documented = operations().some((o) => o.op.responses[String(status)]?.description?.includes(`\`${code}\``));
      if (!documented) missing.push(`${status} ${code}`);
    }
    assert.deepEqual(missing, []);
  });

  test('routes marked x-sigma-status: planned are not served yet (remove the mark when they are)', async () => {
    const planned = operations().filter((o) => o.op['x-sigma-status'] === 'planned');
    assert.deepEqual(planned.map((o) => o.path).sort(), []);
    for (const o of planned) {
      const a = await call(o.ops ? ops : pub, o.path, o.method.toUpperCase());
      assert.ok(
        notARoute(a),
        `${o.method.toUpperCase()} ${o.path} answers ${a.status} now: drop its x-sigma-status: planned in docs/openapi.yaml and add a case above`,
      );
    }
  });
});

/**
 * Frames of the lease protocol, by direction, read from the one place both
 * ends share: the `ServerFrame` and `ClientFrame` unions of
 * src/client/protocol.ts (types only, so parsed from the source).
 */
function framesOf(union: string): string[] {
  const source = readFileSync(join(ROOT, 'src/client/protocol.ts'), 'utf8');
  // Up to the semicolon that ends the declaration (object types inside it have their own).
  const decl = source.match(new RegExp(`export type ${union} =([\\s\\S]+?);\\n`));
  assert.ok(decl, `src/client/protocol.ts declares ${union}`);
  const types = [...decl[1].matchAll(/type: '([a-z_]+)'/g)].map((m) => m[1]);
  for (const name of decl[1].match(/\b[A-Z]\w+Frame\b/g) ?? []) {
    const body = source.match(new RegExp(`interface ${name} \\{([^}]+)\\}`));
    assert.ok(body, `interface ${name} in src/client/protocol.ts`);
    types.push(body[1].match(/readonly type: '([a-z_]+)'/)![1]);
  }
  return types.sort();
}
const SERVER_FRAMES = framesOf('ServerFrame');
const CLIENT_FRAMES = framesOf('ClientFrame');

describe('docs/asyncapi.yaml against the gateway', () => {
  let doc: any;
  let raw: {
    channels: { lease: { 'x-close-codes': Array<{ code: number; name: string; reconnect: string }> } };
    components: { messages: { error: { payload: { properties: { code: { enum: string[] } } } } } };
  };
  const ajv = new Ajv07({ allErrors: true, strict: true });
  addFormats.default(ajv);
  ajv.addKeyword('x-parser-schema-id');

  before(async () => {
    const text = readFileSync(ASYNCAPI_FILE, 'utf8');
    raw = parse(text);
    const { document, diagnostics } = await new AsyncApiParser().parse(text);
    // Severity 0 is an error, 1 a warning: neither is allowed.
    const problems = diagnostics.filter((d) => Number(d.severity) <= 1).map((d) => `${d.code}: ${d.message} at ${d.path.join('.')}`);
    assert.deepEqual(problems, []);
    assert.ok(document, 'the parser returned a document');
    doc = document;
  });

  test('is a valid AsyncAPI 3 document with the frames of both directions', () => {
    assert.match(doc.version(), /^3\./);
    const sent = new Set<string>();
    const received = new Set<string>();
    for (const op of doc.operations().all()) {
      const ids: string[] = op
        .messages()
        .all()
        .map((m: { id(): string }) => m.id());
      for (const id of ids) (op.action() === 'send' ? sent : received).add(id);
      for (const m of op.reply()?.messages().all() ?? []) (op.action() === 'send' ? received : sent).add(m.id());
    }
    assert.deepEqual([...sent].sort(), [...SERVER_FRAMES].sort(), 'gateway -> player');
    assert.deepEqual([...received].sort(), [...CLIENT_FRAMES].sort(), 'player -> gateway');
    assert.ok(SERVER_FRAMES.includes('granted') && CLIENT_FRAMES.includes('ping'), `${SERVER_FRAMES} / ${CLIENT_FRAMES}`);
    // The error frame's codes are the catalog's.
    const codes = raw.components.messages.error.payload.properties.code.enum;
    assert.deepEqual([...codes].sort(), Object.keys(ERROR_FRAME_CODES).sort());
  });

  test("x-close-codes is the catalog of src/close-codes.ts, with the SDK's reconnect rules", () => {
    const documented = raw.channels.lease['x-close-codes'];
    const catalog = Object.values(CLOSE).map((c) => ({ code: c.code, name: c.name, reconnect: c.reconnect }));
    assert.deepEqual(
      documented.map(({ code, name, reconnect }) => ({ code, name, reconnect })).sort((a, b) => a.code - b.code),
      catalog.sort((a, b) => a.code - b.code),
    );
    for (const c of documented) assert.equal(reconnectRule(c.code), c.reconnect, `SDK rule for ${c.code}`);
    // Every close code named in the document's prose is in the table or is one of the client-side codes.
    const prose = JSON.stringify(raw).match(/\b(1\d{3}|4\d{3})\b/g) ?? [];
    const known = new Set([...documented.map((c) => c.code), 1001, 1006]);
    for (const code of prose)
      if (Number(code) < 5000 && !known.has(Number(code)) && Number(code) !== 4096)
        assert.fail(`close code ${code} in the prose but not in x-close-codes`);
  });

  describe('a live gateway', () => {
    let gw: TestGateway;
    before(async () => {
      gw = await startGateway({ env: { ...COLD_STORE, PAUSE_RELEASE_MS: '200' } });
    });
    after(() => gw?.stop());

    /** The payload schema of a documented message. */
    const payload = (id: string): object =>
      doc
        .messages()
        .all()
        .find((m: { id(): string }) => m.id() === id)
        .payload()
        .json();
    /** Which documented gateway -> player messages a frame fits; exactly one is right. */
    const fits = (frame: unknown): string[] => SERVER_FRAMES.filter((id) => ajv.validate(payload(id), frame));

    test(
      'every frame it sends fits exactly one documented message; every documented one is seen; closes are in the table',
      { timeout: 30_000 },
      async () => {
        const user = await mintToken('carol', { maxStreams: 1 });
        const tv = connect(gw.url, { token: user, device: 'tv', content: 'match-1' });
        assert.equal((await tv.decision).type, 'granted');
        const sendAndWait = async (message: unknown, n: number) => {
          if (typeof message === 'object') {
            const kind = (message as { type: string }).type;
            assert.ok(CLIENT_FRAMES.includes(kind) ? ajv.validate(payload(kind), message) : true, `what the test sends fits ${kind}`);
          }
          tv.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
          // Playback frames arrive on their own schedule: count the answers to what the test sends.
          await eventually(() => tv.frames.filter((f) => f.type !== 'playback').length >= n, 3000);
        };
        await sendAndWait({ type: 'ping' }, 2);
        await sendAndWait({ type: 'reauth', token: await mintToken('carol', { maxStreams: 1 }) }, 3);
        await sendAndWait({ type: 'reauth', token: user }, 4); // within a second: reauth_rate
        await sendAndWait('not json', 5);
        await sendAndWait({ type: 'subscribe' }, 6);
        await new Promise((r) => setTimeout(r, 1100));
        await sendAndWait({ type: 'reauth', token: 'not-a-jwt' }, 7);
        await sendAndWait({ type: 'pause' }, 8); // released after PAUSE_RELEASE_MS
        await sendAndWait({ type: 'resume' }, 9); // granted again, a new lease id

        const phone = connect(gw.url, { token: user, device: 'phone' });
        assert.equal((await phone.decision).type, 'denied');
        const closes = [(await phone.closed).code];
        const anonymous = connect(gw.url, { device: 'radio' });
        closes.push((await anonymous.closed).code);
        const badQuery = connect(gw.url, { token: user, device: 'not ok' });
        closes.push((await badQuery.closed).code);
        // A held lease gets fresh playback tokens (COLD_STORE: tokens live at most the 4 s fencing window).
        await eventually(() => tv.frames.some((f) => f.type === 'playback'), 5000);
        closes.push((await tv.close(1000)).code);

        const frames = [...tv.frames, ...phone.frames, ...anonymous.frames, ...badQuery.frames];
        const seen = new Set<string>();
        for (const frame of frames) {
          const ids = fits(frame);
          assert.equal(ids.length, 1, `frame ${JSON.stringify(frame)} fits ${ids.length} documented messages (${ids})`);
          seen.add(ids[0]);
        }
        assert.deepEqual([...seen].sort(), [...SERVER_FRAMES].sort(), 'every documented gateway message was sent');
        const errorCodes = tv.frames
          .filter((f) => f.type === 'error')
          .map((f) => f.code)
          .sort();
        assert.deepEqual(errorCodes, ['bad_json', 'reauth_failed', 'reauth_rate', 'unknown_type']);
        assert.deepEqual(closes, [4429, 4401, 1008, 1000]);
        const table = new Set(raw.channels.lease['x-close-codes'].map((c) => c.code));
        for (const code of closes) assert.ok(table.has(code), `close ${code} is in x-close-codes`);
      },
    );
  });
});

test('the development banner names the demo page and endpoints the gateway answers', { timeout: 30_000 }, async () => {
  const env = await gatewayEnv({ env: { ...COLD_STORE, NODE_ENV: 'development', JWT_SECRET: '', LOG_LEVEL: 'info' } });
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    let banner = '';
    child.stderr.on('data', (d: Buffer) => (banner += d.toString()));
    await eventually(() => /Demo page\s+http:\/\/\S+\//.test(banner) && banner.includes('Try it'), 20_000, 50);
    const demo = banner.match(/Demo page\s+(http:\/\/\S+\/)/)![1];
    const page = await fetch(demo);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /Start playback on a new device/);
    const metrics = banner.match(/(http:\/\/\S+\/metrics)/)![1];
    assert.equal((await fetch(metrics)).status, 200);
    assert.doesNotMatch(
      banner,
      /needs the development secret|its tokens need/,
      'the development secret is on, so the page can mint tokens',
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});
