import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type Device } from './helpers/devices.js';
import { leaseEntries, newTable, startGateway, type TestGateway } from './helpers/gateway.js';
import { mintToken } from './helpers/tokens.js';

/**
 * The safety property: however many devices of one user connect at the same
 * moment, through however many gateways, exactly N are admitted. (Checked
 * once by hand: with the `#n < :limit` condition removed from
 * LeaseStore.acquire, every round admits more than 3 and this test fails.)
 */
describe('simultaneous connects of one user', () => {
  let gateways: TestGateway[];
  before(async () => {
    const table = newTable();
    gateways = [await startGateway({ table }), await startGateway({ table })];
  });
  after(() => Promise.all(gateways.map((g) => g.stop())));

  for (const [label, spread] of [
    ['one gateway', 1],
    ['two gateways sharing the table', 2],
  ] as const) {
    test(`exactly 3 of 20 devices are admitted (${label}, 5 rounds)`, async () => {
      for (let round = 0; round < 5; round++) {
        const user = `racer-${spread}-${round}`;
        const token = await mintToken(user);
        const devices: Device[] = Array.from({ length: 20 }, (_, i) => connect(gateways[i % spread].url, { token, device: `d${i}` }));
        const decisions = await Promise.all(devices.map((d) => d.decision));
        const granted = decisions.filter((f) => f.type === 'granted').map((f) => f.deviceId as string);
        assert.equal(granted.length, 3, `round ${round}: granted ${granted.join(', ')}`);
        assert.equal(decisions.filter((f) => f.type === 'denied').length, 17);
        assert.deepEqual(await leaseEntries(gateways[0].endpoint, gateways[0].table, user), granted.sort());
        await Promise.all(devices.map((d) => d.close()));
      }
    });
  }
});
