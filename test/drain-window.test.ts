import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connect } from './helpers/devices.js';
import { dynamoEndpoint } from './helpers/dynamodb-local.js';
import { gatewayBehindProxy, leaseEntries, metric } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

/**
 * With DRAIN_HANDOFF=false the drain gives each lease back before the socket hears 1012. Between the two the
 * session is 'released' (as a paused stream whose slot went back): what a device says
 * in that window must not take a lease again.
 */
describe('drain window', () => {
  test('a resume sent while the drain gives the lease back takes no new lease: the device hears 1012 with its slot free', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: { DRAIN_MS: '200', DRAIN_HANDOFF: 'false' } });
    const token = await mintToken('ines');
    const tv = connect(gw.url, { token, device: 'tv' });
    assert.equal((await tv.decision).type, 'granted');
    // Writes commit at once, their replies come 400 ms late: the release is in the table, the drain still waits for it.
    proxy.set('hold-reply', { delayMs: 400 });
    const stopping = gw.stop();
    await new Promise((r) => setTimeout(r, 50));
    // The player's user presses play again (a paused player sends resume; so may any player on play).
    tv.ws.send(JSON.stringify({ type: 'resume' }));
    const { code } = await tv.closed;
    const left = await leaseEntries(await dynamoEndpoint(), gw.table, 'ines');
    assert.equal(code, 1012);
    assert.deepEqual(left, [], `the table held no lease for the tv when it heard 1012 (left: ${left.join(', ')})`);
    proxy.set('pass');
    await stopping;
  });

  test('while the drain waits for releases, the streams are already off sigma_streams_active and each release is booked once', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: { DRAIN_MS: '100', DRAIN_HANDOFF: 'false' } });
    const token = await mintToken('joel');
    const devices = ['tv', 'phone'].map((device) => connect(gw.url, { token, device }));
    await Promise.all(devices.map((d) => d.decision));
    proxy.set('hold-reply', { delayMs: 600 });
    const stopping = gw.stop();
    await new Promise((r) => setTimeout(r, 250));
    const during = await gw.metrics();
    const closes = await Promise.all(devices.map((d) => d.closed));
    const after = await gw.metrics();
    proxy.set('pass');
    await stopping;
    assert.deepEqual(
      closes.map((c) => c.code),
      [1012, 1012],
    );
    assert.equal(metric(during, 'sigma_streams_active'), 0, 'both leases are on their way back: no stream counts as active');
    assert.equal(metric(during, 'sigma_lease_release_total{reason="shutdown"}'), 2);
    assert.equal(metric(after, 'sigma_streams_active'), 0);
    assert.equal(metric(after, 'sigma_lease_release_total{reason="shutdown"}'), 2, 'the 1012 close books no second release');
  });
});
