/**
 * Where the bearer token is read from (tokenFromRequest: Authorization header
 * or the `bearer.<jwt>` subprotocol, never the query string), and that no
 * token-looking string survives into a log line (createLogger's mask).
 *
 * tokenFromRequest() returns undefined when no token was offered and '' when
 * a header was there but held no bearer token; auth.verify() answers both
 * with the 4401 reason "missing".
 */
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, test } from 'node:test';
import { tokenFromRequest } from '../../src/auth.js';
import { createLogger, type Logger } from '../../src/log.js';
import type { LogLevel } from '../../src/config.js';

// Shaped like a real HS256 token (header.payload.signature, base64url); never verified here.
const JWT = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';

describe('tokenFromRequest', () => {
  const from = (headers: IncomingHttpHeaders): string | undefined => tokenFromRequest(headers);

  test('Authorization: Bearer <token>, scheme in any case, spaces around the token', () => {
    assert.equal(from({ authorization: `Bearer ${JWT}` }), JWT);
    assert.equal(from({ authorization: `bearer ${JWT}` }), JWT);
    assert.equal(from({ authorization: `BEARER ${JWT}` }), JWT);
    assert.equal(from({ authorization: `Bearer   ${JWT}  ` }), JWT);
    assert.equal(from({ authorization: `Bearer\t${JWT}` }), JWT);
  });

  test('an Authorization header without a bearer token gives "" (offered, but nothing to verify)', () => {
    for (const authorization of [
      '',
      'Bearer',
      'Bearer ',
      `Basic ${Buffer.from('a:b').toString('base64')}`,
      `Token ${JWT}`,
      `Bearer ${JWT} extra`,
      JWT,
    ]) {
      assert.equal(from({ authorization }), '', JSON.stringify(authorization));
    }
  });

  test('the bearer.<token> subprotocol, next to the app protocol, in any position', () => {
    assert.equal(from({ 'sec-websocket-protocol': `sigma-stream.v1, bearer.${JWT}` }), JWT);
    assert.equal(from({ 'sec-websocket-protocol': `bearer.${JWT}, sigma-stream.v1` }), JWT);
    assert.equal(from({ 'sec-websocket-protocol': `bearer.${JWT}` }), JWT);
    assert.equal(from({ 'sec-websocket-protocol': `  sigma-stream.v1 ,   bearer.${JWT}  ` }), JWT);
  });

  test('the first bearer subprotocol wins', () => {
    assert.equal(from({ 'sec-websocket-protocol': 'sigma-stream.v1, bearer.first, bearer.second' }), 'first');
  });

  test('"bearer." with nothing after it gives ""; other spellings are not a token', () => {
    assert.equal(from({ 'sec-websocket-protocol': 'sigma-stream.v1, bearer.' }), '');
    assert.equal(from({ 'sec-websocket-protocol': `sigma-stream.v1, Bearer.${JWT}` }), undefined);
    assert.equal(from({ 'sec-websocket-protocol': `sigma-stream.v1, bearer-${JWT}` }), undefined);
    assert.equal(from({ 'sec-websocket-protocol': 'sigma-stream.v1' }), undefined);
  });

  test('Authorization is read first: a subprotocol token next to it is ignored', () => {
    assert.equal(from({ authorization: 'Bearer from-header', 'sec-websocket-protocol': 'bearer.from-protocol' }), 'from-header');
    assert.equal(from({ authorization: 'Basic x', 'sec-websocket-protocol': 'bearer.from-protocol' }), '');
  });

  test('nothing offered: undefined (other headers, cookies and the URL are never read)', () => {
    assert.equal(from({}), undefined);
    assert.equal(from({ cookie: `token=${JWT}`, 'x-token': JWT, host: `example.com/?token=${JWT}` }), undefined);
  });
});

describe('log masking', () => {
  function capture(level: LogLevel = 'debug'): { log: Logger; lines: string[] } {
    const lines: string[] = [];
    return { log: createLogger(level, { service: 'test' }, (line) => lines.push(line)), lines };
  }

  test('one JSON object per line: time, level, msg, base fields, then the fields', () => {
    const { log, lines } = capture();
    log.info('granted', { userId: 'alice', n: 2 });
    assert.equal(lines.length, 1);
    assert.ok(lines[0].endsWith('}\n'));
    const record = JSON.parse(lines[0]) as Record<string, unknown>;
    assert.deepEqual(Object.keys(record), ['time', 'level', 'msg', 'service', 'userId', 'n']);
    assert.equal(record.level, 'info');
    assert.equal(record.msg, 'granted');
    assert.ok(!Number.isNaN(Date.parse(record.time as string)));
  });

  test('a JWT is masked wherever it hides: message, field, nested object, array, error, subprotocol string', () => {
    const { log, lines } = capture();
    log.info(`token ${JWT} seen`);
    log.info('x', { token: JWT });
    log.info('x', { req: { headers: { authorization: `Bearer ${JWT}` } } });
    log.info('x', { offered: ['sigma-stream.v1', `bearer.${JWT}`] });
    log.error('x', { err: new Error(`could not verify ${JWT}`) });
    log.warn('x', { protocol: `sigma-stream.v1, bearer.${JWT}` });
    assert.equal(lines.length, 6);
    for (const line of lines) {
      assert.ok(!line.includes(JWT), line);
      assert.ok(!line.includes('eyJ'), line);
      assert.ok(line.includes('[token]'), line);
      JSON.parse(line);
    }
    assert.match(lines[3], /"bearer\.\[token\]"/);
  });

  test('unsigned and empty-signature tokens ("alg": "none") are masked too', () => {
    const { log, lines } = capture();
    const unsigned = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJtIiwiZXhwIjo5OTk5OTk5OTk5fQ.';
    log.info('x', { token: unsigned, short: 'eyJ.e.' });
    assert.ok(!lines[0].includes('eyJ'), lines[0]);
  });

  test('text that only starts like a token is left alone', () => {
    const { log, lines } = capture();
    log.info('x', { note: 'eyJ is how base64 JSON starts', id: 'eyJabc.def' });
    assert.match(lines[0], /eyJ is how base64 JSON starts/);
    assert.match(lines[0], /eyJabc\.def/);
  });

  test('errors become name, code and message', () => {
    const { log, lines } = capture();
    const err = Object.assign(new TypeError('boom'), { code: 'ERR_X' });
    log.error('failed', { err });
    assert.deepEqual((JSON.parse(lines[0]) as { err: unknown }).err, { name: 'TypeError', code: 'ERR_X', message: 'boom' });
  });

  test('levels below the configured one are dropped; silent writes nothing', () => {
    const warn = capture('warn');
    warn.log.debug('d');
    warn.log.info('i');
    warn.log.warn('w');
    warn.log.error('e');
    assert.deepEqual(
      warn.lines.map((l) => (JSON.parse(l) as { msg: string }).msg),
      ['w', 'e'],
    );
    const silent = capture('silent');
    silent.log.error('e');
    assert.deepEqual(silent.lines, []);
  });

  test('child() adds its fields to every line and masks the same way', () => {
    const { log, lines } = capture();
    const child = log.child({ sessionId: 's1', token: JWT });
    child.info('closed', { code: 1000 });
    const record = JSON.parse(lines[0]) as Record<string, unknown>;
    assert.equal(record.service, 'test');
    assert.equal(record.sessionId, 's1');
    assert.equal(record.token, '[token]');
    assert.equal(record.code, 1000);
  });
});
