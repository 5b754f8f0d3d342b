import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  UpdateTimeToLiveCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { DirectWriter, HandOver, offsetOf } from './direct.js';
import type { Metrics } from './metrics.js';

export type Item = Record<string, AttributeValue>;

/** Outcome label of one DynamoDB request in `sigma_dynamodb_requests_total`. */
export type Outcome = 'ok' | 'conditional_failed' | 'throttled' | 'timeout' | 'error';

const THROTTLE_NAMES = new Set([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'LimitExceededException',
]);

/**
 * The store did not answer in time or answered with an error that is not a
 * condition check. Admission maps it to 1013; `.code` is stable.
 */
export class StoreUnavailableError extends Error {
  readonly code = 'ERR_STORE_UNAVAILABLE';
  readonly outcome: Outcome;
  constructor(message: string, outcome: Outcome, options?: ErrorOptions) {
    super(message, options);
    this.outcome = outcome;
  }
}

export function classify(err: unknown): Outcome {
  const name = (err as { name?: string } | null)?.name ?? '';
  if (name === 'ConditionalCheckFailedException') return 'conditional_failed';
  if (THROTTLE_NAMES.has(name)) return 'throttled';
  if (name === 'AbortError' || name === 'TimeoutError' || (err as { code?: string })?.code === 'ETIMEDOUT') {
    return 'timeout';
  }
  return 'error';
}

export interface DynamoOptions {
  endpoint?: string;
  region?: string;
  requestTimeoutMs: number;
  maxAttempts: number;
  /**
   * Keep-alive connections to the store, at most: size it to the most store
   * requests one gateway has in flight (admissions, releases and mailbox
   * writes of a reconnect storm). Beyond it requests wait in the agent for a
   * free connection instead of opening more; idle connections are all kept,
   * so the next burst finds them open. @default 256
   */
  maxSockets?: number;
  /**
   * Reuse the resolved middleware stack of each command type. The SDK only
   * does this for `send(command)` without options: 0.71x the client CPU of an
   * UpdateItem with an `{ abortSignal }` option, which rebuilds the stack on
   * every call. {@link send} keeps both: see {@link SignalHandler}.
   * @default true
   */
  cacheMiddleware?: boolean;
  /**
   * Take out of the SDK's middleware stack the per-request work that does
   * nothing for this gateway: see {@link trimStack}. `false` leaves the stack
   * as the SDK builds it (test/bench/sdk-config.ts compares the two).
   * @default true
   */
  trimStack?: boolean;
  /**
   * Send the first attempt of each UpdateItem by hand, the SDK taking over
   * for retries: see {@link DirectWriter}. `false`: every attempt through the
   * SDK (test/bench/raw-http.ts compares the two).
   * @default true
   */
  direct?: boolean;
}

/**
 * Abort signals travel beside the SDK's options, so a call can be aborted and
 * still use the cached middleware stack. {@link send} files the signal under
 * the command's input; a middleware of the last step (after retries and
 * signing, which copy the request) files it again under the HTTP request of
 * each attempt; the request handler picks it up there. Both maps are weak: an
 * entry lives as long as its command or request.
 */
const signalByInput = new WeakMap<object, AbortSignal>();
/** Clients whose UpdateItems go by hand first: see {@link DirectWriter}. */
const directWriters = new WeakMap<object, { readonly writer: DirectWriter; readonly retries: DynamoDBClient | undefined }>();
const signalByRequest = new WeakMap<object, AbortSignal>();

type HandlerOptions = Parameters<NodeHttpHandler['handle']>[1];

/** The SDK's Node handler, with each request's abort signal found in {@link signalByRequest}. */
class SignalHandler extends NodeHttpHandler {
  override handle(request: Parameters<NodeHttpHandler['handle']>[0], options?: HandlerOptions) {
    const abortSignal = signalByRequest.get(request);
    return super.handle(request, abortSignal === undefined ? options : { ...options, abortSignal });
  }
}

