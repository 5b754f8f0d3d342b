import { SignJWT } from 'jose';

/** The HS256 secret every test gateway is configured with (32+ bytes). */
export const TEST_SECRET = 'sigma-stream-test-secret-0123456789abcdef';

export interface TokenOptions {
  maxStreams?: number;
  scope?: string | string[];
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number;
  secret?: string;
  claims?: Record<string, unknown>;
}

/** Mints an HS256 token for `userId` (the `sub`) signed with the test secret. */
export async function mintToken(userId: string, opts: TokenOptions = {}): Promise<string> {
  const claims: Record<string, unknown> = { ...opts.claims };
  if (opts.maxStreams !== undefined) claims.max_streams = opts.maxStreams;
  if (opts.scope !== undefined) claims.scope = opts.scope;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.expiresIn ?? 3600))
    .sign(new TextEncoder().encode(opts.secret ?? TEST_SECRET));
}

/** Unsigned `alg: none` token: must always be refused. */
export function unsignedToken(userId: string): string {
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: userId, exp: Math.floor(Date.now() / 1000) + 3600 })}.`;
}
