import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Deadline } from '../../src/deadline.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a step that finishes in time is done, with its value', async () => {
  const d = new Deadline(200);
  assert.deepEqual(await d.run(Promise.resolve(42)), { kind: 'done', value: 42 });
  d.clear();
});

test('a step that throws in time failed, with its error (a store error, not a timeout)', async () => {
  const d = new Deadline(200);
  const err = new Error('ConditionalCheckFailed');
  assert.deepEqual(await d.run(Promise.reject(err)), { kind: 'failed', error: err });
  d.clear();
});

test('a step still running at the deadline gave up, and the signal aborts', async () => {
  const d = new Deadline(30);
  const started = performance.now();
  const settled = await d.run(sleep(500));
  assert.deepEqual(settled, { kind: 'gave-up' });
  assert.ok(performance.now() - started < 300);
  assert.equal(d.signal.aborted, true);
  assert.equal(d.expired, true);
});

test('a step that throws because the deadline aborted it counts as gave-up, not failed', async () => {
  const d = new Deadline(20);
  const step = new Promise((_, reject) => d.signal.addEventListener('abort', () => reject(new Error('AbortError'))));
  assert.deepEqual(await d.run(step), { kind: 'gave-up' });
});

test('steps run after the deadline gave up at once; their rejections are not left unhandled', async () => {
  const d = new Deadline(10);
  await sleep(30);
  assert.deepEqual(await d.run(Promise.reject(new Error('late'))), { kind: 'gave-up' });
});

test('one deadline covers several steps: the second step gets what the first left', async () => {
  const d = new Deadline(100);
  assert.equal((await d.run(sleep(60))).kind, 'done');
  assert.equal((await d.run(sleep(80))).kind, 'gave-up');
});

test('clear() stops the timer: the signal never aborts', async () => {
  const d = new Deadline(20);
  d.clear();
  await sleep(40);
  assert.equal(d.signal.aborted, false);
});
