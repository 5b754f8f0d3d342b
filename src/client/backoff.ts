export interface BackoffOptions {
  /** Upper bound of the first retry delay, ms. @default 500 */
  readonly initialMs?: number;
  /** Upper bound of any retry delay, ms. @default 20000 */
  readonly maxMs?: number;
  /** A lease held this long resets the backoff, ms. @default 10000 */
  readonly stableAfterMs?: number;
}

export const BACKOFF_DEFAULTS = { initialMs: 500, maxMs: 20_000, stableAfterMs: 10_000 } as const;

/**
 * Full-jitter exponential backoff: the n-th consecutive retry (n from 0)
 * waits a uniform random time in [0, min(maxMs, initialMs * 2^n)], so clients
 * dropped together by a deploy spread out instead of returning in one storm.
 */
export function backoffDelayMs(attempt: number, opts: Required<BackoffOptions>, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCapMs(attempt, opts));
}

/** The cap of {@link backoffDelayMs} for `attempt`: what tests and dashboards bound by. */
export function backoffCapMs(attempt: number, opts: Required<BackoffOptions>): number {
  return Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(attempt, 30));
}
