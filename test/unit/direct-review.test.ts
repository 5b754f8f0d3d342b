/**
 * Review of the hand-sent first attempt (src/direct.ts): what DynamoDB Local and dynalite cannot tell us.
 * An independent SigV4 verifier (the canonical request of the AWS SigV4 spec, written here from the spec,
 * not from the SDK's signer) checks the direct request and the SDK's own (which validates the verifier);
 * the endpoint against the SDK's for a real region; and the ways the first attempt can end.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { Agent as HttpsAgent } from 'node:https';
import { Agent as HttpAgent } from 'node:http';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { DirectWriter, HandOver } from '../../src/direct.js';
import { createClient, isConditionFailure, send } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';
import { json, ok, recorder, updateItem as command, type Answer, type Seen } from '../helpers/store-recorder.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// ---- an independent SigV4 verifier (docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html) ----

const sha256hex = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();
/** RFC 3986 encoding, as SigV4 wants it: unreserved characters stay, everything else %XX upper case. */
const uriEncode = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

interface Verified {
  accessKeyId: string;
  scope: string;
  signedHeaders: string[];
  headers: Map<string, string>;
}

/** Throws unless `seen` carries a valid AWS4-HMAC-SHA256 signature by `secret`; returns what it signed. */
function verifySigV4(seen: Seen, secret: string, expect: { region: string; service: string }): Verified {
  const headers = new Map<string, string[]>();
  for (let i = 0; i < seen.rawHeaders.length; i += 2) {
    const name = seen.rawHeaders[i].toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), seen.rawHeaders[i + 1]]);
  }
  const one = (name: string): string => {
    const v = headers.get(name);
    assert.ok(v !== undefined && v.length === 1, `exactly one ${name} header`);
    return v[0];
  };
  const auth =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(
      one('authorization'),
    );
  assert.ok(auth, `an AWS4-HMAC-SHA256 authorization header: ${one('authorization')}`);
  const [, accessKeyId, day, region, service, signedList, signature] = auth;
  assert.equal(region, expect.region, 'credential scope region');
  assert.equal(service, expect.service, 'credential scope service');
  const amzDate = one('x-amz-date');
  assert.match(amzDate, /^\d{8}T\d{6}Z$/);
  assert.equal(amzDate.slice(0, 8), day, 'the scope date is the request date');
  const signedHeaders = signedList.split(';');
  assert.deepEqual([...signedHeaders].sort(), signedHeaders, 'signed headers sorted');
  for (const h of ['host', 'x-amz-date']) assert.ok(signedHeaders.includes(h), `${h} is signed`);
  // Every x-amz-* header sent is signed (a token or a target left out fails on AWS).
  for (const name of headers.keys()) if (name.startsWith('x-amz-')) assert.ok(signedHeaders.includes(name), `${name} is signed`);
  for (const name of signedHeaders) assert.ok(headers.has(name), `signed header ${name} was sent`);

  const [path, query = ''] = seen.url.split('?');
  const canonicalUri =
    path
      .split('/')
      .map((seg) => uriEncode(decodeURIComponent(seg)))
      .join('/') || '/';
  const canonicalQuery = query
    .split('&')
    .filter((p) => p !== '')
    .map((p) => p.split('=').map((x) => uriEncode(decodeURIComponent(x))) as [string, string?])
    .sort(([a, av = ''], [b, bv = '']) => (a === b ? (av < bv ? -1 : 1) : a < b ? -1 : 1))
    .map(([k, v = '']) => `${k}=${v}`)
    .join('&');
  const canonicalHeaders = signedHeaders
    .map(
      (name) =>
        `${name}:${headers
          .get(name)!
          .map((v) => v.trim().replace(/\s+/g, ' '))
          .join(',')}\n`,
    )
    .join('');
  const payloadHash = sha256hex(Buffer.from(seen.body));
  if (headers.has('x-amz-content-sha256')) assert.equal(one('x-amz-content-sha256'), payloadHash, 'x-amz-content-sha256');
  const canonicalRequest = [seen.method, canonicalUri, canonicalQuery, canonicalHeaders, signedList, payloadHash].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, day), region), service), 'aws4_request');
  assert.equal(createHmac('sha256', key).update(stringToSign).digest('hex'), signature, 'the signature verifies');
  return { accessKeyId, scope, signedHeaders, headers: new Map([...headers].map(([k, v]) => [k, v.join(',')])) };
}

