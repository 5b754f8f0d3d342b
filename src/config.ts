import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { MAX_CAP, parseClassCaps, STREAM_POLICIES, type StreamPolicy } from './plan.js';

/**
 * The only reader of `process.env`. Every setting is parsed, validated and
 * frozen here, so the rest of the gateway never sees a string it has to
 * second-guess. A bad value stops the process at start-up with a message
 * that names the variable and quotes the value.
 */

export type StoreKind = 'embedded' | 'dynamodb';

/** One region of `DYNAMODB_REGIONS`: where its table lives and how to reach it. */
export interface RegionConfig {
  /** The name tokens give in `home_region` and metrics give in `region`. */
  readonly name: string;
  /** DynamoDB endpoint override (DynamoDB Local, a VPC endpoint); the SDK's default for `awsRegion` otherwise. */
  readonly endpoint?: string;
  /** The AWS region the client signs for; undefined for DynamoDB Local with local credentials. */
  readonly awsRegion?: string;
}

export interface AuthConfig {
  /** HS256 shared secret (UTF-8 bytes of `JWT_SECRET`). */
  readonly secret?: string;
  /** PEM public key (RS256 or ES256, pinned by the key's type). */
  readonly publicKeyPem?: string;
  /** JSON Web Key Set URL (RS256 or ES256). */
  readonly jwksUrl?: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** True when no key was configured and the well-known development secret is used. */
  readonly devSecret: boolean;
}

/** Playback tokens (src/playback.ts): the lease on the media path. */
export interface PlaybackConfig {
  /** Private key that signs playback tokens (P-256: ES256, Ed25519: EdDSA). */
  readonly signingKey: KeyObject;
  /** Previous public keys still published in the JWKS during a rotation. */
  readonly previousKeys: readonly KeyObject[];
  /** `iss` of every token. @default 'sigma-stream' */
  readonly issuer: string;
  /** `aud` of every token, when set. */
  readonly audience?: string;
  /** Longest token lifetime (exp - iat); the fencing deadline may cut it shorter. @default 60000 */
  readonly ttlMs: number;
  /** True when no PLAYBACK_SIGNING_KEY was set and a key was generated at start (development only). */
  readonly generated: boolean;
}

