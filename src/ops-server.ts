import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Metrics } from './metrics.js';

export interface Readiness {
  /** Why the gateway is not ready, or undefined when it is. */
  notReadyBecause(): string | undefined;
}

/**
 * The ops port: what Kubernetes and Prometheus talk to. Kept off the public
 * port so metrics and probes are never exposed to players.
 *
 *   GET /healthz  200 while the process is alive (liveness)
 *   GET /readyz   200 when the store answered recently and we are not draining, else 503
 *   GET /metrics  Prometheus text format
 */
export function createOpsServer(metrics: Metrics, readiness: Readiness): Server {
  return createServer((req, res) => {
    void route(req, res, metrics, readiness).catch(() => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end('internal error\n');
    });
  });
}

async function route(req: IncomingMessage, res: ServerResponse, metrics: Metrics, readiness: Readiness): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' });
    res.end('method not allowed\n');
    return;
  }
  if (path === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  if (path === '/readyz') {
    const why = readiness.notReadyBecause();
    res.writeHead(why === undefined ? 200 : 503, { 'Content-Type': 'text/plain' });
    res.end(why === undefined ? 'ready\n' : `not ready: ${why}\n`);
    return;
  }
  if (path === '/metrics') {
    const body = await metrics.registry.metrics();
    res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
    res.end(body);
    return;
  }
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found: try /metrics, /healthz or /readyz\n');
}
