/**
 * One admission's deadline. Every await of the admission goes through `run()`,
 * which tells a step that finished ('done'), a step that threw ('failed': the
 * store or the token said no, or broke) and a step that was still running when
 * the time ran out ('gave-up': its outcome is unknown and may still change the
 * store). The signal aborts store calls that honour it; the race guarantees the
 * caller hears back on time from calls that do not.
 */
export type Settled<T> =
  { readonly kind: 'done'; readonly value: T } | { readonly kind: 'failed'; readonly error: unknown } | { readonly kind: 'gave-up' };

export class Deadline {
  readonly #abort = new AbortController();
  readonly #expired: Promise<{ readonly kind: 'gave-up' }>;
  #timer: NodeJS.Timeout | undefined;

  /** @param ms whole milliseconds from now */
  constructor(ms: number) {
    this.#expired = new Promise((resolve) => {
      this.#timer = setTimeout(() => {
        this.#abort.abort();
        resolve({ kind: 'gave-up' });
      }, ms);
    });
  }

  /** Aborted when the deadline passes. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get expired(): boolean {
    return this.#abort.signal.aborted;
  }

  /**
   * Runs one step. A step that throws after the deadline passed counts as
   * 'gave-up' (its error is most likely our own abort).
   */
  async run<T>(step: Promise<T>): Promise<Settled<T>> {
    if (this.expired) {
      step.catch(() => {});
      return { kind: 'gave-up' };
    }
    const settled = step.then(
      (value): Settled<T> => ({ kind: 'done', value }),
      (error: unknown): Settled<T> => (this.expired ? { kind: 'gave-up' } : { kind: 'failed', error }),
    );
    return Promise.race([settled, this.#expired]);
  }

  /** Stops the timer; call once the admission has its answer. */
  clear(): void {
    clearTimeout(this.#timer);
  }
}