test('the verifier is strict: a changed body, header or secret fails it', async () => {
  const r = await recorder(ok);
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 1, direct: false });
  try {
    await send(client, new Metrics(), 'UpdateItem', command());
    const expect = { region: 'local', service: 'dynamodb' };
    verifySigV4(r.seen[0], 'local', expect);
    assert.throws(() => verifySigV4(r.seen[0], 'other', expect), /signature verifies/);
    assert.throws(() => verifySigV4({ ...r.seen[0], body: r.seen[0].body.replace('ann', 'bob') }, 'local', expect));
    const raw = [...r.seen[0].rawHeaders];
    raw[raw.findIndex((h) => h.toLowerCase() === 'x-amz-target') + 1] = 'DynamoDB_20120810.DeleteItem';
    assert.throws(() => verifySigV4({ ...r.seen[0], rawHeaders: raw }, 'local', expect), /signature verifies/);
  } finally {
    client.destroy();
    r.close();
  }
});

test('SigV4: the direct request and the SDK request both verify, static credentials', async () => {
  const r = await recorder(ok);
  const direct = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 1 });
  const sdk = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 1, direct: false });
  try {
    await send(direct, new Metrics(), 'UpdateItem', command());
    await send(sdk, new Metrics(), 'UpdateItem', command());
    const expect = { region: 'local', service: 'dynamodb' };
    const mine = verifySigV4(r.seen[0], 'local', expect);
    const theirs = verifySigV4(r.seen[1], 'local', expect);
    assert.equal(mine.accessKeyId, 'local');
    for (const h of theirs.signedHeaders) {
      if (['amz-sdk-invocation-id', 'amz-sdk-request', 'x-amz-user-agent'].includes(h)) continue;
      assert.ok(mine.signedHeaders.includes(h), `the SDK signs ${h}, so do we`);
    }
    for (const h of ['content-type', 'x-amz-target', 'host', 'content-length']) assert.equal(mine.headers.get(h), theirs.headers.get(h), h);
    // The SDK writes the members in its schema's order; the JSON is the same (non-ASCII included).
    assert.deepEqual(JSON.parse(r.seen[0].body), JSON.parse(r.seen[1].body));
  } finally {
    direct.destroy();
    sdk.destroy();
    r.close();
  }
});

test('SigV4 with temporary credentials from the default chain (a session token, as IRSA gives)', async () => {
  const r = await recorder(ok);
  const saved = { ...process.env };
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: 'ASIATESTTESTTEST',
    AWS_SECRET_ACCESS_KEY: 'secret/with+chars=',
    AWS_SESSION_TOKEN: 'FwoGZXIvYXdzE//token+with/slashes==',
    AWS_CREDENTIAL_EXPIRATION: new Date(Date.now() + 3600_000).toISOString(),
  });
  // An endpoint and a region: the client takes the default credential chain, as on EKS.
  const direct = createClient({ endpoint: r.endpoint, region: 'eu-west-1', requestTimeoutMs: 2000, maxAttempts: 1 });
  const sdk = createClient({ endpoint: r.endpoint, region: 'eu-west-1', requestTimeoutMs: 2000, maxAttempts: 1, direct: false });
  try {
    await send(direct, new Metrics(), 'UpdateItem', command());
    await send(sdk, new Metrics(), 'UpdateItem', command());
    const expect = { region: 'eu-west-1', service: 'dynamodb' };
    for (const seen of r.seen) {
      const v = verifySigV4(seen, 'secret/with+chars=', expect);
      assert.equal(v.accessKeyId, 'ASIATESTTESTTEST');
      assert.equal(v.headers.get('x-amz-security-token'), 'FwoGZXIvYXdzE//token+with/slashes==');
      assert.ok(v.signedHeaders.includes('x-amz-security-token'));
    }
  } finally {
    process.env = saved;
    direct.destroy();
    sdk.destroy();
    r.close();
  }
});

