import { BACKOFF_DEFAULTS, backoffDelayMs, type BackoffOptions } from './backoff.js';
import { Connection, type ConnectionOwner, type TokenCarriage, type WebSocketConstructor } from './connection.js';
import { defaultStorage, resolveDeviceId, type KeyValueStorage } from './device-id.js';
import { Emitter } from './emitter.js';
import { InvalidOptionError, LeaseStoppedError, StreamLimitError, TerminalCloseError, UnauthorizedError } from './errors.js';
import { viewerMessage } from './messages.js';
import {
  CODES,
  ID_PATTERN,
  ID_RULE,
  LEASE_PATH,
  reconnectRule,
  type ActiveStream,
  type DeniedFrame,
  type DenialReason,
  type GrantedFrame,
  type PlaybackToken,
} from './protocol.js';
import { listStreams, stopStream, type StreamsList } from './rest.js';
import { tokenExpiryMs } from './token.js';

export interface StreamLeaseOptions {
  /** Gateway base URL such as `wss://streams.example.com`, or a function read before every connect. */
  readonly url: string | (() => string);
  /**
   * Returns a bearer token (JWT). `refresh` is true when the last one was
   * refused (4401) or is about to expire: return a new one then.
   */
  readonly getToken: (context: { refresh: boolean }) => string | Promise<string>;
  /** Stable id of this device. @default a random id kept in localStorage (browsers); required in Node. */
  readonly deviceId?: string;
  /** What is playing, shown to the user's other devices at the limit (and counted by per-content caps). */
  readonly contentId?: string;
  /** This device's class (`tv`, `mobile`, ...) for plans with per-class caps, unless the token carries `device_class`. */
  readonly deviceClass?: string;
  /** WebSocket constructor. @default the global `WebSocket` (browsers); in Node pass `WebSocket` from `ws`. */
  readonly WebSocket?: WebSocketConstructor;
  /** @default 'header' when a WebSocket constructor is passed outside a browser, else 'subprotocol' */
  readonly tokenCarriage?: TokenCarriage;
  /** Reconnect delays (full jitter). */
  readonly backoff?: BackoffOptions;
  /** App-level ping period while granted, ms. @default 20000 */
  readonly pingIntervalMs?: number;
  /** No pong this long after a ping means the gateway is gone: reconnect, ms. @default 10000 */
  readonly pongTimeoutMs?: number;
  /** No `granted` or `denied` this long after connecting means try again, ms. @default 10000 */
  readonly decisionTimeoutMs?: number;
  /** Fetch a new token this long before the current one expires, ms. @default 60000 */
  readonly refreshBeforeExpiryMs?: number;
  /**
   * Send `{"type":"reauth"}` on the live socket instead of reconnecting when
   * the token is about to expire. Falls back to a reconnect when the gateway
   * answers with an error (gateways without re-authentication do). @default false
   */
  readonly reauth?: boolean;
  /** Where the browser device id is kept. @default globalThis.localStorage */
  readonly storage?: KeyValueStorage;
}

/**
 * idle -> connecting -> granted <-> reconnecting; granted -> released (a
 * paused stream gave its slot back) -> granted on `resume()`; ends in denied,
 * revoked, replaced, ended (other terminal closes) or stopped (by `stop()`).
 */
export type LeaseState =
  'idle' | 'connecting' | 'granted' | 'released' | 'reconnecting' | 'denied' | 'revoked' | 'replaced' | 'ended' | 'stopped';

export interface Grant {
  readonly leaseId: string;
  readonly userId: string;
  readonly deviceId: string;
  readonly limit: number;
  /** Streams of this user now playing, this one included. */
  readonly active: number;
  readonly viewerMessage: string;
}

export interface CloseEvent {
  readonly code: number;
  readonly reason: string;
  readonly viewerMessage: string;
}

