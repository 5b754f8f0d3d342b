import { startApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';

/** Wiring only: config -> app -> signals. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sigma-stream: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  if (config.auth.devSecret) {
    log.warn('no JWT_SECRET, JWT_PUBLIC_KEY or JWKS_URL: accepting tokens signed with the development secret (npm run token)');
  } else if (config.auth.secret !== undefined && Buffer.byteLength(config.auth.secret) < 32) {
    log.warn('JWT_SECRET is shorter than 32 bytes: HS256 keys shorter than the hash are easier to guess');
  }

  const app = await startApp(config, log);
  const shown = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  log.info('listening', {
    lease: `ws://${shown}:${app.port}/v1/lease?device=<deviceId>`,
    ops: `http://${shown}:${app.opsPort}/metrics`,
    store: config.store,
    table: config.table,
    instanceId: app.instance.id,
    maxStreams: config.maxStreams,
  });
  if (!config.production) {
    // Outside production app.ts serves the demo page on the public port; its token route needs the development secret.
    const demo = config.auth.devSecret ? '' : '  (its tokens need the development secret: unset JWT_SECRET, JWT_PUBLIC_KEY and JWKS_URL)';
    process.stderr.write(
      `\nSigma Stream is listening.\n` +
        `  Demo page                 http://${shown}:${app.port}/${demo}\n` +
        `  WebSocket lease endpoint  ws://${shown}:${app.port}/v1/lease?device=<deviceId>\n` +
        `  Metrics and probes        http://${shown}:${app.opsPort}/metrics  /healthz  /readyz\n` +
        `  Try it:  TOKEN=$(npm run --silent token -- alice)\n` +
        `           npx wscat -c "ws://${shown}:${app.port}/v1/lease?device=tv" -H "Authorization: Bearer $TOKEN"\n\n`,
    );
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) {
      log.warn('second signal: exiting now', { signal });
      process.exit(1);
    }
    log.info('signal received, draining', { signal });
    app.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

main().catch((err: unknown) => {
  process.stderr.write(`sigma-stream: failed to start: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
