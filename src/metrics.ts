import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DENIAL_REASONS } from './plan.js';

/** Reasons a lease is given back; bounded, so safe as a label. */
export const RELEASE_REASONS = [
  'client_close',
  'ping_timeout',
  'replaced',
  'revoked',
  'shutdown',
  'fenced',
  'lost',
  'token_expired',
  'policy',
  'paused',
] as const;

/** Why a connection or message was turned away before any store work. */
export const REJECTION_REASONS = [
  'not_found',
  'draining',
  'max_connections',
  'origin',
  'ip_rate',
  'ip_blocked',
  'user_rate',
  'user_blocked',
  'bad_request',
  'message_rate',
  'message_too_big',
  'bad_message',
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];
export type ReleaseReason = (typeof RELEASE_REASONS)[number];

/** Answers of /v1/playback/authorize; bounded, so safe as a label. */
export const PLAYBACK_RESULTS = ['ok', 'missing', 'invalid', 'expired', 'lease_gone'] as const;
export type PlaybackResult = (typeof PLAYBACK_RESULTS)[number];

export type AcquireResult = 'granted' | 'denied' | 'error';

/**
 * prom-client's defaults we drop: gauges named like counters, which `promtool
 * check metrics` reports ("non-counter metrics should not have _total
 * suffix"). Each is the sum of a per-type gauge the defaults keep, so nothing
 * is lost: `sum without (type) (nodejs_active_handles)`, and the same for
 * requests and resources. Renaming them would invent a second series for one
 * number; prom-client's maintainers lean the same way (prometheus/client_js#283).
 */
export const DROPPED_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
] as const;

/**
 * Metric handles on a registry passed in (never prom-client's global one), so
 * two gateways in one test process keep separate books. No label ever holds a
 * user or device id.
 */
export class Metrics {
  readonly registry: Registry;
  readonly streamsActive: Gauge;
  readonly wsConnections: Gauge;
  readonly acquireTotal: Counter<'result'>;
  readonly denialsTotal: Counter<'reason'>;
  readonly releaseTotal: Counter<'reason'>;
  readonly acquireDuration: Histogram;
  readonly dynamodbRequests: Counter<'operation' | 'outcome' | 'region'>;
  readonly dynamodbHandovers: Counter<'reason'>;
  readonly heartbeatAge: Gauge;
  readonly ready: Gauge;
  readonly admissionsInFlight: Gauge;
  readonly closesTotal: Counter<'code'>;
  readonly fencingTotal: Counter;
  readonly revocationsTotal: Counter<'code' | 'path'>;
  readonly mailboxNotesSkipped: Counter;
  readonly authFailures: Counter<'reason'>;
  readonly rejections: Counter<'reason'>;
  readonly reconcileRounds: Counter<'result'>;
  readonly leaseRepairs: Counter<'kind'>;
  readonly uncertainLeases: Gauge;
  readonly playbackTokensIssued: Counter;
  readonly playbackAuthorize: Counter<'result'>;

  /** Set by the instance lease once it exists; read at scrape time. */
  heartbeatAgeSeconds: () => number = () => 0;
  /**
   * Several regions (DYNAMODB_REGIONS): one heartbeat age per region, set by each region's instance lease.
   * Empty with one region, whose series keep no `region` label (the same lines as before regions existed).
   */
  readonly heartbeatAgeByRegion = new Map<string, () => number>();
  /** Set by the app: the same answer as /readyz. */
  readySource: () => boolean = () => false;
  /** Set by the lease keeper: lease ids it is still re-checking. */
  uncertainLeasesSource: () => number = () => 0;

