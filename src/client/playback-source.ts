/**
 * What every player adapter needs from a lease: the current playback token
 * (undefined once the lease has ended) and the lease id for CMCD's session id.
 * A StreamLease is one; so is anything shaped like it.
 */
export interface PlaybackSource {
  /** Read on every request: undefined the moment the lease ends, so requests then carry no token. */
  readonly playbackToken: string | undefined;
  readonly grant?: { readonly leaseId: string } | undefined;
}

/** The header every adapter sets (nginx auth_request, Envoy ext_authz and licence proxies read it). */
export const PLAYBACK_HEADER = 'Authorization';

export function bearer(source: PlaybackSource): string | undefined {
  const token = source.playbackToken;
  return token === undefined ? undefined : `Bearer ${token}`;
}
