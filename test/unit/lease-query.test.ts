import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ID_RULE } from '../../src/client/protocol.js';
import { parseLeaseQuery } from '../../src/gateway.js';

const q = (s: string) => parseLeaseQuery(new URLSearchParams(s));

test('a device alone, with content, with takeover of a device or the oldest', () => {
  assert.deepEqual(q('device=tv'), { device: 'tv', content: undefined, takeover: undefined });
  assert.deepEqual(q('device=tv&content=match-1'), { device: 'tv', content: 'match-1', takeover: undefined });
  assert.deepEqual(q('device=tv&takeover=phone'), { device: 'tv', content: undefined, takeover: 'phone' });
  assert.deepEqual(q('device=tv&takeover=oldest'), { device: 'tv', content: undefined, takeover: 'oldest' });
  assert.deepEqual(q('device=a.b_c:d-1'), { device: 'a.b_c:d-1', content: undefined, takeover: undefined });
});

test('each bad parameter gets the sentence that names it and the rule', () => {
  assert.equal(q(''), `device must be ${ID_RULE}`);
  assert.equal(q('device='), `device must be ${ID_RULE}`);
  assert.equal(q(`device=${'x'.repeat(129)}`), `device must be ${ID_RULE}`);
  assert.equal(q('device=tv%20room'), `device must be ${ID_RULE}`);
  assert.equal(q('device=t%C3%BC'), `device must be ${ID_RULE}`);
  assert.equal(q('device=tv&content='), `content must be ${ID_RULE}`);
  assert.equal(q('device=tv&content=a/b'), `content must be ${ID_RULE}`);
  assert.equal(q('device=tv&takeover=a b'), 'takeover must be a device id or "oldest"');
  assert.equal(q('device=tv&takeover=tv'), 'takeover must name another device');
});

test('128 characters is the longest id; the rule sentence fits a close reason', () => {
  assert.equal(typeof q(`device=${'x'.repeat(128)}`), 'object');
  assert.ok(Buffer.byteLength(`content must be ${ID_RULE}`) <= 123);
});