  /**
   * @param regions the configured region names when there are several (DYNAMODB_REGIONS): DynamoDB series
   *   then carry a bounded `region` label; with one region (the default) they carry none.
   */
  constructor(registry = new Registry(), regions: readonly string[] = []) {
    this.registry = registry;
    const self = this;
    const registers = [registry];
    collectDefaultMetrics({ register: registry });
    for (const name of DROPPED_DEFAULT_METRICS) registry.removeSingleMetric(name);
    this.streamsActive = new Gauge({
      name: 'sigma_streams_active',
      help: 'Sockets on this instance that hold a stream lease.',
      registers,
    });
    this.wsConnections = new Gauge({
      name: 'sigma_ws_connections',
      help: 'Open WebSocket connections on this instance, leased or not.',
      registers,
    });
    this.acquireTotal = new Counter({
      name: 'sigma_lease_acquire_total',
      help: 'Lease acquisitions by result (granted, denied at the limit, error).',
      labelNames: ['result'],
      registers,
    });
    this.denialsTotal = new Counter({
      name: 'sigma_lease_denials_total',
      help: 'Admissions denied, by the cap in the way: limit (streams per user), content_limit (per content), class_limit (per device class).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of DENIAL_REASONS) this.denialsTotal.inc({ reason }, 0);
    this.releaseTotal = new Counter({
      name: 'sigma_lease_release_total',
      help: 'Leases given back, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.acquireDuration = new Histogram({
      name: 'sigma_lease_acquire_duration_seconds',
      help: 'Time from upgrade to the admission decision (granted or denied).',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.dynamodbRequests = new Counter({
      name: 'sigma_dynamodb_requests_total',
      help: 'DynamoDB requests by operation and outcome (ok, conditional_failed, throttled, timeout, error), and by region when several are configured.',
      labelNames: ['operation', 'outcome', 'region'],
      registers,
    });
    this.dynamodbHandovers = new Counter({
      name: 'sigma_dynamodb_handovers_total',
      help: 'UpdateItems whose hand-sent first attempt got no definite answer and went to the SDK, by reason (throttled, server_error, refused, timeout, connection, unreadable, no_endpoint). refused growing with every write: DynamoDB does not accept our requests (a signature or endpoint problem).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['throttled', 'server_error', 'refused', 'timeout', 'connection', 'unreadable', 'no_endpoint']) {
      this.dynamodbHandovers.inc({ reason }, 0);
    }
    for (const operation of ['UpdateItem', 'GetItem', 'BatchGetItem', 'PutItem', 'DeleteItem']) {
      for (const outcome of ['ok', 'conditional_failed', 'throttled', 'timeout', 'error']) {
        if (regions.length === 0) this.dynamodbRequests.inc({ operation, outcome }, 0);
        for (const region of regions) this.dynamodbRequests.inc({ operation, outcome, region }, 0);
      }
    }
    this.ready = new Gauge({
      name: 'sigma_ready',
      help: '1 while /readyz answers 200 (store answering, keys loaded, not draining), else 0.',
      registers,
      collect() {
        this.set(self.readySource() ? 1 : 0);
      },
    });
    this.heartbeatAge = new Gauge({
      name: 'sigma_instance_heartbeat_age_seconds',
      help: 'Seconds since the last successful instance heartbeat was sent, by region when several are configured.',
      labelNames: ['region'],
      registers,
      collect() {
        if (self.heartbeatAgeByRegion.size === 0) this.set(self.heartbeatAgeSeconds());
        for (const [region, age] of self.heartbeatAgeByRegion) this.set({ region }, age());
      },
    });
    this.admissionsInFlight = new Gauge({
      name: 'sigma_admissions_in_flight',
      help: 'Admissions waiting for the lease store.',
      registers,
    });
    this.closesTotal = new Counter({
      name: 'sigma_ws_closes_total',
      help: 'Close codes sent by the gateway.',
      labelNames: ['code'],
      registers,
    });
    // Start every bounded series at 0 so rate() and dashboards see them before the first event.
    for (const result of ['granted', 'denied', 'error'] as const) this.acquireTotal.inc({ result }, 0);
    for (const reason of RELEASE_REASONS) this.releaseTotal.inc({ reason }, 0);
    this.fencingTotal = new Counter({
      name: 'sigma_fencing_events_total',
      help: 'Times this process fenced itself (closed its sockets with 4408) and started a new instance.',
      registers,
    });
    this.authFailures = new Counter({
      name: 'sigma_auth_failures_total',
      help: 'Tokens refused, by reason (missing, malformed, expired, bad_signature, algorithm, claim, ...).',
      labelNames: ['reason'],
      registers,
    });
    this.rejections = new Counter({
      name: 'sigma_rejections_total',
      help: 'Connections and messages turned away before any store work, by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REJECTION_REASONS) this.rejections.inc({ reason }, 0);
    this.reconcileRounds = new Counter({
      name: 'sigma_reconcile_rounds_total',
      help: 'Reconcile rounds by result: complete, partial (ran out of its interval; the next round continues), failed (a batch failed).',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['complete', 'partial', 'failed']) this.reconcileRounds.inc({ result }, 0);
    this.leaseRepairs = new Counter({
      name: 'sigma_lease_repairs_total',
      help: 'What the reconcile loop fixed: orphan (an entry no socket holds: a late copy of a write), victim (told a socket a write revoked), count (n differed from the entries).',
      labelNames: ['kind'],
      registers,
    });
    for (const kind of ['orphan', 'victim', 'count']) this.leaseRepairs.inc({ kind }, 0);
    this.uncertainLeases = new Gauge({
      name: 'sigma_uncertain_leases',
      help: 'Lease ids whose write had an unknown outcome, still re-checked until no late copy can land.',
      registers,
      collect() {
        this.set(self.uncertainLeasesSource());
      },
    });
    this.playbackTokensIssued = new Counter({
      name: 'sigma_playback_tokens_issued_total',
      help: 'Playback tokens signed (in granted frames and refreshes).',
      registers,
    });
    this.playbackAuthorize = new Counter({
      name: 'sigma_playback_authorize_total',
      help: 'Media-path checks at /v1/playback/authorize by result: ok, missing, invalid, expired, lease_gone.',
      labelNames: ['result'],
      registers,
    });
    for (const result of PLAYBACK_RESULTS) this.playbackAuthorize.inc({ result }, 0);
    this.revocationsTotal = new Counter({
      name: 'sigma_revocations_total',
      help: 'Sockets closed because their lease was taken away, by close code and by path (local, mailbox, reconcile; handoff: stopped before it came back with its handoff).',
      labelNames: ['code', 'path'],
      registers,
    });
    this.mailboxNotesSkipped = new Counter({
      name: 'sigma_mailbox_notes_skipped_total',
      help: "Notes for replaced sockets (4409) not sent to another instance's mailbox, over its budget (the devices of a gateway that died coming back): the reconcile round closes such sockets.",
      registers,
    });
  }
}
