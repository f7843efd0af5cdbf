/**
 * Timeouts that kill, reported as timeouts (saying whether SIGKILL was needed), and retries
 * with attempt numbers, on real processes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { RunTerminatedError, TaskError, commandTask, isRunTerminatedError, schedule$, taskModule, type Progress, type TaskFailure } from '../../src/index.js';
import { leftovers, readProcs } from '../fixtures/chaos-procs.js';
import { first, fixture, preload } from '../helpers.js';

const chaosTasks = fixture('chaos-tasks.ts');
const chaos = taskModule<typeof import('../fixtures/chaos-tasks.js')>(chaosTasks);
/** Short timeouts below: the module is loaded before the clock starts (see preload). */
const workerExecArgv = preload(chaosTasks);

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'aps-retry-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a task past its timeout is killed and fails with kind timeout; the worker is replaced', async (t) => {
  const run = schedule$([chaos.reportPidAndHang(), chaos.square(3)], { concurrency: 1, settle: true, timeout: 400, output: 'ignore', workerExecArgv });
  let victim = 0;
  run.taskProgress$.subscribe((p) => (victim = (p.value as { pid: number }).pid));
  const [hung, after] = await run.toOrderedArray();
  const error = (hung as TaskFailure).reason;
  t.true(error instanceof TaskError);
  t.is(error.kind, 'timeout');
  t.true(error.timedOut);
  t.is(error.pid, victim);
  t.is(error.message, 'task #0 (chaos-tasks.ts#reportPidAndHang) timed out: it ran longer than 400 ms and was killed');
  t.like(after, { status: 'fulfilled', value: 9 });
  t.deepEqual(leftovers([victim]), []);
});

test('a timed-out task that ignores SIGTERM is SIGKILLed after killTimeout, and the error says so', async (t) => {
  const run = schedule$([chaos.ignoreSigtermAndHang()], { settle: true, timeout: 400, killTimeout: 300, output: 'ignore', workerExecArgv });
  let victim = 0;
  run.taskProgress$.subscribe((p) => (victim = (p.value as { pid: number }).pid));
  const [outcome] = await run.toOrderedArray();
  const error = (outcome as TaskFailure).reason;
  t.is(error.kind, 'timeout');
  t.regex(error.message, /timed out: it ran longer than 400 ms and was killed \(SIGKILL was needed\)$/);
  t.deepEqual(leftovers([victim]), []);
});

test('a command past its timeout is killed with its whole process group', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', 'sleep 300 & sleep 300; echo never'], { timeout: 500 })], { settle: true });
  let pids: number[] = [];
  run.progress$.subscribe(() => (pids = [...new Set([...pids, ...run.pids()])]));
  const [outcome] = await run.toOrderedArray();
  const error = (outcome as TaskFailure).reason;
  t.is(error.kind, 'timeout');
  t.is(error.message, "task #0 (sh -c 'sleep 300 & sleep 300; echo never') timed out: it ran longer than 500 ms and was killed");
  t.true(pids.length > 0);
  t.deepEqual(leftovers(pids), []);
});

test('a command that ignores SIGTERM is SIGKILLed after killTimeout when it times out', async (t) => {
  // `trap "" TERM` makes sh and the sleep it starts ignore SIGTERM (an ignored signal is inherited).
  const run = schedule$([commandTask('sh', ['-c', 'trap "" TERM; sleep 300 & sleep 300'], { timeout: 400 })], { settle: true, killTimeout: 300 });
  let pids: number[] = [];
  run.progress$.subscribe(() => (pids = [...new Set([...pids, ...run.pids()])]));
  const [outcome] = await run.toOrderedArray();
  t.regex((outcome as TaskFailure).reason.message, /timed out: .* \(SIGKILL was needed\)$/);
  t.deepEqual(leftovers(pids), []);
});

