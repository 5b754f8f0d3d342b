import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connect } from './helpers/devices.js';
import { dynamoEndpoint } from './helpers/dynamodb-local.js';
import { gatewayBehindProxy, leaseEntries } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

/**
 * The drain gives each lease back before the socket hears 1012. Between the two the
 * session is 'released' (as a paused stream whose slot went back): what a device says
 * in that window must not take a lease again.
 */
describe('drain window', () => {
  test('a resume sent while the drain gives the lease back takes no new lease: the device hears 1012 with its slot free', async (t) => {
    const { proxy, gw } = await gatewayBehindProxy(t, { env: { DRAIN_MS: '200' } });
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
});
