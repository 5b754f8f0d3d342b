/**
 * What every player adapter needs from a lease: the current playback token
 * (undefined once the lease has ended) and the lease id for CMCD's session id.
 * A StreamLease is one; so is anything shaped like it.
 */
export interface PlaybackSource {
  /** Read on every request: undefined the moment the lease ends, so requests then carry no token. */
  readonly playbackToken: string | undefined;
  readonly grant?: { readonly leaseId: string } | undefined;
  /** While the lease reconnects, the next token once granted (StreamLease has it); else the current one. */
  playbackTokenSoon?(timeoutMs?: number): Promise<string | undefined>;
}

/** How long a media request waits for the lease to come back before it goes out without a token. */
export const PLAYBACK_WAIT_MS = 10_000;

/** The header every adapter sets (nginx auth_request, Envoy ext_authz and licence proxies read it). */
export const PLAYBACK_HEADER = 'Authorization';

export function bearer(source: PlaybackSource): string | undefined {
  const token = source.playbackToken;
  return token === undefined ? undefined : `Bearer ${token}`;
}

/** The header value for a request about to go out, waiting for a reconnecting lease (never an old token). */
export async function bearerSoon(source: PlaybackSource): Promise<string | undefined> {
  const token = source.playbackTokenSoon ? await source.playbackTokenSoon(PLAYBACK_WAIT_MS) : source.playbackToken;
  return token === undefined ? undefined : `Bearer ${token}`;
}
