/**
 * The first attempt of every UpdateItem, sent by hand: the request the SDK
 * would send (the command's input is already DynamoDB's JSON; SigV4 by the
 * SDK's own signer, credentials, region, clock offset and hash; the client's
 * keep-alive agents), without the SDK's per-request middleware. The SDK
 * spends about 0.26 of the gateway's 0.48 CPU-ms per admission in that
 * middleware (docs/bench/notes.md, "CPU per admission"); this attempt costs
 * 0.37x of it (test/bench/raw-http.ts).
 *
 * Only two answers are taken as they come: 200 (the output) and a failed
 * condition (DynamoDB's ConditionalCheckFailedException with the item). Any
 * other answer, a timeout or a broken connection hands the call to the SDK,
 * which sends it again with its own retries, backoff, clock-skew correction
 * and error classes; its attempt count then includes this one, so a write
 * whose outcome this attempt left unknown is treated as retried (a late copy
 * may land), as the lease keeper requires.
 */
import { request as httpRequest, type Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SignatureV4 } from '@smithy/signature-v4';

/** What the SDK's retries must take over, and whether this attempt may have been applied. */
export class HandOver extends Error {
  /** The request may have reached DynamoDB (a timeout, a lost reply, a 5xx): count it as an attempt. */
  readonly sent: boolean;
  /** What the SDK's next attempt waits first: a throttle's backoff, a transient error's, or none. */
  readonly backOff: 'throttle' | 'transient' | undefined;
  /** Why, as `sigma_dynamodb_handovers_total{reason}` books it. */
  readonly reason: HandOverReason;
  /** DynamoDB's error type, when it answered with one (the error's name if no retry is left). */
  readonly type: string | undefined;
  constructor(message: string, reason: HandOverReason, sent: boolean, backOff?: 'throttle' | 'transient', type?: string) {
    super(message);
    this.name = type ?? (reason === 'timeout' ? 'TimeoutError' : 'HandOver');
    this.reason = reason;
    this.sent = sent;
    this.backOff = backOff;
    this.type = type;
  }
}

export type HandOverReason = 'throttled' | 'server_error' | 'refused' | 'timeout' | 'connection' | 'unreadable' | 'no_endpoint';

const CONDITION_FAILED = 'ConditionalCheckFailedException';

interface Target {
  readonly url: URL;
  readonly request: typeof httpRequest;
  readonly agent: HttpAgent | HttpsAgent;
}

export interface DirectOptions {
  /** The endpoint override (DynamoDB Local, dynalite); else the SDK's endpoint rules for the region. */
  readonly endpoint?: string;
  readonly requestTimeoutMs: number;
  /**
   * The clock offset to sign with: the SDK corrects its client's `systemClockOffset` after a clock-skew error,
   * on whichever client sent the request (the hand-over's retries go through another). Default: `client`'s.
   */
  readonly clockOffset?: () => number;
  readonly httpAgent: HttpAgent;
  readonly httpsAgent: HttpsAgent;
}

/** Signs and sends one UpdateItem attempt for `client`'s configuration. */
export class DirectWriter {
  readonly #client: DynamoDBClient;
  readonly #opts: DirectOptions;
  readonly #signer: SignatureV4;
  #target: Promise<Target | undefined> | undefined;