/**
 * One client per region (one in all unless DYNAMODB_REGIONS names several). Timeouts are ours, not the SDK's defaults (which
 * wait for ever): a request that has not answered within `requestTimeoutMs`
 * is abandoned and retried, and every caller bounds the whole call with an
 * AbortSignal on top.
 */
export function createClient(opts: DynamoOptions): DynamoDBClient {
  const local = opts.endpoint !== undefined;
  const maxSockets = opts.maxSockets ?? 256;
  const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
  const httpAgent = new HttpAgent(agentOptions);
  const httpsAgent = new HttpsAgent(agentOptions);
  const requestHandler = new SignalHandler({
    connectionTimeout: opts.requestTimeoutMs,
    requestTimeout: opts.requestTimeoutMs,
    // Without this the SDK only logs a warning and keeps waiting.
    throwOnRequestTimeout: true,
    httpAgent,
    httpsAgent,
  });
  const sdkClient = (maxAttempts: number): DynamoDBClient => {
    const client = new DynamoDBClient({
      endpoint: opts.endpoint,
      region: opts.region ?? 'local',
      maxAttempts,
      cacheMiddleware: opts.cacheMiddleware ?? true,
      // DynamoDB Local and dynalite accept any credentials; real AWS uses the default chain (IRSA on EKS).
      ...(local && opts.region === undefined ? { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } } : {}),
      requestHandler,
    });
    if (opts.trimStack ?? true) trimStack(client);
    client.middlewareStack.add(
      (next) => (args) => {
        const signal = signalByInput.get(args.input);
        if (signal !== undefined) signalByRequest.set(args.request as object, signal);
        return next(args);
      },
      { step: 'deserialize', name: 'sigmaAbortSignal', priority: 'low' },
    );
    return client;
  };
  const client = sdkClient(opts.maxAttempts);
  if (opts.direct ?? true) {
    // The hand-sent attempt is the first of `maxAttempts`: the SDK's retries after it get the rest (same handler and
    // agents; destroying the client destroys them for both).
    const retries = opts.maxAttempts > 1 ? sdkClient(opts.maxAttempts - 1) : undefined;
    // Whichever client last learnt of a clock skew (a retry, or any other call) knows the offset.
    const clockOffset = (): number => (retries !== undefined && offsetOf(retries) !== 0 ? offsetOf(retries) : offsetOf(client));
    directWriters.set(client, {
      writer: new DirectWriter(client, {
        endpoint: opts.endpoint,
        requestTimeoutMs: opts.requestTimeoutMs,
        httpAgent,
        httpsAgent,
        clockOffset,
      }),
      retries,
    });
  }
  return client;
}

const USER_AGENT_MIDDLEWARE = 'getUserAgentMiddleware';

/**
 * What the SDK runs on every request that this gateway does not need. Each
 * removal keeps what goes on the wire (retries, backoff, signing, credentials,
 * endpoint, error classes are untouched); test/bench/sdk-config.ts measures it
 * and docs/bench/sdk-trim.md has the figures.
 *
 * - `loggerMiddleware` only writes to the client's `logger`, and we give the
 *   client none (the SDK's NoOpLogger). It still builds a log entry for every
 *   failed call, a condition failure at the stream limit included: a walk of
 *   the whole input through the schema's sensitive-field filter, thrown away.
 * - `recursionDetectionMiddleware` does something only inside AWS Lambda (it
 *   copies Lambda's X-Ray trace id and trace context into the request); the
 *   gateway is a long-lived server on Kubernetes. Per request it scans the
 *   headers and awaits Lambda's invoke store.
 * - the user agent: see {@link cacheUserAgent}.
 */
function trimStack(client: DynamoDBClient): void {
  client.middlewareStack.remove('loggerMiddleware');
  client.middlewareStack.remove('recursionDetectionMiddleware');
  cacheUserAgent(client);
}

type Headers = Record<string, string>;

