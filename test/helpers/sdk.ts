/** The player SDK in a test: a lease with short backoff that stops with the test, and what it hears next. */
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { StreamLease } from '../../src/client/index.js';
import { newTable, spawnGateway, startGateway, type TestGateway } from './gateway.js';
import { mintToken, type TokenOptions } from './tokens.js';

/** A StreamLease of `userId`'s `deviceId` on `url()`, retrying within 50-100 ms; stopped when the test ends. */
export function testLease(
  t: { after(fn: () => void): void },
  userId: string,
  url: () => string,
  opts: TokenOptions = {},
  deviceId = 'tv',
): StreamLease {
  const lease = new StreamLease({
    url,
    getToken: () => mintToken(userId, opts),
    deviceId,
    WebSocket,
    backoff: { initialMs: 50, maxMs: 100, stableAfterMs: 60_000 },
  });
  t.after(() => lease.stop());
  return lease;
}

/** What the SDK hears next: its revocation (code and reason), a grant or a denial. */
export const nextDecision = (lease: StreamLease): Promise<[string, number?, string?]> =>
  new Promise((resolve) => {
    lease.on('revoked', (e) => resolve(['revoked', e.code, e.reason]));
    lease.on('granted', () => resolve(['granted']));
    lease.on('denied', () => resolve(['denied']));
  });

/** A REST stop of `userId`'s `device` through the gateway at `wsUrl` (ws:// or http://): the HTTP status. */
export async function restStop(wsUrl: string, userId: string, device = 'tv'): Promise<number> {
  const res = await fetch(`${wsUrl.replace(/^ws:/, 'http:')}/v1/streams/${device}`, {
    method: 'DELETE',
    headers: { Authorization: `Bearer ${await mintToken(userId)}` },
  });
  return res.status;
}

/**
 * The SDK's tv of `userId` plays on a gateway A (a child process) that is then killed; it retries where nothing
 * listens (every attempt a 1006) until `comeBack()` points it at gateway B, on the same table, and says what it
 * hears there.
 */
export async function awayFromKilled(
  t: { after(fn: () => void | Promise<void>): void },
  userId: string,
  opts: TokenOptions = {},
  env: Record<string, string> = {},
): Promise<{ b: TestGateway; lease: StreamLease; comeBack: () => Promise<[string, number?, string?]> }> {
  const table = newTable();
  const a = await spawnGateway({ table, env });
  t.after(() => a.kill('SIGKILL'));
  const b = await startGateway({ table, env });
  t.after(() => b.stop());
  let target = a.url;
  const lease = testLease(t, userId, () => target, opts);
  await lease.start();
  const lost = new Promise<{ code: number }>((r) => lease.on('lost', r));
  target = 'ws://127.0.0.1:1';
  a.kill('SIGKILL');
  assert.equal((await lost).code, 1006);
  return { b, lease, comeBack: () => ((target = b.url), nextDecision(lease)) };
}
