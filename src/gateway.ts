import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { v4 as uuidv4 } from 'uuid';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { APP_PROTOCOL, asAuthError, AuthError, tokenFromRequest, type Authenticator, type Principal } from './auth.js';
import { CLOSE, closeReason, type CloseCode } from './close-codes.js';
import type { Config } from './config.js';
import { StoreUnavailableError } from './dynamo.js';
import type { InstanceLease } from './instance.js';
import type { Lease, LeaseStore } from './lease-store.js';
import type { Logger } from './log.js';
import type { Metrics, RejectionReason, ReleaseReason } from './metrics.js';
import { clientIp, KeyedLimiter, take } from './rate-limit.js';
import { Session, type SessionOwner } from './session.js';

/** Device and content ids: what a player may put in the query string. */
export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
export const LEASE_PATH = '/v1/lease';
/** Resolution of token expiry on open sockets. */
const EXPIRY_CHECK_MS = 1000;
/** A socket may re-authenticate at most once per this period. */
const REAUTH_MIN_GAP_MS = 1000;

export interface GatewayDeps {
  readonly config: Config;
  readonly store: LeaseStore;
  readonly instance: () => InstanceLease;
  readonly auth: Authenticator;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/** Writes a plain HTTP error on a socket that never became a WebSocket. */
export function abortHandshake(socket: Duplex, status: number, code: string, message: string, extra: Record<string, string> = {}): void {
  if (socket.writable) {
    const body = JSON.stringify({ error: { code, message } });
    const headers = {
      'Content-Type': 'application/json',
      'Content-Length': String(Buffer.byteLength(body)),
      Connection: 'close',
      ...extra,
    };
    socket.write(
      `HTTP/1.1 ${status} ${httpStatusText(status)}\r\n` +
        Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n') +
        `\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

function httpStatusText(status: number): string {
  const texts: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' };
  return texts[status] ?? 'Error';
}

/** How a socket whose lease was taken away is told, by the close code the taker asked for. */
const TAKEN_AWAY = new Map<number, { close: CloseCode; text: string; reason: ReleaseReason }>([
  [CLOSE.REPLACED.code, { close: CLOSE.REPLACED, text: 'replaced: this device connected again elsewhere', reason: 'replaced' }],
  [CLOSE.REVOKED.code, { close: CLOSE.REVOKED, text: 'revoked: playback was stopped from another device or by support', reason: 'revoked' }],
  [CLOSE.LEASE_LOST.code, { close: CLOSE.LEASE_LOST, text: 'lease lost', reason: 'lost' }],
]);
const takenAway = (code: number) => TAKEN_AWAY.get(code) ?? TAKEN_AWAY.get(CLOSE.REVOKED.code)!;

/** Reads the state afresh: it changes across awaits, which the type checker cannot see. */
function isClosed(session: Session): boolean {
  return session.state === 'closed';
}

/**
 * The upgrade pipeline and the set of live sessions.
 *
 * Admission order for one socket: upgrade (so browsers can read our close
 * code), validate the query, verify the token, take the lease under the
 * admission deadline, then send `granted`. Every socket leaves through
 * {@link Gateway.end}, the one close path, which also gives the lease back.
 */
export class Gateway implements SessionOwner {
  readonly #cfg: Config;
  readonly #store: LeaseStore;
  readonly #instance: () => InstanceLease;
  readonly #auth: Authenticator;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #wss: WebSocketServer;
  /** Every open socket, admitted or not: the ping sweep and the drain walk this. */
  readonly #sessions = new Set<Session>();
  /** Leased sessions by lease id: where mailbox revocations land. */
  readonly #byLease = new Map<string, Session>();
  /** Releases (and clean-ups of uncertain writes) still in flight; shutdown waits for them. */
  readonly #pending = new Set<Promise<unknown>>();
  #draining = false;
  #closed = false;
  /** Lease ids of admissions that gave up while their write was in flight (see #abandon). */
  readonly #abandoned = new Map<string, { userId: string; deviceId: string; instanceId: string; until: number }>();
  /** Mailbox revocations that arrived before the admission they name was granted. */
  readonly #earlyRevocations = new Map<string, number>();
  #sweepTimer: NodeJS.Timeout | undefined;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  readonly #ipLimiter: KeyedLimiter;
  readonly #userLimiter: KeyedLimiter;

  constructor(deps: GatewayDeps) {
    this.#cfg = deps.config;
    this.#store = deps.store;
    this.#instance = deps.instance;
    this.#auth = deps.auth;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: this.#cfg.maxPayloadBytes,
      // A peer that never answers our close frame is cut after 2 s, not ws's default 30 s.
      ...({ closeTimeout: 2000 } as object),
      // Select our app protocol and nothing else: never echo `bearer.<token>`.
      handleProtocols: (protocols) => (protocols.has(APP_PROTOCOL) ? APP_PROTOCOL : false),
    });
    this.#ipLimiter = new KeyedLimiter({
      ratePerSec: this.#cfg.connectRatePerIp,
      burst: this.#cfg.connectBurstPerIp,
      blockAfter: this.#cfg.blockAfterRejections,
      blockMs: this.#cfg.blockMs,
    });
    this.#userLimiter = new KeyedLimiter({
      ratePerSec: this.#cfg.connectRatePerUser,
      burst: this.#cfg.connectBurstPerUser,
      blockAfter: this.#cfg.blockAfterRejections,
      blockMs: this.#cfg.blockMs,
    });
    this.#scheduleSweep('ping', this.#cfg.pingIntervalMs);
    this.#scheduleReconcile();
    this.#expiryTimer = setInterval(() => this.#expireTokens(), EXPIRY_CHECK_MS);
    this.#expiryTimer.unref();
  }

  get draining(): boolean {
    return this.#draining;
  }

  get connections(): number {
    return this.#sessions.size;
  }

  /** Is this browser origin allowed? Requests without Origin are native players: allowed. */
  originAllowed(origin: string | undefined): boolean {
    if (origin === undefined) return true;
    const allowed = this.#cfg.allowedOrigins;
    return allowed === '*' || allowed.has(origin);
  }

  #reject(socket: Duplex, reason: RejectionReason, status: number, code: string, message: string, extra?: Record<string, string>): void {
    this.#metrics.rejections.inc({ reason });
    abortHandshake(socket, status, code, message, extra);
  }

  /**
   * The public server's 'upgrade' listener: guard clauses, each ending the
   * handshake with an HTTP status. All of them run before any token or store
   * work, so floods cost no DynamoDB request.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    let url: URL;
    try {
      // Only the path and query matter; an absolute-form target (`GET http://host:port/...`) is allowed by
      // HTTP but `new URL` throws on some of them, so it is parsed relative to a fixed base.
      url = new URL((req.url ?? '/').replace(/^[a-z]+:\/\/[^/]*/i, '') || '/', 'http://localhost');
    } catch {
      this.#reject(socket, 'bad_request', 400, 'bad_request', 'request target is not a valid URL');
      return;
    }
    if (url.pathname !== LEASE_PATH) {
      this.#reject(socket, 'not_found', 404, 'not_found', `no WebSocket endpoint at ${url.pathname.slice(0, 100)}; use ${LEASE_PATH}`);
      return;
    }
    if (this.#draining) {
      this.#reject(socket, 'draining', 503, 'draining', 'this gateway is shutting down; reconnect to another', { 'Retry-After': '1' });
      return;
    }
    if (this.#sessions.size >= this.#cfg.maxConnections) {
      this.#reject(socket, 'max_connections', 503, 'max_connections', 'this gateway is full; reconnect to another', { 'Retry-After': '1' });
      return;
    }
    if (!this.originAllowed(req.headers.origin)) {
      this.#reject(socket, 'origin', 403, 'origin_not_allowed', 'this origin may not open streams');
      return;
    }
    const ip = clientIp(req.socket.remoteAddress, req.headers['x-forwarded-for'], this.#cfg.trustedProxyHops);
    const verdict = this.#ipLimiter.check(ip);
    if (!verdict.ok) {
      const reason = verdict.blocked ? 'ip_blocked' : 'ip_rate';
      if (verdict.blocked) this.#log.warn('client blocked: too many connection attempts', { ip, retryAfterSec: verdict.retryAfterSec });
      this.#reject(socket, reason, 429, reason, 'too many connection attempts from this address', { 'Retry-After': String(verdict.retryAfterSec) });
      return;
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, req, url));
  }

  #accept(ws: WebSocket, req: IncomingMessage, url: URL): void {
    const device = url.searchParams.get('device') ?? '';
    const content = url.searchParams.get('content') ?? undefined;
    const takeover = url.searchParams.get('takeover') ?? undefined;
    const session = new Session(ws, this, device, content, this.#cfg.messageBurstPerSocket);
    this.#sessions.add(session);
    this.#metrics.wsConnections.inc();

    const invalid = !ID_PATTERN.test(device)
      ? 'device must be 1-128 characters of A-Z a-z 0-9 . _ : -'
      : content !== undefined && !ID_PATTERN.test(content)
        ? 'content must be 1-128 characters of A-Z a-z 0-9 . _ : -'
        : takeover !== undefined && takeover !== 'oldest' && !ID_PATTERN.test(takeover)
          ? 'takeover must be a device id or "oldest"'
          : takeover === device
            ? 'takeover must name another device'
            : undefined;
    if (invalid !== undefined) {
      this.#metrics.rejections.inc({ reason: 'bad_request' });
      this.end(session, CLOSE.POLICY, invalid);
      return;
    }
    void this.#admit(session, tokenFromRequest(req.headers), takeover);
  }

  async #admit(session: Session, token: string | undefined, takeover: string | undefined): Promise<void> {
    const started = performance.now();
    let principal: Principal;
    try {
      principal = await this.#auth.verify(token);
    } catch (err) {
      this.#authFailed(session, err);
      return;
    }
    if (principal.deviceId !== undefined && principal.deviceId !== session.deviceId) {
      this.#authFailed(session, new AuthError('claim', 'token is bound to another device'));
      return;
    }
    session.userId = principal.userId;
    session.exp = principal.exp;
    if (isClosed(session)) return;

    // Per-user attempt limit, after the token (we need the user) and before the store.
    const verdict = this.#userLimiter.check(principal.userId);
    if (!verdict.ok) {
      const reason = verdict.blocked ? 'user_blocked' : 'user_rate';
      this.#metrics.rejections.inc({ reason });
      if (verdict.blocked) this.#log.warn('user blocked: too many connection attempts', { userId: principal.userId, retryAfterSec: verdict.retryAfterSec });
      this.end(session, CLOSE.TRY_LATER, `too many connection attempts for this account, retry in ${verdict.retryAfterSec} s`);
      return;
    }

    const instance = this.#instance();
    if (!instance.live) {
      this.#metrics.acquireTotal.inc({ result: 'error' });
      this.end(session, CLOSE.TRY_LATER, 'lease store unavailable, try again later');
      return;
    }

    const limit = principal.maxStreams ?? this.#cfg.maxStreams;
    const instanceId = instance.id;
    const request = {
      userId: principal.userId,
      deviceId: session.deviceId,
      contentId: session.contentId,
      leaseId: uuidv4(),
      instanceId,
      limit,
      takeover,
    };
    const log = this.#log.child({ userId: request.userId, deviceId: request.deviceId, leaseId: request.leaseId });

    // The deadline aborts the store calls; the race guarantees the socket hears
    // back on time even if a call ignored the signal. A write that committed
    // after we gave up is cleaned up below, so no slot is ever lost.
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => {
        abort.abort();
        resolve('timeout');
      }, this.#cfg.admissionTimeoutMs);
    });
    const attempt = this.#store.acquire(request, abort.signal);
    this.#metrics.admissionsInFlight.inc();
    this.#track(attempt.finally(() => this.#metrics.admissionsInFlight.dec()).catch(() => {}));
    let outcome: Awaited<typeof attempt> | 'timeout';
    let failure: unknown;
    try {
      outcome = await Promise.race([attempt, deadline]);
    } catch (err) {
      outcome = 'timeout';
      failure = err;
    } finally {
      clearTimeout(timer);
    }

    if (outcome === 'timeout') {
      this.#abandon(request.userId, request.deviceId, request.leaseId, instanceId, attempt);
      this.#metrics.acquireTotal.inc({ result: 'error' });
      const afterMs = Math.round(performance.now() - started);
      if (failure === undefined || failure instanceof StoreUnavailableError) {
        log.warn('admission failed: lease store unavailable', { afterMs, err: failure ?? 'admission deadline passed' });
      } else {
        log.error('admission failed', { afterMs, err: failure });
      }
      this.end(session, CLOSE.TRY_LATER, 'lease store unavailable, try again later');
      return;
    }
    this.#metrics.acquireDuration.observe((performance.now() - started) / 1000);

    if (outcome.kind === 'denied') {
      this.#metrics.acquireTotal.inc({ result: 'denied' });
      log.info('denied: stream limit reached', { limit, active: outcome.active.length });
      session.send({
        type: 'denied',
        reason: 'limit',
        limit,
        active: outcome.active.map((l) => ({
          deviceId: l.deviceId,
          contentId: l.contentId ?? null,
          since: new Date(l.acquiredAt).toISOString(),
        })),
      });
      this.end(session, CLOSE.LIMIT, `stream limit reached (${limit})`);
      return;
    }

    this.#metrics.acquireTotal.inc({ result: 'granted' });
    if (outcome.displaced) this.#takeAway(outcome.displaced, CLOSE.REPLACED);
    if (outcome.revoked) this.#takeAway(outcome.revoked, CLOSE.REVOKED);

    // The socket may have gone, the gateway may be draining, or fenced, while we waited.
    if (isClosed(session) || this.#draining || this.#instance().id !== instanceId || !this.#instance().live) {
      this.#releaseEventually(request.userId, request.deviceId, request.leaseId, instanceId);
      if (!isClosed(session)) {
        this.end(session, this.#draining ? CLOSE.RESTART : CLOSE.LEASE_LOST, this.#draining ? 'gateway restarting' : 'lease lost');
      }
      return;
    }
    const early = this.#earlyRevocations.get(request.leaseId);
    if (early !== undefined) {
      // Taken away (mailbox) before our own write's reply arrived: the lease is already gone.
      this.#earlyRevocations.delete(request.leaseId);
      const { close, text } = takenAway(early);
      this.#metrics.revocationsTotal.inc({ code: String(close.code), path: 'mailbox' });
      this.end(session, close, text);
      return;
    }
    session.state = 'leased';
    session.leaseId = request.leaseId;
    this.#byLease.set(request.leaseId, session);
    this.#metrics.streamsActive.inc();
    log.info('granted', { limit, active: outcome.active, ms: Math.round(performance.now() - started) });
    session.send({
      type: 'granted',
      leaseId: request.leaseId,
      userId: request.userId,
      deviceId: request.deviceId,
      limit,
      active: outcome.active,
    });
  }

  #authFailed(session: Session, err: unknown): void {
    const failure = asAuthError(err);
    this.#metrics.authFailures.inc({ reason: failure.reason });
    this.#log.info('unauthorized', { deviceId: session.deviceId, reason: failure.reason });
    this.end(session, CLOSE.UNAUTHORIZED, failure.message);
  }

  /**
   * A lease was taken from its socket (same device elsewhere: 4409; takeover
   * or kick: 4403). Close it here if we own it, else drop a note in the owning
   * instance's mailbox, read with its next heartbeat.
   */
  #takeAway(lease: Lease, close: CloseCode): void {
    if (lease.instanceId === this.#instance().id) {
      this.revokeLocal(lease.leaseId, close.code, 'local');
      return;
    }
    this.#track(
      this.#store.notify(lease.instanceId, lease.leaseId, close.code, AbortSignal.timeout(this.#cfg.admissionTimeoutMs)).catch((err) =>
        this.#log.warn('mailbox write failed; the owner finds out on its next reconcile', { err, instanceId: lease.instanceId }),
      ),
    );
  }

  /** A lease was revoked over REST: its socket gets 4403, wherever it is. */
  kick(lease: Lease): void {
    this.#takeAway(lease, CLOSE.REVOKED);
  }

  /** Closes the socket holding `leaseId` on this instance, if any (its lease is already gone). */
  revokeLocal(leaseId: string, code: number, path: 'local' | 'mailbox' | 'reconcile'): boolean {
    const session = this.#byLease.get(leaseId);
    if (!session) {
      // Maybe an admission whose write committed but whose reply has not arrived yet: remember briefly.
      if (path === 'mailbox') this.#rememberEarly(leaseId, code);
      return false;
    }
    const { close, text, reason } = takenAway(code);
    this.#metrics.revocationsTotal.inc({ code: String(close.code), path });
    this.end(session, close, text, reason, false);
    return true;
  }

  /**
   * The one close path. Sends the close code (or terminates a dead socket),
   * leaves the books, and gives the lease back unless it is already gone.
   */
  end(
    session: Session,
    close: CloseCode | 'terminate' | undefined,
    text = '',
    reason: ReleaseReason = 'client_close',
    releaseLease = true,
  ): void {
    if (session.state === 'closed') return;
    const wasLeased = session.state === 'leased';
    session.state = 'closed';
    if (close === 'terminate') {
      session.ws.terminate();
    } else if (close !== undefined) {
      this.#metrics.closesTotal.inc({ code: String(close.code) });
      session.ws.close(close.code, closeReason(text));
    }
    if (!wasLeased || session.leaseId === undefined) return;
    this.#byLease.delete(session.leaseId);
    this.#metrics.streamsActive.dec();
    this.#metrics.releaseTotal.inc({ reason });
    this.#log.info('released', { userId: session.userId, deviceId: session.deviceId, reason, code: close === 'terminate' ? undefined : close?.code });
    if (releaseLease) this.#releaseEventually(session.userId, session.deviceId, session.leaseId, this.#instance().id);
  }

  /**
   * Gives a lease back, retrying while the store is unreachable, until the
   * answer is definite (removed, or already gone) or the instance it belongs
   * to has been replaced (then it is dead anyway).
   */
  #releaseEventually(userId: string, deviceId: string, leaseId: string, instanceId: string): void {
    const run = async (): Promise<void> => {
      for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
        try {
          // "Already gone" keeps an abandoned id for reconcile: its write may still land.
          if (await this.#store.release(userId, deviceId, leaseId, AbortSignal.timeout(this.#cfg.admissionTimeoutMs))) {
            this.#abandoned.delete(leaseId);
          }
          return;
        } catch (err) {
          // A replaced instance's leases are dead anyway; a closed gateway has no client left.
          if (this.#closed || this.#instance().id !== instanceId) return;
          this.#log.warn('release failed, retrying', { userId, deviceId, leaseId, err, retryInMs: delay });
          await new Promise((r) => setTimeout(r, delay).unref());
        }
      }
    };
    this.#track(run());
  }

  /**
   * An admission gave up at its deadline, but its write may still commit.
   * Release once the attempt has settled, and keep the lease id so the
   * reconcile loop removes the entry if the write lands even later.
   */
  #abandon(userId: string, deviceId: string, leaseId: string, instanceId: string, attempt: Promise<unknown>): void {
    this.#abandoned.set(leaseId, { userId, deviceId, instanceId, until: performance.now() + 2 * this.#cfg.reconcileIntervalMs + this.#cfg.admissionTimeoutMs });
    const release = (): void => this.#releaseEventually(userId, deviceId, leaseId, instanceId);
    attempt.then(release, release);
  }

  #rememberEarly(leaseId: string, code: number): void {
    if (this.#earlyRevocations.size > 10_000) this.#earlyRevocations.clear();
    this.#earlyRevocations.set(leaseId, code);
    setTimeout(() => this.#earlyRevocations.delete(leaseId), 2 * this.#cfg.admissionTimeoutMs).unref();
  }

  #track(p: Promise<unknown>): void {
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
  }

  onSocketClose(session: Session, code: number): void {
    this.#sessions.delete(session);
    this.#metrics.wsConnections.dec();
    this.end(session, undefined, '', session.awaitingPong && code === 1006 ? 'ping_timeout' : 'client_close');
  }

  /** ws refused a frame (too big, bad UTF-8, unmasked, reserved opcode) and is closing the socket. */
  onSocketError(session: Session, err: Error & { code?: string }): void {
    const tooBig = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
    this.#metrics.rejections.inc({ reason: tooBig ? 'message_too_big' : 'bad_message' });
    this.#log.info('protocol error from client', { userId: session.userId, deviceId: session.deviceId, code: err.code });
  }

  onMessage(session: Session, data: RawData, isBinary: boolean): void {
    if (session.state === 'closed') return;
    if (!take(session.messages, this.#cfg.messageRatePerSocket, this.#cfg.messageBurstPerSocket)) {
      this.#metrics.rejections.inc({ reason: 'message_rate' });
      this.end(session, CLOSE.POLICY, 'message rate exceeded', 'policy');
      return;
    }
    if (isBinary) {
      this.#metrics.rejections.inc({ reason: 'bad_message' });
      this.end(session, CLOSE.POLICY, 'binary frames are not part of the protocol', 'policy');
      return;
    }
    let message: { type?: unknown; token?: unknown } | null;
    try {
      message = JSON.parse(data.toString()) as typeof message;
    } catch {
      message = null;
    }
    if (message === null || typeof message !== 'object') {
      this.#metrics.rejections.inc({ reason: 'bad_message' });
      session.send({ type: 'error', code: 'bad_json', message: 'messages must be JSON objects' });
      return;
    }
    if (message.type === 'ping') {
      session.send({ type: 'pong' });
      return;
    }
    if (message.type === 'reauth') {
      void this.#reauth(session, typeof message.token === 'string' ? message.token : undefined);
      return;
    }
    this.#metrics.rejections.inc({ reason: 'bad_message' });
    session.send({ type: 'error', code: 'unknown_type', message: 'unknown message type' });
  }

  /**
   * `{"type":"reauth","token":"..."}`: a fresh token for the same user (and
   * device, if bound) extends the socket past the old token's expiry.
   * Answers `{"type":"reauthed","exp":...}` or an error frame; the socket
   * keeps its old expiry on failure.
   */
  async #reauth(session: Session, token: string | undefined): Promise<void> {
    const now = performance.now();
    if (now - session.reauthAt < REAUTH_MIN_GAP_MS) {
      session.send({ type: 'error', code: 'reauth_rate', message: 'one re-authentication per second at most' });
      return;
    }
    session.reauthAt = now;
    try {
      const principal = await this.#auth.verify(token);
      if (principal.userId !== session.userId) throw new AuthError('claim', 'token is for another user');
      if (principal.deviceId !== undefined && principal.deviceId !== session.deviceId) {
        throw new AuthError('claim', 'token is bound to another device');
      }
      if (session.state === 'closed') return;
      session.exp = principal.exp;
      session.send({ type: 'reauthed', exp: principal.exp });
    } catch (err) {
      const failure = asAuthError(err);
      this.#metrics.authFailures.inc({ reason: failure.reason });
      session.send({ type: 'error', code: 'reauth_failed', message: failure.message });
    }
  }

  /** Closes sockets whose token has expired (4401), checked every second by one timer. */
  #expireTokens(): void {
    const nowSec = Date.now() / 1000;
    for (const session of this.#sessions) {
      if (session.exp > 0 && session.exp <= nowSec && session.state !== 'closed') {
        this.#metrics.authFailures.inc({ reason: 'expired' });
        this.end(session, CLOSE.UNAUTHORIZED, 'token expired: reconnect or re-authenticate with a fresh token', 'token_expired');
      }
    }
  }

  // ---- liveness: one sweep timer for every socket --------------------------

  /**
   * Alternates two phases on one timer: `ping` sends a protocol ping to every
   * socket; `check` (PONG_TIMEOUT_MS later) terminates those that did not
   * answer. A dead device is thus freed within PING_INTERVAL_MS +
   * PONG_TIMEOUT_MS.
   */
  #scheduleSweep(phase: 'ping' | 'check', inMs: number): void {
    this.#sweepTimer = setTimeout(() => this.#sweep(phase), inMs);
    this.#sweepTimer.unref();
  }

  #sweep(phase: 'ping' | 'check'): void {
    if (phase === 'ping') {
      for (const session of this.#sessions) {
        if (session.state === 'closed') continue;
        session.awaitingPong = true;
        session.ws.ping();
      }
      this.#scheduleSweep('check', this.#cfg.pongTimeoutMs);
      return;
    }
    for (const session of this.#sessions) {
      if (session.awaitingPong && session.state !== 'closed') {
        this.#log.info('ping timeout', { userId: session.userId, deviceId: session.deviceId });
        this.end(session, 'terminate', '', 'ping_timeout');
      }
    }
    this.#scheduleSweep('ping', Math.max(0, this.#cfg.pingIntervalMs - this.#cfg.pongTimeoutMs));
  }

  // ---- reconcile: the backstop for a lost mailbox write ---------------------

  #scheduleReconcile(): void {
    this.#reconcileTimer = setTimeout(() => {
      void this.reconcile()
        .catch((err: unknown) => this.#log.warn('reconcile failed; next round retries', { err }))
        .finally(() => !this.#draining && this.#scheduleReconcile());
    }, this.#cfg.reconcileIntervalMs);
    this.#reconcileTimer.unref();
  }

  /**
   * Reads the user items of every leased session here and closes the sockets
   * whose lease is no longer in the store (kicked: 4403; taken by the same
   * device elsewhere: 4409). A mailbox note that was lost therefore leaves a
   * socket playing without a lease for at most RECONCILE_INTERVAL_MS.
   * Costs one BatchGetItem per 100 users with a stream here.
   */
  async reconcile(): Promise<number> {
    const leased = [...this.#byLease.values()];
    const now = performance.now();
    for (const [leaseId, a] of this.#abandoned) {
      if (a.until < now || a.instanceId !== this.#instance().id) this.#abandoned.delete(leaseId);
    }
    const abandoned = [...this.#abandoned];
    if (leased.length === 0 && abandoned.length === 0) return 0;
    const users = await this.#store.readUsers(
      [...new Set([...leased.map((s) => s.userId), ...abandoned.map(([, a]) => a.userId)])],
      AbortSignal.timeout(Math.max(this.#cfg.admissionTimeoutMs, 5000)),
    );
    // An abandoned admission's write landed after all: give that slot back.
    for (const [leaseId, a] of abandoned) {
      if (users.get(a.userId)?.get(a.deviceId)?.leaseId === leaseId) {
        this.#log.warn('reconcile: releasing a lease whose admission had given up', { userId: a.userId, deviceId: a.deviceId });
        this.#releaseEventually(a.userId, a.deviceId, leaseId, a.instanceId);
      }
    }
    let closed = 0;
    for (const session of leased) {
      if (session.state !== 'leased' || session.leaseId === undefined) continue;
      const entry = users.get(session.userId)?.get(session.deviceId);
      if (entry?.leaseId === session.leaseId) continue;
      // Re-check: the session may have been granted while we were reading.
      if (this.#byLease.get(session.leaseId) !== session) continue;
      const code = entry === undefined ? CLOSE.REVOKED.code : CLOSE.REPLACED.code;
      this.#log.warn('reconcile: socket has no lease in the store', { userId: session.userId, deviceId: session.deviceId, code });
      if (this.revokeLocal(session.leaseId, code, 'reconcile')) closed++;
    }
    return closed;
  }

  // ---- instance events ------------------------------------------------------

  /** Every socket of the fenced instance goes with 4408; its leases die with its instance item. */
  onFenced(oldInstanceId: string): void {
    for (const session of this.#sessions) {
      if (session.state === 'leased') {
        this.end(session, CLOSE.LEASE_LOST, 'lease lost: gateway lost contact with the lease store', 'fenced', false);
      } else if (session.state === 'admitting') {
        this.end(session, CLOSE.TRY_LATER, 'lease store unavailable, try again later');
      }
    }
    this.#log.warn('fenced sessions closed', { instanceId: oldInstanceId });
  }

  // ---- shutdown -------------------------------------------------------------

  /**
   * Drain: refuse new upgrades (503), then close every socket with 1012,
   * spread evenly over `windowMs` so clients do not reconnect in one storm,
   * and wait for the releases to land.
   */
  async drain(windowMs: number): Promise<void> {
    this.#draining = true;
    clearTimeout(this.#sweepTimer);
    clearTimeout(this.#reconcileTimer);
    clearInterval(this.#expiryTimer);
    const sessions = [...this.#sessions].filter((s) => s.state !== 'closed');
    this.#log.info('draining', { sessions: sessions.length, windowMs });
    // At most one batch every 20 ms; a handful of sockets get one gap each.
    const batches = Math.max(1, Math.min(sessions.length, Math.floor(windowMs / 20)));
    const perBatch = Math.ceil(sessions.length / batches);
    const gapMs = windowMs / batches;
    for (let i = 0; i < sessions.length; i += perBatch) {
      for (const session of sessions.slice(i, i + perBatch)) {
        this.end(session, CLOSE.RESTART, 'gateway restarting, reconnect', 'shutdown');
      }
      if (i + perBatch < sessions.length) await new Promise((r) => setTimeout(r, gapMs));
    }
    // Sessions still admitting when the drain began end through #admit's own check.
    await this.settle(this.#cfg.admissionTimeoutMs + 1000);
    for (const session of this.#sessions) session.ws.terminate();
  }

  /** Waits (bounded) for in-flight releases and mailbox writes. */
  async settle(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (this.#pending.size > 0 && performance.now() < until) {
      await Promise.race([Promise.allSettled([...this.#pending]), new Promise((r) => setTimeout(r, until - performance.now()))]);
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#sweepTimer);
    clearTimeout(this.#reconcileTimer);
    clearInterval(this.#expiryTimer);
    this.#wss.close();
  }
}
