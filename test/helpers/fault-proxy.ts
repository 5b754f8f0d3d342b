/**
 * A small fault-injecting HTTP proxy in front of DynamoDB Local. Each gateway
 * under test talks to the store through its own proxy, so one gateway can lose
 * the store while the others keep it.
 *
 * Modes:
 *   pass        forward
 *   delay       forward after `delayMs`
 *   blackhole   accept the request, never answer
 *   reset       destroy the connection
 *   throttle    400 with a real ThrottlingException body
 *   error500    500 InternalServerError
 *   drop-reply  forward (the write commits), then drop the connection instead of replying
 *   hold-reply  forward (the write commits), then hold the reply for `delayMs` before sending it
 *   duplicate   forward and reply now, and forward the same request again after `delayMs`
 *               (its reply discarded): a copy that lingered in the network and lands late
 *
 * A fault can be limited to some operations (`only: ['UpdateItem']`), to
 * requests on user items (`usersOnly`), and to the next `times` matching requests; after that the proxy passes again.
 * With `probability`, each matching request is faulted only with that chance (drawn from `random`, so a
 * seeded run draws the same sequence); `times` then counts faulted requests only.
 * Every request is counted by operation, which is how cost tests see what
 * really reached the store.
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type FaultMode = 'pass' | 'delay' | 'blackhole' | 'reset' | 'throttle' | 'error500' | 'drop-reply' | 'hold-reply' | 'duplicate';

export interface FaultOptions {
  delayMs?: number;
  only?: string[];
  /** Only requests that touch a user item (lease reads and writes), never heartbeats. */
  usersOnly?: boolean;
  times?: number;
  /** Chance (0-1) that a matching request is faulted; the others pass. Default 1. */
  probability?: number;
  /** Source of the `probability` draws (a seeded PRNG in randomized runs). Default Math.random. */
  random?: () => number;
}

export interface FaultProxy {
  readonly endpoint: string;
  /** Requests seen, by operation (UpdateItem, GetItem, ...), faults included. */
  readonly counts: Map<string, number>;
  /** Requests faulted, by mode (delay, duplicate, drop-reply, ...). */
  readonly faulted: Map<string, number>;
  /** Requests that touched a user item (lease reads and writes, not heartbeats). */
  userRequests(): number;
  set(mode: FaultMode, opts?: FaultOptions): void;
  total(): number;
  resetCounts(): void;
  close(): Promise<void>;
}

const ERROR_PREFIX = 'com.amazonaws.dynamodb.v20120810#';

function sendError(res: ServerResponse, status: number, type: string, message: string): void {
  const body = JSON.stringify({ __type: ERROR_PREFIX + type, message });
  res.writeHead(status, {
    'Content-Type': 'application/x-amz-json-1.0',
    'Content-Length': String(Buffer.byteLength(body)),
    'x-amzn-ErrorType': type,
  });
  res.end(body);
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  let mode: FaultMode = 'pass';
  let opts: FaultOptions = {};
  let remaining = Number.POSITIVE_INFINITY;
  const counts = new Map<string, number>();
  const faulted = new Map<string, number>();
  let userRequests = 0;
  const sockets = new Set<Socket>();
  const held = new Set<ServerResponse>();

  function faultFor(op: string, userItem: boolean): FaultMode {
    if (mode === 'pass') return 'pass';
    if (opts.only && !opts.only.includes(op)) return 'pass';
    if (opts.usersOnly && !userItem) return 'pass';
    if (remaining <= 0) return 'pass';
    if (opts.probability !== undefined && (opts.random ?? Math.random)() >= opts.probability) return 'pass';
    remaining--;
    const chosen = mode;
    if (remaining <= 0) mode = 'pass';
    return chosen;
  }

  function forward(
    req: IncomingMessage,
    body: Buffer,
    onResponse: (status: number, headers: IncomingMessage['headers'], data: Buffer) => void,
    onError: () => void,
  ): void {
    const up = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (upRes) => {
        const chunks: Buffer[] = [];
        upRes.on('data', (c: Buffer) => chunks.push(c));
        upRes.on('end', () => onResponse(upRes.statusCode ?? 502, upRes.headers, Buffer.concat(chunks)));
        upRes.on('error', onError);
      },
    );
    up.on('error', onError);
    up.end(body);
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const op =
        String(req.headers['x-amz-target'] ?? 'unknown')
          .split('.')
          .pop() ?? 'unknown';
      const userItem = body.includes('"user#');
      counts.set(op, (counts.get(op) ?? 0) + 1);
      if (userItem) userRequests++;
      const fault = faultFor(op, userItem);
      if (fault !== 'pass') faulted.set(fault, (faulted.get(fault) ?? 0) + 1);
      const reply = (status: number, headers: IncomingMessage['headers'], data: Buffer): void => {
        if (res.destroyed) return;
        res.writeHead(status, headers);
        res.end(data);
      };
      const fail = (): void => {
        if (!res.destroyed) sendError(res, 500, 'InternalServerError', 'proxy could not reach the store');
      };
      switch (fault) {
        case 'pass':
          forward(req, body, reply, fail);
          return;
        case 'delay':
          setTimeout(() => forward(req, body, reply, fail), opts.delayMs ?? 1000);
          return;
        case 'blackhole':
          held.add(res);
          res.on('close', () => held.delete(res));
          return;
        case 'reset':
          req.socket.destroy();
          return;
        case 'throttle':
          sendError(res, 400, 'ThrottlingException', 'Rate of requests exceeds the allowed throughput.');
          return;
        case 'error500':
          sendError(res, 500, 'InternalServerError', 'Internal server error');
          return;
        case 'drop-reply':
          forward(
            req,
            body,
            () => req.socket.destroy(),
            () => req.socket.destroy(),
          );
          return;
        case 'hold-reply': {
          const delayMs = opts.delayMs ?? 1000;
          forward(req, body, (...r) => setTimeout(() => reply(...r), delayMs), fail);
          return;
        }
        case 'duplicate': {
          forward(req, body, reply, fail);
          const later = setTimeout(
            () =>
              forward(
                req,
                body,
                () => {},
                () => {},
              ),
            opts.delayMs ?? 1000,
          );
          later.unref();
          return;
        }
      }
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    counts,
    faulted,
    userRequests: () => userRequests,
    set(next, nextOpts = {}) {
      mode = next;
      opts = nextOpts;
      remaining = nextOpts.times ?? Number.POSITIVE_INFINITY;
      if (next === 'pass') for (const res of held) res.destroy();
    },
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    resetCounts: () => {
      counts.clear();
      faulted.clear();
      userRequests = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
