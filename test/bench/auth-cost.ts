/**
 * `node --import tsx test/bench/auth-cost.ts`: CPU per token check, in this
 * process, for each path of src/auth.ts: jose's jwtVerify (what every
 * admission paid before), the synchronous HS256 check, and a cache hit.
 * Distinct tokens per round, so only the hit round hits. Prints one line per
 * path; the bench's report quotes them in docs/bench/notes.md.
 */
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import { Authenticator } from '../../src/auth.js';
import { mintToken, TEST_SECRET } from '../helpers/tokens.js';

const N = Number(process.argv[2] ?? 5000);
const cfg = { secret: TEST_SECRET, devSecret: false } as const;

async function cost(name: string, auth: Authenticator, tokens: string[]): Promise<number> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const t of tokens) await auth.verify(t);
  const c = process.cpuUsage(c0);
  const cpuUs = (c.user + c.system) / tokens.length;
  process.stdout.write(
    `${name.padEnd(34)} ${cpuUs.toFixed(1).padStart(6)} CPU-µs per token (all threads), ${(((performance.now() - t0) * 1000) / tokens.length).toFixed(1)} µs wall\n`,
  );
  return cpuUs;
}

const mint = (prefix: string): Promise<string[]> => Promise.all(Array.from({ length: N }, (_, i) => mintToken(`${prefix}-${i}`)));
const [warm, a, b] = [await mint('warm'), await mint('a'), await mint('b')];
// jose alone, called as src/auth.ts called it before (the Authenticator has no switch for its HS256 path).
const { jwtVerify } = await import('jose');
const key = new TextEncoder().encode(TEST_SECRET);
const jose = {
  verify: (t: string) => jwtVerify(t, key, { algorithms: ['HS256'], requiredClaims: ['exp', 'sub'] }),
} as unknown as Authenticator;
await cost('warm-up (jose)', jose, warm);
const joseUs = await cost('jose jwtVerify', jose, a);
const noCache = new Authenticator(cfg, undefined, undefined, { cacheSize: 0 });
await cost('warm-up (sync HS256)', noCache, warm);
const syncUs = await cost('sync HS256 (node:crypto), no cache', noCache, b);
const cached = new Authenticator(cfg, undefined, undefined, { cacheSize: N });
await cost('cache miss (sync HS256 + sha256)', cached, a);
const hitUs = await cost('cache hit (sha256 + Map)', cached, a);
process.stdout.write(`ratios: sync/jose ${(syncUs / joseUs).toFixed(2)}, hit/jose ${(hitUs / joseUs).toFixed(2)}\n`);

// ES256 (a JWT_PUBLIC_KEY or JWKS deployment): jose does the signature check, the cache saves it on a hit.
const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const pem = ec.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const mintEs = (prefix: string): Promise<string[]> =>
  Promise.all(
    Array.from({ length: N }, (_, i) =>
      new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setSubject(`${prefix}-${i}`).setExpirationTime('1h').sign(ec.privateKey),
    ),
  );
const [esWarm, esA] = [await mintEs('ew'), await mintEs('ea')];
const esCfg = { publicKeyPem: pem, devSecret: false } as const;
const esNoCache = new Authenticator(esCfg, undefined, undefined, { cacheSize: 0 });
await cost('warm-up (ES256)', esNoCache, esWarm);
const esUs = await cost('ES256 via jose, no cache', esNoCache, esA);
const esCached = new Authenticator(esCfg, undefined, undefined, { cacheSize: N });
await cost('ES256 cache miss', esCached, esA);
const esHitUs = await cost('ES256 cache hit', esCached, esA);
process.stdout.write(`ratio ES256 hit/verify ${(esHitUs / esUs).toFixed(2)}\n`);
