// What reaches taskProgress$ when tasks report progress from inside their worker: a task may send
// PROGRESS_BURST reports at once, then one per progressInterval (the newest); its last report
// always comes, before its result.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { WorkerPool, isTaskError, schedule$, taskModule, type TaskOutcome } from '../src/index.js';
import { PROGRESS_BURST } from '../src/runtime/protocol.js';
import { isAlive, waitGone, work } from './helpers.js';

type Work = typeof import('./fixtures/work.js');
const typed = taskModule<Work>(work);

/** Everything a run emitted on its result stream and on taskProgress$, in the order it came. */
type Event = { progress: { index: number; value: unknown } } | { outcome: TaskOutcome<unknown> };

/** The most reports a task running `durationMs` may send at the default interval: the burst, one per 50 ms, its last. */
const mostReports = (durationMs: number) => PROGRESS_BURST + Math.ceil(durationMs / 50) + 1;

/** A directory for the test's files, removed when it ends. */
function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'aps-progress-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a task reporting on every step of a tight loop sends only a few reports: a burst, then the newest once per progressInterval, its last before its result', async (t) => {
  const steps = 200_000;
  const run = schedule$([typed.reportEach(steps), typed.reportEach(3)], { concurrency: 1 });
  const events: Event[] = [];
  run.taskProgress$.subscribe((progress) => events.push({ progress }));
  run.subscribe((outcome) => events.push({ outcome }));
  t.deepEqual(await run.toOrderedArray(), [steps, 3]);

  const reportsOf = (index: number) => events.flatMap((e) => ('progress' in e && e.progress.index === index ? [e.progress.value as number] : []));
  const resultAt = (index: number) => events.findIndex((e) => 'outcome' in e && e.outcome.index === index);
  const lastReportAt = (index: number) => events.findLastIndex((e) => 'progress' in e && e.progress.index === index);
  const loop = events.find((e) => 'outcome' in e && e.outcome.index === 0);
  const durationMs = loop && 'outcome' in loop && loop.outcome.status === 'fulfilled' ? loop.outcome.stats.durationMs : Infinity;

  const big = reportsOf(0);
  t.deepEqual(big.slice(0, PROGRESS_BURST), Array.from({ length: PROGRESS_BURST }, (_, i) => i), 'the first reports are sent at once');
  t.is(big.at(-1), steps - 1, 'the last report is sent');
  t.deepEqual([...big].sort((a, b) => a - b), big, 'in the order they were made');
  // However slow the host, not one per step.
  t.true(big.length <= mostReports(durationMs), `${big.length} reports for a ${durationMs} ms loop`);
  t.true(lastReportAt(0) < resultAt(0), "the last report comes before the task's result");
  // The next task starts afresh: its three reports are within its burst.
  t.deepEqual(reportsOf(1), [0, 1, 2]);
  t.true(lastReportAt(1) < resultAt(1));
});

test('a few reports are sent at once, before a long synchronous stretch', async (t) => {
  const release = join(tempDir(t), 'release');
  // The task reports two phases, then blocks until the file exists, which the test writes when
  // 'phase 2' arrives: held until the task's end, it would never come in time.
  const run = schedule$([typed.phasesThenBlock(release, 20_000)], { concurrency: 1 });
  const values: unknown[] = [];
  run.taskProgress$.subscribe((p) => {
    values.push(p.value);
    if (p.value === 'phase 2') writeFileSync(release, '');
  });
  t.deepEqual(await run.toOrderedArray(), [true], "'phase 2' arrived while the task was blocked");
  t.deepEqual(values, ['phase 1', 'phase 2']);
});

test('with progressInterval: 0 every report is sent', async (t) => {
  const run = schedule$([typed.reportEach(500)], { concurrency: 1, progressInterval: 0 });
  const values: unknown[] = [];
  run.taskProgress$.subscribe((p) => values.push(p.value));
  t.deepEqual(await run.toOrderedArray(), [500]);
  t.deepEqual(values, Array.from({ length: 500 }, (_, i) => i));
});

