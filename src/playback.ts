import { createHash, createPublicKey, sign, type KeyObject } from 'node:crypto';
import type { PlaybackConfig } from './config.js';
import type { Metrics } from './metrics.js';

/**
 * Playback tokens: the stream lease carried onto the media path. A compact
 * JWS per lease, signed here (node:crypto, synchronous: the refresh sweep
 * signs many in one slice and must not queue promises for each), verified
 * by nginx/Envoy through `/v1/playback/authorize`, by edge functions and
 * licence servers through `sigma-stream/verify` and the JWKS.
 *
 * The expiry is the point: never later than now + PLAYBACK_TOKEN_TTL_MS, and
 * never later than this gateway's fencing deadline, so a frozen gateway's
 * tokens are dead before another gateway may hand out the slot
 * (Kleppmann's fencing token). And never later than the user's own token.
 */
export const PLAYBACK_TYP = 'sigma-playback+jwt';

export interface PlaybackClaims {
  readonly iss: string;
  readonly aud?: string;
  /** User id. */
  readonly sub: string;
  /** Lease id, as in the `granted` frame. */
  readonly sid: string;
  /** Device id. */
  readonly dev: string;
  /** Content id, when the player named one. */
  readonly cid?: string;
  readonly iat: number;
  readonly exp: number;
}

/** What the `granted` and `playback` frames carry. */
export interface PlaybackGrant {
  readonly token: string;
  /** Seconds since the epoch. */
  readonly exp: number;
}

/** A public JWK as published in the JWKS. */
export type PublicJwk = Record<string, string>;

/** The public JWK of a P-256 or Ed25519 key, with `kid` = its RFC 7638 thumbprint. */
export function publicJwk(key: KeyObject): PublicJwk {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' }) as Record<string, string>;
  // RFC 7638: the required members only, in lexicographic order, no whitespace.
  const required: Record<string, string> =
    jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : { crv: jwk.crv, kty: jwk.kty, x: jwk.x };
  const kid = createHash('sha256').update(JSON.stringify(required)).digest('base64url');
  return { ...required, kid, alg: jwk.kty === 'EC' ? 'ES256' : 'EdDSA', use: 'sig' };
}

function b64(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** One playback signer per gateway process: the key, its kid, the published key set. */
export class Playback {
  readonly config: PlaybackConfig;
  readonly kid: string;
  readonly alg: 'ES256' | 'EdDSA';
  /** `{"keys":[current, previous…]}`, as `/.well-known/jwks.json` serves it. */
  readonly jwks: { readonly keys: readonly PublicJwk[] };
  readonly #key: KeyObject;
  readonly #header: string;
  readonly #metrics: Metrics;

  constructor(config: PlaybackConfig, metrics: Metrics) {
    this.config = config;
    this.#key = config.signingKey;
    this.#metrics = metrics;
    const current = publicJwk(config.signingKey);
    this.kid = current.kid;
    this.alg = current.alg as 'ES256' | 'EdDSA';
    const previous = config.previousKeys.map(publicJwk).filter((k) => k.kid !== current.kid);
    this.jwks = Object.freeze({ keys: Object.freeze([current, ...previous]) });
    this.#header = b64({ alg: this.alg, kid: this.kid, typ: PLAYBACK_TYP });
  }

  /** Signs `claims` as a compact JWS. */
  sign(claims: PlaybackClaims): string {
    const input = `${this.#header}.${b64(claims)}`;
    const signature =
      this.alg === 'ES256'
        ? sign('sha256', Buffer.from(input), { key: this.#key, dsaEncoding: 'ieee-p1363' })
        : sign(null, Buffer.from(input), this.#key);
    return `${input}.${signature.toString('base64url')}`;
  }

  /**
   * A token for a lease held now, or undefined when none can be issued (the
   * gateway is not live, or the user's token expires within the second).
   * `fencingDeadlineMs` is the instance's wall-clock deadline; `userExpSec` the user token's `exp`.
   */
  issue(
    lease: { readonly userId: string; readonly deviceId: string; readonly leaseId: string; readonly contentId?: string },
    fencingDeadlineMs: number | undefined,
    userExpSec: number,
    nowMs = Date.now(),
  ): PlaybackGrant | undefined {
    if (fencingDeadlineMs === undefined) return undefined;
    const iat = Math.floor(nowMs / 1000);
    // Floor: the deadline is a bound, rounding up would step over it. And exp - iat (whole seconds, iat
    // floored too) never above the TTL, which a TTL that is not whole seconds could otherwise exceed.
    const bound = Math.min(nowMs + this.config.ttlMs, fencingDeadlineMs, userExpSec > 0 ? userExpSec * 1000 : Infinity);
    const exp = Math.min(Math.floor(bound / 1000), iat + Math.floor(this.config.ttlMs / 1000));
    if (exp <= iat) return undefined;
    const claims: PlaybackClaims = {
      iss: this.config.issuer,
      ...(this.config.audience !== undefined && { aud: this.config.audience }),
      sub: lease.userId,
      sid: lease.leaseId,
      dev: lease.deviceId,
      ...(lease.contentId !== undefined && { cid: lease.contentId }),
      iat,
      exp,
    };
    this.#metrics.playbackTokensIssued.inc();
    return { token: this.sign(claims), exp };
  }
}

/**
 * When the sweep must send the next token so it arrives before half of this
 * one's lifetime (from its `iat`) has passed, in wall-clock ms, `tickMs` being
 * the sweep period: two ticks early, so one late tick (a busy event loop)
 * still makes it.
 */
export function refreshDueAt(grant: PlaybackGrant, issuedAtMs: number, tickMs: number): number {
  const iat = Math.floor(issuedAtMs / 1000) * 1000;
  return iat + (grant.exp * 1000 - iat) / 2 - 2 * tickMs;
}
