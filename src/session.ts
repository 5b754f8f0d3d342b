import { performance } from 'node:perf_hooks';
import type { RawData, WebSocket } from 'ws';
import { closeReason, type CloseCode } from './close-codes.js';
import type { Lease } from './lease-store.js';
import type { ReleaseReason } from './metrics.js';
import type { Region } from './regions.js';
import type { Plan } from './plan.js';
import type { Bucket } from './rate-limit.js';

/**
 * One device's socket. It owns its state and its one close path; the hub
 * registers it and hears when it ends. It is deliberately small (a few
 * fields, no closures): a gateway holds tens of thousands of them. The ws
 * listeners below are module functions shared by every socket; they find
 * their session through the SESSION property set on the socket.
 *
 *   admitting --grant()--> leased --close()--> closed
 *   admitting --close()--> closed
 *   leased --unlease()--> released --readmit()--> admitting   (a paused stream gave its slot back)
 */
export type SessionState = 'admitting' | 'leased' | 'released' | 'closed';

/** How a session ended, as its owner books it. */
export interface Ending {
  /** The close code sent, 'terminate' for a dead socket, undefined when the peer closed first. */
  readonly close: CloseCode | 'terminate' | undefined;
  readonly reason: ReleaseReason;
  /** The lease the session held, if it was leased. */
  readonly lease: Lease | undefined;
  /** Give the lease back (false only when the whole instance is fenced: its leases die with it). */
  readonly release: boolean;
}

/** What every session reports to; one object shared by all sessions of a gateway. */
export interface SessionOwner {
  message(session: Session, data: RawData, isBinary: boolean): void;
  /** ws refused a frame (too big, bad UTF-8, unmasked, reserved opcode) and is closing the socket. */
  error(session: Session, err: Error & { code?: string }): void;
  /** Called exactly once, when the session moves to `closed`. */
  ended(session: Session, ending: Ending): void;
  /** The socket is gone (ws 'close'): after `ended`. */
  gone(session: Session): void;
  /** The admission's decision frame is written (`granted`): a 101 held for it may go. */
  decided(session: Session): void;
}

const SESSION = Symbol('session');
type TaggedSocket = WebSocket & { [SESSION]?: Session };

export class Session implements Bucket {
  #state: SessionState = 'admitting';
  #lease: Lease | undefined = undefined;
  userId = '';
  /** The user's home region (whose table holds the lease), known once the token is checked. */
  region: Region | undefined = undefined;
  /** Device class from the token's `device_class` or the `class` parameter; set by admission. */
  deviceClass: string | undefined = undefined;
  /** The plan admission enforced, kept to admit again on `resume`. */
  plan: Plan | undefined = undefined;
  /** Monotonic ms when the player said `pause`; 0 while playing. */
  pausedAt = 0;
  /** A protocol ping went out and no pong came back yet. */
  awaitingPong = false;
  /** Token expiry (seconds since the epoch); 0 until authenticated. */
  exp = 0;
  /** Wall-clock ms when the next playback token is due (src/playback-refresh.ts); 0: at the next sweep. */
  playbackDueAt = 0;
  /** Monotonic ms of the last re-authentication attempt. */
  reauthAt = Number.NEGATIVE_INFINITY;
  /** Message rate bucket (app pings count), inline: a bucket object of its own costs 40 B per socket. */
  tokens: number;
  at: number;
  readonly ws: WebSocket;
  readonly owner: SessionOwner;
  readonly deviceId: string;
  readonly contentId: string | undefined;

  constructor(ws: WebSocket, owner: SessionOwner, deviceId: string, contentId: string | undefined, messageBurst: number) {
    this.ws = ws;
    this.tokens = messageBurst;
    this.at = performance.now();
    this.owner = owner;
    this.deviceId = deviceId;
    this.contentId = contentId;
    (ws as TaggedSocket)[SESSION] = this;
    ws.on('message', socketOnMessage);
    ws.on('pong', socketOnPong);
    ws.on('close', socketOnClose);
    ws.on('error', socketOnError);
  }

  /** The message rate bucket: the session itself (its `tokens` and `at`). */
  get messages(): Bucket {
    return this;
  }

  get state(): SessionState {
    return this.#state;
  }

  /** The lease this socket holds, while leased. */
  get lease(): Lease | undefined {
    return this.#lease;
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  /** A paused stream gives its lease back; the socket stays open. Returns the lease to release. */
  unlease(): Lease | undefined {
    if (this.#state !== 'leased') return undefined;
    const lease = this.#lease;
    this.#state = 'released';
    this.#lease = undefined;
    return lease;
  }

  /** A released session asks for a lease again (`resume`). */
  readmit(): boolean {
    if (this.#state !== 'released') return false;
    this.#state = 'admitting';
    this.pausedAt = 0;
    return true;
  }

  /** The admission succeeded: the socket now holds `lease`. */
  grant(lease: Lease): void {
    if (this.#state !== 'admitting') throw new Error(`cannot grant a lease to a ${this.#state} session`);
    this.#state = 'leased';
    this.#lease = lease;
  }

  /** The decision frame is written: a 101 held for it goes now, not after the bookkeeping and the log line that follow. */
  decided(): void {
    this.owner.decided(this);
  }

  /** Sends one JSON frame if the socket is still open. */
  send(frame: object): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(frame));
  }

  /**
   * The one close path, safe to call twice: sends the close code (or
   * terminates a dead socket) and tells the owner once, with the lease it
   * held, so the lease is given back exactly once.
   */
  close(close: CloseCode | 'terminate' | undefined, text: string, reason: ReleaseReason, release = true): void {
    if (this.#state === 'closed') return;
    const lease = this.#lease;
    this.#state = 'closed';
    if (close === 'terminate') this.ws.terminate();
    else if (close !== undefined) this.ws.close(close.code, closeReason(text));
    this.owner.ended(this, { close, reason, lease, release });
  }
}

function socketOnMessage(this: TaggedSocket, data: RawData, isBinary: boolean): void {
  const session = this[SESSION];
  if (session) session.owner.message(session, data, isBinary);
}

function socketOnPong(this: TaggedSocket): void {
  const session = this[SESSION];
  if (session) session.awaitingPong = false;
}

function socketOnClose(this: TaggedSocket, code: number): void {
  const session = this[SESSION];
  if (!session) return;
  session.close(undefined, '', session.awaitingPong && code === 1006 ? 'ping_timeout' : 'client_close');
  session.owner.gone(session);
}

function socketOnError(this: TaggedSocket, err: Error & { code?: string }): void {
  // ws has already answered with 1002, 1007 or 1009 and closes the socket; the 'close' listener does the rest.
  const session = this[SESSION];
  if (session) session.owner.error(session, err);
}
