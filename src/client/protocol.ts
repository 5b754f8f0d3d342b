/**
 * The wire protocol as the player sees it (issue 2): frames, paths and the
 * reconnect rule of every close code. The rules come from the gateway's own
 * catalog (src/close-codes.ts, plain data) so they are written once; the codes
 * below are the ones only a client ever sees.
 */
import { CLOSE, type ReconnectRule } from '../close-codes.js';

export const APP_PROTOCOL = 'sigma-stream.v1';
export const BEARER_PROTOCOL_PREFIX = 'bearer.';
export const LEASE_PATH = '/v1/lease';
export const STREAMS_PATH = '/v1/streams';
/** Same rule as the gateway's device and content ids. */
export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export interface ActiveStream {
  readonly deviceId: string;
  readonly contentId: string | null;
  /** ISO 8601 UTC. */
  readonly since: string;
}

export interface GrantedFrame {
  readonly type: 'granted';
  readonly leaseId: string;
  readonly userId: string;
  readonly deviceId: string;
  readonly limit: number;
  /** Streams of this user now playing, this one included. */
  readonly active: number;
}

export interface DeniedFrame {
  readonly type: 'denied';
  readonly reason: 'limit';
  readonly limit: number;
  readonly active: readonly ActiveStream[];
}

/** Closes no server sends: the browser's abnormal closure, and a proxy going away. */
const CLIENT_SIDE: Record<number, ReconnectRule> = { 1001: 'backoff', 1006: 'backoff' };
const BY_CODE: Record<number, ReconnectRule> = Object.fromEntries(Object.values(CLOSE).map((c) => [c.code, c.reconnect]));

/** What to do after a close; unknown codes are terminal, never a reconnect loop. */
export function reconnectRule(code: number): ReconnectRule {
  return BY_CODE[code] ?? CLIENT_SIDE[code] ?? 'no';
}

export const CODES = {
  NORMAL: CLOSE.NORMAL.code,
  ABNORMAL: 1006,
  UNAUTHORIZED: CLOSE.UNAUTHORIZED.code,
  REVOKED: CLOSE.REVOKED.code,
  REPLACED: CLOSE.REPLACED.code,
  LIMIT: CLOSE.LIMIT.code,
} as const;
