import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { admit, type AdmissionDeps } from './admission.js';
import { tokenFromRequest, type Authenticator } from './auth.js';
import { APP_PROTOCOL, ID_PATTERN, ID_RULE, LEASE_ID_PATTERN, LEASE_PATH } from './client/protocol.js';
import { CLOSE } from './close-codes.js';
import type { Config } from './config.js';
import { HTTP_ERRORS, type HttpErrorName } from './http-errors.js';
import { Hub } from './hub.js';
import type { InstanceLease } from './instance.js';
import { LeaseKeeper } from './lease-keeper.js';
import type { Lease } from './lease-store.js';
import { Liveness } from './liveness.js';
import type { Logger } from './log.js';
import { Messages } from './messages.js';
import type { Metrics, RejectionReason } from './metrics.js';
import { Pending } from './pending.js';
import type { Playback } from './playback.js';
import { PlaybackRefresh } from './playback-refresh.js';
import { clientIp, KeyedLimiter } from './rate-limit.js';
import type { Region, Regions } from './regions.js';
import { Session, type Ending, type SessionOwner } from './session.js';

export type GatewayState = 'running' | 'draining' | 'closed';

/** The rate limiters drop keys whose bucket has refilled: this many keys each, this often (100 000 in 10 s). */
const LIMITER_SWEEP_MS = 1000;
const LIMITER_SWEEP_KEYS = 10_000;

export interface GatewayDeps {
  readonly config: Config;
  /** One lease store and one instance lease per region (one region unless DYNAMODB_REGIONS names several). */
  readonly regions: Regions;
  readonly auth: Authenticator;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Playback tokens, when a signing key is configured (src/playback.ts). */
  readonly playback?: Playback;
}