test('SigV4 with expiring credentials: the direct path signs with the refreshed ones, like the SDK', async () => {
  const r = await recorder(ok);
  let n = 0;
  // Each identity expires within the SDK's refresh window (5 minutes), so every call asks again.
  const provider = () => {
    n++;
    return Promise.resolve({
      accessKeyId: `AKID${n}`,
      secretAccessKey: `secret${n}`,
      sessionToken: `tok${n}`,
      expiration: new Date(Date.now() + 60_000),
    });
  };
  const client = new DynamoDBClient({ endpoint: r.endpoint, region: 'us-east-1', credentials: provider, maxAttempts: 1 });
  const writer = new DirectWriter(client, {
    endpoint: r.endpoint,
    requestTimeoutMs: 2000,
    httpAgent: new HttpAgent({ keepAlive: true }),
    httpsAgent: new HttpsAgent({ keepAlive: true }),
  });
  try {
    await writer.updateItem(command().input);
    await writer.updateItem(command().input);
    await client.send(command());
    const expect = { region: 'us-east-1', service: 'dynamodb' };
    const ids = r.seen.map((seen, i) => {
      const v = verifySigV4(seen, `secret${/AKID(\d+)/.exec(seen.rawHeaders.join(' '))![1]}`, expect);
      assert.equal(v.headers.get('x-amz-security-token'), `tok${v.accessKeyId.slice(4)}`, `request ${i}`);
      return v.accessKeyId;
    });
    assert.equal(new Set(ids).size, 3, `every request with fresh credentials: ${ids.join(' ')}`);
  } finally {
    client.destroy();
    r.close();
  }
});

test('SigV4 under clock skew: the direct path signs at the client offset the SDK learnt', async () => {
  const r = await recorder(ok);
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 1 });
  try {
    (client.config as { systemClockOffset?: number }).systemClockOffset = -3600_000;
    await send(client, new Metrics(), 'UpdateItem', command());
    const amzDate = verifySigV4(r.seen[0], 'local', { region: 'local', service: 'dynamodb' }).headers.get('x-amz-date')!;
    const signedAt = Date.parse(amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'));
    assert.ok(Math.abs(signedAt - (Date.now() - 3600_000)) < 60_000, `signed at ${amzDate}`);
  } finally {
    client.destroy();
    r.close();
  }
});

// ---- the endpoint, without an override ----

/** Where the SDK sends an UpdateItem: its request handler records the request and answers 200 {}. */
async function sdkHost(config: DynamoDBClientConfig): Promise<string> {
  let host = '';
  const client = new DynamoDBClient({
    ...config,
    requestHandler: {
      handle: (req: { protocol: string; hostname: string; path: string }) => {
        host = `${req.protocol}//${req.hostname}${req.path}`;
        return Promise.resolve({
          response: {
            statusCode: 200,
            headers: { 'content-type': 'application/x-amz-json-1.0' },
            body: Readable.from([Buffer.from('{}')]),
          },
        });
      },
    } as never,
  });
  try {
    await client.send(command());
    return host;
  } finally {
    client.destroy();
  }
}

/** An https agent that connects nowhere: it records each request's options and fails the request. */
function recordingAgent(onRequest: (options: { host: string; path?: string }) => void): HttpsAgent {
  const agent = new HttpsAgent();
  Object.assign(agent, {
    addRequest(req: { emit(event: 'error', err: Error): void }, options: { host: string; path?: string }): void {
      onRequest(options);
      process.nextTick(() => req.emit('error', new Error('recorded')));
    },
  });
  return agent;
}

