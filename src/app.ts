import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Authenticator } from './auth.js';
import type { Config } from './config.js';
import { createDemoHandler } from './demo/server.js';
import { ensureTable } from './dynamo.js';
import { startEmbeddedStore, type EmbeddedStore } from './embedded-store.js';
import { Gateway } from './gateway.js';
import { createApiHandler } from './http-api.js';
import type { InstanceLease } from './instance.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { createOpsServer } from './ops-server.js';
import { openRegions, type Regions } from './regions.js';
import { Playback } from './playback.js';

export interface App {
  readonly port: number;
  readonly opsPort: number;
  readonly metrics: Metrics;
  /** The instance lease in this gateway's own region (the first of DYNAMODB_REGIONS). */
  readonly instance: InstanceLease;
  /** Every configured region: its lease store and this gateway's instance lease there. */
  readonly regions: Regions;
  readonly gateway: Gateway;
  /** Graceful stop: drain with 1012, release every lease, delete the instance item. Safe to call twice. */
  shutdown(): Promise<void>;
}

function listen(server: Server, port: number, host: string, backlog?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog }, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Builds and starts one gateway: stores and instance leases (one per region) -> gateway -> servers.
 * Tests start it in-process on port 0; main.ts adds signals around it.
 */
export async function startApp(config: Config, log: Logger): Promise<App> {
  let embedded: EmbeddedStore | undefined;
  if (config.store === 'embedded') {
    embedded = await startEmbeddedStore();
    log.warn('using the embedded in-memory store: leases are not shared and vanish on exit (development only)');
  }
  const metrics = new Metrics(undefined, config.multiRegion ? config.regions.map((r) => r.name) : []);
  const { regions, clients } = openRegions(config, metrics, log, embedded?.endpoint);
  if (config.createTable) {
    for (const [name, client] of clients) {
      const result = await ensureTable(client, config.table);
      if (result === 'created') log.info('table created', { table: config.table, region: name });
    }
  }

  const auth = new Authenticator(
    config.auth,
    { refreshMs: config.jwksRefreshMs, maxStaleMs: config.jwksMaxStaleMs, cooldownMs: config.jwksCooldownMs },
    log,
  );
  auth.start();
  const instance = regions.own.instance;
  const playback = config.playback && new Playback(config.playback, metrics);
  if (playback === undefined) log.warn('playback tokens are off: set PLAYBACK_SIGNING_KEY to enforce the limit at the media path');
  else if (config.playback?.generated)
    log.warn('playback tokens signed with a key generated at start (development only): set PLAYBACK_SIGNING_KEY', { kid: playback.kid });
  const gateway = new Gateway({ config, regions, auth, metrics, log, playback });
  gateway.start();

  // The demo page and its dev-only token route, never in production.
  const fallback = config.production ? undefined : createDemoHandler(config, log);
  // Slow handshakes (slowloris) are cut once their headers take longer than HANDSHAKE_TIMEOUT_MS.
  const publicServer = createServer(
    {
      headersTimeout: config.handshakeTimeoutMs,
      requestTimeout: config.handshakeTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, config.handshakeTimeoutMs),
    },
    createApiHandler({ config, auth, regions, gateway, log, metrics, playback, fallback }),
  );
  publicServer.on('upgrade', (req, socket, head) => gateway.handleUpgrade(req, socket, head));
  const readiness = {
    notReadyBecause: () =>
      gateway.draining ? 'draining' : !auth.ready ? 'signing keys not loaded' : !instance.healthy ? 'lease store not answering' : undefined,
  };
  metrics.readySource = () => readiness.notReadyBecause() === undefined;
  const opsServer = createOpsServer(metrics, readiness);

  // Serve even if the store is down at boot: readiness stays 503 and admissions get 1013 until it answers.
  // Readiness follows the own region only: a remote region that is down must not take every gateway out of
  // the load balancer, its users get 1013 and everyone else keeps playing.
  await Promise.all([...regions].map((r) => r.instance.start(config.instanceTtlMs)));
  for (const r of regions) {
    if (!r.instance.live)
      log.error('lease store not answering at start-up; serving 1013 until it does', { table: config.table, region: r.name });
  }
  const port = await listen(publicServer, config.port, config.host, config.listenBacklog);
  const opsPort = await listen(opsServer, config.opsPort, config.host);

  let stopping: Promise<void> | undefined;
  async function stop(): Promise<void> {
    const started = Date.now();
    log.info('shutting down', { drainMs: config.drainMs });
    await gateway.drain(config.drainMs);
    await Promise.all([...regions].map((r) => r.instance.stop()));
    gateway.close();
    auth.stop();
    publicServer.closeAllConnections();
    await new Promise((r) => publicServer.close(r));
    opsServer.closeAllConnections();
    await new Promise((r) => opsServer.close(r));
    regions.destroy();
    await embedded?.close();
    log.info('stopped', { ms: Date.now() - started });
  }
  return {
    port,
    opsPort,
    metrics,
    instance,
    regions,
    gateway,
    shutdown: () => (stopping ??= stop()),
  };
}
