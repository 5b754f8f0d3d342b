import { performance } from 'node:perf_hooks';

/** A token bucket: `tokens` refill at `ratePerSec` up to `burst`. Two numbers, so sockets can carry one inline. */
export interface Bucket {
  tokens: number;
  /** Monotonic ms of the last refill. */
  at: number;
}

export function newBucket(burst: number, now = performance.now()): Bucket {
  return { tokens: burst, at: now };
}

/** Takes one token if there is one. */
export function take(bucket: Bucket, ratePerSec: number, burst: number, now = performance.now()): boolean {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) * ratePerSec) / 1000);
  bucket.at = now;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

export type Verdict = { readonly ok: true } | { readonly ok: false; readonly blocked: boolean; readonly retryAfterSec: number };

interface Entry extends Bucket {
  strikes: number;
  blockedUntil: number;
}

export interface KeyedLimiterOptions {
  readonly ratePerSec: number;
  readonly burst: number;
  /** Consecutive rejections that turn into a block. */
  readonly blockAfter: number;
  readonly blockMs: number;
  /** Memory bound: idle keys are dropped first, then the oldest. @default 100000 */
  readonly maxKeys?: number;
}

const OK: Verdict = { ok: true };

/**
 * Token buckets by key (client IP, user id), with a temporary blocklist for
 * keys that keep hitting the limit. Runs before any store work, so a flood
 * costs CPU and memory bounded by `maxKeys`, never DynamoDB requests.
 */
export class KeyedLimiter {
  readonly #o: Required<KeyedLimiterOptions>;
  readonly #entries = new Map<string, Entry>();
  /** Where the last bounded sweep stopped (a Map iterator survives deletions and sees insertions). */
  #sweeping: MapIterator<[string, Entry]> | undefined;

  constructor(opts: KeyedLimiterOptions) {
    this.#o = { maxKeys: 100_000, ...opts };
  }

  check(key: string, now = performance.now()): Verdict {
    let e = this.#entries.get(key);
    if (!e) {
      if (this.#entries.size >= this.#o.maxKeys) this.#evict(now);
      e = { tokens: this.#o.burst, at: now, strikes: 0, blockedUntil: 0 };
      this.#entries.set(key, e);
    }
    if (e.blockedUntil > now) {
      return { ok: false, blocked: true, retryAfterSec: Math.ceil((e.blockedUntil - now) / 1000) };
    }
    if (take(e, this.#o.ratePerSec, this.#o.burst, now)) {
      e.strikes = 0;
      return OK;
    }
    if (++e.strikes >= this.#o.blockAfter && this.#o.blockMs > 0) {
      e.strikes = 0;
      e.blockedUntil = now + this.#o.blockMs;
      return { ok: false, blocked: true, retryAfterSec: Math.ceil(this.#o.blockMs / 1000) };
    }
    return { ok: false, blocked: false, retryAfterSec: Math.max(1, Math.ceil((1 - e.tokens) / this.#o.ratePerSec)) };
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * Drops keys whose bucket has refilled and that are not blocked. Such a key acts exactly
   * like an absent one (its next check takes a token and clears its strikes), so keeping it
   * only costs memory: ~120 B per user and per client address for as long as the socket it
   * opened stays idle. Looks at `maxKeys` keys at most, resuming where the last call stopped
   * (a pass over 100 000 keys takes ~15 ms: its owner spreads it over several calls).
   */
  sweep(now = performance.now(), maxKeys = Infinity): void {
    this.#sweeping ??= this.#entries.entries();
    for (let seen = 0; seen < maxKeys; seen++) {
      const next = this.#sweeping.next();
      if (next.done) {
        this.#sweeping = undefined;
        return;
      }
      const [key, e] = next.value;
      const full = e.tokens + ((now - e.at) * this.#o.ratePerSec) / 1000 >= this.#o.burst;
      if (full && e.blockedUntil <= now) this.#entries.delete(key);
    }
  }

  #evict(now: number): void {
    this.#sweeping = undefined;
    this.sweep(now);
    // Still full of active keys: drop the oldest tenth rather than grow, blocked keys last (a flood of new
    // keys must not unblock an abuser); only a table of nothing but blocked keys loses some of them.
    if (this.#entries.size >= this.#o.maxKeys) {
      let drop = Math.ceil(this.#o.maxKeys / 10);
      for (const [key, e] of this.#entries) {
        if (drop <= 0) break;
        if (e.blockedUntil > now) continue;
        this.#entries.delete(key);
        drop--;
      }
      for (const key of this.#entries.keys()) {
        if (drop-- <= 0) break;
        this.#entries.delete(key);
      }
    }
  }
}

/**
 * The client's address: the socket's peer, or, behind `trustedHops` proxies
 * that each append to X-Forwarded-For, the entry the outermost trusted proxy
 * saw. Entries further left were written by the client and are never believed.
 */
export function clientIp(remoteAddress: string | undefined, forwardedFor: string | string[] | undefined, trustedHops: number): string {
  const peer = remoteAddress ?? 'unknown';
  if (trustedHops === 0 || forwardedFor === undefined) return peer;
  const chain = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (chain.length === 0) return peer;
  return chain[Math.max(0, chain.length - trustedHops)];
}