export interface Config {
  readonly nodeEnv: string;
  readonly production: boolean;
  /** Public port: WebSocket endpoint and REST API. @default 3000 */
  readonly port: number;
  /** Ops port: /metrics, /healthz, /readyz. @default 3001 */
  readonly opsPort: number;
  /** Interface both servers bind to. @default '0.0.0.0' */
  readonly host: string;
  readonly store: StoreKind;
  /** @default 'sigma-stream-leases' */
  readonly table: string;
  readonly dynamodbEndpoint?: string;
  readonly awsRegion?: string;
  /**
   * The regions whose tables hold user items, this gateway's own first (`DYNAMODB_REGIONS`). Unset: one
   * region, built from `DYNAMODB_ENDPOINT` and `AWS_REGION`, named after `AWS_REGION` (or 'local').
   */
  readonly regions: readonly RegionConfig[];
  /** True when `DYNAMODB_REGIONS` named more than one region: metrics then carry a `region` label. */
  readonly multiRegion: boolean;
  readonly createTable: boolean;
  readonly auth: AuthConfig;
  /** Default streams per user when the token has no `max_streams`. @default 3 */
  readonly maxStreams: number;
  /** At the limit, when the token has no `stream_policy`: refuse the new device, or stop the longest-playing one. @default 'block_new' */
  readonly streamPolicy: StreamPolicy;
  /** Default cap per content id when the token has no `max_streams_per_content`. @default undefined (no cap) */
  readonly maxStreamsPerContent?: number;
  /** Default caps per device class when the token has no `max_streams_by_class`. @default undefined (no caps) */
  readonly maxStreamsByClass?: Readonly<Record<string, number>>;
  /** A stream paused this long gives its slot back (the socket stays open); 0 keeps paused streams counting. @default 0 */
  readonly pauseReleaseMs: number;
  /** Protocol ping period. @default 20000 */
  readonly pingIntervalMs: number;
  /** A socket silent this long after a ping is terminated. @default 10000 */
  readonly pongTimeoutMs: number;
  /** Instance item heartbeat period. @default 5000 */
  readonly instanceHeartbeatMs: number;
  /** An instance item not beaten for this long is dead, with all its leases. @default 20000 */
  readonly instanceTtlMs: number;
  /** A gateway fences itself this long before its instance item could expire. @default 5000 */
  readonly fencingMarginMs: number;
  /** Deadline for one admission (auth + lease store), after which the socket gets 1013. @default 3000 */
  readonly admissionTimeoutMs: number;
  /** Period of the backstop check of this instance's own leases. @default 60000 */
  readonly reconcileIntervalMs: number;
  /**
   * How long a lease id whose write was uncertain (retried, timed out, abandoned, revoked before its
   * grant) is re-checked by the reconcile loop: the time a late copy of the request can still land.
   * AWS refuses a SigV4-signed request that reaches it more than 5 minutes after it was signed.
   * @default 360000
   */
  readonly uncertainWriteHorizonMs: number;
  /** Window over which SIGTERM spreads the 1012 closes. @default 10000 */
  readonly drainMs: number;
  /**
   * The drain hands each lease over instead of giving it back: the instance
   * item is marked draining, the player comes back elsewhere with
   * `handoff=<lease id>`, and that gateway keeps its slot in one write. Off:
   * each lease is released before its 1012, for players that do not send
   * `handoff` (a release and a write each, where a hand-off leaves them a
   * failed write, a read and a write; a player that sends it then pays one
   * failed write more). @default true
   */
  readonly drainHandoff: boolean;
  /** Per-attempt timeout of one DynamoDB request. @default 1000 */
  readonly dynamodbRequestTimeoutMs: number;
  /** Attempts per DynamoDB request, first one included (the admission deadline bounds them all). @default 3 */
  readonly dynamodbMaxAttempts: number;
  /**
   * Send the first attempt of each UpdateItem by hand (src/direct.ts), the
   * SDK retrying; `false`: every attempt through the SDK (about twice the
   * client CPU per write). @default true
   */
  readonly dynamodbDirectWrites: boolean;
  /** Largest accepted WebSocket message. @default 4096 */
  readonly maxPayloadBytes: number;
  /** Browser origins allowed to open sockets and call the REST API; '*' allows any. */
  readonly allowedOrigins: ReadonlySet<string> | '*';
  /** Proxies in front of us whose X-Forwarded-For entries we believe. @default 0 */
  readonly trustedProxyHops: number;
  /** Upgrade attempts per second per client IP, and the bucket size. @default 20, 40 */
  readonly connectRatePerIp: number;
  readonly connectBurstPerIp: number;
  /** Upgrade attempts per second per user, and the bucket size. @default 5, 20 */
  readonly connectRatePerUser: number;
  readonly connectBurstPerUser: number;
  /** Consecutive rate-limit rejections after which an IP or user is blocked. @default 20 */
  readonly blockAfterRejections: number;
  /** How long a blocked IP or user stays blocked. @default 60000 */
  readonly blockMs: number;
  /** Messages per second per socket (app pings count), and the bucket size. @default 5, 20 */
  readonly messageRatePerSocket: number;
  readonly messageBurstPerSocket: number;
  /** Sockets this process accepts; more get 503 before the upgrade. @default 20000 */
  readonly maxConnections: number;
  /**
   * Connections the kernel queues for the public port while the event loop is busy (the listen backlog;
   * Linux caps it at net.core.somaxconn). A full queue drops new SYNs, and each dropped client waits for its
   * SYN to be sent again (1 s, then 3 s, 7 s): a reconnect storm then waits on timers instead of the gateway.
   * @default 4096
   */
  readonly listenBacklog: number;
  /** A request (or upgrade) whose headers are not complete by then is cut. @default 10000 */
  readonly handshakeTimeoutMs: number;
  /** JWKS background refresh period. @default 300000 */
  readonly jwksRefreshMs: number;
  /** Last good key set is used at most this long after it was fetched. @default 3600000 */
  readonly jwksMaxStaleMs: number;
  /** At most one refetch per this period when a token names an unknown `kid`. @default 30000 */
  readonly jwksCooldownMs: number;
  /** Playback tokens; undefined when off (production without PLAYBACK_SIGNING_KEY). */
  readonly playback?: PlaybackConfig;
  readonly logLevel: LogLevel;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

/** Shared by `npm start` without keys and `npm run token`: never valid in production. */
export const DEV_JWT_SECRET = 'sigma-stream-dev-secret-do-not-use-in-production';

/** A configuration error: `.code` is stable, `.message` names the variable. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG';
}

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max}, got "${raw}"`);
  }
  return value;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[]): T | undefined {
  const raw = read(env, name);
  if (raw === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${raw}"`);
  }
  return raw as T;
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

const REGION_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
const AWS_REGION_NAME = /^[a-z]{2}(-[a-z]+)+-\d+$/;

/**
 * `DYNAMODB_REGIONS`: `eu-west-1,us-east-1` (AWS regions, default endpoints) or
 * `eu=http://127.0.0.1:8001,us=http://127.0.0.1:8002` (a name and an endpoint each).
 */
function parseRegions(raw: string, awsRegion: string | undefined): RegionConfig[] {
  const regions: RegionConfig[] = [];
  for (const part of raw.split(',').map((p) => p.trim())) {
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq).trim();
    const endpoint = eq < 0 ? undefined : part.slice(eq + 1).trim();
    if (!REGION_NAME.test(name)) {
      throw new ConfigError(
        `DYNAMODB_REGIONS entries must be a region name (a-z, 0-9, '-', at most 32) with an optional =endpoint, got "${part}"`,
      );
    }
    if (endpoint !== undefined && !/^https?:$/.test(parseUrl(endpoint)?.protocol ?? '')) {
      throw new ConfigError(`DYNAMODB_REGIONS endpoint of "${name}" must be an http(s) URL, got "${endpoint}"`);
    }
    if (regions.some((r) => r.name === name)) throw new ConfigError(`DYNAMODB_REGIONS names "${name}" twice`);
    if (endpoint === undefined && !AWS_REGION_NAME.test(name)) {
      throw new ConfigError(`DYNAMODB_REGIONS entry "${name}" is not an AWS region name; give it an endpoint (${name}=https://...)`);
    }
    regions.push({ name, endpoint, awsRegion: AWS_REGION_NAME.test(name) ? name : awsRegion });
  }
  return regions;
}

