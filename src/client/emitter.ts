/** A tiny typed event emitter: no dependency, works the same in browsers and Node. */
export class Emitter<Events extends Record<string, unknown>> {
  // One set per event name; a listener added twice is called once, like addEventListener.
  readonly #listeners = new Map<keyof Events, Set<(payload: never) => void>>();

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(type: K, listener: (payload: Events[K]) => void): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  off<K extends keyof Events>(type: K, listener: (payload: Events[K]) => void): void {
    this.#listeners.get(type)?.delete(listener);
  }

  /**
   * Calls every listener. A listener that throws must not break the lease's
   * state machine: its error is rethrown on its own turn (reported as uncaught).
   */
  protected emit<K extends keyof Events>(type: K, payload: Events[K]): void {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        (listener as (p: Events[K]) => void)(payload);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