test("a task's own timeout overrides the run's", async (t) => {
  const outcomes = await schedule$([chaos.task('sleepThen', [600, 'slow but allowed'], { timeout: 60_000 }), chaos.sleepThen(60_000, 'x')], {
    settle: true,
    timeout: 300,
    concurrency: 2,
    workerExecArgv,
  }).toOrderedArray();
  t.like(outcomes[0], { status: 'fulfilled', value: 'slow but allowed' });
  t.is((outcomes[1] as TaskFailure).reason.kind, 'timeout');
});

test('retries: a task failing once succeeds on attempt 2, and stats.attempt says so', async (t) => {
  const dir = tempDir(t);
  const plans = ['ok', 'throw-once', 'exit-once', 'kill-once'] as const;
  const tasks = plans.map((plan, i) => chaos.chaos(i, plan, dir));
  // One at a time, each in its own worker: with two tasks on a worker that a signal kills (one
  // done but its result not yet sent, say: a worker sends results in batches), neither is to
  // blame for sure, and both run again as attempts they were already on (see the crash tests).
  // Concurrency 1 alone still lets a worker hold the next task, and whether two end up in one
  // batch depends on how fast the replacement worker starts.
  const run = schedule$(tasks, { concurrency: 1, maxTasksPerWorker: 1, retries: { retries: 1, delay: 10 }, output: 'ignore' });
  const attempts: number[] = [];
  run.subscribe((r) => (attempts[r.index] = r.stats.attempt));
  t.deepEqual(await run.toOrderedArray(), [1, 4, 7, 10]);
  t.deepEqual(attempts, [1, 2, 2, 2]);
});

test('retries: progress$ shows a task waiting for its retry as no longer running', async (t) => {
  // A hang guard: without a snapshot when the attempt fails, the one below never comes (a fixed
  // limit: automatic concurrency would send one with each load reading).
  t.timeout(30_000);
  const gate = join(tempDir(t), 'fail now');
  const run = schedule$([chaos.failWhenFileExists(gate)], { concurrency: 1, retries: { retries: 1, delay: 60_000 }, progressInterval: 0, output: 'ignore' });
  const done = run.toOrderedArray();
  done.catch(() => {});
  await first(run.progress$, (p) => p.running === 1);
  writeFileSync(gate, '');
  const waiting = await first(run.progress$, (p) => p.running === 0);
  t.like(waiting, { state: 'running', completed: 0, failed: 0, queued: 1 });
  await run.terminate();
  await t.throwsAsync(done, { name: 'RunTerminatedError' });
});