/** P-256 (ES256) and Ed25519 (EdDSA) are what playback tokens are signed with. */
function playbackKeyKind(key: KeyObject): 'p256' | 'ed25519' | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'p256';
  return undefined;
}

const PEM_PUBLIC_KEY = /-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g;

function loadPlayback(env: Env, production: boolean): PlaybackConfig | undefined {
  const pem = read(env, 'PLAYBACK_SIGNING_KEY')?.replace(/\\n/g, '\n');
  const publicRaw = read(env, 'PLAYBACK_PUBLIC_KEYS')?.replace(/\\n/g, '\n');
  const issuer = read(env, 'PLAYBACK_ISSUER') ?? 'sigma-stream';
  const audience = read(env, 'PLAYBACK_AUDIENCE');
  // At least 2 s: iat and exp are whole seconds, so a shorter lifetime could leave a token almost nothing.
  const ttlMs = int(env, 'PLAYBACK_TOKEN_TTL_MS', 60000, 2000, 3600000);
  let signingKey: KeyObject;
  if (pem !== undefined) {
    if (!/-----BEGIN PRIVATE KEY-----/.test(pem)) {
      throw new ConfigError(
        'PLAYBACK_SIGNING_KEY must be a PEM PKCS#8 private key ("-----BEGIN PRIVATE KEY-----"; convert with openssl pkcs8 -topk8 -nocrypt)',
      );
    }
    try {
      signingKey = createPrivateKey(pem);
    } catch (err) {
      throw new ConfigError(`PLAYBACK_SIGNING_KEY is not a PEM private key (${(err as Error).message})`);
    }
    if (playbackKeyKind(signingKey) === undefined) {
      throw new ConfigError(
        `PLAYBACK_SIGNING_KEY must be a P-256 EC key (ES256) or an Ed25519 key (EdDSA), got ${signingKey.asymmetricKeyType}`,
      );
    }
  } else if (production) {
    // Off until a key is configured: a generated key differs per replica, so no replica could verify another's tokens.
    if (publicRaw !== undefined) throw new ConfigError('PLAYBACK_PUBLIC_KEYS is set without PLAYBACK_SIGNING_KEY');
    return undefined;
  } else {
    signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  }
  const previousKeys: KeyObject[] = [];
  if (publicRaw !== undefined) {
    if (/PRIVATE KEY-----/.test(publicRaw)) {
      throw new ConfigError('PLAYBACK_PUBLIC_KEYS holds a private key; it publishes public keys only (openssl pkey -pubout)');
    }
    const blocks = publicRaw.match(PEM_PUBLIC_KEY) ?? [];
    if (blocks.length === 0)
      throw new ConfigError('PLAYBACK_PUBLIC_KEYS must hold one or more PEM public keys ("-----BEGIN PUBLIC KEY-----")');
    for (const [i, block] of blocks.entries()) {
      let key: KeyObject;
      try {
        key = createPublicKey(block);
      } catch (err) {
        throw new ConfigError(`PLAYBACK_PUBLIC_KEYS key ${i + 1} is not a PEM public key (${(err as Error).message})`);
      }
      if (playbackKeyKind(key) === undefined) {
        throw new ConfigError(`PLAYBACK_PUBLIC_KEYS key ${i + 1} must be a P-256 EC key or an Ed25519 key, got ${key.asymmetricKeyType}`);
      }
      previousKeys.push(key);
    }
  }
  return Object.freeze({ signingKey, previousKeys: Object.freeze(previousKeys), issuer, audience, ttlMs, generated: pem === undefined });
}

