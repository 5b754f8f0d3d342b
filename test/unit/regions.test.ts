/**
 * DYNAMODB_REGIONS parsing and the home-region router (src/regions.ts), without
 * a store: which region holds a user's leases is pure arithmetic.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { hashedHome, Regions, type Region } from '../../src/regions.js';

function refuses(env: Record<string, string>, pattern: RegExp): void {
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => err instanceof ConfigError && pattern.test(err.message) && /DYNAMODB_REGIONS/.test(err.message),
  );
}

describe('DYNAMODB_REGIONS', () => {
  test('unset: one region named after AWS_REGION (or local), no region labels, everything as before', () => {
    const local = loadConfig({ DYNAMODB_ENDPOINT: 'http://127.0.0.1:8000' });
    assert.deepEqual(local.regions, [{ name: 'local', endpoint: 'http://127.0.0.1:8000', awsRegion: undefined }]);
    assert.equal(local.multiRegion, false);
    assert.equal(local.createTable, true);
    const aws = loadConfig({ AWS_REGION: 'eu-west-1' });
    assert.deepEqual(aws.regions, [{ name: 'eu-west-1', endpoint: undefined, awsRegion: 'eu-west-1' }]);
    assert.equal(aws.createTable, false);
  });

  test('AWS region names with default endpoints, the first is our own; the store is DynamoDB', () => {
    const config = loadConfig({ DYNAMODB_REGIONS: 'eu-west-1, us-east-1' });
    assert.equal(config.store, 'dynamodb');
    assert.equal(config.multiRegion, true);
    assert.equal(config.createTable, false);
    assert.deepEqual(config.regions, [
      { name: 'eu-west-1', endpoint: undefined, awsRegion: 'eu-west-1' },
      { name: 'us-east-1', endpoint: undefined, awsRegion: 'us-east-1' },
    ]);
    assert.ok(Object.isFrozen(config.regions) && Object.isFrozen(config.regions[0]));
  });

  test('names with endpoints (DynamoDB Local): signed for AWS_REGION when set, local credentials otherwise; tables created', () => {
    const config = loadConfig({ DYNAMODB_REGIONS: 'eu=http://127.0.0.1:8001,us=http://127.0.0.1:8002' });
    assert.deepEqual(config.regions, [
      { name: 'eu', endpoint: 'http://127.0.0.1:8001', awsRegion: undefined },
      { name: 'us', endpoint: 'http://127.0.0.1:8002', awsRegion: undefined },
    ]);
    assert.equal(config.createTable, true);
    const vpc = loadConfig({ DYNAMODB_REGIONS: 'eu-west-1=https://vpce.example.com,x=https://y.example.com', AWS_REGION: 'us-east-1' });
    assert.deepEqual(
      vpc.regions.map((r) => r.awsRegion),
      ['eu-west-1', 'us-east-1'],
    );
  });

  test('bad entries are refused with the variable named and the entry quoted', () => {
    refuses({ DYNAMODB_REGIONS: 'eu-west-1,,us-east-1' }, /got ""/);
    refuses({ DYNAMODB_REGIONS: 'EU=http://127.0.0.1:1' }, /"EU=http/);
    refuses({ DYNAMODB_REGIONS: 'eu=ftp://x' }, /"ftp:\/\/x"/);
    refuses({ DYNAMODB_REGIONS: 'eu=http://a:1,eu=http://b:1' }, /"eu" twice/);
    refuses({ DYNAMODB_REGIONS: 'europe' }, /"europe" is not an AWS region name/);
    refuses({ DYNAMODB_REGIONS: 'eu=http://a:1', DYNAMODB_ENDPOINT: 'http://a:1' }, /not both/);
    refuses({ DYNAMODB_REGIONS: 'eu=http://a:1', STORE: 'embedded' }, /STORE=dynamodb/);
  });
});

describe('home regions', () => {
  const fake = (name: string): Region => ({ name, store: {} as Region['store'], instance: {} as Region['instance'] });

  test('the hash depends on the set of regions, not on their order, and spreads users over them', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const user = `user-${i}`;
      const home = hashedHome(user, ['eu', 'us', 'ap']);
      assert.equal(hashedHome(user, ['ap', 'us', 'eu']), home);
      counts.set(home, (counts.get(home) ?? 0) + 1);
    }
    for (const name of ['eu', 'us', 'ap']) assert.ok((counts.get(name) ?? 0) > 500, `${name}: ${counts.get(name)}`);
  });

  test('adding a region moves only the users the new region wins', () => {
    for (let i = 0; i < 2000; i++) {
      const user = `user-${i}`;
      const after = hashedHome(user, ['eu', 'us', 'ap']);
      if (after !== 'ap') assert.equal(after, hashedHome(user, ['eu', 'us']));
    }
  });

  test('the home_region claim wins; an unknown one is undefined (the token is refused); one region ignores the claim', () => {
    const two = new Regions([fake('eu'), fake('us')]);
    assert.equal(two.own.name, 'eu');
    assert.equal(two.forUser('anyone', 'us')?.name, 'us');
    assert.equal(two.forUser('anyone', 'mars'), undefined);
    assert.equal(two.forUser('user-1')?.name, hashedHome('user-1', ['eu', 'us']));
    assert.equal(two.unknownClaim('mars'), 'token names home_region "mars", not one of eu, us');
    const one = new Regions([fake('local')]);
    assert.equal(one.forUser('anyone', 'mars')?.name, 'local');
  });
});