test('retries: a task that keeps failing ends with the last attempt number, on the error and in its message', async (t) => {
  const dir = tempDir(t);
  const outcomes = await schedule$(
    [chaos.chaos(0, 'throw-always', dir), chaos.chaos(1, 'exit-always', dir), chaos.chaos(2, 'kill-always', dir)],
    { settle: true, concurrency: 3, retries: { retries: 2, delay: 10, backoff: 'exponential' }, output: 'ignore' },
  ).toOrderedArray();
  const errors = outcomes.map((o) => (o as TaskFailure).reason);
  t.deepEqual(errors.map((e) => [e.kind, e.attempt]), [['threw', 3], ['exited', 3], ['signaled', 3]]);
  // Its executions may outnumber its attempts: run in a worker just before task 2, whose SIGKILL
  // takes the results that worker had not sent yet, it runs again, and that is not a new attempt.
  t.regex(errors[0]!.message, /^task #0 \(chaos-tasks\.ts#chaos\) threw on attempt 3 Error: chaos: task 0 throws on execution \d+$/);
  t.regex(errors[1]!.message, /^task #1 \(chaos-tasks\.ts#chaos\) exited with code 3 on attempt 3/);
  t.regex(errors[2]!.message, /^task #2 \(chaos-tasks\.ts#chaos\) was killed by SIGKILL on attempt 3/);
});

test('retries: a timeout is retried by default, and the retry gets a fresh timeout', async (t) => {
  const dir = tempDir(t);
  const [value] = await schedule$([chaos.chaos(5, 'hang-once', dir)], { timeout: 500, killTimeout: 100, retries: { retries: 1, delay: 1 }, workerExecArgv })
    .toOrderedArray();
  t.is(value, 16);
});

test('retries: `on` limits which failures are retried', async (t) => {
  const dir = tempDir(t);
  const outcomes = await schedule$([chaos.chaos(0, 'throw-once', dir), chaos.chaos(1, 'exit-once', dir)], {
    settle: true,
    concurrency: 2,
    retries: { retries: 3, delay: 1, on: ['exited'] },
    output: 'ignore',
  }).toOrderedArray();
  t.is((outcomes[0] as TaskFailure).reason.kind, 'threw');
  t.is((outcomes[0] as TaskFailure).reason.attempt, 1, 'a throw was not retried');
  t.like(outcomes[1], { status: 'fulfilled', value: 4, stats: { attempt: 2 } });
});

test("retries: a task's own policy overrides the run's", async (t) => {
  const dir = tempDir(t);
  const outcomes = await schedule$([chaos.task('chaos', [0, 'throw-once', dir], { retries: 1 }), chaos.chaos(1, 'throw-once', dir)], {
    settle: true,
    concurrency: 2,
    retries: 0,
  }).toOrderedArray();
  t.like(outcomes[0], { status: 'fulfilled', value: 1, stats: { attempt: 2 } });
  t.like(outcomes[1], { status: 'rejected', reason: { kind: 'threw', attempt: 1 } });
});

test('every process a retried run started is gone at its end', async (t) => {
  const dir = tempDir(t);
  const before = new Set(readProcs().keys());
  const run = schedule$(
    Array.from({ length: 8 }, (_, i) => chaos.chaos(i, i % 2 ? 'kill-once' : 'exit-once', dir)),
    { concurrency: 2, retries: { retries: 1, delay: 1 }, output: 'ignore' },
  );
  const pids = new Set<number>();
  run.progress$.subscribe(() => run.pids().forEach((p) => pids.add(p)));
  t.deepEqual(await run.toOrderedArray(), Array.from({ length: 8 }, (_, i) => i * 3 + 1));
  t.deepEqual(leftovers(pids, { except: before }), []);
});

test('a run stopped while a timed-out task is being killed counts that task once, as cancelled, and lists it', async (t) => {
  // Its timeout's rejection came once the kill was done, after the stop: the last snapshot
  // counted it as cancelled and as failed (completed + failed + cancelled was 3 of 2), and the
  // terminated run's error did not list it.
  for (const how of ['terminate', 'fail-fast'] as const) {
    const go = join(tempDir(t), 'go');
    const second = how === 'terminate' ? chaos.sleepThen(60_000, 1) : chaos.failWhenFileExists(go);
    const run = schedule$([chaos.task('ignoreSigtermAndHang', [], { timeout: 300 }), second], {
      concurrency: 2, killTimeout: 3_000, output: 'ignore', workerExecArgv, progressInterval: 0,
    });
    const snapshots: Progress[] = [];
    run.progress$.subscribe((p) => snapshots.push(p));
    const pids = new Set<number>();
    run.taskProgress$.subscribe((p) => pids.add((p.value as { pid: number }).pid));
    const outcome = run.toOrderedArray().then(() => undefined, (error: unknown) => error);
    await first(run.taskProgress$, () => true);
    // Past its timeout (300 ms), so its kill waits out killTimeout while the run stops.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    if (how === 'terminate') await run.terminate();
    else writeFileSync(go, '');
    const error = await outcome;
    const last = snapshots.at(-1)!;
    t.is(last.completed + last.failed + last.cancelled + (last.queued ?? 0), last.total!, how);
    if (how === 'terminate') {
      t.true(isRunTerminatedError(error));
      t.deepEqual([last.failed, last.cancelled], [0, 2]);
      t.deepEqual((error as RunTerminatedError).cancelled.map((e) => e.index), [0, 1]);
    } else {
      t.is((error as TaskError).index, 1);
      t.deepEqual([last.failed, last.cancelled], [1, 1]);
    }
    t.deepEqual(leftovers(pids), []);
  }
});