/** Reads and validates the whole configuration; throws {@link ConfigError} on the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = read(env, 'NODE_ENV') ?? 'development';
  const production = nodeEnv === 'production';
  const dynamodbEndpoint = read(env, 'DYNAMODB_ENDPOINT');
  const awsRegion = read(env, 'AWS_REGION') ?? read(env, 'AWS_DEFAULT_REGION');
  const regionsRaw = read(env, 'DYNAMODB_REGIONS');
  if (regionsRaw !== undefined && dynamodbEndpoint !== undefined) {
    throw new ConfigError(
      'set DYNAMODB_REGIONS or DYNAMODB_ENDPOINT, not both: give each region its endpoint in DYNAMODB_REGIONS (name=url)',
    );
  }
  const regions =
    regionsRaw === undefined
      ? [{ name: awsRegion ?? 'local', endpoint: dynamodbEndpoint, awsRegion }]
      : parseRegions(regionsRaw, awsRegion);

  const store =
    oneOf(env, 'STORE', ['embedded', 'dynamodb'] as const) ??
    (dynamodbEndpoint === undefined && awsRegion === undefined && regionsRaw === undefined && !production ? 'embedded' : 'dynamodb');
  if (store === 'embedded' && regionsRaw !== undefined) {
    throw new ConfigError('DYNAMODB_REGIONS needs STORE=dynamodb: the embedded store is one process, not several regions');
  }
  if (store === 'embedded' && production) {
    throw new ConfigError(
      'STORE=embedded keeps leases in this process only and is refused when NODE_ENV=production; ' +
        'set DYNAMODB_TABLE and AWS_REGION (or DYNAMODB_ENDPOINT)',
    );
  }
  if (store === 'dynamodb' && awsRegion === undefined && dynamodbEndpoint === undefined && regionsRaw === undefined) {
    throw new ConfigError('STORE=dynamodb needs AWS_REGION (or DYNAMODB_ENDPOINT for DynamoDB Local, or DYNAMODB_REGIONS)');
  }

  const secret = read(env, 'JWT_SECRET');
  const publicKeyPem = read(env, 'JWT_PUBLIC_KEY')?.replace(/\\n/g, '\n');
  const jwksUrl = read(env, 'JWKS_URL');
  const keys = [secret, publicKeyPem, jwksUrl].filter((k) => k !== undefined).length;
  if (keys > 1) {
    throw new ConfigError('set only one of JWT_SECRET, JWT_PUBLIC_KEY and JWKS_URL: the algorithm is pinned to it');
  }
  if (keys === 0 && production) {
    throw new ConfigError('NODE_ENV=production needs JWT_SECRET, JWT_PUBLIC_KEY or JWKS_URL to verify tokens');
  }
  if (jwksUrl !== undefined && !/^https?:$/.test(parseUrl(jwksUrl)?.protocol ?? '')) {
    throw new ConfigError(`JWKS_URL must be an http(s) URL, got "${jwksUrl}"`);
  }
  if (publicKeyPem !== undefined) {
    // createPublicKey() would derive the public half of a private key: refuse it, the signing key has no
    // business in every gateway's environment.
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(publicKeyPem)) {
      throw new ConfigError('JWT_PUBLIC_KEY holds a private key; give the gateway only the public key (openssl pkey -pubout)');
    }
    let key: KeyObject;
    try {
      key = createPublicKey(publicKeyPem);
    } catch (err) {
      throw new ConfigError(`JWT_PUBLIC_KEY is not a PEM public key (${(err as Error).message})`);
    }
    const p256 = key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
    if (key.asymmetricKeyType !== 'rsa' && !p256) {
      throw new ConfigError(`JWT_PUBLIC_KEY must be an RSA key (RS256) or a P-256 EC key (ES256), got ${key.asymmetricKeyType}`);
    }
  }
  const auth: AuthConfig = Object.freeze({
    secret: keys === 0 ? DEV_JWT_SECRET : secret,
    publicKeyPem,
    jwksUrl,
    issuer: read(env, 'JWT_ISSUER'),
    audience: read(env, 'JWT_AUDIENCE'),
    devSecret: keys === 0,
  });

  const instanceHeartbeatMs = int(env, 'INSTANCE_HEARTBEAT_MS', 5000, 50);
  const instanceTtlMs = int(env, 'INSTANCE_TTL_MS', 20000, 100);
  // At least 1 ms: with no margin a gateway would step down at the very moment others may take its slots.
  const fencingMarginMs = int(env, 'FENCING_MARGIN_MS', 5000, 1);
  if (fencingMarginMs >= instanceTtlMs - instanceHeartbeatMs) {
    throw new ConfigError(
      `FENCING_MARGIN_MS (${fencingMarginMs}) must be below INSTANCE_TTL_MS (${instanceTtlMs}) minus ` +
        `INSTANCE_HEARTBEAT_MS (${instanceHeartbeatMs}): a gateway must get at least one beat in before it fences`,
    );
  }

  const pingIntervalMs = int(env, 'PING_INTERVAL_MS', 20000, 10);
  const pongTimeoutMs = int(env, 'PONG_TIMEOUT_MS', 10000, 10);
  // Equal is natural (ws's own heartbeat example checks each socket once per period); larger would mean a
  // ping goes out while the previous one is still awaited.
  if (pongTimeoutMs > pingIntervalMs) {
    throw new ConfigError(
      `PONG_TIMEOUT_MS (${pongTimeoutMs}) must not exceed PING_INTERVAL_MS (${pingIntervalMs}): a pong is awaited before the next ping`,
    );
  }

  const classCapsRaw = read(env, 'MAX_STREAMS_BY_CLASS');
  let maxStreamsByClass: Readonly<Record<string, number>> | undefined;
  if (classCapsRaw !== undefined) {
    const caps = parseClassCaps(classCapsRaw);
    if (typeof caps === 'string') throw new ConfigError(`MAX_STREAMS_BY_CLASS ${caps} (like tv:1,mobile:2), got "${classCapsRaw}"`);
    maxStreamsByClass = Object.freeze(caps);
  }
  const perContentRaw = read(env, 'MAX_STREAMS_PER_CONTENT');

  const logLevel = oneOf(env, 'LOG_LEVEL', ['debug', 'info', 'warn', 'error', 'silent'] as const) ?? 'info';

  const originsRaw = read(env, 'ALLOWED_ORIGINS');
  let allowedOrigins: ReadonlySet<string> | '*';
  if (originsRaw === '*' || (originsRaw === undefined && !production)) {
    allowedOrigins = '*';
  } else {
    const list = (originsRaw ?? '')
      .split(',')
      .map((o) => o.trim())
      .filter(Boolean);
    for (const origin of list) {
      // The URL parser takes '*' as a host character: such an entry would match nothing, silently.
      if (origin.includes('*') || parseUrl(origin)?.origin !== origin) {
        throw new ConfigError(
          `ALLOWED_ORIGINS entries must be exact origins like https://www.example.com (no path, no trailing slash), got "${origin}"`,
        );
      }
    }
    allowedOrigins = new Set(list);
  }

  return Object.freeze({
    nodeEnv,
    production,
    port: int(env, 'PORT', 3000, 0, 65535),
    opsPort: int(env, 'OPS_PORT', 3001, 0, 65535),
    host: read(env, 'HOST') ?? '0.0.0.0',
    store,
    table: read(env, 'DYNAMODB_TABLE') ?? 'sigma-stream-leases',
    dynamodbEndpoint,
    awsRegion,
    regions: Object.freeze(regions.map((r) => Object.freeze(r))),
    multiRegion: regions.length > 1,
    createTable: bool(env, 'CREATE_TABLE', store === 'embedded' || regions.every((r) => r.endpoint !== undefined)),
    auth,
    maxStreams: int(env, 'MAX_STREAMS', 3, 1, 1000),
    streamPolicy: oneOf(env, 'STREAM_POLICY', STREAM_POLICIES) ?? 'block_new',
    maxStreamsPerContent: perContentRaw === undefined ? undefined : int(env, 'MAX_STREAMS_PER_CONTENT', 0, 1, MAX_CAP),
    maxStreamsByClass,
    pauseReleaseMs: int(env, 'PAUSE_RELEASE_MS', 0, 0),
    pingIntervalMs,
    pongTimeoutMs,
    instanceHeartbeatMs,
    instanceTtlMs,
    fencingMarginMs,
    admissionTimeoutMs: int(env, 'ADMISSION_TIMEOUT_MS', 3000, 10),
    reconcileIntervalMs: int(env, 'RECONCILE_INTERVAL_MS', 60000, 10),
    uncertainWriteHorizonMs: int(env, 'UNCERTAIN_WRITE_HORIZON_MS', 360000, 100),
    drainMs: int(env, 'DRAIN_MS', 10000, 0),
    drainHandoff: bool(env, 'DRAIN_HANDOFF', true),
    dynamodbRequestTimeoutMs: int(env, 'DYNAMODB_REQUEST_TIMEOUT_MS', 1000, 10),
    dynamodbMaxAttempts: int(env, 'DYNAMODB_MAX_ATTEMPTS', 3, 1, 10),
    dynamodbDirectWrites: bool(env, 'DYNAMODB_DIRECT_WRITES', true),
    maxPayloadBytes: int(env, 'MAX_PAYLOAD_BYTES', 4096, 128, 1024 * 1024),
    allowedOrigins,
    trustedProxyHops: int(env, 'TRUSTED_PROXY_HOPS', 0, 0, 10),
    connectRatePerIp: int(env, 'CONNECT_RATE_PER_IP', 20, 1),
    connectBurstPerIp: int(env, 'CONNECT_BURST_PER_IP', 40, 1),
    connectRatePerUser: int(env, 'CONNECT_RATE_PER_USER', 5, 1),
    connectBurstPerUser: int(env, 'CONNECT_BURST_PER_USER', 20, 1),
    blockAfterRejections: int(env, 'BLOCK_AFTER_REJECTIONS', 20, 1),
    blockMs: int(env, 'BLOCK_MS', 60000, 0),
    messageRatePerSocket: int(env, 'MESSAGE_RATE_PER_SOCKET', 5, 1),
    messageBurstPerSocket: int(env, 'MESSAGE_BURST_PER_SOCKET', 20, 1),
    maxConnections: int(env, 'MAX_CONNECTIONS', 20000, 1),
    // listen(2) takes an int, and Node passes only its low 32 bits: 4294967296 would silently listen with 0.
    listenBacklog: int(env, 'LISTEN_BACKLOG', 4096, 1, 2147483647),
    handshakeTimeoutMs: int(env, 'HANDSHAKE_TIMEOUT_MS', 10000, 100),
    jwksRefreshMs: int(env, 'JWKS_REFRESH_MS', 300000, 100),
    jwksMaxStaleMs: int(env, 'JWKS_MAX_STALE_MS', 3600000, 100),
    jwksCooldownMs: int(env, 'JWKS_COOLDOWN_MS', 30000, 0),
    playback: loadPlayback(env, production),
    logLevel,
  });
}