/** Where the direct path sends it: an agent that records the request and fails it before any connection. */
async function directHost(config: DynamoDBClientConfig): Promise<string | undefined> {
  let host: string | undefined;
  const client = new DynamoDBClient(config);
  const agent = recordingAgent((options) => (host = `https://${options.host}${options.path ?? ''}`));
  const writer = new DirectWriter(client, { requestTimeoutMs: 2000, httpAgent: new HttpAgent(), httpsAgent: agent });
  try {
    await assert.rejects(writer.updateItem(command().input), HandOver);
    return host;
  } finally {
    client.destroy();
  }
}

test('endpoint: the direct path goes where the SDK goes (region, FIPS, dual-stack, account-id endpoints)', async () => {
  const base = { credentials: { accessKeyId: 'AKID', secretAccessKey: 's' } };
  const withAccount = { credentials: { accessKeyId: 'AKID', secretAccessKey: 's', accountId: '123456789012' } };
  const cases: Array<[string, DynamoDBClientConfig]> = [
    ['eu-west-1', { ...base, region: 'eu-west-1' }],
    ['eu-west-1 FIPS', { ...base, region: 'eu-west-1', useFipsEndpoint: true }],
    ['us-east-1 dual-stack', { ...base, region: 'us-east-1', useDualstackEndpoint: true }],
    ['us-gov-west-1 FIPS', { ...base, region: 'us-gov-west-1', useFipsEndpoint: true }],
    ['cn-north-1', { ...base, region: 'cn-north-1' }],
    // Credentials that carry an account id (web identity, SSO, process credentials do): account-id endpoints.
    ['eu-west-1, account id', { ...withAccount, region: 'eu-west-1' }],
    ['eu-west-1, account id, mode required', { ...withAccount, region: 'eu-west-1', accountIdEndpointMode: 'required' }],
    ['eu-west-1, account id, mode disabled', { ...withAccount, region: 'eu-west-1', accountIdEndpointMode: 'disabled' }],
    ['us-east-1 FIPS, account id', { ...withAccount, region: 'us-east-1', useFipsEndpoint: true }],
    ['us-east-1 dual-stack, account id', { ...withAccount, region: 'us-east-1', useDualstackEndpoint: true }],
  ];
  const wrong: string[] = [];
  for (const [name, config] of cases) {
    const [theirs, mine] = [await sdkHost(config), await directHost(config)];
    if (theirs !== mine) wrong.push(`${name}: SDK ${theirs}, direct ${mine}`);
  }
  assert.deepEqual(wrong, []);
});

test('endpoint: when the endpoint rules throw, the direct path sends nothing and hands every call over', async () => {
  // A region the rules refuse (not a host label). The SDK refuses it the same way.
  const config = { region: 'not a region', credentials: { accessKeyId: 'AKID', secretAccessKey: 's' } };
  await assert.rejects(sdkHost(config), /Invalid Configuration|region/i);
  let requests = 0;
  const client = new DynamoDBClient(config);
  const writer = new DirectWriter(client, {
    requestTimeoutMs: 2000,
    httpAgent: new HttpAgent(),
    httpsAgent: recordingAgent(() => requests++),
  });
  try {
    for (let i = 0; i < 2; i++)
      await assert.rejects(writer.updateItem(command().input), (err: unknown) => err instanceof HandOver && !err.sent);
    assert.equal(requests, 0);
  } finally {
    client.destroy();
  }
});

test('endpoint: credentials that fail once (STS or IMDS at start-up) do not turn the direct path off for good', async () => {
  let calls = 0;
  const credentials = () => {
    if (calls++ === 0) return Promise.reject(new Error('credentials not there yet'));
    return Promise.resolve({ accessKeyId: 'AKID', secretAccessKey: 's' });
  };
  const hosts: string[] = [];
  const client = new DynamoDBClient({ region: 'eu-west-1', credentials });
  const writer = new DirectWriter(client, {
    requestTimeoutMs: 2000,
    httpAgent: new HttpAgent(),
    httpsAgent: recordingAgent((o) => hosts.push(o.host)),
  });
  try {
    await assert.rejects(writer.updateItem(command().input), (err: unknown) => err instanceof HandOver && !err.sent);
    await assert.rejects(writer.updateItem(command().input), (err: unknown) => err instanceof HandOver && !err.sent);
    assert.deepEqual(hosts, ['dynamodb.eu-west-1.amazonaws.com'], 'the second call went by hand');
  } finally {
    client.destroy();
  }
});

