/**
 * The docs are part of the interface: players read the close-code table,
 * operators the configuration table. This checks them against the code.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERROR_FRAME_CODES } from '../src/client/protocol.js';
import { CLOSE } from '../src/close-codes.js';
import { HTTP_ERRORS } from '../src/http-errors.js';
import { Metrics } from '../src/metrics.js';
import { ROOT } from './helpers/gateway.js';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const envExample = readFileSync(join(ROOT, '.env.example'), 'utf8');
const configSource = readFileSync(join(ROOT, 'src/config.ts'), 'utf8');
const variables = [...new Set([...configSource.matchAll(/\(env, '([A-Z0-9_]+)'/g)].map((m) => m[1]))];

test('config.ts reads the variables the interface contract names', () => {
  for (const name of [
    'PORT',
    'OPS_PORT',
    'JWT_SECRET',
    'JWT_PUBLIC_KEY',
    'JWKS_URL',
    'JWT_ISSUER',
    'JWT_AUDIENCE',
    'DYNAMODB_TABLE',
    'DYNAMODB_ENDPOINT',
    'AWS_REGION',
    'STORE',
    'CREATE_TABLE',
    'MAX_STREAMS',
    'PING_INTERVAL_MS',
    'PONG_TIMEOUT_MS',
    'INSTANCE_HEARTBEAT_MS',
    'INSTANCE_TTL_MS',
    'FENCING_MARGIN_MS',
    'ADMISSION_TIMEOUT_MS',
    'DRAIN_MS',
    'RECONCILE_INTERVAL_MS',
  ]) {
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

/** The rows of the README table whose header line starts with `header`, as arrays of cells. */
function tableAfter(header: string): string[][] {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => l.startsWith(header));
  assert.ok(start >= 0, `README has a table headed "${header}"`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim().replace(/^`|`$/g, '')),
    );
  }
  return rows;
}

test('the README table of HTTP error codes is the catalog, status for status', () => {
  const rows = tableAfter('| code | status | meaning |');
  assert.deepEqual(
    rows.map(([code, status]) => [code, Number(status)]).sort(),
    Object.entries(HTTP_ERRORS)
      .map(([code, e]) => [code, e.status])
      .sort(),
  );
});

test('the README table of error-frame codes is the catalog', () => {
  const rows = tableAfter('| code | meaning |');
  assert.deepEqual(rows.map(([code]) => code).sort(), Object.keys(ERROR_FRAME_CODES).sort());
});

test('every sigma_ metric the gateway registers is in the README metrics table', () => {
  const names = new Metrics().registry
    .getMetricsAsArray()
    .map((m) => m.name)
    .filter((n) => n.startsWith('sigma_'));
  for (const name of names) assert.match(readme, new RegExp('`' + name + '(\\{[^`]*\\})?`'), `README misses ${name}`);
});
