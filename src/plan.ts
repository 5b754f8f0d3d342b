import { ID_PATTERN, type DenialReason } from './client/protocol.js';

/**
 * What a viewer's plan allows, from the token's claims with the configured
 * defaults underneath. Every cap is checked in the same conditional write
 * that takes the lease (counts live on the user item beside `n`).
 */
export type StreamPolicy = 'block_new' | 'evict_oldest';
export const STREAM_POLICIES: readonly StreamPolicy[] = ['block_new', 'evict_oldest'];

/** Why an admission was denied: the `reason` of the `denied` frame and the label of `sigma_lease_denials_total`. */
export const DENIAL_REASONS: readonly DenialReason[] = ['limit', 'content_limit', 'class_limit'];
export type { DenialReason };

/** The plan claims of one token; absent ones fall back to the configuration. */
export interface PlanClaims {
  /** `stream_policy`: refuse the new device at the limit, or stop the longest-playing one. */
  readonly policy?: StreamPolicy;
  /** `max_streams_per_content`: at most this many of the user's leases on one content id. */
  readonly perContent?: number;
  /** `max_streams_by_class`: class -> at most this many leases of devices of that class. */
  readonly byClass?: Readonly<Record<string, number>>;
  /** `device_class`: the class of the device this token is for. */
  readonly deviceClass?: string;
}

/** A plan with every default applied: what admission enforces. */
export interface Plan {
  readonly limit: number;
  readonly policy: StreamPolicy;
  readonly perContent?: number;
  readonly byClass?: Readonly<Record<string, number>>;
}

/**
 * The claims of a token without plan claims (most players): one frozen object shared by
 * every principal, not 56 B more per cached token. Exported so a plan built from it alone
 * (the configured defaults) can be shared the same way.
 */
export const NO_CLAIMS: PlanClaims = Object.freeze({
  policy: undefined,
  perContent: undefined,
  byClass: undefined,
  deviceClass: undefined,
});

/** Largest value any cap may take (claims and configuration alike). */
export const MAX_CAP = 1000;

const isCap = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_CAP;

/**
 * Reads the plan claims of a verified token payload. Returns the sentence
 * that says what is wrong with one of them instead, for a 4401 close reason.
 */
export function planClaimsOf(payload: Record<string, unknown>): PlanClaims | string {
  const { stream_policy: policy, max_streams_per_content: perContent, max_streams_by_class: byClass, device_class: deviceClass } = payload;
  if (policy !== undefined && !STREAM_POLICIES.includes(policy as StreamPolicy)) {
    return `token "stream_policy" must be one of ${STREAM_POLICIES.join(', ')}`;
  }
  if (perContent !== undefined && !isCap(perContent)) return `token "max_streams_per_content" must be an integer from 1 to ${MAX_CAP}`;
  if (byClass !== undefined) {
    const caps = classCapsError(byClass);
    if (caps !== undefined) return `token "max_streams_by_class" ${caps}`;
  }
  if (deviceClass !== undefined && (typeof deviceClass !== 'string' || !ID_PATTERN.test(deviceClass))) {
    return 'token "device_class" must be an id (1-128 characters of A-Z a-z 0-9 . _ : -)';
  }
  if (policy === undefined && perContent === undefined && byClass === undefined && deviceClass === undefined) return NO_CLAIMS;
  return {
    policy: policy as StreamPolicy | undefined,
    perContent: perContent,
    byClass: byClass === undefined ? undefined : Object.freeze({ ...(byClass as Record<string, number>) }),
    deviceClass: deviceClass,
  };
}

/** Why a class-caps object is not acceptable, or undefined when it is. */
function classCapsError(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'must be an object of class -> integer';
  const entries = Object.entries(value);
  if (entries.length > 32) return 'may name at most 32 classes';
  for (const [cls, cap] of entries) {
    if (!ID_PATTERN.test(cls)) return `class "${cls.slice(0, 40)}" must be an id`;
    if (!isCap(cap)) return `cap for "${cls}" must be an integer from 1 to ${MAX_CAP}`;
  }
  return undefined;
}

/**
 * `tv:1,mobile:2` (the MAX_STREAMS_BY_CLASS syntax) as an object; returns the
 * sentence that says what is wrong instead.
 */
export function parseClassCaps(text: string): Record<string, number> | string {
  const entries: Array<[string, number]> = [];
  for (const part of text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([^:\s]+)\s*:\s*(\d+)$/.exec(part);
    if (!m) return `entries must be class:count, got "${part}"`;
    entries.push([m[1], Number(m[2])]);
  }
  // fromEntries defines own properties: `out["__proto__"] = 2` would set the prototype and lose the class.
  const out = Object.fromEntries(entries);
  const err = classCapsError(out);
  return err === undefined ? out : err;
}