/**
 * The SDK's user-agent middleware rebuilds the same two headers on every
 * request (awaits its providers, escapes every section with regular
 * expressions, encodes the feature flags): about a tenth of our client's CPU
 * per UpdateItem (docs/bench/sdk-trim.md). This runs the SDK's own
 * middleware, alone, on the client's first requests and sets the headers it
 * wrote on every later one: the same bytes (test/unit/dynamo.test.ts compares
 * them with the untrimmed stack's, retries included). What it cannot follow:
 * a feature flag that first appears on a later request. None does for this
 * client (the flags say endpoint override, retry mode, account-id endpoint
 * mode and credential source, all fixed per client, and the credentials are
 * resolved before the user agent is built), and the header is telemetry for
 * AWS that nothing of ours reads. If the stack is not the one this expects,
 * the SDK's middleware stays.
 */
function cacheUserAgent(client: DynamoDBClient): void {
  const stack = client.middlewareStack;
  // A stack holding the SDK's user-agent middleware and nothing else. identify() lists "name (a.k.a. ...) - step",
  // without the entries placed relative to the command's middleware (httpAuthSchemeMiddleware, before the endpoint's).
  const sdkUserAgent = stack.clone();
  for (const entry of stack.identify()) {
    const name = entry.split(' ')[0];
    if (name !== USER_AGENT_MIDDLEWARE) sdkUserAgent.remove(name);
  }
  sdkUserAgent.remove('httpAuthSchemeMiddleware');
  try {
    // Throws if an entry is left that is placed relative to one not there.
    sdkUserAgent.resolve(() => Promise.resolve({ output: {} as never, response: undefined }), {});
  } catch {
    return;
  }
  if (sdkUserAgent.identify().length !== 1 || !stack.remove(USER_AGENT_MIDDLEWARE)) return;
  let cached: Headers | undefined;
  stack.add(
    (next, context) => async (args) => {
      const headers = (args.request as { headers?: Headers } | undefined)?.headers;
      if (headers === undefined) return next(args);
      if (cached !== undefined) {
        Object.assign(headers, cached);
      } else {
        // The SDK's middleware sets the headers on this request in place; the handler after it sends nothing.
        await sdkUserAgent.resolve(() => Promise.resolve({ output: {} as never, response: undefined }), context)(args);
        const { 'user-agent': userAgent, 'x-amz-user-agent': amzUserAgent } = headers;
        cached = {
          ...(userAgent === undefined ? {} : { 'user-agent': userAgent }),
          ...(amzUserAgent === undefined ? {} : { 'x-amz-user-agent': amzUserAgent }),
        };
      }
      return next(args);
    },
    { step: 'build', priority: 'low', name: 'sigmaCachedUserAgent', tags: ['SET_USER_AGENT', 'USER_AGENT'] },
  );
}

/** Anything with `send(command)`: the DynamoDB client. */
type Sender = Pick<DynamoDBClient, 'send'>;

/**
 * Sends one command and books it in `sigma_dynamodb_requests_total`. Every
 * DynamoDB call of the gateway goes through here, so the counter is the cost.
 * Condition-check failures are returned to the caller as thrown errors with
 * their name intact; everything else becomes a {@link StoreUnavailableError}.
 */
export async function send<T>(
  client: Sender,
  metrics: Metrics,
  operation: string,
  command: unknown,
  signal?: AbortSignal,
  region?: string,
): Promise<T> {
  // With several regions every request is booked under its region; with one, no label (as before regions).
  const where = region === undefined ? {} : { region };
  try {
    const direct = operation === 'UpdateItem' ? directWriters.get(client) : undefined;
    const out = direct === undefined ? await sdkSend<T>(client, command, signal) : await directThenSdk<T>(direct, command, signal, metrics);
    metrics.dynamodbRequests.inc({ operation, outcome: 'ok', ...where });
    return out;
  } catch (err) {
    // A condition failure that arrives as the deadline fires is still a condition failure.
    const classified = classify(err);
    const outcome = classified === 'conditional_failed' || !signal?.aborted ? classified : 'timeout';
    metrics.dynamodbRequests.inc({ operation, outcome, ...where });
    if (outcome === 'conditional_failed') throw err;
    const detail = err instanceof Error ? ` (${err.name}: ${err.message.slice(0, 200)})` : '';
    throw new StoreUnavailableError(`DynamoDB ${operation} failed: ${outcome}${detail}`, outcome, { cause: err });
  }
}

