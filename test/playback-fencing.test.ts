/**
 * The playback token as a fencing token: a gateway frozen with SIGSTOP cannot
 * refresh or revoke anything, but its last token expires before any other
 * gateway may hand out the slot, because its `exp` is capped by the frozen
 * gateway's fencing deadline (last acknowledged beat + TTL - margin), while
 * others wait until the beat's send time + TTL.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, type Device } from './helpers/devices.js';
import { newTable, spawnGateway, type ChildGateway } from './helpers/gateway.js';
import { newKeyPair } from './helpers/playback.js';
import { mintToken } from './helpers/tokens.js';

test("a SIGSTOPped gateway's last token expires before another gateway grants the freed slot", { timeout: 60_000 }, async (t) => {
  const table = newTable();
  // Tokens may live 60 s (the default): the fencing window (3 s TTL - 1 s margin) is what caps them here.
  const env = { PLAYBACK_SIGNING_KEY: newKeyPair().privatePem };
  const children: ChildGateway[] = [];
  t.after(() => {
    for (const c of children) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  });
  const a = await spawnGateway({ table, env });
  children.push(a);
  const b = await spawnGateway({ table, env });
  children.push(b);
  const userToken = await mintToken('paula', { maxStreams: 1 });

  const tv = connect(a.url, { token: userToken, device: 'tv' });
  let last = (await tv.decision).playback as { token: string; exp: number };
  tv.ws.on('message', (data) => {
    const f = JSON.parse((data as Buffer).toString()) as { type: string; token: string; exp: number };
    if (f.type === 'playback') last = f;
  });
  await new Promise((r) => setTimeout(r, 1500));
  const iat = (JSON.parse(Buffer.from(last.token.split('.')[1], 'base64url').toString()) as { iat: number }).iat;
  assert.ok(last.exp - iat <= 2, `exp - iat = ${last.exp - iat} s: capped by the 2 s fencing window, not the 60 s TTL`);

  a.kill('SIGSTOP');
  const stoppedAt = Date.now();
  assert.equal(
    (await fetch(`${b.httpUrl}/v1/playback/authorize`, { headers: { Authorization: `Bearer ${last.token}` } })).status,
    204,
    'still valid just after the freeze',
  );

  // Another device of the same user, on the other gateway, until the frozen gateway's slot is free.
  let granted: { device: Device; at: number } | undefined;
  while (granted === undefined) {
    assert.ok(Date.now() - stoppedAt < 10_000, 'the slot never came free');
    const phone = connect(b.url, { token: userToken, device: 'phone' });
    const decision = await phone.decision.catch(() => undefined);
    if (decision?.type === 'granted') granted = { device: phone, at: Date.now() };
    else {
      await phone.closed;
      await new Promise((r) => setTimeout(r, 250)); // below CONNECT_RATE_PER_USER
    }
  }
  assert.ok(last.exp * 1000 <= granted.at, `the last token expired ${granted.at - last.exp * 1000} ms before the slot was handed out`);
  const stale = await fetch(`${b.httpUrl}/v1/playback/authorize`, { headers: { Authorization: `Bearer ${last.token}` } });
  assert.equal(stale.status, 401);
  assert.equal(((await stale.json()) as { error: { code: string } }).error.code, 'expired');
  await granted.device.close();
});
