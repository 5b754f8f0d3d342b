import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ID_RULE } from '../../src/client/protocol.js';
import { parseLeaseQuery } from '../../src/gateway.js';

const q = (s: string) => parseLeaseQuery(new URLSearchParams(s));

test('a device alone, with content, with takeover of a device or the oldest', () => {
  const none = { content: undefined, takeover: undefined, deviceClass: undefined, handoff: undefined, previous: undefined };
  assert.deepEqual(q('device=tv'), { ...none, device: 'tv' });
  assert.deepEqual(q('device=tv&content=match-1'), { ...none, device: 'tv', content: 'match-1' });
  assert.deepEqual(q('device=tv&takeover=phone'), { ...none, device: 'tv', takeover: 'phone' });
  assert.deepEqual(q('device=tv&takeover=oldest'), { ...none, device: 'tv', takeover: 'oldest' });
  assert.deepEqual(q('device=tv&class=mobile'), { ...none, device: 'tv', deviceClass: 'mobile' });
  assert.deepEqual(q('device=a.b_c:d-1'), { ...none, device: 'a.b_c:d-1' });
  const leaseId = '0f8e4c1a-6d2b-4c3e-9a7f-1b2c3d4e5f60';
  assert.deepEqual(q(`device=tv&handoff=${leaseId}`), { ...none, device: 'tv', handoff: leaseId });
  assert.deepEqual(q(`device=tv&previous=${leaseId}`), { ...none, device: 'tv', previous: leaseId });
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
  assert.equal(q('device=tv&class=big tv'), `class must be ${ID_RULE}`);
  assert.equal(q('device=tv&handoff='), 'handoff must be the lease id of a granted frame');
  assert.equal(q('device=tv&handoff=tv'), 'handoff must be the lease id of a granted frame');
  assert.equal(q('device=tv&previous=tv'), 'previous must be the lease id of a granted frame');
  const id = '0f8e4c1a-6d2b-4c3e-9a7f-1b2c3d4e5f60';
  assert.equal(q(`device=tv&handoff=${id}&previous=${id}`), 'handoff and previous name the same lease: send one');
});

test('128 characters is the longest id; the rule sentence fits a close reason', () => {
  assert.equal(typeof q(`device=${'x'.repeat(128)}`), 'object');
  assert.ok(Buffer.byteLength(`content must be ${ID_RULE}`) <= 123);
});
