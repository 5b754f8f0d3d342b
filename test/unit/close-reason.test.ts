/**
 * closeReason(): a WebSocket close reason is at most 123 bytes of UTF-8 (ws
 * throws on more), and a cut must never leave half a character behind, or the
 * player would read U+FFFD (or, with a strict decoder, fail the close frame).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { closeReason } from '../../src/close-codes.js';

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/**
 * The properties every cut must have: at most 123 bytes, valid UTF-8 that decodes to itself, "..." at the end, and a
 * prefix of the input (so no character was split or replaced) that is as long as 120 bytes allow.
 */
function assertCut(input: string, out: string): void {
  assert.ok(bytes(out) <= 123, `${bytes(out)} bytes`);
  assert.ok(out.endsWith('...'), 'ends with an ellipsis');
  assert.ok(!out.includes('\uFFFD'), 'no replacement character');
  assert.equal(Buffer.from(out, 'utf8').toString('utf8'), out, 'round-trips through UTF-8');
  const kept = out.slice(0, -3);
  assert.ok(input.startsWith(kept), 'the kept part is a prefix of the input');
  const next = String.fromCodePoint(input.slice(kept.length).codePointAt(0)!);
  assert.ok(bytes(kept) <= 120 && bytes(kept) + bytes(next) > 120, `as long as fits: ${bytes(kept)} bytes kept, next is ${bytes(next)}`);
}

describe('closeReason', () => {
  test('up to 123 bytes: returned as it is', () => {
    for (const text of ['', 'stream limit reached', 'a'.repeat(123), 'é'.repeat(61) + 'a', '中'.repeat(41), '😀'.repeat(30) + 'abc']) {
      assert.equal(bytes(text) <= 123, true);
      assert.equal(closeReason(text), text);
    }
  });

  test('124 bytes of ASCII: 120 kept and "..." (123 bytes)', () => {
    const out = closeReason('a'.repeat(124));
    assert.equal(out, 'a'.repeat(120) + '...');
    assert.equal(bytes(out), 123);
  });

  // Each wide character at every offset against the 120-byte cut: the cut lands on a boundary, or 1, 2 or 3 bytes
  // into the character.
  const wide: Array<[string, string]> = [
    ['2-byte (é)', 'é'],
    ['3-byte CJK (中)', '中'],
    ['3-byte (€)', '€'],
    ['4-byte emoji (😀)', '😀'],
    ['4-byte CJK extension B (𠀋)', '𠀋'],
  ];
  for (const [name, ch] of wide) {
    test(`${name} at every offset across the cut`, () => {
      for (let lead = 0; lead < bytes(ch) + 1; lead++) {
        const input = 'a'.repeat(lead) + ch.repeat(Math.ceil(130 / bytes(ch)));
        assertCut(input, closeReason(input));
      }
    });
  }

  test('a mix of 1- to 4-byte characters, every length from 100 to 200 bytes', () => {
    const alphabet = ['a', 'é', '中', '😀', ' ', 'ß', '€', '𠀋'];
    let input = '';
    for (let i = 0; bytes(input) < 200; i++) {
      input += alphabet[(i * 7) % alphabet.length];
      const out = closeReason(input);
      if (bytes(input) <= 123) assert.equal(out, input);
      else assertCut(input, out);
    }
  });

  test('a combined emoji (family, flag) may lose its tail characters but stays valid UTF-8', () => {
    // Code points are never split; a grapheme made of several code points may be (the player sees a shorter emoji).
    for (const emoji of ['👨‍👩‍👧‍👦', '🇫🇷', '👍🏽']) {
      for (let lead = 100; lead < 124; lead++) {
        const input = 'a'.repeat(lead) + emoji.repeat(4);
        const out = closeReason(input);
        if (bytes(input) > 123) assertCut(input, out);
      }
    }
  });
});