test('a report held back is sent once the task may send again, while it still runs', async (t) => {
  const release = join(tempDir(t), 'release');
  // Past its burst, the task reports 'held', then waits for the file, which the test writes when
  // 'held' arrives: sent only with the result, it would never come in time.
  const run = schedule$([typed.reportThenWaitForFile(release, 20_000, PROGRESS_BURST)], { concurrency: 1, progressInterval: 100 });
  const values: unknown[] = [];
  run.taskProgress$.subscribe((p) => {
    values.push(p.value);
    if (p.value === 'held') writeFileSync(release, '');
  });
  t.deepEqual(await run.toOrderedArray(), [true], "'held' arrived while the task waited for it");
  t.deepEqual(values, [...Array<string>(PROGRESS_BURST).fill('early'), 'held']);
});

test('a report held back that cannot be cloned fails its task, naming reportProgress; a task that throws keeps its own error', async (t) => {
  const run = schedule$([typed.reportUncloneableLater(PROGRESS_BURST), typed.square(3)], { concurrency: 1, settle: true });
  const values: unknown[] = [];
  run.taskProgress$.subscribe((p) => values.push(p.value));
  const [failed, next] = await run.toOrderedArray();
  t.is(values.length, PROGRESS_BURST, 'the reports before it were sent');
  const error = failed?.status === 'rejected' ? failed.reason : undefined;
  t.true(isTaskError(error));
  t.is(error?.kind, 'threw');
  t.regex(error?.remote?.message ?? '', /^reportProgress: the value cannot be sent to the parent process: .*could not be cloned/);
  t.like(next, { status: 'fulfilled', index: 1, value: 9 }, 'the worker goes on with the next task');

  const own = await schedule$([typed.reportUncloneableThenThrow(PROGRESS_BURST)], { concurrency: 1 }).toOrderedArray().catch((e: unknown) => e);
  t.true(isTaskError(own));
  t.is(isTaskError(own) ? own.remote?.name : undefined, 'RangeError');
});

test('a pooled worker coalesces by the progressInterval of the run it serves now', async (t) => {
  const pool = new WorkerPool();
  t.teardown(() => pool.close());
  const every = schedule$([typed.reportEach(300), typed.pid()], { concurrency: 1, pool, progressInterval: 0 });
  const all: unknown[] = [];
  every.taskProgress$.subscribe((p) => all.push(p.value));
  const [, firstPid] = await every.toOrderedArray();
  t.is(all.length, 300);

  const coalesced = schedule$([typed.reportEach(300_000), typed.pid()], { concurrency: 1, pool });
  const some: unknown[] = [];
  coalesced.taskProgress$.subscribe((p) => some.push(p.value));
  const outcomes: Array<TaskOutcome<unknown>> = [];
  coalesced.subscribe((o) => outcomes.push(o));
  const [, secondPid] = await coalesced.toOrderedArray();
  t.is(secondPid, firstPid, 'the same worker served both runs');
  t.true(isAlive(firstPid as number));
  const loop = outcomes.find((o) => o.index === 0);
  const durationMs = loop?.status === 'fulfilled' ? loop.stats.durationMs : Infinity;
  t.true(some.length <= mostReports(durationMs), `${some.length} reports for a ${durationMs} ms loop`);
  t.is(some.at(-1), 299_999);

  const again = schedule$([typed.reportEach(300)], { concurrency: 1, pool, progressInterval: 0 });
  const allAgain: unknown[] = [];
  again.taskProgress$.subscribe((p) => allAgain.push(p.value));
  await again.toOrderedArray();
  t.is(allAgain.length, 300, 'told again: every report');
  await pool.close();
  t.deepEqual(await waitGone([firstPid as number]), [], 'the pool left no worker behind');
});

for (const [how, task, kind] of [
  ['an uncaught error', typed.reportThenCrash(PROGRESS_BURST), 'threw'],
  ['process.exit()', typed.reportThenExit(PROGRESS_BURST, 3), 'exited'],
] as const) {
  test(`the last report held back still arrives when its task ends the worker with ${how}`, async (t) => {
    const run = schedule$([task], { concurrency: 1, progressInterval: 10_000 });
    const values: unknown[] = [];
    run.taskProgress$.subscribe((p) => values.push(p.value));
    const error = await run.toOrderedArray().catch((e: unknown) => e);
    t.true(isTaskError(error));
    t.is(isTaskError(error) ? error.kind : undefined, kind);
    t.deepEqual(values, [...Array<string>(PROGRESS_BURST).fill('early'), 'last']);
    const pid = isTaskError(error) ? error.pid : undefined;
    t.is(typeof pid, 'number');
    t.deepEqual(await waitGone([pid!]), [], 'the worker is gone');
  });
}