export interface StreamLeaseEvents extends Record<string, unknown> {
  state: LeaseState;
  /** The lease is held (first time, after a reconnect, after a takeover). */
  granted: Grant;
  /** Refused by a cap of the plan; `active` lists the devices playing. Terminal. */
  denied: {
    readonly limit: number;
    readonly reason: DenialReason;
    readonly mustStop: number;
    readonly active: readonly ActiveStream[];
    readonly viewerMessage: string;
  };
  /** The stream was paused long enough that its slot went back (the socket stays open); `resume()` asks again. */
  released: { readonly reason: 'paused'; readonly viewerMessage: string };
  /** A held lease ended without `stop()`: pause playback; `willReconnect` says whether the SDK tries again. */
  lost: CloseEvent & { readonly willReconnect: boolean };
  /** A retry is scheduled `delayMs` from now (`attempt` counts from 1 since the last stable lease). */
  reconnecting: CloseEvent & { readonly attempt: number; readonly delayMs: number };
  /** 4403: the user or an operator stopped this device. Terminal. */
  revoked: CloseEvent;
  /** 4409: this device id connected again elsewhere. Terminal. */
  replaced: CloseEvent;
  /** A playback token for the media path: with every grant and each refresh while the lease is held. */
  playback: PlaybackEvent;
}

