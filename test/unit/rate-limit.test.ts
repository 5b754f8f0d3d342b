/**
 * The connect limiter's two pure parts: which address a request is counted
 * under (clientIp behind 0, 1 or 2 proxies), and the keyed token buckets with
 * their blocklist and memory bound (KeyedLimiter). Time is passed in, so every
 * case is exact and instant.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { clientIp, KeyedLimiter, newBucket, take, type KeyedLimiterOptions } from '../../src/rate-limit.js';

describe('clientIp', () => {
  const PEER = '10.0.0.7';

  test('no trusted proxy: the socket peer, whatever X-Forwarded-For says', () => {
    assert.equal(clientIp(PEER, undefined, 0), PEER);
    assert.equal(clientIp(PEER, '203.0.113.9', 0), PEER);
    assert.equal(clientIp(PEER, ['203.0.113.9', '198.51.100.1'], 0), PEER);
  });

  test('one trusted proxy: the entry it appended (the last), never the ones the client wrote', () => {
    assert.equal(clientIp(PEER, '203.0.113.9', 1), '203.0.113.9');
    // The client sent "X-Forwarded-For: 1.2.3.4, 5.6.7.8"; the proxy appended the address it saw.
    assert.equal(clientIp(PEER, '1.2.3.4, 5.6.7.8, 203.0.113.9', 1), '203.0.113.9');
  });

  test('two trusted proxies: the entry the outer proxy wrote (second from the right)', () => {
    // client -> outer proxy (appends the client) -> inner proxy (appends the outer proxy) -> gateway
    assert.equal(clientIp(PEER, '203.0.113.9, 10.1.0.2', 2), '203.0.113.9');
    assert.equal(clientIp(PEER, 'spoofed-by-client, 1.2.3.4, 203.0.113.9, 10.1.0.2', 2), '203.0.113.9');
  });

  test('fewer entries than trusted hops: the leftmost entry', () => {
    assert.equal(clientIp(PEER, '203.0.113.9', 2), '203.0.113.9');
    assert.equal(clientIp(PEER, '203.0.113.9, 10.1.0.2', 5), '203.0.113.9');
  });

  test('a header repeated (an array) reads as one list, in order', () => {
    assert.equal(clientIp(PEER, ['1.2.3.4', '203.0.113.9'], 1), '203.0.113.9');
    assert.equal(clientIp(PEER, ['spoofed, 203.0.113.9', '10.1.0.2'], 2), '203.0.113.9');
  });

  test('spaces and empty entries are dropped before counting', () => {
    assert.equal(clientIp(PEER, ' 203.0.113.9 ,, 10.1.0.2 , ', 2), '203.0.113.9');
    assert.equal(clientIp(PEER, ',,203.0.113.9', 1), '203.0.113.9');
  });

  test('an empty header, an empty array or only commas: the socket peer', () => {
    for (const empty of ['', ' ', ',', ' , ,', [], ['', ' ']]) assert.equal(clientIp(PEER, empty, 1), PEER, JSON.stringify(empty));
  });

  test('IPv6 entries are kept whole', () => {
    assert.equal(clientIp(PEER, '2001:db8::1, 2001:db8::2', 1), '2001:db8::2');
    assert.equal(clientIp('::ffff:10.0.0.7', undefined, 1), '::ffff:10.0.0.7');
  });

  test('no peer address (a destroyed socket): "unknown"', () => {
    assert.equal(clientIp(undefined, undefined, 0), 'unknown');
    assert.equal(clientIp(undefined, '203.0.113.9', 0), 'unknown');
    assert.equal(clientIp(undefined, '', 1), 'unknown');
    assert.equal(clientIp(undefined, '203.0.113.9', 1), '203.0.113.9');
  });
});

describe('token bucket', () => {
  test('starts full, takes one token per call, refills at the rate up to the burst', () => {
    const b = newBucket(2, 0);
    assert.equal(take(b, 1, 2, 0), true);
    assert.equal(take(b, 1, 2, 0), true);
    assert.equal(take(b, 1, 2, 0), false);
    assert.equal(take(b, 1, 2, 999), false, 'not quite one token yet');
    assert.equal(take(b, 1, 2, 1000), true);
    // A long idle time refills to the burst, not beyond.
    assert.equal(take(b, 1, 2, 1_000_000), true);
    assert.equal(take(b, 1, 2, 1_000_000), true);
    assert.equal(take(b, 1, 2, 1_000_000), false);
  });
});

describe('KeyedLimiter', () => {
  const limiter = (o: Partial<KeyedLimiterOptions> = {}): KeyedLimiter =>
    new KeyedLimiter({ ratePerSec: 1, burst: 3, blockAfter: 1000, blockMs: 60_000, ...o });

  test('a key gets its burst at once, then one per 1/rate; retryAfterSec says when', () => {
    const l = limiter({ ratePerSec: 2, burst: 3 });
    for (let i = 0; i < 3; i++) assert.deepEqual(l.check('ip', 0), { ok: true });
    assert.deepEqual(l.check('ip', 0), { ok: false, blocked: false, retryAfterSec: 1 });
    assert.deepEqual(l.check('ip', 500), { ok: true }, 'one token after 1/rate = 500 ms');
  });

  test('retryAfterSec: at least 1, rounded up to the time one token takes', () => {
    const slow = limiter({ ratePerSec: 0.1, burst: 1 });
    assert.equal(slow.check('k', 0).ok, true);
    assert.deepEqual(slow.check('k', 0), { ok: false, blocked: false, retryAfterSec: 10 });
    assert.deepEqual(slow.check('k', 5000), { ok: false, blocked: false, retryAfterSec: 5 });
    const fast = limiter({ ratePerSec: 100, burst: 1 });
    assert.equal(fast.check('k', 0).ok, true);
    assert.deepEqual(fast.check('k', 0), { ok: false, blocked: false, retryAfterSec: 1 });
  });

  test('a table full of active keys never evicts a blocked one: a flood of new keys does not unblock an abuser', () => {
    const l = limiter({ ratePerSec: 0.001, burst: 1, blockAfter: 1, maxKeys: 10 });
    assert.equal(l.check('abuser', 0).ok, true);
    assert.deepEqual(l.check('abuser', 0), { ok: false, blocked: true, retryAfterSec: 60 });
    // Nine more keys that have spent their token (not refilled: the sweep keeps them), then more new ones.
    for (let i = 0; i < 30; i++) l.check(`k${i}`, 1);
    assert.equal(l.check('abuser', 2).ok, false, 'still blocked after the evictions');
    assert.ok(l.size <= 10);
  });

  test('keys are independent', () => {
    const l = limiter({ burst: 1 });
    assert.equal(l.check('a', 0).ok, true);
    assert.equal(l.check('a', 0).ok, false);
    assert.equal(l.check('b', 0).ok, true);
  });

  test('blockAfter consecutive rejections block the key for blockMs; then it is let in again', () => {
    const l = limiter({ ratePerSec: 1, burst: 1, blockAfter: 3, blockMs: 10_000 });
    assert.equal(l.check('ip', 0).ok, true);
    assert.deepEqual(l.check('ip', 0), { ok: false, blocked: false, retryAfterSec: 1 });
    assert.deepEqual(l.check('ip', 0), { ok: false, blocked: false, retryAfterSec: 1 });
    assert.deepEqual(l.check('ip', 0), { ok: false, blocked: true, retryAfterSec: 10 }, 'the third rejection blocks');
    // Blocked: refused however full the bucket, with the time left rounded up.
    assert.deepEqual(l.check('ip', 5000), { ok: false, blocked: true, retryAfterSec: 5 });
    assert.deepEqual(l.check('ip', 9001), { ok: false, blocked: true, retryAfterSec: 1 });
    assert.deepEqual(l.check('ip', 10_000), { ok: true }, 'unblocked exactly at blockMs');
    // The block reset the strike count: it takes blockAfter new rejections to block again.
    assert.deepEqual(l.check('ip', 10_000), { ok: false, blocked: false, retryAfterSec: 1 });
    assert.deepEqual(l.check('ip', 10_000), { ok: false, blocked: false, retryAfterSec: 1 });
    assert.deepEqual(l.check('ip', 10_000), { ok: false, blocked: true, retryAfterSec: 10 });
  });

  test('a success in between resets the strikes', () => {
    const l = limiter({ ratePerSec: 1, burst: 1, blockAfter: 3 });
    assert.equal(l.check('ip', 0).ok, true);
    for (let round = 1; round <= 5; round++) {
      assert.equal(l.check('ip', round * 1000 - 1).ok, false);
      assert.equal(l.check('ip', round * 1000 - 1).ok, false);
      assert.equal(l.check('ip', round * 1000).ok, true, `round ${round}: two rejections, then a token`);
    }
  });

  test('blockMs 0 never blocks', () => {
    const l = limiter({ burst: 1, blockAfter: 1, blockMs: 0 });
    assert.equal(l.check('ip', 0).ok, true);
    for (let i = 0; i < 10; i++) assert.deepEqual(l.check('ip', 0), { ok: false, blocked: false, retryAfterSec: 1 });
  });

  test('sweep() drops refilled keys; blocked and still-draining keys keep their state', () => {
    const l = limiter({ ratePerSec: 1, burst: 2, blockAfter: 1, blockMs: 60_000 });
    for (let i = 0; i < 50; i++) l.check(`idle-${i}`, 0);
    l.check('flood', 0);
    l.check('flood', 0);
    assert.deepEqual(l.check('flood', 0), { ok: false, blocked: true, retryAfterSec: 60 });
    l.check('busy', 9_999);
    l.check('busy', 9_999);
    assert.equal(l.size, 52);
    l.sweep(10_000);
    assert.equal(l.size, 2, 'the 50 refilled keys went; flood (blocked) and busy stayed');
    assert.equal(l.check('busy', 10_000).ok, false, 'busy kept its empty bucket');
    assert.deepEqual(l.check('flood', 10_000), { ok: false, blocked: true, retryAfterSec: 50 });
  });

  test('a bounded sweep resumes where the last one stopped', () => {
    const l = limiter({ ratePerSec: 1, burst: 2 });
    for (let i = 0; i < 50; i++) l.check(`idle-${i}`, 0);
    l.check('busy', 9_999);
    l.check('busy', 9_999);
    const sizes = [1, 2, 3, 4].map(() => (l.sweep(10_000, 20), l.size));
    assert.deepEqual(sizes, [31, 11, 1, 1], '20 keys looked at per call; busy stays');
    l.check('late', 10_000);
    l.sweep(20_000, 20);
    assert.equal(l.size, 0, 'a new pass starts after the last one ended');
  });

  test('a sweep spread over calls, with keys added, refused and blocked between them, changes no verdict', () => {
    // A limiter that sweeps in random slices answers every check as one that never drops a key (a model of it).
    const l = limiter({ ratePerSec: 1, burst: 2, blockAfter: 2, blockMs: 5_000, maxKeys: 1_000_000 });
    let seed = 7;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const model = new Map<string, { tokens: number; at: number; strikes: number; blockedUntil: number }>();
    const expected = (key: string, now: number): { ok: boolean; blocked: boolean } => {
      const e = model.get(key) ?? { tokens: 2, at: now, strikes: 0, blockedUntil: 0 };
      model.set(key, e);
      if (e.blockedUntil > now) return { ok: false, blocked: true };
      e.tokens = Math.min(2, e.tokens + (now - e.at) / 1000);
      e.at = now;
      if (e.tokens >= 1) {
        e.tokens -= 1;
        e.strikes = 0;
        return { ok: true, blocked: false };
      }
      if (++e.strikes >= 2) {
        e.strikes = 0;
        e.blockedUntil = now + 5_000;
        return { ok: false, blocked: true };
      }
      return { ok: false, blocked: false };
    };
    let now = 0;
    let swept = 0;
    for (let round = 0; round < 2_000; round++) {
      now += rand(200);
      for (let i = rand(20); i > 0; i--) {
        const key = `k${rand(100)}`;
        const got = l.check(key, now);
        assert.deepEqual({ ok: got.ok, blocked: got.ok ? false : got.blocked }, expected(key, now), `${key} at ${now}`);
      }
      const before = l.size;
      l.sweep(now, 1 + rand(30));
      swept += before - l.size;
    }
    assert.ok(swept > 100, `the sweep did drop keys (${swept})`);
  });

  describe('eviction at maxKeys', () => {
    test('idle keys (bucket full again, not blocked) are dropped first; active keys keep their state', () => {
      const l = limiter({ ratePerSec: 1, burst: 2, maxKeys: 3 });
      l.check('idle-1', 0);
      l.check('idle-2', 0);
      l.check('busy', 9000);
      l.check('busy', 9000);
      assert.equal(l.check('busy', 9000).ok, false, 'busy has used its burst');
      assert.equal(l.size, 3);
      // At t=9000 the idle keys have refilled; a fourth key makes room by dropping exactly them.
      assert.equal(l.check('new', 9000).ok, true);
      assert.equal(l.size, 2);
      assert.equal(l.check('busy', 9000).ok, false, 'busy was kept, empty bucket and all');
    });

    test('a blocked key is never dropped as idle, even with its bucket full again', () => {
      const l = limiter({ ratePerSec: 10, burst: 1, blockAfter: 1, blockMs: 60_000, maxKeys: 2 });
      l.check('flood', 0);
      assert.deepEqual(l.check('flood', 0), { ok: false, blocked: true, retryAfterSec: 60 });
      l.check('idle', 0);
      // t=5000: both buckets are full; 'flood' is still blocked, 'idle' goes.
      l.check('new', 5000);
      assert.deepEqual(l.check('flood', 5000), { ok: false, blocked: true, retryAfterSec: 55 });
    });

    test('all keys active: the oldest tenth goes, never more memory than maxKeys', () => {
      const l = limiter({ ratePerSec: 1, burst: 1, maxKeys: 20 });
      for (let i = 0; i < 20; i++) l.check(`k${i}`, 0);
      assert.equal(l.size, 20);
      l.check('k20', 0);
      assert.equal(l.size, 19, '2 of 20 dropped (the oldest tenth), one added');
      assert.equal(l.check('k0', 0).ok, true, 'k0 was dropped: a fresh bucket');
      assert.equal(l.check('k2', 0).ok, false, 'k2 was kept: still empty');
    });

    test('a flood of new keys stays within maxKeys', () => {
      const l = limiter({ ratePerSec: 1, burst: 1, maxKeys: 100 });
      for (let i = 0; i < 10_000; i++) {
        l.check(`203.0.${i >> 8}.${i & 255}`, i);
        assert.ok(l.size <= 100, `size ${l.size} after ${i + 1} keys`);
      }
    });
  });
});
