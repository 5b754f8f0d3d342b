/**
 * Playback-token helpers: signing keys as PEM, frames with their arrival
 * time, and a real nginx (Debian's) per test on a free port, serving the test
 * HLS stream behind auth_request to a gateway's /v1/playback/authorize.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import type { Device } from './devices.js';
import { ROOT } from './gateway.js';
import { freePort } from './dynamodb-local.js';

/** The committed test stream (test/fixtures/make-streams.sh): 1 s segments, 96x54. */
export const STREAM_DIR = join(ROOT, 'test', 'fixtures', 'hls');
/** The same as DASH (test/fixtures/make-streams.sh too), for Shaka and dash.js. */
export const DASH_DIR = join(ROOT, 'test', 'fixtures', 'dash');
export const SEGMENT_SECONDS = 1;
/** What the licence-style location serves once the live check passes. */
export const LICENCE_FILE = join(ROOT, 'test', 'fixtures', 'licence', 'licence.json');

export interface KeyPair {
  readonly privatePem: string;
  readonly publicPem: string;
  readonly privateKey: KeyObject;
}

export function newKeyPair(kind: 'p256' | 'ed25519' = 'p256'): KeyPair {
  const { privateKey, publicKey } = kind === 'p256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    privateKey,
  };
}

export interface TokenSeen {
  readonly token: string;
  readonly exp: number;
  /** Wall-clock ms when the frame arrived. */
  readonly at: number;
  readonly claims: Record<string, unknown>;
  readonly header: Record<string, unknown>;
}

/** Every playback token a device received (granted and playback frames), with arrival times. */
export function recordTokens(device: Device): TokenSeen[] {
  const seen: TokenSeen[] = [];
  device.ws.on('message', (data) => {
    const frame = JSON.parse((data as Buffer).toString()) as {
      type: string;
      token?: string;
      exp?: number;
      playback?: { token: string; exp: number };
    };
    const p = frame.type === 'granted' ? frame.playback : frame.type === 'playback' ? (frame as { token: string; exp: number }) : undefined;
    if (p) seen.push({ token: p.token, exp: p.exp, at: Date.now(), claims: decodeJwt(p.token), header: decodeProtectedHeader(p.token) });
  });
  return seen;
}

export const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));

export interface Origin {
  readonly url: string;
  readonly port: number;
  readonly proc: ChildProcess;
  stop(): Promise<void>;
}

/**
 * The copy-paste configuration of docs/media-path.md, on a free port:
 *   /hls/      the stream behind the stateless check (every segment)
 *   /dash/     the DASH copy of it, behind the same check
 *   /licence   a licence-style location behind the live check (?live=1)
 *   /open/     the same files without auth_request (the benchmark's baseline)
 */
/** A location serving `dir` to players on other origins, behind the stateless check when `checked`. */
const mediaLocation = (path: string, dir: string, checked: boolean): string => `    location ${path} {
${checked ? '      auth_request /_sigma_auth;\n' : ''}      alias ${dir}/;
      add_header Access-Control-Allow-Origin * always;
      add_header Access-Control-Allow-Headers Authorization always;
      if ($request_method = OPTIONS) { return 204; }
    }`;

export function nginxConf(port: number, gatewayHttp: string, prefix: string): string {
  const upstream = new URL(gatewayHttp).host;
  return `daemon off;
master_process off;
worker_processes 1;
error_log ${prefix}/error.log warn;
pid ${prefix}/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  types { application/vnd.apple.mpegurl m3u8; application/dash+xml mpd; video/mp4 mp4; video/iso.segment m4s; }
  upstream sigma { server ${upstream}; keepalive 16; }
  server {
    listen 127.0.0.1:${port};
${mediaLocation('/hls/', STREAM_DIR, true)}
${mediaLocation('/dash/', DASH_DIR, true)}
${mediaLocation('/open/', STREAM_DIR, false)}
    # A licence or key location: the live check. (Not "return": it runs before auth_request.)
    location = /licence {
      auth_request /_sigma_auth_live;
      auth_request_set $sigma_lease $upstream_http_x_sigma_lease;
      add_header X-Sigma-Lease $sigma_lease always;
      default_type application/json;
      alias ${LICENCE_FILE};
    }
    location = /_sigma_auth {
      internal;
      proxy_pass http://sigma/v1/playback/authorize;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
    location = /_sigma_auth_live {
      internal;
      proxy_pass http://sigma/v1/playback/authorize?live=1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
  }
}
`;
}

/** Starts nginx in the foreground with its own prefix directory; resolves once it answers. */
export async function startOrigin(gatewayHttp: string): Promise<Origin> {
  if (!NGINX) throw new Error('nginx not installed (.ci/run installs nginx-light)');
  const prefix = mkdtempSync(join(tmpdir(), 'sigma-nginx-'));
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const port = await freePort();
  writeFileSync(join(prefix, 'nginx.conf'), nginxConf(port, gatewayHttp, prefix));
  const proc = spawn(NGINX, ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'error.log')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    try {
      await fetch(`${url}/open/index.m3u8`);
      break;
    } catch {
      if (i > 100) throw new Error(`nginx did not answer: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    port,
    proc,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGQUIT');
        await exited;
      }
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}
