/**
 * A counting HTTP proxy in front of DynamoDB Local: the independent witness
 * for the gateway's own `sigma_dynamodb_requests_total`. Every request is
 * booked by operation (the `X-Amz-Target` header, `DynamoDB_20120810.<Op>`)
 * and by the kind of item it touches (`user`, `instance`, `stream`: the
 * prefix of the `pk` in its key), so heartbeats and lease writes can be told
 * apart. Bodies are forwarded unchanged; it listens on 127.0.0.1 only.
 *
 * With a write rate set (setWriteRate), it plays a provisioned table: writes
 * above that rate (a token bucket holding a tenth of a second of them) get
 * the 400 `ProvisionedThroughputExceededException` DynamoDB sends, booked as
 * `throttled` and `<Operation>:throttled`, and never reach the store.
 */
import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Counts = Record<string, number>;

export interface CountingProxy {
  readonly endpoint: string;
  /** A copy of the counts so far, keys `<Operation>` and `<Operation>:<kind>`. */
  snapshot(): Counts;
  /** Writes per second let through from now on; undefined: all. */
  setWriteRate(perSec: number | undefined): void;
  close(): Promise<void>;
}

const WRITES = new Set(['PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem']);

function throttle(res: ServerResponse): void {
  const type = 'ProvisionedThroughputExceededException';
  const body = JSON.stringify({
    __type: `com.amazonaws.dynamodb.v20120810#${type}`,
    message: 'The level of configured provisioned throughput for the table was exceeded.',
  });
  res.writeHead(400, {
    'Content-Type': 'application/x-amz-json-1.0',
    'Content-Length': String(Buffer.byteLength(body)),
    'x-amzn-ErrorType': type,
  });
  res.end(body);
}

function kindOf(body: string): string {
  try {
    const parsed = JSON.parse(body) as { Key?: { pk?: { S?: string } }; Item?: { pk?: { S?: string } }; RequestItems?: unknown };
    const pk = parsed.Key?.pk?.S ?? parsed.Item?.pk?.S;
    if (pk !== undefined) return pk.split('#')[0];
    if (parsed.RequestItems !== undefined) return 'batch';
  } catch {
    /* not JSON: counted under its operation only */
  }
  return 'other';
}

export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const counts: Counts = {};
  const book = (key: string): void => {
    counts[key] = (counts[key] ?? 0) + 1;
  };
  // A pooled upstream socket the store has just closed fails at once: retry that once on a fresh
  // socket, so the proxy's own hiccup never becomes a client retry counted twice.
  const forward = (req: IncomingMessage, res: ServerResponse, body: Buffer, attempt: number): void => {
    const out = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent: attempt === 0 ? agent : false,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => {
      book('proxy_upstream_error');
      if (attempt === 0 && !res.headersSent) forward(req, res, body, 1);
      else res.destroy();
    });
    out.end(body);
  };
  let rate: number | undefined;
  let tokens = 0;
  let filledAt = performance.now();
  const takeWrite = (): boolean => {
    if (rate === undefined) return true;
    const now = performance.now();
    tokens = Math.min(Math.max(1, rate / 10), tokens + ((now - filledAt) / 1000) * rate);
    filledAt = now;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const op = String(req.headers['x-amz-target'] ?? 'none')
        .split('.')
        .pop()!;
      book(op);
      book(`${op}:${kindOf(body.toString())}`);
      if (WRITES.has(op) && !takeWrite()) {
        book('throttled');
        book(`${op}:throttled`);
        return throttle(res);
      }
      forward(req, res, body, 0);
    });
  });
  // Longer than any client's idle gap (heartbeats 5 s apart): Node's 5 s default races with them.
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    snapshot: () => ({ ...counts }),
    setWriteRate: (perSec) => {
      rate = perSec;
      tokens = perSec === undefined ? 0 : Math.max(1, perSec / 10);
      filledAt = performance.now();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        agent.destroy();
      }),
  };
}

/** `after - before`, per key, dropping zeros. */
export function diff(after: Counts, before: Counts): Counts {
  const out: Counts = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) !== 0) out[k] = v - (before[k] ?? 0);
  return out;
}
