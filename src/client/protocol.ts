/**
 * The wire protocol, written once for both ends: the gateway imports it from
 * here and the player SDK ships it. Paths, subprotocols, the id rule and its
 * sentence, every frame in both directions, the error-frame codes, and the
 * reconnect rule of every close code (from the gateway's catalog,
 * src/close-codes.ts, plain data). Nothing here imports Node modules.
 */
import { CLOSE, type ReconnectRule } from '../close-codes.js';

export const APP_PROTOCOL = 'sigma-stream.v1';
export const BEARER_PROTOCOL_PREFIX = 'bearer.';
export const LEASE_PATH = '/v1/lease';
export const STREAMS_PATH = '/v1/streams';
/** Device, content and takeover ids: what a player may put in the query string. */
export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
/** The id rule in words, for error messages and close reasons. */
export const ID_RULE = '1-128 characters of A-Z a-z 0-9 . _ : -';
/** A lease id as a `granted` frame carries it (a UUID): what the `handoff` query parameter takes. */
export const LEASE_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface ActiveStream {
  readonly deviceId: string;
  readonly contentId: string | null;
  /** The device's class (`tv`, `mobile`, ...), when it has one. */
  readonly class: string | null;
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
  /** The first playback token for the media path (absent when the gateway has no signing key). */
  readonly playback?: PlaybackToken;
}

/** A playback token: a compact JWS whose `sid` is the lease id, and its expiry. */
export interface PlaybackToken {
  readonly token: string;
  /** Seconds since the epoch. */
  readonly exp: number;
}

/** A fresh playback token, sent while the lease is held, before half of the previous one's lifetime. */
export interface PlaybackFrame {
  readonly type: 'playback';
  readonly token: string;
  /** Seconds since the epoch. */
  readonly exp: number;
}

/**
 * Why a device was denied: `limit` (streams per user), `content_limit` (streams
 * of this content), `class_limit` (streams of this device class).
 */
export type DenialReason = 'limit' | 'content_limit' | 'class_limit';

export interface DeniedFrame {
  readonly type: 'denied';
  readonly reason: DenialReason;
  /** Streams per user the plan allows. */
  readonly limit: number;
  /** The cap that denied: `limit`, or the per-content or per-class cap. */
  readonly cap: number;
  /** This device's class, when it has one (for `class_limit`). */
  readonly class?: string;
  /** Every live lease of the user, oldest first (a takeover target included). */
  readonly active: readonly ActiveStream[];
  /** How many of those devices must stop before one more can play (more than 1 after a plan downgrade). */
  readonly mustStop: number;
}

/** A paused stream gave its slot back (`PAUSE_RELEASE_MS`); the socket stays open, `resume` admits again. */
export interface ReleasedFrame {
  readonly type: 'released';
  readonly reason: 'paused';
}

export interface PongFrame {
  readonly type: 'pong';
}

export interface ReauthedFrame {
  readonly type: 'reauthed';
  /** New token expiry, seconds since the epoch. */
  readonly exp: number;
}

/**
 * Codes of the `error` frame: the gateway did not act on a message, and the
 * socket stays open. Each with what it means, for the docs and the catalog test.
 */
export const ERROR_FRAME_CODES = {
  bad_json: 'the message is not a JSON object',
  unknown_type: 'the message type is not part of the protocol',
  reauth_failed: 'the re-authentication token was refused (the socket keeps its old expiry)',
  reauth_rate: 'more than one re-authentication per second',
} as const;
export type ErrorFrameCode = keyof typeof ERROR_FRAME_CODES;

export interface ErrorFrame {
  readonly type: 'error';
  readonly code: ErrorFrameCode;
  readonly message: string;
}

/** Every frame the gateway sends. */
export type ServerFrame = GrantedFrame | DeniedFrame | ReleasedFrame | PongFrame | ReauthedFrame | ErrorFrame | PlaybackFrame;

/** Every frame a player may send. */
export type ClientFrame =
  | { readonly type: 'ping' }
  | { readonly type: 'reauth'; readonly token: string }
  | { readonly type: 'pause' }
  | { readonly type: 'resume' };

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
  RESTART: CLOSE.RESTART.code,
  LEASE_LOST: CLOSE.LEASE_LOST.code,
} as const;
