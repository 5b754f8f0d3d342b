/**
 * The docs are part of the interface: players read the close-code table,
 * operators the configuration table. This checks them against the code.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLOSE } from '../src/close-codes.js';
import { ROOT } from './helpers/gateway.js';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const envExample = readFileSync(join(ROOT, '.env.example'), 'utf8');
const configSource = readFileSync(join(ROOT, 'src/config.ts'), 'utf8');
const variables = [...new Set([...configSource.matchAll(/\(env, '([A-Z0-9_]+)'/g)].map((m) => m[1]))];

test('config.ts reads the variables the interface contract names', () => {
  for (const name of ['PORT', 'OPS_PORT', 'JWT_SECRET', 'JWT_PUBLIC_KEY', 'JWKS_URL', 'JWT_ISSUER', 'JWT_AUDIENCE', 'DYNAMODB_TABLE', 'DYNAMODB_ENDPOINT', 'AWS_REGION', 'STORE', 'CREATE_TABLE', 'MAX_STREAMS', 'PING_INTERVAL_MS', 'PONG_TIMEOUT_MS', 'INSTANCE_HEARTBEAT_MS', 'INSTANCE_TTL_MS', 'FENCING_MARGIN_MS', 'ADMISSION_TIMEOUT_MS', 'DRAIN_MS', 'RECONCILE_INTERVAL_MS']) {
    assert.ok(variables.includes(name), name);
  }
});

test('every variable the gateway reads is in the README and in .env.example', () => {
  for (const name of variables.filter((v) => v !== 'AWS_DEFAULT_REGION')) {
    assert.match(readme, new RegExp('`' + name + '`'), `README misses ${name}`);
    assert.match(envExample, new RegExp(`^#? ?${name}=`, 'm'), `.env.example misses ${name}`);
  }
});

test('every close code in the catalog is in the README table, with its reconnect rule', () => {
  for (const close of Object.values(CLOSE)) {
    const row = readme.split('\n').find((line) => line.startsWith(`| ${close.code} |`));
    assert.ok(row, `README misses close code ${close.code}`);
    const says = row.split('|')[3].trim();
    const expected = { no: /^no/, backoff: /^yes/, jitter: /^yes/, 'new-token': /new token/ }[close.reconnect];
    assert.match(says, expected, `close code ${close.code}: README says "${says}", catalog says ${close.reconnect}`);
  }
});
