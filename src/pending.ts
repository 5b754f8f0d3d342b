import { performance } from 'node:perf_hooks';

/**
 * Background store work still in flight (releases, mailbox notes, re-checks
 * of uncertain writes): shutdown waits for it, bounded.
 */
export class Pending {
  readonly #set = new Set<Promise<unknown>>();

  get size(): number {
    return this.#set.size;
  }

  /** Tracks `p` until it settles; never rejects. */
  add(p: Promise<unknown>): void {
    const tracked = p.then(
      () => {},
      () => {},
    );
    this.#set.add(tracked);
    void tracked.finally(() => this.#set.delete(tracked));
  }

  /** Resolves once everything tracked has settled, or after `timeoutMs`. */
  async settle(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (this.#set.size > 0 && performance.now() < until) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all([...this.#set]), new Promise((r) => (timer = setTimeout(r, until - performance.now())))]);
      clearTimeout(timer);
    }
  }
}
