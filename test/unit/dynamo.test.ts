import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { createClient, send, StoreUnavailableError } from '../../src/dynamo.js';
import { Metrics } from '../../src/metrics.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/**
 * A store on a raw TCP port: requests whose key is "slow" are never answered;
 * the others get an empty GetItem answer after `answerMs`. Resolves each
 * connection's close to the test.
 */
async function store(answerMs: number): Promise<{ endpoint: string; server: Server; closed: Promise<void>[] }> {
  const closed: Promise<void>[] = [];
  const server = createServer((socket: Socket) => {
    closed.push(new Promise((resolve) => socket.once('close', () => resolve())));
    socket.on('data', (data) => {
      if (data.toString().includes('"slow"')) return;
      setTimeout(() => {
        const body = '{}';
        socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: ${body.length}\r\nx-amzn-RequestId: t\r\n\r\n${body}`,
        );
      }, answerMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { endpoint: `http://127.0.0.1:${port}`, server, closed };
}

const get = (key: string) => new GetItemCommand({ TableName: 't', Key: { pk: { S: key } } });

test('an aborted store call ends its HTTP request, every time (the SDK reuses its middleware stack)', { timeout: 10_000 }, async () => {
  const s = await store(0);
  // A request timeout far beyond the test's: only the abort can end these requests.
  const client = createClient({ endpoint: s.endpoint, requestTimeoutMs: 120_000, maxAttempts: 1 });
  const metrics = new Metrics();
  try {
    for (let i = 0; i < 3; i++) {
      const abort = new AbortController();
      setTimeout(() => abort.abort(), 30);
      await assert.rejects(send(client, metrics, 'GetItem', get('slow'), abort.signal), (err: unknown) => {
        assert.ok(err instanceof StoreUnavailableError);
        assert.equal(err.outcome, 'timeout');
        return true;
      });
    }
    // Each aborted request closed its connection: the store saw all three go.
    await Promise.all(s.closed);
    assert.equal(s.closed.length, 3);
    assert.match(await metrics.registry.metrics(), /sigma_dynamodb_requests_total\{operation="GetItem",outcome="timeout"\} 3/);
  } finally {
    client.destroy();
    s.server.close();
  }
});

test('a signal aborts only its own call: one in flight beside it still gets its answer', async () => {
  const s = await store(150);
  const client = createClient({ endpoint: s.endpoint, requestTimeoutMs: 120_000, maxAttempts: 1 });
  const metrics = new Metrics();
  try {
    const abort = new AbortController();
    const aborted = send(client, metrics, 'GetItem', get('slow'), abort.signal);
    const answered = send(client, metrics, 'GetItem', get('fast'), new AbortController().signal);
    const unsignalled = send(client, metrics, 'GetItem', get('fast'));
    setTimeout(() => abort.abort(), 30);
    await assert.rejects(aborted, StoreUnavailableError);
    assert.deepEqual(((await answered) as { Item?: unknown }).Item, undefined);
    await unsignalled;
    assert.match(await metrics.registry.metrics(), /sigma_dynamodb_requests_total\{operation="GetItem",outcome="ok"\} 2/);
  } finally {
    client.destroy();
    s.server.close();
  }
});

test('an abort during the SDK retry backoff ends the call at once, and no later attempt goes out', { timeout: 10_000 }, async () => {
  // Every request is refused as retryable, with a hint that makes the SDK wait 1.5 s before its next attempt.
  let requests = 0;
  const server = createServer((socket: Socket) => {
    socket.on('data', () => {
      requests++;
      const body = '{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"busy"}';
      socket.write(
        `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: ${body.length}\r\nx-amz-retry-after: 1500\r\nx-amzn-RequestId: t\r\n\r\n${body}`,
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const client = createClient({ endpoint: `http://127.0.0.1:${port}`, requestTimeoutMs: 120_000, maxAttempts: 3 });
  const metrics = new Metrics();
  try {
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 100);
    const call = send(client, metrics, 'GetItem', get('busy'), abort.signal);
    call.catch(() => {});
    // The caller (an admission, a heartbeat, a release) hears back when its signal fires, not after the backoff.
    const first = await Promise.race([
      call.then(
        () => 'answered',
        () => 'rejected',
      ),
      new Promise((r) => setTimeout(() => r('still waiting'), 1000)),
    ]);
    assert.equal(first, 'rejected');
    await assert.rejects(call, (err: unknown) => err instanceof StoreUnavailableError && err.outcome === 'timeout');
    // And the SDK, when its backoff ends, sends no copy of a call that was given up.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(requests, 1);
  } finally {
    client.destroy();
    server.close();
  }
});

test('the trimmed stack sends the user agent the SDK would, on every request and every retry', async () => {
  // Each request's user-agent headers; the second request of every client is refused once as retryable.
  const seen: string[] = [];
  let requests = 0;
  const server = createServer((socket: Socket) => {
    socket.on('data', (data) => {
      const head = data.toString();
      const agents = [...head.matchAll(/^(user-agent|x-amz-user-agent): (.*)\r$/gim)].map((m) => `${m[1].toLowerCase()}: ${m[2]}`);
      seen.push(agents.sort().join(' | '));
      const retry = ++requests % 4 === 2;
      const body = retry ? '{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"busy"}' : '{}';
      socket.write(
        `HTTP/1.1 ${retry ? '500 Internal Server Error' : '200 OK'}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: ${body.length}\r\nx-amzn-RequestId: t\r\n\r\n${body}`,
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const endpoint = `http://127.0.0.1:${port}`;
  const metrics = new Metrics();
  const headersOf = async (trimStack: boolean): Promise<string[]> => {
    seen.length = 0;
    const client = createClient({ endpoint, requestTimeoutMs: 5000, maxAttempts: 3, trimStack });
    try {
      // Three calls, four requests (the second call is retried once), with and without a signal.
      await send(client, metrics, 'GetItem', get('a'));
      await send(client, metrics, 'GetItem', get('b'), new AbortController().signal);
      await send(client, metrics, 'GetItem', get('c'));
      return [...seen];
    } finally {
      client.destroy();
    }
  };
  try {
    const sdk = await headersOf(false);
    const trimmed = await headersOf(true);
    assert.equal(sdk.length, 4);
    assert.match(sdk[0], /^user-agent: aws-sdk-js\/\S+ .* m\/\S+ \| x-amz-user-agent: aws-sdk-js\/\S+$/);
    assert.deepEqual(trimmed, sdk);
  } finally {
    server.close();
  }
});