// ---- how the first attempt can end: what the lease keeper is told ----

type Attempts = { $metadata?: { attempts?: number } };
const attemptsOf = (x: unknown): number | undefined => (x as Attempts | null)?.$metadata?.attempts;

/** Runs one UpdateItem through `send` with the first request answered by `first`, the rest 200. */
async function firstAnswered(first: Answer, opts: { requestTimeoutMs?: number; maxAttempts?: number } = {}) {
  const r = await recorder((req, res, n) => (n === 1 ? first(req, res, n) : ok(req, res, n)));
  const client = createClient({
    endpoint: r.endpoint,
    requestTimeoutMs: opts.requestTimeoutMs ?? 2000,
    maxAttempts: opts.maxAttempts ?? 3,
  });
  const signal = new AbortController().signal;
  try {
    const out = await send<Attempts>(client, new Metrics(), 'UpdateItem', command(), signal).then(
      (v) => ({ ok: true as const, v }),
      (e: unknown) => ({ ok: false as const, e }),
    );
    return { out, requests: r.seen.length, listeners: getEventListeners(signal, 'abort').length };
  } finally {
    client.destroy();
    r.close();
  }
}

const rawReply =
  (text: string): Answer =>
  (req) =>
    // Bytes straight on the socket, then the connection goes.
    req.socket.end(text);

test('every first attempt that may have landed is counted, and no listener is left on the signal', async () => {
  const cases: Array<[string, Answer, number]> = [
    ['a reset after the request was read', (req) => req.socket.destroy(), 2],
    [
      'a 200 cut off mid-body',
      rawReply('HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 100\r\n\r\n{"Attribu'),
      2,
    ],
    ['a 200 whose body is not JSON', rawReply('HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n<html>'), 2],
    ['a 200 with a chunked body cut off', rawReply('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"Att\r\n'), 2],
    ['a 500 with an empty body', (_q, res) => res.writeHead(500).end(), 2],
    ['a 500 whose body is JSON null', (_q, res) => json(res, 500, null), 2],
    ['a 503 whose body is a JSON string', (_q, res) => json(res, 503, 'Service Unavailable'), 2],
    [
      'a 400 ValidationException (refused, not applied)',
      (_q, res) => json(res, 400, { __type: 'com.amazon.coral.validate#ValidationException', message: 'x' }),
      1,
    ],
  ];
  const wrong: string[] = [];
  for (const [name, answer, attempts] of cases) {
    const { out, requests, listeners } = await firstAnswered(answer);
    if (!out.ok) wrong.push(`${name}: failed (${String(out.e)})`);
    else if (attemptsOf(out.v) !== attempts) wrong.push(`${name}: attempts ${attemptsOf(out.v)}, want ${attempts}`);
    if (requests !== 2) wrong.push(`${name}: ${requests} requests`);
    if (listeners !== 0) wrong.push(`${name}: ${listeners} abort listeners left`);
  }
  assert.deepEqual(wrong, []);
});

