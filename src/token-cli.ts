/**
 * `npm run token -- <userId> [--max-streams N] [--scope "sigma:admin"] [--ttl SECONDS]`
 *
 * Prints an HS256 token signed with JWT_SECRET, or with the development
 * secret that `npm start` accepts when no key is configured.
 */
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { ConfigError, loadConfig } from './config.js';

const USAGE = 'usage: npm run token -- <userId> [--max-streams N] [--scope "a b"] [--ttl seconds]';

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'max-streams': { type: 'string' },
      scope: { type: 'string' },
      ttl: { type: 'string', default: '3600' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || positionals.length !== 1) throw new ConfigError(USAGE);
  const config = loadConfig(process.env);
  if (config.auth.secret === undefined) {
    throw new ConfigError('tokens can only be minted here for JWT_SECRET (HS256); use your identity provider for keys');
  }
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new ConfigError(`--ttl must be a positive whole number of seconds, got "${values.ttl}"`);
  const claims: Record<string, unknown> = {};
  if (values['max-streams'] !== undefined) {
    const n = Number(values['max-streams']);
    if (!Number.isInteger(n) || n < 1)
      throw new ConfigError(`--max-streams must be a positive whole number, got "${values['max-streams']}"`);
    claims.max_streams = n;
  }
  if (values.scope !== undefined) claims.scope = values.scope;
  let jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(positionals[0])
    .setIssuedAt()
    .setExpirationTime(`${ttl}s`);
  if (config.auth.issuer) jwt = jwt.setIssuer(config.auth.issuer);
  if (config.auth.audience) jwt = jwt.setAudience(config.auth.audience);
  process.stdout.write((await jwt.sign(new TextEncoder().encode(config.auth.secret))) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
});
