/**
 * A simulated player device: a real `ws` client that records every frame and
 * the close code and reason, which is what a player would observe.
 */
import WebSocket from 'ws';

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface Device {
  readonly ws: WebSocket;
  readonly frames: Array<Record<string, unknown>>;
  /** The first frame: `granted` or `denied` (rejects if the socket closes first). */
  readonly decision: Promise<Record<string, unknown>>;
  /** Resolves with the close the device saw. */
  readonly closed: Promise<CloseInfo>;
  /** Monotonic time of the close, ms. */
  closedAt?: number;
  close(code?: number): Promise<CloseInfo>;
}

export interface ConnectOptions {
  token?: string;
  device: string;
  content?: string;
  takeover?: string;
  /** The lease id a drain's 1012 or a fence's 4408 ended (what the SDK sends coming back). */
  handoff?: string;
  /** The lease id a lost socket (1006) ended (what the SDK sends coming back). */
  previous?: string;
  /** 'header' (default, native players) or 'subprotocol' (browsers). */
  carriage?: 'header' | 'subprotocol' | 'none';
  /** Answer protocol pings (default true); false simulates a dead device. */
  autoPong?: boolean;
  protocols?: string[];
  headers?: Record<string, string>;
  query?: string;
}

export function leaseUrl(base: string, opts: ConnectOptions): string {
  const params = new URLSearchParams({ device: opts.device });
  if (opts.content !== undefined) params.set('content', opts.content);
  if (opts.takeover !== undefined) params.set('takeover', opts.takeover);
  if (opts.handoff !== undefined) params.set('handoff', opts.handoff);
  if (opts.previous !== undefined) params.set('previous', opts.previous);
  return `${base}/v1/lease?${opts.query ?? params.toString()}`;
}

export function connect(base: string, opts: ConnectOptions): Device {
  const carriage = opts.carriage ?? (opts.token === undefined ? 'none' : 'header');
  const headers: Record<string, string> = { ...opts.headers };
  let protocols = opts.protocols ?? ['sigma-stream.v1'];
  if (carriage === 'header') headers.Authorization = `Bearer ${opts.token}`;
  if (carriage === 'subprotocol') protocols = [...protocols, `bearer.${opts.token}`];
  const ws = new WebSocket(leaseUrl(base, opts), protocols, { headers, autoPong: opts.autoPong ?? true });
  const frames: Array<Record<string, unknown>> = [];
  let onFirst: ((f: Record<string, unknown>) => void) | undefined;
  let onFirstFail: ((e: Error) => void) | undefined;
  const decision = new Promise<Record<string, unknown>>((resolve, reject) => {
    onFirst = resolve;
    onFirstFail = reject;
  });
  decision.catch(() => {});
  const device: Device = {
    ws,
    frames,
    decision,
    closed: new Promise<CloseInfo>((resolve) => {
      ws.on('close', (code, reason) => {
        device.closedAt = performance.now();
        onFirstFail?.(new Error(`closed ${code} ${reason.toString()} before a decision`));
        resolve({ code, reason: reason.toString() });
      });
    }),
    close(code = 1000) {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code);
      return device.closed;
    },
  };
  ws.on('error', () => {});
  ws.on('message', (data) => {
    const frame = JSON.parse((data as Buffer).toString('utf8')) as Record<string, unknown>;
    frames.push(frame);
    if (frame.type === 'granted' || frame.type === 'denied') onFirst?.(frame);
  });
  return device;
}

/** Sends an app-level ping and waits for the pong frame. */
export async function appPing(device: Device, timeoutMs = 2000): Promise<boolean> {
  const before = device.frames.filter((f) => f.type === 'pong').length;
  device.ws.send(JSON.stringify({ type: 'ping' }));
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    if (device.frames.filter((f) => f.type === 'pong').length > before) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

/** Polls `check` until it returns a truthy value or the time is up. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 5000, everyMs = 25): Promise<T> {
  const until = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (performance.now() > until) throw new Error(`condition not met within ${timeoutMs} ms (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