test('a condition failure on the direct path and one after a hand-over: the SDK shape, the attempts, no listener left', async () => {
  const failed: Answer = (_q, res) =>
    json(res, 400, {
      __type: 'com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException',
      message: 'The conditional request failed',
      Item: { n: { N: '2' } },
    });
  const r = await recorder((q, res, n) => (n === 2 ? q.socket.destroy() : failed(q, res, n)));
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
  const signal = new AbortController().signal;
  try {
    // The first call: direct, the condition failure as it came. The second: its direct attempt is reset after
    // the request was read (it may have landed), the SDK's retry fails the condition (maybe on our own write).
    for (const attempts of [1, 2]) {
      await assert.rejects(send(client, new Metrics(), 'UpdateItem', command(), signal), (err: unknown) => {
        assert.ok(isConditionFailure(err));
        assert.deepEqual(err.Item, { n: { N: '2' } });
        assert.equal(attemptsOf(err), attempts);
        return true;
      });
      assert.equal(getEventListeners(signal, 'abort').length, 0);
    }
  } finally {
    client.destroy();
    r.close();
  }
});

test('an abort during the hand-over backoff sends nothing more and leaves no listener', async () => {
  const r = await recorder((_q, res) =>
    json(res, 400, { __type: 'com.amazonaws.dynamodb.v20120810#ThrottlingException', message: 'slow down' }),
  );
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
  const ac = new AbortController();
  try {
    const sent = send(client, new Metrics(), 'UpdateItem', command(), ac.signal);
    while (r.seen.length === 0) await new Promise((res) => setTimeout(res, 1));
    ac.abort();
    await assert.rejects(sent, /timeout|abort/);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(r.seen.length, 1, 'nothing sent after the abort');
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
  } finally {
    client.destroy();
    r.close();
  }
});

test('clock skew: the SDK corrects it after a hand-over, and the next direct attempt signs at the corrected time', async () => {
  // A store whose clock is an hour ahead: like DynamoDB it refuses a signature more than 5 minutes off, with its Date.
  const ahead = 3600_000;
  const r = await recorder((req, res) => {
    const amzDate = String(req.headers['x-amz-date']);
    const signedAt = Date.parse(amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'));
    const date = new Date(Date.now() + ahead).toUTCString();
    if (Math.abs(signedAt - (Date.now() + ahead)) <= 300_000) {
      res.writeHead(200, { 'Content-Type': 'application/x-amz-json-1.0', 'Content-Length': 2, Date: date });
      return res.end('{}');
    }
    const text = JSON.stringify({ __type: 'com.amazon.coral.service#InvalidSignatureException', message: 'Signature expired' });
    res.writeHead(400, {
      'Content-Type': 'application/x-amz-json-1.0',
      'Content-Length': text.length,
      Date: new Date(Date.now() + ahead).toUTCString(),
    });
    res.end(text);
  });
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
  try {
    const first = await send<Attempts>(client, new Metrics(), 'UpdateItem', command());
    assert.equal(attemptsOf(first), 2, "the SDK's own two; ours was refused, not applied");
    const before = r.seen.length;
    await send(client, new Metrics(), 'UpdateItem', command());
    assert.equal(r.seen.length - before, 1, 'the next call went by hand, at the corrected time');
  } finally {
    client.destroy();
    r.close();
  }
});

test('attempts per UpdateItem: DYNAMODB_MAX_ATTEMPTS counts the hand-sent first one', async () => {
  const r = await recorder((_q, res) => json(res, 500, { __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: 'x' }));
  const client = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 1 });
  try {
    const metrics = new Metrics();
    await assert.rejects(send(client, metrics, 'UpdateItem', command()), /InternalServerError/);
    assert.equal(r.seen.length, 1, 'maxAttempts 1: one request');
    assert.match(await metrics.registry.metrics(), /sigma_dynamodb_requests_total\{operation="UpdateItem",outcome="error"\} 1/);
    assert.match(await metrics.registry.metrics(), /sigma_dynamodb_handovers_total\{reason="server_error"\} 1/);
    const three = createClient({ endpoint: r.endpoint, requestTimeoutMs: 2000, maxAttempts: 3 });
    try {
      const before = r.seen.length;
      await assert.rejects(send(three, new Metrics(), 'UpdateItem', command()));
      assert.equal(r.seen.length - before, 3, 'maxAttempts 3: ours and two by the SDK');
    } finally {
      three.destroy();
    }
  } finally {
    client.destroy();
    r.close();
  }
});
