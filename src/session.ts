import type { RawData, WebSocket } from 'ws';
import { newBucket, type Bucket } from './rate-limit.js';

/**
 * One device's socket. It is deliberately small (a few fields, no closures):
 * a gateway holds tens of thousands of them. The ws listeners below are
 * module functions shared by every socket; they find their session through
 * the SESSION property set on the socket.
 *
 * States: admitting -> leased -> closed, or admitting -> closed.
 * Only the gateway moves a session to `closed` (its one close path).
 */
export type SessionState = 'admitting' | 'leased' | 'closed';

export interface SessionOwner {
  onMessage(session: Session, data: RawData, isBinary: boolean): void;
  onSocketClose(session: Session, code: number): void;
  onSocketError(session: Session, err: Error & { code?: string }): void;
}

const SESSION = Symbol('session');
type TaggedSocket = WebSocket & { [SESSION]?: Session };

export class Session {
  state: SessionState = 'admitting';
  /** Set while leased. */
  leaseId: string | undefined = undefined;
  userId = '';
  /** A protocol ping went out and no pong came back yet. */
  awaitingPong = false;
  /** Token expiry (seconds since the epoch); 0 until authenticated. */
  exp = 0;
  /** Monotonic ms of the last re-authentication attempt. */
  reauthAt = Number.NEGATIVE_INFINITY;
  /** Message rate bucket (app pings count). */
  readonly messages: Bucket;
  readonly ws: WebSocket;
  readonly owner: SessionOwner;
  readonly deviceId: string;
  readonly contentId: string | undefined;

  constructor(ws: WebSocket, owner: SessionOwner, deviceId: string, contentId: string | undefined, messageBurst: number) {
    this.ws = ws;
    this.messages = newBucket(messageBurst);
    this.owner = owner;
    this.deviceId = deviceId;
    this.contentId = contentId;
    (ws as TaggedSocket)[SESSION] = this;
    ws.on('message', socketOnMessage);
    ws.on('pong', socketOnPong);
    ws.on('close', socketOnClose);
    ws.on('error', socketOnError);
  }

  /** Sends one JSON frame if the socket is still open. */
  send(frame: object): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(frame));
  }
}

function socketOnMessage(this: TaggedSocket, data: RawData, isBinary: boolean): void {
  const session = this[SESSION];
  if (session) session.owner.onMessage(session, data, isBinary);
}

function socketOnPong(this: TaggedSocket): void {
  const session = this[SESSION];
  if (session) session.awaitingPong = false;
}

function socketOnClose(this: TaggedSocket, code: number): void {
  const session = this[SESSION];
  if (session) session.owner.onSocketClose(session, code);
}

function socketOnError(this: TaggedSocket, err: Error): void {
  // ws has already answered with 1002, 1007 or 1009 and closes the socket; the 'close' listener does the rest.
  const session = this[SESSION];
  if (session) session.owner.onSocketError(session, err);
}