  constructor(client: DynamoDBClient, opts: DirectOptions) {
    this.#client = client;
    this.#opts = opts;
    const { config } = client;
    this.#signer = new SignatureV4({
      credentials: config.credentials,
      region: config.region,
      service: 'dynamodb',
      sha256: config.sha256,
    });
  }

  /**
   * Where the requests go, resolved once by the SDK's own endpoint rules (so
   * FIPS, dual-stack, partitions and account-id endpoints come out as the
   * SDK's would); undefined when that fails, and then the call goes through
   * the SDK (the next one tries again).
   */
  #resolveTarget(): Promise<Target | undefined> {
    return (this.#target ??= (async () => {
      try {
        const { config } = this.#client;
        let url: URL;
        if (this.#opts.endpoint !== undefined) url = new URL(this.#opts.endpoint);
        else {
          // The account id comes with the credentials (web identity, SSO and process credentials carry it):
          // with it, the SDK's rules choose DynamoDB's account-id endpoints unless the mode says otherwise.
          const credentials = await config.credentials();
          const resolved = config.endpointProvider({
            Region: await config.region(),
            UseFIPS: await config.useFipsEndpoint(),
            UseDualStack: await config.useDualstackEndpoint(),
            AccountId: credentials.accountId,
            AccountIdEndpointMode: await config.accountIdEndpointMode(),
          });
          url = new URL(resolved.url.href);
        }
        const https = url.protocol === 'https:';
        return { url, request: https ? httpsRequest : httpRequest, agent: https ? this.#opts.httpsAgent : this.#opts.httpAgent };
      } catch {
        // Not for good: credentials that are not there yet (STS, IMDS at start-up) come later.
        this.#target = undefined;
        return undefined;
      }
    })());
  }

  /**
   * One attempt. Resolves with the output, rejects with the SDK-shaped
   * condition failure (`name`, `Item`, `$metadata`), with an `AbortError`
   * when `signal` ends the call, or with {@link HandOver} for anything else.
   */
  async updateItem(input: object, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const target = await this.#resolveTarget();
    if (target === undefined) throw new HandOver('no endpoint for the direct path', 'no_endpoint', false);
    const { url } = target;
    const body = JSON.stringify(input);
    const offset = this.#opts.clockOffset?.() ?? offsetOf(this.#client);
    const signed = await this.#signer.sign(
      {
        method: 'POST',
        protocol: url.protocol,
        hostname: url.hostname,
        port: url.port === '' ? undefined : Number(url.port),
        path: url.pathname,
        query: {},
        headers: {
          host: url.host,
          'content-type': 'application/x-amz-json-1.0',
          'x-amz-target': 'DynamoDB_20120810.UpdateItem',
          'content-length': String(Buffer.byteLength(body)),
        },
        body,
      },
      { signingDate: new Date(Date.now() + offset) },
    );
    const { status, text, requestId } = await this.#post(target, signed.headers, body, signal);
    const metadata = { httpStatusCode: status, requestId, attempts: 1, totalRetryDelay: 0 };
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Handled below.
    }
    // Not DynamoDB's JSON object (a proxy's page, a cut body, `null`): whatever it was may have been applied.
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new HandOver(`unreadable answer (status ${status})`, 'unreadable', true, 'transient');
    }
    if (status === 200) return { ...parsed, $metadata: metadata };
    const str = (v: unknown): string => (typeof v === 'string' ? v : '');
    const answer = parsed as Record<string, unknown>;
    const type = str(answer.__type);
    if (status === 400 && type.slice(type.lastIndexOf('#') + 1) === CONDITION_FAILED) {
      const message = str(answer.message) || str(answer.Message) || 'The conditional request failed';
      throw Object.assign(new Error(message), { name: CONDITION_FAILED, Item: answer.Item, $metadata: metadata });
    }
    // Throttling, server errors, clock skew, anything unexpected: the SDK knows what to do with each. A 4xx
    // was refused, not applied; a 5xx may have been.
    const name = type.slice(type.lastIndexOf('#') + 1) || undefined;
    if (/Throttl|ThroughputExceeded|LimitExceeded/.test(type))
      throw new HandOver(`throttled: ${name}`, 'throttled', false, 'throttle', name);
    if (status >= 500) throw new HandOver(`status ${status} ${type}`, 'server_error', true, 'transient', name ?? 'InternalServerError');
    throw new HandOver(`status ${status} ${type}`, 'refused', false, undefined, name);
  }

  #post(
    target: Target,
    headers: Record<string, string>,
    body: string,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; text: string; requestId: string | undefined }> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      let written = false;
      const req = target.request(
        {
          agent: target.agent,
          host: target.url.hostname,
          port: target.url.port,
          method: 'POST',
          path: target.url.pathname,
          headers,
          timeout: this.#opts.requestTimeoutMs,
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            done();
            const requestId = res.headers['x-amzn-requestid'];
            resolve({
              status: res.statusCode ?? 0,
              text: Buffer.concat(chunks).toString(),
              requestId: typeof requestId === 'string' ? requestId : undefined,
            });
          });
          res.on('error', () => fail(new HandOver('reply cut off', 'connection', true, 'transient')));
        },
      );
      const onAbort = (): void => fail(abortError(signal!));
      const done = (): void => signal?.removeEventListener('abort', onAbort);
      const fail = (err: Error): void => {
        done();
        req.destroy();
        reject(err);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('timeout', () => fail(new HandOver(`no answer within ${this.#opts.requestTimeoutMs} ms`, 'timeout', written, 'transient')));
      req.on('error', () => fail(new HandOver('connection failed', 'connection', written, 'transient')));
      req.end(body, () => (written = true));
    });
  }
}

/** The SDK's clock-skew correction of a client, ms. */
export function offsetOf(client: DynamoDBClient): number {
  return (client.config as { systemClockOffset?: number }).systemClockOffset ?? 0;
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('store call aborted'), { name: 'AbortError', cause: signal.reason as unknown });
}