/** A playback token and the lease it belongs to (its `sid` claim). */
export interface PlaybackEvent extends PlaybackToken {
  readonly leaseId: string;
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function positive(opts: object, name: string, fallback: number): number {
  const value = (opts as Record<string, unknown>)[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
    throw new InvalidOptionError(name, 'a positive number of milliseconds', value);
  return value;
}

/** Retry of a token refresh that failed while the current socket still holds the lease, ms. */
const REFRESH_RETRY_MS = 2000;

/** The lease a reconnect names, and how: see {@link returnAfter}. */
interface Return {
  readonly param: 'handoff' | 'previous';
  readonly leaseId: string;
}

/**
 * What a reconnect after losing a granted socket with `code` tells the gateway of the lease it held. After a
 * drain's 1012 or a fence's 4408 the entry is still in the table (kept for us, or its gateway cannot give it
 * back): `handoff`, and the gateway takes it over in one write. After a socket lost without a close frame
 * (1006: a killed gateway, the network, no pong) it may be there or given back (the gateway saw the socket end):
 * `previous`, one write when it went back, a hand-off of its ghost when it is there, and refused (4403) if the
 * lease was stopped meanwhile. After the other codes the gateway gave it back itself: nothing.
 */
function returnAfter(code: number, leaseId: string | undefined): Return | undefined {
  if (leaseId === undefined) return undefined;
  if (code === CODES.RESTART || code === CODES.LEASE_LOST) return { param: 'handoff', leaseId };
  if (code === CODES.ABNORMAL) return { param: 'previous', leaseId };
  return undefined;
}

/**
 * Holds one stream lease for a player: the WebSocket to the gateway, kept
 * open (and reopened when the close code allows) from `start()` to `stop()`.
 *
 * ```ts
 * const lease = new StreamLease({ url: 'wss://streams.example.com', getToken });
 * lease.on('lost', (e) => player.pause(e.viewerMessage));
 * await lease.start(); // rejects with StreamLimitError, UnauthorizedError, TerminalCloseError
 * ```
 */
export class StreamLease extends Emitter<StreamLeaseEvents> {
  readonly deviceId: string;
  readonly contentId: string | undefined;
  readonly deviceClass: string | undefined;
  readonly #url: () => string;
  readonly #getToken: StreamLeaseOptions['getToken'];
  readonly #WebSocket: WebSocketConstructor;
  readonly #carriage: TokenCarriage;
  readonly #backoff: Required<BackoffOptions>;
  readonly #timing: { pingIntervalMs: number; pongTimeoutMs: number; decisionTimeoutMs: number; refreshBeforeExpiryMs: number };
  readonly #reauth: boolean;
  readonly #owner: ConnectionOwner = {
    onGranted: (conn, frame) => this.#onGranted(conn, frame),
    onDenied: (conn, frame) => this.#onDenied(conn, frame),
    onFrame: (conn, frame) => this.#onFrame(conn, frame),
    onEnd: (conn, code, reason) => this.#onEnd(conn, code, reason),
  };

  #state: LeaseState = 'idle';
  /** The socket holding (or asking for) the lease. */
  #conn: Connection | undefined;
  /** A second socket for the same device, opened to swap in a fresh token (make before break). */
  #refreshConn: Connection | undefined;
  /** Token sent in a reauth frame, awaiting the gateway's answer. */
  #reauthToken: string | undefined;
  #grant: Grant | undefined;
  /** The playback token of the held lease; dropped the moment the lease ends. */
  #playback: PlaybackToken | undefined;
  #grantedAt = 0;
  /** Consecutive retries since the last stable lease: drives the backoff. */
  #attempt = 0;
  /** Carried by every connect until the next grant, then dropped (a later reconnect must not kick anyone). */
  #takeover: string | undefined;
  /**
   * The lease a lost socket ended ({@link returnAfter}), sent until the next
   * answer: the gateway it comes back to keeps the slot in one write after a
   * 1012 or a 4408, and tells a stop that landed meanwhile (4403).
   */
  #return: Return | undefined;
  /** One fresh token per 4401; a second 4401 in a row is final. */
  #triedFreshToken = false;
  #pending: Deferred<Grant> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** Bumped by stop() and takeover(): async steps of an older run see it and give up. */
  #run = 0;
  /** The player said pause (kept across reconnects: a new socket says it again). */
  #paused = false;
  /** A resume() waiting for the gateway to grant a released stream again. */
  #resuming: Deferred<Grant> | undefined;

  constructor(options: StreamLeaseOptions) {
    super();
    const { url, getToken } = options;
    if (typeof url === 'string') {
      if (!/^(wss?|https?):\/\//i.test(url)) throw new InvalidOptionError('url', 'a ws:// or wss:// base URL', url);
      this.#url = () => url;
    } else if (typeof url === 'function') {
      this.#url = url;
    } else {
      throw new InvalidOptionError('url', 'a string or a function returning one', url);
    }
    if (typeof getToken !== 'function') throw new InvalidOptionError('getToken', 'a function returning a token', getToken);
    this.#getToken = getToken;
    if (options.contentId !== undefined && !ID_PATTERN.test(options.contentId)) {
      throw new InvalidOptionError('contentId', ID_RULE, options.contentId);
    }
    this.contentId = options.contentId;
    if (options.deviceClass !== undefined && !ID_PATTERN.test(options.deviceClass)) {
      throw new InvalidOptionError('deviceClass', ID_RULE, options.deviceClass);
    }
    this.deviceClass = options.deviceClass;
    this.deviceId = resolveDeviceId(options.deviceId, options.storage ?? defaultStorage());
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof WebSocketImpl !== 'function') {
      throw new InvalidOptionError(
        'WebSocket',
        'a WebSocket constructor where there is no global one (Node: WebSocket from "ws")',
        WebSocketImpl,
      );
    }
    this.#WebSocket = WebSocketImpl;
    const inBrowser = typeof (globalThis as { document?: unknown }).document !== 'undefined';
    this.#carriage = options.tokenCarriage ?? (options.WebSocket !== undefined && !inBrowser ? 'header' : 'subprotocol');
    if (this.#carriage !== 'header' && this.#carriage !== 'subprotocol') {
      throw new InvalidOptionError('tokenCarriage', '"header" or "subprotocol"', this.#carriage);
    }
    const b = options.backoff ?? {};
    this.#backoff = {
      initialMs: positive(b, 'initialMs', BACKOFF_DEFAULTS.initialMs),
      maxMs: positive(b, 'maxMs', BACKOFF_DEFAULTS.maxMs),
      stableAfterMs: positive(b, 'stableAfterMs', BACKOFF_DEFAULTS.stableAfterMs),
    };
    this.#timing = {
      pingIntervalMs: positive(options, 'pingIntervalMs', 20_000),
      pongTimeoutMs: positive(options, 'pongTimeoutMs', 10_000),
      decisionTimeoutMs: positive(options, 'decisionTimeoutMs', 10_000),
      refreshBeforeExpiryMs: positive(options, 'refreshBeforeExpiryMs', 60_000),
    };
    this.#reauth = options.reauth === true;
  }

  get state(): LeaseState {
    return this.#state;
  }

  /** The lease while granted. */
  get grant(): Grant | undefined {
    return this.#state === 'granted' ? this.#grant : undefined;
  }

