import { InvalidOptionError } from './errors.js';
import { ID_PATTERN, ID_RULE } from './protocol.js';

/** Where a browser keeps its device id across sessions. */
export const DEVICE_ID_KEY = 'sigma-stream.deviceId';

export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

function randomId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return Array.from({ length: 4 }, () => Math.random().toString(36).slice(2, 10)).join('');
}

/**
 * The device id: the caller's, else the one stored in `storage` (browsers:
 * localStorage), created on first use so the same browser stays the same
 * device across reloads and can take over its own slot after a crash.
 */
export function resolveDeviceId(given: string | undefined, storage: KeyValueStorage | undefined): string {
  if (given !== undefined) {
    if (!ID_PATTERN.test(given)) throw new InvalidOptionError('deviceId', ID_RULE, given);
    return given;
  }
  if (!storage) {
    throw new InvalidOptionError('deviceId', 'given when there is no localStorage (Node players pass a stable id)', given);
  }
  let id: string | null = null;
  try {
    id = storage.getItem(DEVICE_ID_KEY);
  } catch {
    // Storage can throw (privacy mode, sandboxed iframes): fall back to an id for this session.
  }
  if (id !== null && ID_PATTERN.test(id)) return id;
  id = `web-${randomId()}`;
  try {
    storage.setItem(DEVICE_ID_KEY, id);
  } catch {
    /* see above */
  }
  return id;
}

export function defaultStorage(): KeyValueStorage | undefined {
  try {
    return (globalThis as { localStorage?: KeyValueStorage }).localStorage;
  } catch {
    return undefined;
  }
}