/** Writes a plain HTTP error on a socket that never became a WebSocket. */
export function abortHandshake(socket: Duplex, code: HttpErrorName, message: string, extra: Record<string, string> = {}): void {
  const { status } = HTTP_ERRORS[code];
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
        Object.entries(headers)
          .map(([k, v]) => `${k}: ${v}`)
          .join('\r\n') +
        `\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

function httpStatusText(status: number): string {
  const texts: Record<number, string> = {
    400: 'Bad Request',
    403: 'Forbidden',
    404: 'Not Found',
    429: 'Too Many Requests',
    503: 'Service Unavailable',
  };
  return texts[status] ?? 'Error';
}

/**
 * Node removes its own 'error' listener before emitting 'upgrade': a socket we
 * refuse (or that resets while we write the refusal) must not crash the
 * process. ws does the same for the sockets it upgrades.
 */
function upgradeSocketOnError(this: Duplex): void {
  this.destroy();
}

/**
 * ws's 'headers' listener, just before it writes the 101: the socket holds it
 * (cork) until the admission has decided, when the 101 and the decision
 * frame go in one write: `granted` as soon as it is written (the session's
 * decided()), before the bookkeeping and the log line that follow; denied and
 * its close, or any other close, when the admission ends (#accept). That is
 * one write and one wake-up of the player per admission instead of two; in a
 * reconnect storm each write to a loopback or pod-network socket costs the
 * gateway more than the frame it carries. The player sees the 101 with its
 * decision, no later than it would have seen the decision.
 */
function holdHandshake(this: WebSocketServer, _headers: string[], req: IncomingMessage): void {
  req.socket.cork();
}

/** The query parameters of an upgrade, or the sentence that says what is wrong with them. */
export function parseLeaseQuery(
  params: URLSearchParams,
): { device: string; content?: string; takeover?: string; deviceClass?: string; handoff?: string; previous?: string } | string {
  const device = params.get('device') ?? '';
  const content = params.get('content') ?? undefined;
  const takeover = params.get('takeover') ?? undefined;
  const deviceClass = params.get('class') ?? undefined;
  const handoff = params.get('handoff') ?? undefined;
  const previous = params.get('previous') ?? undefined;
  if (!ID_PATTERN.test(device)) return `device must be ${ID_RULE}`;
  if (content !== undefined && !ID_PATTERN.test(content)) return `content must be ${ID_RULE}`;
  if (deviceClass !== undefined && !ID_PATTERN.test(deviceClass)) return `class must be ${ID_RULE}`;
  if (takeover !== undefined && takeover !== 'oldest' && !ID_PATTERN.test(takeover)) return 'takeover must be a device id or "oldest"';
  if (takeover === device) return 'takeover must name another device';
  if (handoff !== undefined && !LEASE_ID_PATTERN.test(handoff)) return 'handoff must be the lease id of a granted frame';
  if (previous !== undefined && !LEASE_ID_PATTERN.test(previous)) return 'previous must be the lease id of a granted frame';
  if (handoff !== undefined && previous !== undefined) return 'handoff and previous name the same lease: send one';
  return { device, content, takeover, deviceClass, handoff, previous };
}

/**
 * Composition and lifecycle of one gateway: the upgrade pipeline (a run of
 * guard clauses, each ending in one refusal), and the parts it wires together:
 * the hub of live sessions, the lease keeper, liveness, admission, messages.
 *
 *   new Gateway()  builds, starts nothing
 *   start()        timers and instance listeners
 *   drain()        503 for new upgrades, 1012 for every socket, leases back
 *   close()        stops everything; safe to call twice
 */
export class Gateway {
  #state: GatewayState = 'running';
  readonly #cfg: Config;
  readonly #regions: Regions;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #wss: WebSocketServer;
  readonly #ipLimiter: KeyedLimiter;
  readonly #userLimiter: KeyedLimiter;
  /** Sweeps refilled rate-limit keys out, so idle sockets do not keep theirs (KeyedLimiter.sweep). */
  #limiterSweep: NodeJS.Timeout | undefined;
  readonly #pending = new Pending();
  readonly #keeper: LeaseKeeper;
  readonly #hub: Hub;
  readonly #liveness: Liveness;
  readonly #playback: PlaybackRefresh | undefined;
  readonly #messages: Messages;
  readonly #admission: AdmissionDeps;
  /** Sockets holding their 101 (holdHandshake) until their admission decides or their session closes. */
  readonly #corked = new Map<Session, Duplex>();
  /** One object every session reports to. */
  readonly #owner: SessionOwner;
  readonly #onRevoked = (leaseId: string, code: number, why: string | undefined): void =>
    void this.#hub.revoke(leaseId, code, 'mailbox', why);
  readonly #onFenced = (oldInstanceId: string, _reason: string, region: string): void => this.#hub.fence(oldInstanceId, region);
  readonly #onLost = (leaseId: string, code: number): void => void this.#hub.revoke(leaseId, code, 'reconcile');
  readonly #onTaken = (lease: Lease, code: number, why: 'evicted' | undefined, region: Region): void =>
    this.#hub.takeAway(region, lease, code, 'reconcile', why);

  constructor(deps: GatewayDeps) {
    const { config, regions, auth, metrics, log } = deps;
    this.#cfg = config;
    this.#regions = regions;
    this.#metrics = metrics;
    this.#log = log;
    this.#wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: config.maxPayloadBytes,
      // A peer that never answers our close frame is cut after 2 s, not ws's default 30 s.
      ...({ closeTimeout: 2000 } as object),
      // Select our app protocol and nothing else: never echo `bearer.<token>`.
      handleProtocols: (protocols) => (protocols.has(APP_PROTOCOL) ? APP_PROTOCOL : false),
    });
    // The 101 waits in the socket for the decision, and both go out in one write (see #accept).
    this.#wss.on('headers', holdHandshake);
    this.#ipLimiter = new KeyedLimiter({
      ratePerSec: config.connectRatePerIp,
      burst: config.connectBurstPerIp,
      blockAfter: config.blockAfterRejections,
      blockMs: config.blockMs,
    });
    const userLimiter = (this.#userLimiter = new KeyedLimiter({
      ratePerSec: config.connectRatePerUser,
      burst: config.connectBurstPerUser,
      blockAfter: config.blockAfterRejections,
      blockMs: config.blockMs,
    }));
    const parts = { config, metrics, log, pending: this.#pending };
    this.#keeper = new LeaseKeeper(parts);
    this.#hub = new Hub({ ...parts, keeper: this.#keeper });
    this.#liveness = new Liveness({ hub: this.#hub, config, metrics, log });
    this.#playback = deps.playback && new PlaybackRefresh({ playback: deps.playback, hub: this.#hub, config });
    this.#admission = {
      config,
      auth,
      userLimiter,
      regions,
      keeper: this.#keeper,
      hub: this.#hub,
      metrics,
      log,
      playback: this.#playback,
      gateway: this,
    };
    this.#messages = new Messages({ config, auth, metrics, log, admission: this.#admission });
    const hub = this.#hub;
    const messages = this.#messages;
    this.#owner = {
      message: (session: Session, data: RawData, isBinary: boolean) => messages.handle(session, data, isBinary),
      error: (session: Session, err: Error & { code?: string }) => {
        // ws has written its 1002/1007/1009 and waits for the answer: it must not wait behind a held 101.
        this.#flush(session);
        messages.protocolError(session, err);
      },
      ended: (session: Session, ending: Ending) => {
        // A close from outside the admission (drain, fencing) goes out now with its 101: ws cuts a socket whose
        // close frame is not answered within its close timeout, and a corked one could not even be sent.
        this.#flush(session);
        hub.ended(session, ending);
      },
      gone: (session: Session) => hub.gone(session),
      decided: (session: Session) => this.#flush(session),
    };
  }

  get state(): GatewayState {
    return this.#state;
  }

  get draining(): boolean {
    return this.#state !== 'running';
  }

  get connections(): number {
    return this.#hub.size;
  }

  /** The lease keeper: its reconcile round can be run directly (tests, operators). */
  get keeper(): LeaseKeeper {
    return this.#keeper;
  }

  start(): void {
    for (const { instance } of this.#regions) this.#listen(instance, 'on');
    this.#keeper.on('lost', this.#onLost);
    this.#keeper.on('taken', this.#onTaken);
    this.#liveness.start();
    this.#playback?.start();
    this.#keeper.start();
    this.#limiterSweep = setInterval(() => {
      const now = performance.now();
      this.#ipLimiter.sweep(now, LIMITER_SWEEP_KEYS);
      this.#userLimiter.sweep(now, LIMITER_SWEEP_KEYS);
    }, LIMITER_SWEEP_MS);
    this.#limiterSweep.unref();
  }

  /** True when a socket on this gateway holds `leaseId` now (the `live=1` playback check). */
  holdsLease(leaseId: string): boolean {
    return this.#hub.holder(leaseId) !== undefined;
  }

  /** Is this browser origin allowed? Requests without Origin are native players: allowed. */
  originAllowed(origin: string | undefined): boolean {
    if (origin === undefined) return true;
    const allowed = this.#cfg.allowedOrigins;
    return allowed === '*' || allowed.has(origin);
  }

  #listen(instance: InstanceLease, how: 'on' | 'off'): void {
    instance[how]('revoked', this.#onRevoked);
    instance[how]('fenced', this.#onFenced);
  }

  /**
   * REST kick: removes the device's live lease in the user's home region and
   * closes its socket (4403) wherever it is.
   */
  async revokeDevice(region: Region, userId: string, deviceId: string, signal: AbortSignal): Promise<Lease | undefined> {
    const lease = await this.#keeper.revoke(region, userId, deviceId, signal);
    if (lease) this.#hub.takeAway(region, lease, CLOSE.REVOKED.code);
    return lease;
  }

  #reject(socket: Duplex, reason: RejectionReason, code: HttpErrorName, message: string, extra?: Record<string, string>): void {
    this.#metrics.rejections.inc({ reason });
    abortHandshake(socket, code, message, extra);
  }

  /**
   * The public server's 'upgrade' listener: guard clauses, each ending the
   * handshake with an HTTP status. All of them run before any token or store
   * work, so floods cost no DynamoDB request.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', upgradeSocketOnError);
    let url: URL;
    try {
      // Only the path and query matter; an absolute-form target (`GET http://host:port/...`) is allowed by
      // HTTP but `new URL` throws on some of them, so it is parsed relative to a fixed base.
      url = new URL((req.url ?? '/').replace(/^[a-z]+:\/\/[^/]*/i, '') || '/', 'http://localhost');
    } catch {
      this.#reject(socket, 'bad_request', 'bad_request', 'request target is not a valid URL');
      return;
    }
    if (url.pathname !== LEASE_PATH) {
      this.#reject(socket, 'not_found', 'not_found', `no WebSocket endpoint at ${url.pathname.slice(0, 100)}; use ${LEASE_PATH}`);
      return;
    }
    if (this.#state !== 'running') {
      this.#reject(socket, 'draining', 'draining', 'this gateway is shutting down; reconnect to another', { 'Retry-After': '1' });
      return;
    }
    if (this.#hub.size >= this.#cfg.maxConnections) {
      this.#reject(socket, 'max_connections', 'max_connections', 'this gateway is full; reconnect to another', { 'Retry-After': '1' });
      return;
    }
    if (!this.originAllowed(req.headers.origin)) {
      this.#reject(socket, 'origin', 'origin_not_allowed', 'this origin may not open streams');
      return;
    }
    const ip = clientIp(req.socket.remoteAddress, req.headers['x-forwarded-for'], this.#cfg.trustedProxyHops);
    const verdict = this.#ipLimiter.check(ip);
    if (!verdict.ok) {
      const reason = verdict.blocked ? 'ip_blocked' : 'ip_rate';
      if (verdict.blocked) this.#log.warn('client blocked: too many connection attempts', { ip, retryAfterSec: verdict.retryAfterSec });
      this.#reject(socket, reason, reason, 'too many connection attempts from this address', {
        'Retry-After': String(verdict.retryAfterSec),
      });
      return;
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      socket.removeListener('error', upgradeSocketOnError);
      this.#accept(ws, req, url);
    });
  }

  #accept(ws: WebSocket, req: IncomingMessage, url: URL): void {
    const { socket } = req;
    const query = parseLeaseQuery(url.searchParams);
    const valid = typeof query === 'object';
    const session = new Session(
      ws,
      this.#owner,
      valid ? query.device : '',
      valid ? query.content : undefined,
      this.#cfg.messageBurstPerSocket,
    );
    this.#corked.set(session, socket);
    this.#hub.add(session);
    if (!valid) {
      this.#metrics.rejections.inc({ reason: 'bad_request' });
      session.close(CLOSE.POLICY, query, 'client_close');
      return;
    }
    admit(this.#admission, session, tokenFromRequest(req.headers), query)
      .catch((err: unknown) => {
        this.#log.error('admission crashed', { err });
        session.close(CLOSE.INTERNAL, 'internal error, try again', 'client_close');
      })
      .finally(() => this.#flush(session));
  }

  /** Lets a held 101 go, with whatever frames the session wrote since (once: the first decision or close). */
  #flush(session: Session): void {
    const socket = this.#corked.get(session);
    if (socket === undefined) return;
    this.#corked.delete(session);
    socket.uncork();
  }

  /**
   * Drain: refuse new upgrades (503), then close every socket with 1012,
   * spread evenly over `windowMs`, and wait for the releases to land.
   */
  async drain(windowMs: number): Promise<void> {
    if (this.#state !== 'running') return;
    this.#state = 'draining';
    this.#liveness.stop();
    this.#keeper.stop();
    // A lease goes back before its socket closes; a store too slow for that does not hold the socket longer.
    await this.#hub.drain(windowMs, this.#cfg.dynamodbRequestTimeoutMs);
    // Sessions still admitting when the drain began end through admit()'s own check.
    await this.#pending.settle(this.#cfg.admissionTimeoutMs + 1000);
    this.#hub.terminateAll();
  }

  /** Waits (bounded) for in-flight releases and mailbox writes. */
  settle(timeoutMs: number): Promise<void> {
    return this.#pending.settle(timeoutMs);
  }

  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#liveness.stop();
    this.#playback?.stop();
    clearInterval(this.#limiterSweep);
    this.#keeper.close();
    for (const { instance } of this.#regions) this.#listen(instance, 'off');
    this.#wss.close();
  }
}
