/**
 * Every close code the gateway sends, with the reconnect rule the player SDK
 * follows. Written once here; docs and the SDK are checked against this table.
 *
 *   reconnect: 'no'        terminal: the player shows the reason and stops
 *   reconnect: 'backoff'   retry with full-jitter exponential backoff
 *   reconnect: 'jitter'    retry soon, spread by a random delay (deploys)
 *   reconnect: 'new-token' retry only with a fresh token
 */
export type ReconnectRule = 'no' | 'backoff' | 'jitter' | 'new-token';

export interface CloseCode {
  readonly code: number;
  readonly name: string;
  readonly reconnect: ReconnectRule;
  readonly meaning: string;
}

function define<const T extends Record<string, CloseCode>>(codes: T): T {
  return Object.freeze(codes);
}

export const CLOSE = define({
  NORMAL: { code: 1000, name: 'normal', reconnect: 'no', meaning: 'the player stopped' },
  // 1002 and 1007 are sent by the WebSocket layer (ws) for malformed frames; listed so players know them.
  PROTOCOL_ERROR: { code: 1002, name: 'protocol_error', reconnect: 'no', meaning: 'malformed frame (unmasked, reserved bits or opcode)' },
  INVALID_DATA: { code: 1007, name: 'invalid_payload', reconnect: 'no', meaning: 'text frame that is not UTF-8' },
  POLICY: { code: 1008, name: 'policy_violation', reconnect: 'no', meaning: 'bad message, bad request or message rate' },
  TOO_BIG: { code: 1009, name: 'message_too_big', reconnect: 'no', meaning: 'message larger than the limit' },
  INTERNAL: { code: 1011, name: 'internal_error', reconnect: 'backoff', meaning: 'unexpected gateway error' },
  RESTART: { code: 1012, name: 'service_restart', reconnect: 'jitter', meaning: 'this gateway is draining' },
  TRY_LATER: { code: 1013, name: 'try_again_later', reconnect: 'backoff', meaning: 'lease store unavailable or overloaded' },
  UNAUTHORIZED: { code: 4401, name: 'unauthorized', reconnect: 'new-token', meaning: 'token missing, invalid or expired' },
  REVOKED: { code: 4403, name: 'revoked', reconnect: 'no', meaning: 'the user or an operator stopped this device' },
  LEASE_LOST: { code: 4408, name: 'lease_lost', reconnect: 'backoff', meaning: 'this gateway could not keep the lease alive' },
  REPLACED: { code: 4409, name: 'replaced', reconnect: 'no', meaning: 'the same device connected again elsewhere' },
  LIMIT: { code: 4429, name: 'stream_limit', reconnect: 'no', meaning: 'stream limit reached' },
});

export type CloseName = keyof typeof CLOSE;

/** WebSocket close reasons are limited to 123 bytes of UTF-8. */
export function closeReason(text: string): string {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= 123) return text;
  return (
    buf
      .subarray(0, 120)
      .toString('utf8')
      .replace(/\uFFFD*$/, '') + '...'
  );
}
