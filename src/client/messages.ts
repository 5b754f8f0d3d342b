/**
 * Words a viewer understands, one per outcome. Players may show them as they
 * are or map `kind` and `code` to their own translations.
 */
export type Outcome =
  | { kind: 'granted' }
  | { kind: 'limit'; limit: number }
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

export function viewerMessage(outcome: Outcome): string {
  switch (outcome.kind) {
    case 'granted':
      return 'Playing.';
    case 'limit':
      return `You are already watching on ${outcome.limit} ${outcome.limit === 1 ? 'device' : 'devices'}, the most your plan allows. Stop playback on one of them to watch here.`;
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
