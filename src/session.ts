import type { RawData, WebSocket } from 'ws';

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
  readonly ws: WebSocket;
  readonly owner: SessionOwner;
  readonly deviceId: string;
  readonly contentId: string | undefined;

  constructor(ws: WebSocket, owner: SessionOwner, deviceId: string, contentId: string | undefined) {
    this.ws = ws;
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

function socketOnError(this: TaggedSocket): void {
  // ws closes the socket after an 'error' (1002, 1007, 1009 ...); the 'close' listener does the rest.
}
