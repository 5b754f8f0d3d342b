/**
 * A seeded randomized fault run (Jepsen-style), issue 10 "Tests": three
 * gateway child processes on one table, each behind its own fault proxy;
 * eight users with limits of 2 or 3 connect, close, take over, kick and
 * reconnect the same device through another gateway while requests are
 * delayed past the SDK's timeout (the late copy lands after the retry),
 * duplicated, committed with their reply lost, reset and blackholed, and
 * gateways are paused (SIGSTOP/SIGCONT) and killed (SIGKILL, then replaced).
 * test/helpers/fault-run.ts holds the schedule, the checks and their windows.
 *
 * `FAULT_SEED=<n> npm test -- test/fault-run.test.ts` replays one schedule;
 * without it every run draws a new seed and prints it. FAULT_DURATION_MS
 * lengthens the real run for a local soak (default 60 000).
 *
 * Before the fix of issue 10 (main at 7e8e596) the real run failed for every
 * seed tried at 60 s (2, 3, 8, 9, 24, 31, 2599154281; at 30 s, 5 of 6): the
 * end check found entries of live instances that no socket held. Late copies
 * of acquires (the proxy's delay and duplicate faults) landed after the device
 * had closed, been revoked or been denied, and nothing removed them while the
 * gateway lived (item 1). With the lease keeper (main at 1a3cbb6) seeds 2, 3,
 * 24 and 31 pass.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mutantEntry } from './helpers/cluster.js';
import { DEFAULT_SHAPE, LATE_COPY_WEIGHTS, makeSchedule, runFaultSchedule, seedFromEnv, type FaultRunResult } from './helpers/fault-run.js';

/** Seconds of faults in the real run (FAULT_DURATION_MS overrides, e.g. for a local soak). */
const DURATION_MS = Number(process.env.FAULT_DURATION_MS ?? 60_000);
/** The negative control's length: it stops sooner at its first continuous violation. */
const MUTANT_DURATION_MS = 40_000;

/**
 * The negative control's edit of src/: the fix of issue 10 item 1 removed. The
 * lease keeper's reconcile releases entries no socket holds (late copies of
 * uncertain writes, orphans of this instance); without that release a late
 * copy of an acquire brings back a released entry for the life of the gateway,
 * and the end check must fail. The control runs with faults that are almost
 * only late copies (LATE_COPY_WEIGHTS): 30 s leaked 2-6 entries for each seed tried.
 *
 * Other edits worth a run by hand: the acquire's limit condition in
 * lease-store.ts ("#n < :limit" -> ":limit = :limit", caught by the store check
 * within seconds), or the heartbeat's mailbox delivery in instance.ts (caught
 * by the socket-window check).
 */
const MUTANT_FILE = 'lease-keeper.ts';
const MUTANT_SEARCH = 'this.#pending.add(this.#releaseEventually(userId, entry, this.#instance.id));';
const MUTANT_REPLACE = 'void entry; // mutant: entries no socket holds stay';

function explain(result: FaultRunResult): string {
  const lines = result.violations.slice(0, 12).map((v) => `- ${v.kind} ${v.user} at ${Math.round(v.atMs)} ms: ${v.detail}`);
  const more = result.violations.length > 12 ? [`... and ${result.violations.length - 12} more`] : [];
  return [`${result.violations.length} violation(s); reproduce with FAULT_SEED=${result.seed}`, ...lines, ...more].join('\n');
}

describe('seeded fault run', { concurrency: false }, () => {
  test('the schedule is a function of the seed: a failing seed replays the same operations and faults', () => {
    const shape = DEFAULT_SHAPE;
    assert.deepEqual(makeSchedule(42, shape), makeSchedule(42, shape));
    assert.notDeepEqual(makeSchedule(42, shape).ops, makeSchedule(43, shape).ops);
    const kinds = new Set(makeSchedule(42, shape).faults.map((f) => f.kind));
    for (const kind of ['delay', 'duplicate', 'drop-reply', 'pause', 'kill'] as const)
      assert.ok(kinds.has(kind), `seed 42 schedules ${kind}`);
  });

  test('random connects, closes, takeovers, kicks and reconnects under store faults, pauses and kills: never over the limit, nothing leaks', async () => {
    const seed = seedFromEnv();
    process.stdout.write(`fault run: seed ${seed} (reproduce with FAULT_SEED=${seed})\n`);
    const result = await runFaultSchedule({ seed, durationMs: DURATION_MS });
    assert.equal(result.violations.length, 0, explain(result));
  });

  test('negative control: the same run against a mutant (the item-1 fix removed) is caught', async () => {
    const seed = seedFromEnv();
    const entry = mutantEntry(MUTANT_FILE, MUTANT_SEARCH, MUTANT_REPLACE);
    process.stdout.write(`fault run (mutant of src/${MUTANT_FILE}): seed ${seed} (reproduce with FAULT_SEED=${seed})\n`);
    const result = await runFaultSchedule({
      seed,
      entry,
      durationMs: MUTANT_DURATION_MS,
      stopEarly: true,
      faultWeights: LATE_COPY_WEIGHTS,
    });
    assert.ok(result.violations.length > 0, `the mutant went unnoticed; reproduce with FAULT_SEED=${seed}`);
    process.stdout.write(`mutant caught: ${[...new Set(result.violations.map((v) => v.kind))].join(', ')}\n`);
  });
});