  /**
   * The current playback token while the lease is held and the token has not
   * expired, else undefined: media requests made after the lease ended carry
   * none (the player adapters in src/client/adapters/ read it on
   * every request).
   */
  get playbackToken(): string | undefined {
    const p = this.#playback;
    return this.#state === 'granted' && p !== undefined && p.exp * 1000 > Date.now() ? p.token : undefined;
  }

  /**
   * The playback token for a media request about to go out: the current
   * one; while the lease is (re)connecting (a deploy's 1012, a lost
   * gateway), the next one as soon as the lease is granted again, waiting at
   * most `timeoutMs`; undefined when the lease has ended, or no token came in
   * time. The adapters use it so that a reconnect stalls requests for a
   * moment instead of sending them without a token (401). Never an old token.
   */
  playbackTokenSoon(timeoutMs = 10_000): Promise<string | undefined> {
    const now = this.playbackToken;
    if (now !== undefined || (this.#state !== 'connecting' && this.#state !== 'reconnecting')) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = (token: string | undefined): void => {
        clearTimeout(timer);
        offPlayback();
        offState();
        resolve(token);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const offPlayback = this.on('playback', (e) => done(e.token));
      // Granted without a token (the gateway has no signing key), or a terminal state: stop waiting.
      // The token of a grant is set right after the state changes, hence the microtask.
      const offState = this.on('state', (state) => {
        if (state !== 'connecting' && state !== 'reconnecting') queueMicrotask(() => done(this.playbackToken));
      });
    });
  }