/** Through the SDK: without options, so it reuses its middleware stack; the signal goes beside them (SignalHandler). */
function sdkSend<T>(client: Sender, command: unknown, signal: AbortSignal | undefined): Promise<T> {
  if (signal !== undefined) signalByInput.set((command as { input: object }).input, signal);
  const sent = client.send(command as never) as Promise<T>;
  return signal === undefined ? sent : untilAborted(sent, signal);
}

/**
 * What the SDK's own first retry waits (full jitter up to this, ms) after a
 * throttle and after a transient error (a 5xx, a timeout, a broken
 * connection): the SDK's retry strategy for DynamoDB, which never saw our
 * attempt, would send its first one at once.
 */
const HANDOVER_BACKOFF_MS = { throttle: 1000, transient: 25 } as const;

/**
 * The first attempt by hand ({@link DirectWriter}); for anything but a
 * definite answer the SDK's retries take over with the attempts left, after
 * the backoff the SDK would wait, their attempt count including ours when ours
 * may have been applied. No attempt left: the first attempt's error, named as
 * DynamoDB named it.
 */
async function directThenSdk<T>(
  direct: { readonly writer: DirectWriter; readonly retries: DynamoDBClient | undefined },
  command: unknown,
  signal: AbortSignal | undefined,
  metrics: Metrics,
): Promise<T> {
  try {
    return (await direct.writer.updateItem((command as { input: object }).input, signal)) as T;
  } catch (err) {
    if (!(err instanceof HandOver)) throw err;
    metrics.dynamodbHandovers.inc({ reason: err.reason });
    const counted = (x: unknown): void => {
      const meta = (x as { $metadata?: { attempts?: number } } | null)?.$metadata;
      if (err.sent && meta !== undefined) meta.attempts = (meta.attempts ?? 1) + 1;
    };
    if (direct.retries === undefined) throw Object.assign(err, { $metadata: { attempts: 1 } });
    if (err.backOff !== undefined) await sleep(Math.random() * HANDOVER_BACKOFF_MS[err.backOff], signal);
    try {
      const out = await sdkSend<T>(direct.retries, command, signal);
      counted(out);
      return out;
    } catch (sdkErr) {
      counted(sdkErr);
      throw sdkErr;
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * The SDK's retry middleware no longer sees the signal (it travels beside the
 * options), so it would sleep out a backoff (up to seconds when throttled)
 * after an abort. The caller hears of the abort at once instead; the SDK's
 * next attempt finds the signal aborted and sends nothing (SignalHandler).
 */
function untilAborted<T>(sent: Promise<T>, signal: AbortSignal): Promise<T> {
  const aborted = (): Error => {
    sent.catch(() => {});
    return Object.assign(new Error('store call aborted'), { name: 'AbortError', cause: signal.reason as unknown });
  };
  if (signal.aborted) return Promise.reject(aborted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(aborted());
    signal.addEventListener('abort', onAbort, { once: true });
    sent.finally(() => signal.removeEventListener('abort', onAbort)).then(resolve, reject);
  });
}

export function isConditionFailure(err: unknown): err is Error & { Item?: Item } {
  return (err as { name?: string } | null)?.name === 'ConditionalCheckFailedException';
}

/**
 * Creates the table when it is missing (CREATE_TABLE=true): one string hash
 * key `pk`, on-demand billing, TTL on `ttl` as garbage collection only.
 */
export async function ensureTable(client: DynamoDBClient, table: string): Promise<'exists' | 'created'> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
    return 'exists';
  } catch (err) {
    if ((err as { name?: string }).name !== 'ResourceNotFoundException') throw err;
  }
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  } catch (err) {
    // Another replica created it first.
    if ((err as { name?: string }).name !== 'ResourceInUseException') throw err;
  }
  for (let i = 0; i < 100; i++) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: table }));
    if (Table?.TableStatus === 'ACTIVE') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: table,
        TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
      }),
    );
  } catch {
    // dynalite has no TTL API; TTL is garbage collection only, never correctness.
  }
  return 'created';
}
