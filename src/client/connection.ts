/**
 * One socket attempt: opens the WebSocket with the token in the right place,
 * parses frames, runs the app-level ping, and reports exactly one `end` to its
 * owner (unless the owner closed it first). A socket that goes silent (no
 * decision in time, or no pong in time) is reported as 1006 and cut loose at
 * once: a browser's close() on a dead network can take minutes to fire.
 */
import { APP_PROTOCOL, BEARER_PROTOCOL_PREFIX, CODES, type DeniedFrame, type GrantedFrame } from './protocol.js';

/** What the SDK needs of a WebSocket: the browser's, or `ws` in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  addEventListener(type: 'close', listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: 'error', listener: () => void): void;
}

/** The browser's `WebSocket`, or `WebSocket` from the `ws` package (whose third argument carries headers). */
export type WebSocketConstructor = new (url: string, protocols: string[], options?: { headers: Record<string, string> }) => WebSocketLike;

export type TokenCarriage = 'header' | 'subprotocol';

export interface ConnectionOptions {
  readonly url: string;
  readonly token: string;
  readonly carriage: TokenCarriage;
  readonly WebSocket: WebSocketConstructor;
  readonly pingIntervalMs: number;
  readonly pongTimeoutMs: number;
  readonly decisionTimeoutMs: number;
}

export interface ConnectionOwner {
  onGranted(conn: Connection, frame: GrantedFrame): void;
  onDenied(conn: Connection, frame: DeniedFrame): void;
  onFrame(conn: Connection, frame: { type: string; [key: string]: unknown }): void;
  onEnd(conn: Connection, code: number, reason: string): void;
}

const OPEN = 1;

export class Connection {
  readonly token: string;
  readonly #ws: WebSocketLike;
  readonly #owner: ConnectionOwner;
  readonly #opts: ConnectionOptions;
  #ended = false;
  #decided = false;
  /** One timer at a time: the decision deadline, then the ping/pong cycle. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #awaitingPong = false;

  constructor(opts: ConnectionOptions, owner: ConnectionOwner) {
    this.#opts = opts;
    this.#owner = owner;
    this.token = opts.token;
    // Browsers cannot set headers: the token rides in the subprotocol list and the
    // server selects only sigma-stream.v1. Never in the URL (proxy logs keep URLs).
    this.#ws =
      opts.carriage === 'header'
        ? new opts.WebSocket(opts.url, [APP_PROTOCOL], { headers: { Authorization: `Bearer ${opts.token}` } })
        : new opts.WebSocket(opts.url, [APP_PROTOCOL, BEARER_PROTOCOL_PREFIX + opts.token]);
    this.#ws.addEventListener('message', (event: { data: unknown }) => this.#onMessage(event.data));
    this.#ws.addEventListener('close', (event: { code: number; reason: string }) => this.#end(event.code, String(event.reason ?? '')));
    // 'error' is always followed by 'close' (1006); listening keeps Node from treating it as unhandled.
    this.#ws.addEventListener('error', () => {});
    this.#schedule(opts.decisionTimeoutMs, () => this.#dead(`no answer from the gateway within ${opts.decisionTimeoutMs} ms`));
  }

  get open(): boolean {
    return !this.#ended && this.#ws.readyState === OPEN;
  }

  send(frame: object): void {
    if (this.open) this.#ws.send(JSON.stringify(frame));
  }

  /** Closes without reporting to the owner (the owner chose this). Safe to call twice. */
  close(code: number = CODES.NORMAL, reason = ''): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    try {
      this.#ws.close(code, reason);
    } catch {
      /* already closing */
    }
  }

  #onMessage(data: unknown): void {
    if (this.#ended || typeof data !== 'string') return;
    let frame: { type?: unknown; [key: string]: unknown };
    try {
      frame = JSON.parse(data) as typeof frame;
    } catch {
      return;
    }
    if (frame?.type === 'pong') {
      this.#awaitingPong = false;
      return;
    }
    if (frame?.type === 'granted' && !this.#decided) {
      this.#decided = true;
      this.#schedule(this.#opts.pingIntervalMs, () => this.#ping());
      this.#owner.onGranted(this, frame as unknown as GrantedFrame);
      return;
    }
    if (frame?.type === 'denied' && !this.#decided) {
      this.#decided = true;
      clearTimeout(this.#timer);
      this.#owner.onDenied(this, frame as unknown as DeniedFrame);
      return;
    }
    if (typeof frame?.type === 'string') this.#owner.onFrame(this, frame as { type: string });
  }

  /** Ping, then check PONG_TIMEOUT later; the next ping follows the rest of the interval. */
  #ping(): void {
    this.#awaitingPong = true;
    this.send({ type: 'ping' });
    this.#schedule(this.#opts.pongTimeoutMs, () => {
      if (this.#awaitingPong) {
        this.#dead(`no pong from the gateway within ${this.#opts.pongTimeoutMs} ms`);
        return;
      }
      this.#schedule(Math.max(0, this.#opts.pingIntervalMs - this.#opts.pongTimeoutMs), () => this.#ping());
    });
  }

  #schedule(ms: number, run: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(run, ms);
  }

  /** The peer went silent: drop the socket now (terminate where `ws` offers it) and report 1006. */
  #dead(reason: string): void {
    if (this.#ended) return;
    this.#end(CODES.ABNORMAL, reason);
    const terminate = (this.#ws as { terminate?: () => void }).terminate;
    try {
      if (typeof terminate === 'function') terminate.call(this.#ws);
      else this.#ws.close(4000, 'gateway silent');
    } catch {
      /* already closing */
    }
  }

  #end(code: number, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#owner.onEnd(this, code, reason);
  }
}
