import type { DenialReason } from './protocol.js';

/**
 * Words a viewer understands, one per outcome. Players may show them as they
 * are or map `kind` and `code` to their own translations.
 */
export type Outcome =
  | { kind: 'granted' }
  | {
      kind: 'limit';
      limit: number;
      /** Which cap denied (default `limit`). */
      reason?: DenialReason;
      /** The cap that denied, for `content_limit` and `class_limit`. */
      cap?: number;
      /** This device's class, for `class_limit`. */
      deviceClass?: string;
      /** Devices that must stop before this one can play. */
      mustStop?: number;
    }
  | { kind: 'released' }
  | { kind: 'close'; code: number }
  | { kind: 'reconnecting' }
  | { kind: 'stopped' }
  | { kind: 'error'; code?: number };

const BY_CLOSE_CODE: Record<number, string> = {
  1008: 'The player sent something the service did not accept. Please restart playback.',
  1009: 'The player sent something the service did not accept. Please restart playback.',
  1011: 'The streaming service had a problem. Reconnecting…',
  1012: 'The streaming service is restarting. Reconnecting…',
  1013: 'The streaming service is busy. Reconnecting…',
  4401: 'Your session has expired. Please sign in again.',
  4403: 'Playback was stopped from another device.',
  4408: 'The connection to the streaming service was interrupted. Reconnecting…',
  4409: 'This device started playing somewhere else (another window or app).',
  4429: 'You are already watching on the maximum number of devices.',
};

/** `tv` -> `1 TV` / `2 TVs`; `mobile` -> `1 mobile device` / `2 mobile devices`. */
function devicesOfClass(n: number, cls: string | undefined): string {
  if (cls === undefined) return n === 1 ? '1 device' : `${n} devices`;
  if (cls.length <= 3) return `${n} ${cls.toUpperCase()}${n === 1 ? '' : 's'}`;
  return `${n} ${cls} ${n === 1 ? 'device' : 'devices'}`;
}

function limitMessage(o: Extract<Outcome, { kind: 'limit' }>): string {
  const cap = o.cap ?? o.limit;
  const stop = (o.mustStop ?? 1) > 1 ? `stop playback on ${o.mustStop} of them` : 'stop playback on one of them';
  if (o.reason === 'content_limit') {
    const where = cap === 1 ? 'one device' : `${cap} devices`;
    return `You can watch this event on ${where} at a time. To watch here, ${stop}.`;
  }
  if (o.reason === 'class_limit') return `Your plan allows ${devicesOfClass(cap, o.deviceClass)} at a time. To watch here, ${stop}.`;
  if ((o.mustStop ?? 1) > 1) return `Your plan allows ${devicesOfClass(o.limit, undefined)} at a time. To watch here, ${stop}.`;
  return `You are already watching on ${o.limit} ${o.limit === 1 ? 'device' : 'devices'}, the most your plan allows. Stop playback on one of them to watch here.`;
}

export function viewerMessage(outcome: Outcome): string {
  switch (outcome.kind) {
    case 'granted':
      return 'Playing.';
    case 'limit':
      return limitMessage(outcome);
    case 'released':
      return 'Paused. Playback here no longer counts against your devices; it resumes if a place is free.';
    case 'close':
      return BY_CLOSE_CODE[outcome.code] ?? 'Playback stopped because the connection to the streaming service closed.';
    case 'reconnecting':
      return 'Connection lost. Reconnecting…';
    case 'stopped':
      return 'Playback stopped.';
    case 'error':
      return 'Something went wrong. Please try again.';
  }
}