  /**
   * Connects and resolves once the lease is granted. Retries on its own while
   * the close codes allow it (emitting `reconnecting`); rejects with
   * {@link StreamLimitError}, {@link UnauthorizedError} (after one refresh),
   * {@link TerminalCloseError}, or {@link LeaseStoppedError} if `stop()` comes first.
   */
  start(): Promise<Grant> {
    if (this.#state === 'granted' && this.#grant) return Promise.resolve(this.#grant);
    // The slot went back while paused: asking again is a resume (on the open socket, if any).
    if (this.#state === 'released') return this.resume();
    if (this.#pending) return this.#pending.promise;
    // Already on its way back after a loss: wait for that attempt, do not start a second one.
    if (this.#state === 'connecting' || this.#state === 'reconnecting') return (this.#pending = deferred()).promise;
    return this.#begin(undefined);
  }

  /**
   * Plays here by stopping another device of the same user: `deviceId` from
   * the denial's `active` list, or `'oldest'`. The other device's socket
   * closes with 4403 (its SDK emits `revoked`).
   */
  takeover(deviceId: string): Promise<Grant> {
    if (deviceId !== 'oldest' && !ID_PATTERN.test(deviceId)) {
      return Promise.reject(new InvalidOptionError('takeover deviceId', 'a device id or "oldest"', deviceId));
    }
    this.#teardown('taking over another device');
    return this.#begin(deviceId);
  }

  /**
   * Tells the gateway playback is paused. Where the service releases paused
   * streams (`PAUSE_RELEASE_MS`), the slot goes back after that long and the
   * lease moves to `released` (event `released`); the socket stays open.
   */
  pause(): void {
    this.#paused = true;
    this.#conn?.send({ type: 'pause' });
  }

  /**
   * Playback resumes. Before the release this keeps the lease; after it, the
   * gateway admits this device again: resolves with the new grant, or rejects
   * with {@link StreamLimitError} when no place is free.
   */
  resume(): Promise<Grant> {
    this.#paused = false;
    if (this.#state === 'released') {
      // The released socket ended meanwhile (token expiry, drain): admit on a new one.
      if (this.#conn === undefined) return this.#begin(undefined);
      this.#conn.send({ type: 'resume' });
      return (this.#resuming ??= deferred()).promise;
    }
    this.#conn?.send({ type: 'resume' });
    if (this.#state === 'granted' && this.#grant) return Promise.resolve(this.#grant);
    return this.start();
  }

  /** Gives the lease back (close 1000). Safe to call twice; `start()` may follow. */
  stop(): void {
    this.#teardown('player stopped');
    // A start() after this is a new session: it must not come back as the lease a lost socket ended (a stop,
    // takeover or eviction of that lease while away would refuse the new session with 4403).
    this.#return = undefined;
    this.#setState('stopped');
    const waiting = [this.#pending, this.#resuming];
    this.#pending = this.#resuming = undefined;
    for (const w of waiting) w?.reject(new LeaseStoppedError());
  }

  /** The user's streams playing now, on any device (`GET /v1/streams`). */
  async listStreams(): Promise<StreamsList> {
    return listStreams(this.#url(), await this.#getToken({ refresh: false }));
  }

  /** Stops another device of the user (`DELETE /v1/streams/<id>`); false when it was not playing. */
  async stopDevice(deviceId: string): Promise<boolean> {
    return stopStream(this.#url(), await this.#getToken({ refresh: false }), deviceId);
  }

  // ---- connecting -----------------------------------------------------------

  #begin(takeover: string | undefined): Promise<Grant> {
    this.#takeover = takeover;
    this.#attempt = 0;
    this.#triedFreshToken = false;
    const pending = (this.#pending ??= deferred());
    this.#setState('connecting');
    void this.#connect(false);
    return pending.promise;
  }

  async #connect(refresh: boolean): Promise<void> {
    const run = this.#run;
    let token: string;
    try {
      token = await this.#getToken({ refresh });
    } catch (err) {
      if (run === this.#run) this.#finish('ended', err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (run !== this.#run) return;
    this.#conn = this.#open(token, this.#takeover, this.#return);
  }

  /** A second socket for the same device with a fresh token: it takes the lease it holds over (`handoff`). */
  #openRefresh(token: string): Connection {
    return this.#open(token, undefined, this.#grant && { param: 'handoff', leaseId: this.#grant.leaseId });
  }

  #open(token: string, takeover: string | undefined, back: Return | undefined): Connection {
    const params = new URLSearchParams({ device: this.deviceId });
    if (this.contentId !== undefined) params.set('content', this.contentId);
    if (this.deviceClass !== undefined) params.set('class', this.deviceClass);
    if (takeover !== undefined) params.set('takeover', takeover);
    else if (back !== undefined) params.set(back.param, back.leaseId);
    const base = this.#url()
      .replace(/^http(s?):/i, 'ws$1:')
      .replace(/\/+$/, '');
    return new Connection(
      { url: `${base}${LEASE_PATH}?${params}`, token, carriage: this.#carriage, WebSocket: this.#WebSocket, ...this.#timing },
      this.#owner,
    );
  }

  /** Closes every socket and timer of the current run. */
  #teardown(reason: string): void {
    this.#run++;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#refreshTimer);
    this.#reauthToken = undefined;
    this.#playback = undefined;
    this.#conn?.close(CODES.NORMAL, reason);
    this.#refreshConn?.close(CODES.NORMAL, reason);
    this.#conn = this.#refreshConn = undefined;
  }

  // ---- what the gateway says ------------------------------------------------

  #onGranted(conn: Connection, frame: GrantedFrame): void {
    const grant: Grant = {
      leaseId: frame.leaseId,
      userId: frame.userId,
      deviceId: frame.deviceId,
      limit: frame.limit,
      active: frame.active,
      viewerMessage: viewerMessage({ kind: 'granted' }),
    };
    if (conn === this.#refreshConn) {
      // Token refresh: the new socket replaced our own lease (the old one gets
      // 4409 from the gateway); swap quietly, the viewer sees nothing.
      this.#conn?.close(CODES.NORMAL, 'token refreshed');
      this.#conn = conn;
      this.#refreshConn = undefined;
      this.#grant = grant;
      this.#scheduleRefresh(conn.token);
      this.#setPlayback(frame.playback);
      // The gateway's new session must hear about a pause too, or a paused player keeps its slot.
      if (this.#paused) conn.send({ type: 'pause' });
      return;
    }
    if (conn !== this.#conn) return;
    this.#grant = grant;
    this.#grantedAt = Date.now();
    this.#takeover = this.#return = undefined;
    this.#triedFreshToken = false;
    this.#setState('granted');
    this.#scheduleRefresh(conn.token);
    // A new socket after a reconnect: the gateway must hear about a pause again.
    if (this.#paused) conn.send({ type: 'pause' });
    this.emit('granted', grant);
    this.#setPlayback(frame.playback);
    for (const waiting of [this.#pending, this.#resuming]) waiting?.resolve(grant);
    this.#pending = this.#resuming = undefined;
  }

  #setPlayback(playback: PlaybackToken | undefined): void {
    if (playback === undefined || typeof playback.token !== 'string' || typeof playback.exp !== 'number' || this.#grant === undefined)
      return;
    this.#playback = { token: playback.token, exp: playback.exp };
    this.emit('playback', { token: playback.token, exp: playback.exp, leaseId: this.#grant.leaseId });
  }

  #onDenied(conn: Connection, frame: DeniedFrame): void {
    if (conn === this.#refreshConn) {
      // Cannot happen for our own device id; keep the socket we have.
      this.#refreshConn = undefined;
      conn.close();
      return;
    }
    if (conn !== this.#conn) return;
    // The gateway closes with 4429 next; that close is ours to ignore.
    this.#conn = undefined;
    const error = new StreamLimitError(
      frame.limit,
      frame.active,
      frame.reason ?? 'limit',
      frame.mustStop ?? 1,
      frame.cap ?? frame.limit,
      frame.class,
    );
    this.emit('denied', {
      limit: frame.limit,
      reason: error.reason,
      mustStop: error.mustStop,
      active: frame.active,
      viewerMessage: error.viewerMessage,
    });
    const resuming = this.#resuming;
    this.#resuming = undefined;
    resuming?.reject(error);
    this.#finish('denied', error);
  }

  #onFrame(conn: Connection, frame: { type: string; [key: string]: unknown }): void {
    if (frame.type === 'playback') {
      if (conn === this.#conn && this.#state === 'granted') this.#setPlayback(frame as unknown as PlaybackToken);
      return;
    }
    // After a release, the same socket is admitted again on resume: granted or denied a second time.
    if (conn === this.#conn && this.#state === 'released') {
      if (frame.type === 'granted') return this.#onGranted(conn, frame as unknown as GrantedFrame);
      if (frame.type === 'denied') return this.#onDenied(conn, frame as unknown as DeniedFrame);
    }
    if (conn === this.#conn && frame.type === 'released' && this.#state === 'granted') {
      clearTimeout(this.#refreshTimer);
      // A paused stream gave its slot back: its media requests carry no token until it is granted again.
      this.#playback = undefined;
      // A token-refresh socket on its way would take a slot for a paused player and leave this state
      // 'released' on a leased socket: drop it (the gateway gives back whatever it was granted).
      this.#refreshConn?.close();
      this.#refreshConn = undefined;
      this.#reauthToken = undefined;
      this.#setState('released');
      this.emit('released', { reason: 'paused', viewerMessage: viewerMessage({ kind: 'released' }) });
      return;
    }
    const token = this.#reauthToken;
    if (conn !== this.#conn || token === undefined) return;
    if (frame.type === 'reauthed') {
      this.#reauthToken = undefined;
      this.#scheduleRefresh(token);
    } else if (frame.type === 'error') {
      // This gateway does not re-authenticate live sockets: swap sockets instead.
      this.#reauthToken = undefined;
      clearTimeout(this.#refreshTimer);
      this.#refreshConn = this.#openRefresh(token);
    }
  }

  #onEnd(conn: Connection, code: number, reason: string): void {
    if (conn === this.#refreshConn) {
      this.#refreshConn = undefined;
      // The old socket still holds the lease: try the refresh again a little later.
      if (this.#conn) this.#refreshTimer = setTimeout(() => void this.#refresh(), REFRESH_RETRY_MS);
      else this.#lose(code, reason);
      return;
    }
    if (conn !== this.#conn) return;
    this.#conn = undefined;
    // Our own refresh socket took the lease over; it reports next.
    if (this.#refreshConn && code === CODES.REPLACED) return;
    this.#refreshConn?.close();
    this.#refreshConn = undefined;
    this.#lose(code, reason);
  }

  /** The socket holding (or asking for) the lease ended: reconnect or finish, by the close code's rule. */
  #lose(code: number, reason: string): void {
    clearTimeout(this.#refreshTimer);
    this.#playback = undefined;
    this.#reauthToken = undefined;
    // Paused and released: no slot to get back. Stay released without a socket until resume() asks,
    // rather than be admitted again (and, under evict_oldest, stop a device the viewer is watching).
    if (this.#state === 'released' && this.#resuming === undefined) return;
    const wasGranted = this.#state === 'granted';
    if (wasGranted && Date.now() - this.#grantedAt >= this.#backoff.stableAfterMs) this.#attempt = 0;
    if (wasGranted) this.#return = returnAfter(code, this.#grant?.leaseId);
    const rule = reconnectRule(code);
    const event = { code, reason, viewerMessage: viewerMessage({ kind: 'close', code }) };

    if (rule === 'new-token' && !this.#triedFreshToken) {
      this.#triedFreshToken = true;
      if (wasGranted) {
        this.emit('lost', { ...event, willReconnect: true });
        this.#setState('reconnecting');
      }
      void this.#connect(true); // at once: a new token is the fix, not waiting
      return;
    }
    if (rule === 'backoff' || rule === 'jitter') {
      if (wasGranted) this.emit('lost', { ...event, willReconnect: true });
      const delayMs = backoffDelayMs(this.#attempt++, this.#backoff);
      this.#setState('reconnecting');
      this.emit('reconnecting', { ...event, viewerMessage: viewerMessage({ kind: 'reconnecting' }), attempt: this.#attempt, delayMs });
      const run = this.#run;
      this.#retryTimer = setTimeout(() => {
        if (run === this.#run) void this.#connect(false);
      }, delayMs);
      return;
    }

    if (wasGranted) this.emit('lost', { ...event, willReconnect: false });
    if (code === CODES.REVOKED) this.emit('revoked', event);
    if (code === CODES.REPLACED) this.emit('replaced', event);
    const state = code === CODES.REVOKED ? 'revoked' : code === CODES.REPLACED ? 'replaced' : code === CODES.LIMIT ? 'denied' : 'ended';
    this.#finish(state, code === CODES.UNAUTHORIZED ? new UnauthorizedError(reason) : new TerminalCloseError(code, reason));
  }

  /** A terminal state: no socket, no timer; a waiting start() fails with `error`. */
  #finish(state: LeaseState, error: Error): void {
    this.#return = undefined;
    this.#teardown(state);
    this.#setState(state);
    for (const waiting of [this.#pending, this.#resuming]) waiting?.reject(error);
    this.#pending = this.#resuming = undefined;
  }

  // ---- token lifetime -------------------------------------------------------

  /** Plans a fresh token shortly before `exp` (half the remaining life if that is shorter). */
  #scheduleRefresh(token: string): void {
    clearTimeout(this.#refreshTimer);
    const expiresAt = tokenExpiryMs(token);
    if (expiresAt === undefined) return;
    const remaining = expiresAt - Date.now();
    const lead = Math.min(this.#timing.refreshBeforeExpiryMs, remaining / 2);
    this.#refreshTimer = setTimeout(() => void this.#refresh(), Math.max(0, remaining - lead));
  }

  async #refresh(): Promise<void> {
    const run = this.#run;
    const conn = this.#conn;
    let token: string;
    try {
      token = await this.#getToken({ refresh: true });
    } catch {
      if (run === this.#run && conn === this.#conn) this.#refreshTimer = setTimeout(() => void this.#refresh(), REFRESH_RETRY_MS);
      return;
    }
    if (run !== this.#run || conn === undefined || conn !== this.#conn || this.#refreshConn) return;
    if (this.#reauth) {
      // Accepted on `reauthed` or on silence; an error frame falls back to a new socket (#onFrame).
      this.#reauthToken = token;
      conn.send({ type: 'reauth', token });
      this.#refreshTimer = setTimeout(() => {
        if (this.#reauthToken !== token) return;
        this.#reauthToken = undefined;
        this.#scheduleRefresh(token);
      }, this.#timing.pongTimeoutMs);
      return;
    }
    this.#refreshConn = this.#openRefresh(token);
  }

  #setState(state: LeaseState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.emit('state', state);
  }
}
