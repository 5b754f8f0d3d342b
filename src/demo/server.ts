/**
 * The demo page, served on the public port when NODE_ENV is not production
 * (src/app.ts passes this handler as the API's `fallback`):
 *
 *   GET  /                       demo.html
 *   GET  /demo/demo.css          demo.css
 *   GET  /demo/page.js           page.ts and the player SDK, bundled by esbuild on first request
 *   GET  /demo/player.html       a real player (hls.js in a <video>) behind the media path: player.ts
 *   GET  /demo/player.js         player.ts with the SDK and hls.js, bundled the same way
 *   POST /demo/token?user=<id>&plan=<block|last|tv-mobile|event>   a token for any user: ONLY with the development secret
 *
 * The token route is the dangerous one: it mints tokens for whoever asks. It
 * exists only when the gateway runs without JWT_SECRET, JWT_PUBLIC_KEY and
 * JWKS_URL (so it accepts the well-known development secret anyway) and
 * NODE_ENV is not production; otherwise it answers 404. Tests get it by
 * starting a gateway with an empty JWT_SECRET.
 */
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SignJWT } from 'jose';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';

const DEMO_USER = /^[A-Za-z0-9._:-]{1,64}$/;
/** The plans the demo page's picker offers, as the claims a real identity provider would put in the token. */
const DEMO_PLANS: Record<string, Record<string, unknown>> = {
  block: { max_streams: 3 },
  last: { max_streams: 3, stream_policy: 'evict_oldest' },
  'tv-mobile': { max_streams: 3, max_streams_by_class: { tv: 1, mobile: 2 } },
  event: { max_streams: 3, max_streams_per_content: 1 },
};
/** Lifetime of a demo token, s: short, so the page also shows the SDK's refresh before expiry. */
const DEMO_TOKEN_TTL_S = 600;

const PAGE_CSP = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'";
/** The player fetches media from another origin (the media path) and feeds MSE from blob: URLs. */
const PLAYER_CSP =
  "default-src 'self'; connect-src 'self' ws: wss: http: https:; media-src 'self' blob:; style-src 'self'; script-src 'self'";

const STATIC: Record<string, { file: string; type: string; csp?: string }> = {
  '/': { file: 'demo.html', type: 'text/html; charset=utf-8', csp: PAGE_CSP },
  '/demo/player.html': { file: 'player.html', type: 'text/html; charset=utf-8', csp: PLAYER_CSP },
  '/demo/demo.css': { file: 'demo.css', type: 'text/css; charset=utf-8' },
};
/** Scripts bundled by esbuild on first request. */
const SCRIPTS: Record<string, string> = { '/demo/page.js': 'page.ts', '/demo/player.js': 'player.ts' };

/**
 * Files next to this module: src/demo when run from the sources (tsx), and
 * from dist/demo the build does not copy them, so look in src/demo too.
 */
async function readAsset(name: string): Promise<string> {
  for (const url of [new URL(`./${name}`, import.meta.url), new URL(`../../src/demo/${name}`, import.meta.url)]) {
    try {
      return await readFile(url, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw new Error(`demo asset ${name} not found next to ${import.meta.url}`);
}

/** A demo script with the SDK (and hls.js for the player), as one browser script. esbuild is a dev tool: imported only when a page asks. */
async function bundle(name: string): Promise<string> {
  const esbuild = await import('esbuild');
  const entry = [new URL(`./${name}`, import.meta.url), new URL(`../../src/demo/${name}`, import.meta.url)];
  let lastErr: unknown;
  for (const url of entry) {
    try {
      const out = await esbuild.build({
        entryPoints: [decodeURIComponent(url.pathname)],
        bundle: true,
        format: 'esm',
        platform: 'browser',
        target: 'es2020',
        write: false,
        logLevel: 'silent',
      });
      return out.outputFiles[0].text;
    } catch (err) {
      lastErr = err;
    }
  }
  throw lastErr;
}

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(body);
}

export function createDemoHandler(config: Config, log: Logger): (req: IncomingMessage, res: ServerResponse) => boolean {
  const mintsTokens = !config.production && config.auth.devSecret && config.auth.secret !== undefined;
  const scripts = new Map<string, Promise<string>>();

  const fail = (res: ServerResponse, what: string) => (err: unknown) => {
    log.error('demo page failed', { err, what });
    if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `demo page unavailable: ${what}`);
  };

  return (req, res) => {
    // The target as a path: `new URL('//x', base)` would read `x` as a host and serve `/` for `//x`.
    const target = req.url ?? '/';
    const url = new URL(target.startsWith('/') ? `http://localhost${target}` : target, 'http://localhost');
    const asset = STATIC[url.pathname];
    if (asset && req.method === 'GET') {
      readAsset(asset.file).then(
        (body) => send(res, 200, asset.type, body, asset.csp === undefined ? {} : { 'Content-Security-Policy': asset.csp }),
        fail(res, asset.file),
      );
      return true;
    }
    const entry = SCRIPTS[url.pathname];
    if (entry !== undefined && req.method === 'GET') {
      let script = scripts.get(entry);
      if (script === undefined) scripts.set(entry, (script = bundle(entry)));
      script.then(
        (body) => send(res, 200, 'text/javascript; charset=utf-8', body),
        (err: unknown) => {
          scripts.delete(entry);
          fail(res, 'bundling page.ts (is esbuild installed? it is a devDependency)')(err);
        },
      );
      return true;
    }
    if (url.pathname === '/demo/token') {
      if (!mintsTokens) {
        send(
          res,
          404,
          'application/json',
          JSON.stringify({
            error: {
              code: 'not_found',
              message: 'demo tokens exist only with the development secret (no JWT_SECRET, JWT_PUBLIC_KEY or JWKS_URL)',
            },
          }),
        );
        return true;
      }
      if (req.method !== 'POST') {
        send(res, 405, 'application/json', JSON.stringify({ error: { code: 'method_not_allowed', message: '/demo/token allows POST' } }), {
          Allow: 'POST',
        });
        return true;
      }
      const user = url.searchParams.get('user') ?? '';
      if (!DEMO_USER.test(user)) {
        send(
          res,
          400,
          'application/json',
          JSON.stringify({ error: { code: 'bad_user', message: 'user must be 1-64 characters of A-Z a-z 0-9 . _ : -' } }),
        );
        return true;
      }
      const plan = DEMO_PLANS[url.searchParams.get('plan') ?? 'block'];
      if (plan === undefined) {
        send(
          res,
          400,
          'application/json',
          JSON.stringify({ error: { code: 'bad_plan', message: `plan must be one of ${Object.keys(DEMO_PLANS).join(', ')}` } }),
        );
        return true;
      }
      let jwt = new SignJWT({ ...plan })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(user)
        .setIssuedAt()
        .setExpirationTime(`${DEMO_TOKEN_TTL_S}s`);
      if (config.auth.issuer) jwt = jwt.setIssuer(config.auth.issuer);
      if (config.auth.audience) jwt = jwt.setAudience(config.auth.audience);
      jwt
        .sign(new TextEncoder().encode(config.auth.secret))
        .then((token) => send(res, 200, 'application/json', JSON.stringify({ token, userId: user })), fail(res, 'token'));
      return true;
    }
    return false;
  };
}
