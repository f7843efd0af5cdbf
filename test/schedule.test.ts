import { getEventListeners } from 'node:events';
import { fork, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import test from 'ava';
import { BehaviorSubject, Observable, Subject, finalize, firstValueFrom, lastValueFrom, take, toArray } from 'rxjs';
import {
  RunTerminatedError, TaskError, commandTask, isOptionError, isRunTerminatedError, isTaskError, moduleTask, processTask, schedule$, taskModule, type Progress, type Task, type TaskOutcome,
} from '../src/index.js';
import { MAX_DEPTH, PIPELINE_BUDGET_BYTES } from '../src/runtime/local-runtime.js';
import { first, fixture, isAlive, prng, waitGone, work } from './helpers.js';

const probe = fixture('probe.ts');
type Work = typeof import('./fixtures/work.js');
const typed = taskModule<Work>(work);

test('values come back in input order whatever the completion order', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-order-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const release = join(dir, 'release');
  const random = prng(7);
  // Task 0 ends only once the test has seen another task end: the completion order is certain.
  const tasks = Array.from({ length: 24 }, (_, i) =>
    i === 0 ? moduleTask<number>(probe, 'waitForFile', [release, 0]) : typed.sleepThen(Math.floor(random() * 40), i),
  );
  const run = schedule$(tasks, { concurrency: 4 });
  const completionOrder: number[] = [];
  run.subscribe((r) => {
    completionOrder.push(r.index);
    if (completionOrder.length === 3) writeFileSync(release, '');
  });
  const values = await run.toOrderedArray();
  t.deepEqual(values, tasks.map((_, i) => i));
  t.deepEqual([...completionOrder].sort((a, b) => a - b), values);
  t.true(completionOrder.indexOf(0) >= 3, 'task 0 ended after others, yet comes first');
});

test('ordered$ emits each value as soon as every earlier task has ended', async (t) => {
  const delays = [60, 0, 0, 0];
  const run = schedule$(delays.map((ms, i) => typed.sleepThen(ms, i)), { concurrency: 4 });
  const seen: string[] = [];
  run.subscribe((r) => seen.push(`done ${r.index}`));
  run.ordered$.subscribe((v) => seen.push(`ordered ${v}`));
  await run.toOrderedArray();
  // Index 0 is last to finish, and nothing is ordered before it.
  t.is(seen.indexOf('ordered 0'), seen.indexOf('done 0') + 1);
  t.deepEqual(seen.filter((s) => s.startsWith('ordered')), ['ordered 0', 'ordered 1', 'ordered 2', 'ordered 3']);
});

test('a fixed limit is never exceeded, measured from inside the tasks', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-limit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The first three wait for each other, so the limit is reached however slowly workers start; the rest just occupy 40 ms.
  const tasks = Array.from({ length: 12 }, (_, i) =>
    moduleTask<{ seenAtStart: number; seenAtEnd: number }>(probe, 'occupy', [dir, i, 40, i < 3 ? 3 : 0]),
  );
  const results = await schedule$(tasks, { concurrency: 3 }).toOrderedArray();
  const most = Math.max(...results.flatMap((r) => [r.seenAtStart, r.seenAtEnd]));
  t.true(most <= 3, `saw ${most} tasks at once`);
  t.is(most, 3, 'the limit should be reached');
});

test('progress shows a BehaviorSubject limit from the first snapshot; another Observable\'s once it emits', async (t) => {
  const subject = schedule$([typed.square(2)], { concurrency: new BehaviorSubject(3) });
  const fromSubject: number[] = [];
  subject.progress$.subscribe((p) => fromSubject.push(p.concurrency));
  t.deepEqual(await subject.toOrderedArray(), [4]);
  t.true(fromSubject.length >= 2);
  t.true(fromSubject.every((c) => c === 3), `snapshots: ${fromSubject.join(', ')}`);

  const later = schedule$([typed.square(3)], { concurrency: new Observable<number>((s) => s.next(2)), progressInterval: 0 });
  const fromObservable: number[] = [];
  later.progress$.subscribe((p) => fromObservable.push(p.concurrency));
  t.deepEqual(await later.toOrderedArray(), [9]);
  t.is(fromObservable[0], 0, 'unknown before the run subscribes to it');
  t.is(fromObservable.at(-1), 2);
});

test('an Observable limit of 0 pauses the run: the running task finishes, no other starts until the limit rises', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-pause-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const go = join(dir, 'go');
  const limit$ = new BehaviorSubject(1);
  // The first task runs until told to end, so the pause surely comes while it runs.
  const run = schedule$([typed.untilFile(go, 60_000, 1), typed.sleepThen(10, 2), typed.sleepThen(10, 3)], { concurrency: limit$, progressInterval: 0 });
  const limits: number[] = [];
  run.concurrency$.subscribe((c) => limits.push(c));
  const done = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 1);
  limit$.next(0); // a slider at 0
  writeFileSync(go, '');
  const paused = await first(run.progress$, (p) => p.completed === 1);
  t.like(paused, { state: 'running', concurrency: 0, completed: 1 });
  // Nothing starts while paused (a state, looked at after a while; not a duration).
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.like(await firstValueFrom(run.progress$), { running: 0, completed: 1, queued: 2 });
  limit$.next(2);
  t.deepEqual(await done, [1, 2, 3]);
  t.deepEqual(limits, [1, 0, 2]);
});

test('a Subject of tasks emitted into while the limit is 0 or not known yet: the tasks wait, none is lost', async (t) => {
  // The Subject was subscribed only once a slot was free: these tasks were dropped, and the run
  // completed with [].
  for (const limit$ of [new BehaviorSubject(0), new Subject<number>()]) {
    const tasks$ = new Subject<Task<number>>();
    const run = schedule$(tasks$, { concurrency: limit$, progressInterval: 0 });
    const done = run.toOrderedArray();
    await first(run.progress$, (p) => p.state === 'running');
    tasks$.next(typed.square(3));
    tasks$.next(typed.square(4));
    tasks$.complete();
    // The Subject has completed: how many tasks there are is known, though none has started.
    await first(run.progress$, (p) => p.total === 2);
    t.like(await firstValueFrom(run.progress$), { state: 'running', running: 0, completed: 0, total: 2, queued: 2 });
    limit$.next(2);
    t.deepEqual(await done, [9, 16]);
  }
});

test('an Observable limit: raising starts waiting tasks at once, lowering never kills a running task', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-limit$-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const limit$ = new BehaviorSubject(1);
  // Each of the first three waits until 3 tasks run at once: only a raised limit lets them meet.
  // They meet once two more workers have started, which a loaded machine can stretch to seconds:
  // the wait gives up only after 60 s.
  const tasks = Array.from({ length: 9 }, (_, i) =>
    moduleTask<{ id: number; most: number }>(probe, 'meet', i < 3 ? [dir, i, 3, 60_000] : [dir, i, 1, 30]),
  );
  const run = schedule$(tasks, { concurrency: limit$ });
  const limits: number[] = [];
  run.concurrency$.subscribe((c) => limits.push(c));
  let finished = 0;
  run.progress$.subscribe((p) => {
    if (p.running === 1 && limit$.value === 1 && finished === 0) limit$.next(3);
  });
  run.subscribe(() => {
    if (++finished === 3) limit$.next(1);
  });
  const results = await run.toOrderedArray();
  t.is(results.length, 9, 'lowering the limit lost no task');
  t.is(Math.max(...results.slice(0, 3).map((r) => r.most)), 3, 'raising the limit started waiting tasks');
  t.true(results.every((r) => r.most <= 3));
  // Tasks 3 and 4 may start before the limit is lowered; from task 5 on, each runs alone.
  t.deepEqual(results.slice(5).map((r) => r.most), [1, 1, 1, 1]);
  t.deepEqual(limits, [1, 3, 1]);
});

test('unsubscribing kills every worker and the grandchildren their tasks started', async (t) => {
  const tasks = [0, 1].map(() => moduleTask(probe, 'spawnGrandchildAndHang', []));
  const run = schedule$(tasks, { concurrency: 2, killTimeout: 500 });
  const reports: Array<{ grandchild: number; worker: number }> = [];
  const sub = run.subscribe({ error: () => {} });
  await lastValueFrom(
    run.taskProgress$.pipe(take(2), toArray()),
  ).then((events) => reports.push(...events.map((e) => e.value as { grandchild: number; worker: number })));
  const pids = [...reports.map((r) => r.worker), ...reports.map((r) => r.grandchild)];
  t.is(pids.length, 4);
  t.true(pids.every(isAlive));
  const workers = reports.map((r) => r.worker);
  t.deepEqual(run.pids().sort(), [...workers].sort());
  sub.unsubscribe();
  // Being stopped, not gone yet: the run still lists them (it lists its processes until they exit).
  const listed = run.pids();
  t.deepEqual(workers.filter((pid) => isAlive(pid) && !listed.includes(pid)), [], 'a live worker is still listed');
  await run.terminate();
  t.deepEqual(pids.filter(isAlive), [], 'no worker or grandchild survives');
  t.deepEqual(run.pids(), []);
});

test('a task that ignores SIGTERM is SIGKILLed after killTimeout', async (t) => {
  const run = schedule$([moduleTask(probe, 'ignoreSigtermAndHang', [])], { concurrency: 1, killTimeout: 200 });
  const sub = run.subscribe({ error: () => {} });
  const { value } = await first(run.taskProgress$, () => true);
  const pid = (value as { worker: number }).worker;
  sub.unsubscribe();
  await run.terminate();
  t.false(isAlive(pid));
});

test('waiting tasks never start after termination', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-never-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let pulled = 0;
  function* tasks() {
    for (let i = 0; i < 1000; i++) {
      pulled++;
      yield moduleTask(probe, 'occupy', [dir, i, 10_000]);
    }
  }
  const run = schedule$(tasks(), { concurrency: 2 });
  const sub = run.subscribe({ error: () => {} });
  await first(run.progress$, (p) => p.running === 2);
  sub.unsubscribe();
  await run.terminate();
  t.true(pulled <= 2 * 32 + 1, `pulled ${pulled} of a lazy source`);
  t.deepEqual(run.pids(), []);
});

test('the last snapshot of a terminated run counts the stopped tasks as cancelled, the others as queued', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-cancelled-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = schedule$([0, 1, 2, 3, 4].map((i) => moduleTask(probe, 'occupy', [dir, i, 30_000])), { concurrency: 2 });
  const snapshots: Progress[] = [];
  run.progress$.subscribe((p) => snapshots.push(p));
  const sub = run.subscribe({ error: () => {} });
  await first(run.progress$, (p) => p.running === 2);
  t.like(snapshots.at(-1), { running: 2, cancelled: 0, queued: 3 });
  const pids = run.pids();
  sub.unsubscribe();
  await run.terminate();
  t.like(snapshots.at(-1), { state: 'terminated', total: 5, completed: 0, failed: 0, running: 0, cancelled: 2, queued: 3 });
  t.deepEqual(await waitGone(pids), []);
});

test('isRunTerminatedError checks the brand: a RunTerminatedError of another copy of the library passes, other errors do not', (t) => {
  t.true(isRunTerminatedError(new RunTerminatedError('stopped')));
  // What another copy's instance carries: the same registered symbol, set by its constructor.
  const foreign = Object.defineProperty(new Error('stopped'), Symbol.for('async-process-scheduler.RunTerminatedError'), { value: true });
  t.true(isRunTerminatedError(foreign));
  t.false(isRunTerminatedError(new Error('the run was terminated')));
  t.false(isRunTerminatedError(new TaskError({ kind: 'cancelled', index: 0 })));
  t.false(isRunTerminatedError(null));
  // A guard answers for anything: before, a revoked Proxy made these three throw.
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  const throwing = new Proxy({}, { get: () => { throw new Error('get'); } });
  for (const value of [proxy, throwing]) {
    t.false(isRunTerminatedError(value));
    t.false(isTaskError(value));
    t.false(isOptionError(value));
  }
});

test("a terminated run's RunTerminatedError lists the tasks it stopped while they executed, as 'cancelled' TaskErrors", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-cancelled-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = schedule$([0, 1, 2, 3, 4].map((i) => moduleTask(probe, 'occupy', [dir, i, 30_000])), { concurrency: 2, settle: true });
  const done = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 2);
  const pids = run.pids();
  await run.terminate();
  const error = await done.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.true(error instanceof RunTerminatedError);
  t.true(isRunTerminatedError(error));
  const { cancelled } = error as RunTerminatedError;
  t.deepEqual(
    cancelled.map((c) => [c.index, c.kind, c.isCancelled, c.attempt, c.message]),
    [
      [0, 'cancelled', true, 1, 'task #0 (probe.ts#occupy) was cancelled'],
      [1, 'cancelled', true, 1, 'task #1 (probe.ts#occupy) was cancelled'],
    ],
  );
  t.true(cancelled.every((c) => c instanceof TaskError && c.pid !== undefined && pids.includes(c.pid)), 'each names the process it ran in');
  t.deepEqual(await waitGone(pids), []);
});

// A task between two attempts (its retry delay, its timed-out process being killed) is neither
// running nor queued: it started, and was stopped. Whichever phase the termination finds it in.
for (const [between, task, options] of [
  ['waiting for its retry', typed.reportThenFail(), { retries: { retries: 3, delay: 60_000, jitter: false } }],
  ['timed out, while its process is killed', moduleTask(probe, 'ignoreSigtermAndHang', []), { timeout: 300, killTimeout: 3000, retries: 2 }],
] as const) {
  test(`the last snapshot of a terminated run counts a task between attempts (${between}) as cancelled`, async (t) => {
    const run = schedule$([task], options);
    const snapshots: Progress[] = [];
    run.progress$.subscribe((p) => snapshots.push(p));
    // Both report progress once they run.
    const ran = first(run.taskProgress$, () => true);
    const sub = run.subscribe({ error: () => {} });
    await ran;
    // Most likely past its first attempt by now; the count holds whichever phase it is in.
    await new Promise((resolve) => setTimeout(resolve, 600));
    sub.unsubscribe();
    await run.terminate();
    t.like(snapshots.at(-1), { state: 'terminated', total: 1, completed: 0, failed: 0, running: 0, cancelled: 1, queued: 0 });
  });
}

test('the last snapshot of a run that failed fast counts the task it stopped as cancelled', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-cancelled-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const source = new Subject<Task>();
  const run = schedule$(source, { concurrency: 2 });
  const snapshots: Progress[] = [];
  run.progress$.subscribe((p) => snapshots.push(p));
  const failed = t.throwsAsync(run.toOrderedArray(), { instanceOf: TaskError, message: /task #1 .*boom/ });
  // A Subject keeps nothing for later: the run takes from it once it has started.
  await first(run.progress$, (p) => p.state === 'running');
  // Task 0 runs (its mark is written) when task 1 fails.
  source.next(moduleTask(probe, 'occupy', [dir, 0, 30_000]));
  for (const deadline = Date.now() + 30_000; !existsSync(join(dir, '0')) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
  const pids = run.pids();
  source.next(typed.fail('boom'));
  await failed;
  await run.terminate();
  t.like(snapshots.at(-2), { state: 'stopping', completed: 0, failed: 1, running: 0, cancelled: 1, etaMs: undefined });
  t.like(snapshots.at(-1), { state: 'failed', completed: 0, failed: 1, running: 0, cancelled: 1 });
  t.deepEqual(await waitGone(pids), []);
});

test("progress$ says 'stopping' from terminate() on, while the processes go, and 'terminated' once they are gone", async (t) => {
  // A command that ignores SIGTERM: it goes only at killTimeout's SIGKILL.
  const run = schedule$([commandTask('sh', ['-c', "trap '' TERM; sleep 30"]), commandTask('sleep', ['30'])], { concurrency: 1, killTimeout: 800 });
  const snapshots: Progress[] = [];
  run.progress$.subscribe((p) => snapshots.push(p));
  const done = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 1);
  const pids = run.pids();
  t.is(pids.length, 1);
  const stopped = run.terminate();
  t.like(snapshots.at(-1), { state: 'stopping', total: 2, completed: 0, failed: 0, running: 0, cancelled: 1, queued: 1, etaMs: undefined });
  let last: Progress | undefined;
  run.progress$.subscribe((p) => (last = p));
  t.is(last?.state, 'stopping', 'a late subscriber gets it too');
  t.deepEqual(pids.filter(isAlive), pids, 'its process is still there');
  await stopped;
  t.deepEqual(pids.filter(isAlive), [], 'gone when the run says terminated');
  t.deepEqual([...new Set(snapshots.map((p) => p.state))], ['idle', 'running', 'stopping', 'terminated']);
  t.like(snapshots.at(-1), { state: 'terminated', running: 0, cancelled: 1, queued: 1, etaMs: 0 });
  await t.throwsAsync(done, { instanceOf: RunTerminatedError });
});

test("a run that completes does not go through 'stopping'", async (t) => {
  const run = schedule$([1, 2, 3].map((x) => typed.square(x)), { concurrency: 2, progressInterval: 0 });
  const states = new Set<string>();
  run.progress$.subscribe((p) => states.add(p.state));
  t.deepEqual(await run.toOrderedArray(), [1, 4, 9]);
  await lastValueFrom(run.progress$);
  t.deepEqual([...states], ['idle', 'running', 'completed']);
});

test('a task that throws something other than an Error fails with what it threw, fields included', async (t) => {
  const outcomes = await schedule$([typed.throwValue('just a string'), typed.throwValue({ code: 42, message: 'busy', retryIn: 5 }), typed.throwValue(undefined)], {
    settle: true,
  }).toOrderedArray();
  const reasons = outcomes.map((o) => (o as Extract<TaskOutcome<unknown>, { status: 'rejected' }>).reason);
  t.deepEqual(reasons.map((r) => r.kind), ['threw', 'threw', 'threw']);
  t.like(reasons[0]!.remote, { name: 'NonErrorThrown', message: 'a non-Error value was thrown: "just a string"' });
  t.like(reasons[1]!.remote, { name: 'NonErrorThrown', code: 42, props: { retryIn: 5 } });
  t.regex(reasons[1]!.message, /^task #1 \(work\.ts#throwValue\) threw NonErrorThrown: a non-Error value was thrown: .* with message "busy"$/);
  t.like(reasons[2]!.remote, { name: 'NonErrorThrown', message: 'a non-Error value was thrown: undefined' });
});

test('a task that exits with a code fails with a TaskError saying so, with the tail of its stderr', async (t) => {
  const error = await t.throwsAsync(schedule$([typed.exitWith(3)]).toOrderedArray(), { instanceOf: TaskError });
  t.is(error.kind, 'exited');
  t.is(error.exitCode, 3);
  t.is(error.index, 0);
  t.regex(error.message, /task #0 \(work\.ts#exitWith\) exited with code 3/);
  t.regex(error.stderrTail ?? '', /about to exit with 3/);
});

test('a task killed by a signal fails with the signal; in settle mode the others still finish', async (t) => {
  const run = schedule$([typed.square(2), typed.killSelf('SIGKILL'), typed.exitWith(3), typed.square(4)], { settle: true, concurrency: 2 });
  const outcomes = await run.toOrderedArray();
  t.deepEqual(outcomes.map((o) => o.status), ['fulfilled', 'rejected', 'rejected', 'fulfilled']);
  t.deepEqual(outcomes.filter((o) => o.status === 'fulfilled').map((o) => (o as { value: number }).value), [4, 16]);
  const killed = (outcomes[1] as Extract<TaskOutcome<unknown>, { status: 'rejected' }>).reason;
  t.is(killed.kind, 'signaled');
  t.is(killed.signal, 'SIGKILL');
  t.is(killed.index, 1);
  t.is((outcomes[2] as Extract<TaskOutcome<unknown>, { status: 'rejected' }>).reason.exitCode, 3);
});

test('fail fast: the first failure errors every stream and terminates the rest', async (t) => {
  const run = schedule$([typed.fail('boom'), typed.hang(), typed.hang()], { concurrency: 3 });
  let pids: number[] = [];
  run.progress$.subscribe((p) => {
    if (p.running > 0) pids = [...new Set([...pids, ...run.pids()])];
  });
  const orderedError = lastValueFrom(run.ordered$).catch((e: unknown) => e);
  const error = await t.throwsAsync(run.toOrderedArray(), { instanceOf: TaskError });
  t.is(error, (await orderedError) as TaskError);
  t.is(error.kind, 'threw');
  t.deepEqual(await waitGone(pids, 100), [], 'the hanging tasks were killed before the error was delivered');
});

test("the child's error keeps its class name, message, stack, cause and properties", async (t) => {
  const error = await t.throwsAsync(schedule$([typed.fail('bad input')]).toOrderedArray(), { instanceOf: TaskError });
  t.is(error.remote?.name, 'CustomError');
  t.is(error.remote?.message, 'bad input');
  t.regex(error.remote?.stack ?? '', /fixtures\/work\.ts/);
  t.is((error.remote?.cause as { name: string }).name, 'RangeError');
  t.is((error.remote?.cause as { message: string }).message, 'root cause');
  t.is(error.remote?.props?.detail, 42);
  t.true(error.cause instanceof Error);
  t.is((error.cause as Error).name, 'CustomError');
  t.is(((error.cause as Error).cause as Error).message, 'root cause');
  t.true(isTaskError(error));
});

test("an AggregateError from the child keeps its errors", async (t) => {
  const error = await t.throwsAsync(schedule$([typed.failMany()]).toOrderedArray(), { instanceOf: TaskError });
  t.is(error.remote?.name, 'AggregateError');
  const remote = error.remote?.errors as Array<{ name: string; message: string } | string>;
  t.is(remote.length, 2);
  t.like(remote[0], { name: 'TypeError', message: 'first' });
  t.is(remote[1], 'second');
  const errors = (error.cause as { errors?: unknown[] }).errors;
  t.true(errors?.[0] instanceof Error);
  t.is((errors?.[0] as Error).name, 'TypeError');
  t.is(errors?.[1], 'second');
});

test('arguments and results cross the boundary with structured-clone semantics', async (t) => {
  const value = {
    buffer: Buffer.from('hi'),
    bytes: new Float64Array([1.5, NaN]),
    map: new Map([[1, 'a']]),
    set: new Set([1n]),
    date: new Date(0),
    big: 2n ** 70n,
    nan: NaN,
    nested: [undefined, -0],
  };
  const [back] = await schedule$([moduleTask<typeof value>(work, 'echo', [value])]).toOrderedArray();
  t.deepEqual(back, value);
  t.true(back!.map instanceof Map);
  t.true(back!.bytes instanceof Float64Array);
  t.is(back!.big, 2n ** 70n);
});

test('primitives JSON would change arrive exact, among plain ones in the same batches', async (t) => {
  // A batch of plain values travels as JSON text; any value JSON cannot carry exactly must not.
  // (undefined comes back too: a task that returns nothing fulfills with undefined.)
  const odd = [-0, NaN, Infinity, -Infinity, undefined, 2n, '\ud800 lone', 'quote " and \n', 5e-324, Number.MAX_VALUE, null, true, ''];
  const values = odd.flatMap((value, i) => [i, value, i + 0.5]);
  const back = await schedule$(values.map((value) => moduleTask(work, 'echo', [value])), { concurrency: 2 }).toOrderedArray();
  t.is(back.length, values.length);
  values.forEach((value, i) => t.true(Object.is(back[i], value), `#${i}: sent ${inspect(value)}, got ${inspect(back[i])}`));
});

test('results are not held in a worker behind a long synchronous task', async (t) => {
  // Tiny tasks first, so the worker has the long ones queued behind them in one batch. A result
  // waiting in the worker's outbox would reach the parent only after the next task ended.
  const tasks = [
    ...Array.from({ length: 300 }, (_, i) => moduleTask<unknown>(work, 'square', [i])),
    // Long enough that a parent slowed down by a crowded host still reads a result sent at once
    // before the next task ends.
    ...Array.from({ length: 2 }, () => moduleTask<unknown>(work, 'spin', [1500])),
  ];
  const arrived: number[] = [];
  const run = schedule$(tasks, { concurrency: 1 });
  run.subscribe((c) => (arrived[c.index] = Date.now()));
  const values = await run.toOrderedArray();
  const ends = values.slice(300).map((v) => (v as { end: number }).end);
  t.true(arrived[299]! < ends[0]!, `the last tiny task's result came ${arrived[299]! - ends[0]!} ms after the first long task ended`);
  t.true(arrived[300]! < ends[1]!, `the first long task's result came ${arrived[300]! - ends[1]!} ms after the second one ended`);
});

test('tiny tasks sent ahead to a worker busy with a long async task move to an idle one', async (t) => {
  // The tiny tasks after the slow one are split between the two workers as they are taken in;
  // those sent to the slow task's worker would wait for it while the other worker had nothing
  // left to do. They move instead, and every one of them ends while the slow task still waits:
  // it waits for a file the test writes only once all the others have ended (or 60 s, and then
  // it returns -2 and the test fails).
  const dir = mkdtempSync(join(tmpdir(), 'aps-move-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const release = join(dir, 'release');
  const slow = 1500;
  const count = 3000;
  const tasks = Array.from({ length: count }, (_, i) => (i === slow ? moduleTask<number>(work, 'untilFile', [release, 60_000, -1]) : moduleTask<number>(work, 'square', [i])));
  const run = schedule$(tasks, { concurrency: 2 });
  let ended = 0;
  run.subscribe((c) => {
    if (c.index !== slow && ++ended === count - 1) writeFileSync(release, '');
  });
  const values = await run.toOrderedArray();
  t.is(values[slow], -1, 'the slow task was not released: some tiny tasks waited behind it');
  t.true(values.every((v, i) => i === slow || v === i * i));
  t.deepEqual(run.pids(), []);
});

/**
 * How far a lazy source runs ahead of the completions: call pulled() as it yields a task counted,
 * ended() as such a task ends; `most` is the largest gap seen.
 */
function lookahead() {
  return {
    pulled: 0,
    ended: 0,
    most: 0,
    pull(): void {
      this.pulled++;
      this.most = Math.max(this.most, this.pulled - this.ended);
    },
    end(): void {
      this.ended++;
    },
  };
}

test('a lazy generator is pulled only as slots free up', async (t) => {
  // In flight at most: 2 workers × the deepest pipeline (MAX_DEPTH tasks each). How far the source
  // runs ahead of the completions is what is bounded; how many tasks end before the first five
  // in input order depends on how far apart the two workers start, so that is not asserted.
  const bound = 2 * MAX_DEPTH;
  const ahead = lookahead();
  function* million() {
    for (let i = 0; i < 1_000_000; i++) {
      ahead.pull();
      yield typed.square(i);
    }
  }
  const run = schedule$(million(), { concurrency: 2 });
  const counting = run.subscribe(() => ahead.end());
  t.teardown(() => counting.unsubscribe());
  const firstFive = await lastValueFrom(run.ordered$.pipe(take(5), toArray()));
  counting.unsubscribe();
  // Unsubscribed: the run is terminated; its workers are gone once terminate() resolves.
  await run.terminate();
  t.deepEqual(run.pids(), []);
  t.deepEqual(firstFive, [0, 1, 4, 9, 16]);
  t.true(ahead.pulled > 5 && ahead.pulled < 1_000_000, `pulled ${ahead.pulled}`);
  t.true(ahead.most <= bound, `the source ran ${ahead.most} tasks ahead of the completions`);
  t.log(`pulled ${ahead.pulled}, ended ${ahead.ended}, at most ${ahead.most} ahead`);
});

test('a lazy source of tasks with large arguments is pulled only as far as the byte budget allows', async (t) => {
  // Each task's argument is a little over half the budget: a lane takes one at a time, and the
  // source runs a few tasks ahead of the completions, not the hundreds that tiny tasks would allow.
  const size = PIPELINE_BUDGET_BYTES / 2;
  const ahead = lookahead();
  function* large() {
    for (let i = 0; i < 300; i++) {
      ahead.pull();
      yield moduleTask<number>(work, 'echo', [new Uint8Array(size).fill(i & 255)]);
    }
  }
  const run = schedule$(large(), { concurrency: 2 });
  run.subscribe(() => ahead.end());
  const values = (await run.toOrderedArray()) as unknown as Uint8Array[];
  t.is(values.length, 300);
  t.true(values.every((v, i) => v.length === size && v[0] === (i & 255)));
  t.true(ahead.most <= 16, `the source ran ${ahead.most} tasks ahead of the completions`);
  t.deepEqual(run.pids(), []);
  t.log(`at most ${ahead.most} ahead`);
});

test('large tasks after tiny ones: the run admits only a few of them, not the depth the tiny ones had', async (t) => {
  // The depth tiny tasks reach (hundreds a slot) drops as the first large tasks start, not once
  // they are sent (which waits for the tiny ones ahead): the run pulls only a few large tasks ahead.
  const size = PIPELINE_BUDGET_BYTES / 2;
  const large = lookahead();
  function* source() {
    for (let i = 0; i < 2000; i++) yield typed.square(i);
    for (let i = 0; i < 60; i++) {
      large.pull();
      yield moduleTask<number>(work, 'echo', [new Uint8Array(size)]);
    }
  }
  const run = schedule$(source(), { concurrency: 2 });
  run.subscribe((r) => {
    if (r.index >= 2000) large.end();
  });
  const values = await run.toOrderedArray();
  t.is(values.length, 2060);
  t.true(large.most <= 8, `${large.most} large tasks were admitted at once`);
  t.deepEqual(run.pids(), []);
  t.log(`at most ${large.most} large tasks admitted at once`);
});

test('async iterables and Observables are task sources too', async (t) => {
  async function* gen() {
    for (let i = 1; i <= 3; i++) {
      await new Promise((r) => setTimeout(r, 5));
      yield typed.square(i);
    }
  }
  t.deepEqual(await schedule$(gen(), { concurrency: 2 }).toOrderedArray(), [1, 4, 9]);
  const source = new Observable<ReturnType<typeof typed.square>>((s) => {
    s.next(typed.square(5));
    setTimeout(() => {
      s.next(typed.square(6));
      s.complete();
    }, 10);
  });
  t.deepEqual(await schedule$(source, { concurrency: 2 }).toOrderedArray(), [25, 36]);
});

test('a source that errors errors the run, and its processes are gone', async (t) => {
  async function* gen() {
    yield typed.square(1);
    await new Promise((r) => setTimeout(r, 20));
    throw new Error('source broke');
  }
  const run = schedule$(gen(), { concurrency: 1 });
  await t.throwsAsync(run.toOrderedArray(), { message: 'source broke' });
  t.deepEqual(run.pids(), []);
});

test('commandTask runs a program without a shell and resolves with its output', async (t) => {
  const [result] = await schedule$([commandTask('sh', ['-c', 'echo "$0 $1"', 'a b', '$HOME'])]).toOrderedArray();
  t.is(result!.stdout, 'a b $HOME\n');
  t.is(result!.exitCode, 0);
  t.is(result!.signal, null);
  t.true(result!.durationMs >= 0);
});

test('commandTask: a non-zero exit fails unless reject is false', async (t) => {
  const error = await t.throwsAsync(schedule$([commandTask('sh', ['-c', 'echo oops >&2; exit 4'])]).toOrderedArray(), { instanceOf: TaskError });
  t.is(error.kind, 'exited');
  t.is(error.exitCode, 4);
  t.is(error.stderrTail, 'oops\n');
  const [result] = await schedule$([commandTask('sh', ['-c', 'exit 4'], { reject: false })]).toOrderedArray();
  t.is(result!.exitCode, 4);
});

test('commandTask: a program that does not exist fails with ENOENT, naming the task', async (t) => {
  const error = await t.throwsAsync(schedule$([typed.square(1), commandTask('no-such-program-aps', [])], { concurrency: 1 }).toOrderedArray(), {
    instanceOf: TaskError,
  });
  t.is(error.kind, 'invalid');
  t.is(error.index, 1);
  t.is(error.remote?.code, 'ENOENT');
  t.regex(error.message, /command not found: no-such-program-aps/);
});

test('processTask: the first IPC message is the result; progress messages come through', async (t) => {
  const script = fixture('send-result.ts');
  const run = schedule$([1, 2, 3].map((n) => processTask<number>(() => fork(script, [String(n)], { detached: true }))), { concurrency: 2 });
  const progress: unknown[] = [];
  run.taskProgress$.subscribe((p) => progress.push(p.value));
  t.deepEqual(await run.toOrderedArray(), [2, 4, 6]);
  t.deepEqual(progress, ['halfway', 'halfway', 'halfway']);
});

test('processTask: messages after the first are ignored, and the program goes on', async (t) => {
  // Messages that came in one read with the result are delivered after it, once the channel is
  // closed: with no listener left, Node threw from its own code, an uncaught exception here.
  const chatty = () => spawn(process.execPath, ['-e', 'for (let i = 1; i < 50; i++) process.send(i)'], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const run = schedule$(Array.from({ length: 4 }, () => processTask<number>(chatty)), { concurrency: 2 });
  t.deepEqual(await run.toOrderedArray(), [1, 1, 1, 1]);
  // The messages queued behind a result are emitted on the next ticks.
  await new Promise((resolve) => setTimeout(resolve, 50));
});

test('processTask: exiting without a result is a failure that says so', async (t) => {
  const script = fixture('send-result.ts');
  const outcomes = await schedule$(
    [processTask(() => fork(script, ['1', 'exit-silently'])), processTask(() => fork(script, ['1', 'exit-5']))],
    { settle: true },
  ).toOrderedArray();
  const [silent, five] = outcomes.map((o) => (o.status === 'rejected' ? o.reason : undefined));
  t.is(silent?.kind, 'exited');
  t.regex(silent?.message ?? '', /exited with code 0: it sent no result$/);
  t.is(five?.exitCode, 5);
  t.regex(five?.message ?? '', /exited with code 5: it sent no result$/);
});

test('task progress from inside a worker reaches taskProgress$ with the task index', async (t) => {
  // Every report (reports within progressInterval of each other are coalesced: task-progress.test.ts).
  const run = schedule$([typed.withProgress(3), typed.withProgress(2)], { concurrency: 1, progressInterval: 0 });
  const events: Array<{ index: number; value: unknown }> = [];
  run.taskProgress$.subscribe((e) => events.push(e));
  t.deepEqual(await run.toOrderedArray(), [3, 2]);
  t.deepEqual(events, [
    { index: 0, value: { step: 1, of: 3 } },
    { index: 0, value: { step: 2, of: 3 } },
    { index: 0, value: { step: 3, of: 3 } },
    { index: 1, value: { step: 1, of: 2 } },
    { index: 1, value: { step: 2, of: 2 } },
  ]);
});

test("what a task's timer reports after the task has ended is dropped, not credited to the task running then; what it prints is marked as its own", async (t) => {
  // Task 0 returns at once; its timer fires 150 ms later, while task 1 (600 ms) runs on the same worker.
  const quiet = schedule$([typed.leaveBehind('A', 150, false), typed.sleepThen(600, 2)], { concurrency: 1 });
  const reports: Array<{ index: number; value: unknown }> = [];
  quiet.taskProgress$.subscribe((e) => reports.push(e));
  t.deepEqual(await quiet.toOrderedArray(), ['A', 2]);
  t.deepEqual(reports, [], "task 0's late report is not task 1's progress");

  const captured = schedule$([typed.leaveBehind('A', 150, true), typed.sleepThen(600, 2)], { concurrency: 1, output: 'capture' });
  const lines: Array<[number | undefined, string]> = [];
  captured.output$.subscribe((l) => lines.push([l.index, l.line]));
  const captureReports: unknown[] = [];
  captured.taskProgress$.subscribe((e) => captureReports.push(e));
  t.deepEqual(await captured.toOrderedArray(), ['A', 2]);
  await lastValueFrom(captured.output$, { defaultValue: undefined });
  t.deepEqual(lines, [[0, 'late line from A']]);
  t.deepEqual(captureReports, []);
});

test('progress$ replays the latest snapshot and ends with consistent counts', async (t) => {
  const run = schedule$([1, 2, 3, 4, 5].map((x) => typed.square(x)), { concurrency: 2, progressInterval: 0 });
  const idle = await first(run.progress$, () => true);
  t.is(idle.state, 'idle');
  t.is(idle.total, 5);
  const etas: number[] = [];
  run.progress$.subscribe((p) => p.state === 'running' && p.etaMs !== undefined && etas.push(p.etaMs));
  await run.toOrderedArray();
  const last = await lastValueFrom(run.progress$);
  t.true(etas.length > 0, 'an estimate while the run went on');
  t.true(etas.every(Number.isInteger), `whole milliseconds: ${etas.join(', ')}`);
  t.like(last, { state: 'completed', total: 5, completed: 5, failed: 0, running: 0, queued: 0, etaMs: 0, weightDone: 5, weightTotal: 5 });
  t.true(Number.isInteger(last.elapsedMs) && last.elapsedMs > 0, `whole milliseconds: ${last.elapsedMs}`);
});

test('an array changed between schedule$ and the start: the last snapshot weighs what ran', async (t) => {
  // The array is read as the run pulls from it; its weights were summed by schedule$. Before,
  // the last snapshot said weightDone 5 of 3 (two tasks pushed) or 2 of 3 (one popped).
  for (const change of ['push', 'pop'] as const) {
    const tasks = [1, 2, 3].map((x) => typed.square(x));
    const run = schedule$(tasks, { concurrency: 1, progressInterval: 0 });
    if (change === 'push') tasks.push(typed.square(4), moduleTask(work, 'square', [5], { weight: 3 }));
    else tasks.pop();
    const values = await run.toOrderedArray();
    const last = await lastValueFrom(run.progress$);
    const total = change === 'push' ? 5 : 2;
    t.is(values.length, total);
    t.like(last, { state: 'completed', total, completed: total, weightDone: change === 'push' ? 7 : 2, weightTotal: change === 'push' ? 7 : 2 }, change);
  }
});

test("progress$: a run's first change shows at once, however young the process; progressInterval spaces the later ones", async (t) => {
  // An interval longer than this process has lived: counted from the process's start (as it
  // was), the first change would wait out the rest of it, and the run would go from idle to done.
  const run = schedule$([typed.pidAfter(300)], { concurrency: 1, progressInterval: 2 ** 31 - 1 });
  const states: string[] = [];
  run.progress$.subscribe((p) => states.push(p.state));
  const [pid] = await run.toOrderedArray();
  await lastValueFrom(run.progress$);
  t.deepEqual(states, ['idle', 'running', 'completed']);
  t.deepEqual(await waitGone([pid!]), []);
});

test('maxTasksPerWorker: 1 runs every task in a fresh process', async (t) => {
  const pids = await schedule$([1, 2, 3, 4].map(() => typed.pid()), { concurrency: 2, maxTasksPerWorker: 1 }).toOrderedArray();
  t.is(new Set(pids).size, 4);
  t.deepEqual(await waitGone(pids, 100), []);
});

test('warm workers are reused by default', async (t) => {
  const pids = await schedule$(Array.from({ length: 8 }, () => typed.pid()), { concurrency: 2 }).toOrderedArray();
  t.true(new Set(pids).size <= 2);
});

test('a workerEnv value of undefined leaves that variable out of the workers, which still run (the FAQ drops NODE_EXTRA_CA_CERTS so)', async (t) => {
  t.truthy(process.env.PATH, 'this test needs a variable the parent always has');
  const [[pid, dropped]] = (await schedule$([typed.pidAndEnv('PATH')], { concurrency: 1, workerEnv: { ...process.env, PATH: undefined } }).toOrderedArray()) as [[number, string | undefined]];
  t.is(dropped, undefined);
  const [[, inherited]] = (await schedule$([typed.pidAndEnv('PATH')], { concurrency: 1 }).toOrderedArray()) as [[number, string | undefined]];
  t.is(inherited, process.env.PATH, "without workerEnv, the parent's value");
  t.deepEqual(await waitGone([pid]), []);
});

test("a workerEnv with Node's own IPC channel variables still reaches its workers", async (t) => {
  // Copied from a process that was forked, say: the worker would read its channel as JSON while
  // the parent writes V8's format, and the run would wait for workers that never answer.
  const workerEnv = { ...process.env, NODE_CHANNEL_SERIALIZATION_MODE: 'json', NODE_CHANNEL_FD: '7' };
  const [[pid, mode]] = (await schedule$([typed.pidAndEnv('NODE_CHANNEL_SERIALIZATION_MODE')], { concurrency: 1, workerEnv, workerStartTimeout: 5000 }).toOrderedArray()) as [[number, string | undefined]];
  t.true(pid > 0);
  t.is(mode, undefined, 'Node takes its channel variables out of the environment it hands the worker');
  t.deepEqual(await waitGone([pid]), []);
});

test('aborting the signal terminates the run with RunTerminatedError and kills its processes', async (t) => {
  const controller = new AbortController();
  const run = schedule$([typed.hang(), typed.hang()], { concurrency: 2, signal: controller.signal, killTimeout: 500 });
  const result = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 2);
  const pids = run.pids();
  t.is(pids.length, 2);
  controller.abort(new Error('user pressed cancel'));
  const error = await t.throwsAsync(result, { instanceOf: RunTerminatedError });
  t.is((error.cause as Error).message, 'user pressed cancel');
  t.deepEqual(pids.filter(isAlive), []);
});

test('aborting the signal of a run nobody has subscribed to yet ends it, as terminate() would: progress$ says so, and no task runs', async (t) => {
  const controller = new AbortController();
  const run = schedule$([typed.pid()], { signal: controller.signal });
  const states: string[] = [];
  run.progress$.subscribe((p) => states.push(p.state));
  controller.abort(new Error('the user closed the window'));
  const last = await lastValueFrom(run.progress$);
  t.like(last, { state: 'terminated', completed: 0, cancelled: 0, queued: 1 });
  t.deepEqual(states, ['idle', 'terminated']);
  const error = await t.throwsAsync(run.toOrderedArray(), { instanceOf: RunTerminatedError, message: 'the run was aborted before it started' });
  t.is((error.cause as Error).message, 'the user closed the window');
  t.deepEqual(run.pids(), []);
  t.is(getEventListeners(controller.signal, 'abort').length, 0);
});

test('a run given a signal that has already aborted is terminated from the start', async (t) => {
  const run = schedule$([typed.pid()], { signal: AbortSignal.abort(new Error('too late')) });
  t.is((await lastValueFrom(run.progress$)).state, 'terminated');
  const error = await t.throwsAsync(lastValueFrom(run), { instanceOf: RunTerminatedError, message: 'the run was aborted before it started' });
  t.is((error.cause as Error).message, 'too late');
});

test('runs that share one signal add one listener to it, not one each (no leak warning past ten), and all end on abort', async (t) => {
  const controller = new AbortController();
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  t.teardown(() => void process.off('warning', onWarning));
  // Commands: twelve sleeps are cheaper to start than twelve workers.
  const runs = Array.from({ length: 12 }, () => schedule$([commandTask('sleep', ['30'])], { concurrency: 1, signal: controller.signal, killTimeout: 500 }));
  const results = runs.map((run) => run.toOrderedArray());
  await Promise.all(runs.map((run) => first(run.progress$, (p) => p.running === 1)));
  t.is(getEventListeners(controller.signal, 'abort').length, 1);
  const done = schedule$([typed.square(3)], { signal: controller.signal });
  t.deepEqual(await done.toOrderedArray(), [9], 'a run beside them ends as usual');
  const pids = runs.flatMap((run) => run.pids());
  controller.abort(new Error('shutting down'));
  for (const result of results) await t.throwsAsync(result, { instanceOf: RunTerminatedError });
  t.deepEqual(pids.filter(isAlive), []);
  t.is(getEventListeners(controller.signal, 'abort').length, 0);
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(warnings.map((w) => w.message).filter((m) => /abort listeners/.test(m)), []);
});

test('the last subscriber leaving on the last value does not make a run whose tasks have all ended a terminated one', async (t) => {
  const one = schedule$([typed.square(3)]);
  const states: string[] = [];
  one.progress$.subscribe((p) => states.push(p.state));
  t.is((await firstValueFrom(one)).value, 9);
  await lastValueFrom(one.progress$);
  t.is(states.at(-1), 'completed');
  t.deepEqual(await lastValueFrom(one.pipe(toArray())), [], 'a later subscriber gets the completion, not an error');

  const three = schedule$([1, 2, 3].map((x) => typed.square(x)), { concurrency: 1 });
  t.deepEqual(await lastValueFrom(three.ordered$.pipe(take(3), toArray())), [1, 4, 9]);
  t.is((await lastValueFrom(three.progress$)).state, 'completed');
});

test("the last subscriber leaving on a generator's last value terminates the run: it could not know the task was the last (documented)", async (t) => {
  function* oneTask() {
    yield typed.sleepThen(100, 9);
  }
  // One slot, busy for the task's 100 ms: the generator is asked again only after the result went out.
  const run = schedule$(oneTask(), { concurrency: 1 });
  t.is((await firstValueFrom(run)).value, 9);
  const last = await lastValueFrom(run.progress$);
  t.like(last, { state: 'terminated', total: undefined, completed: 1, cancelled: 0 });
  await t.throwsAsync(lastValueFrom(run), { instanceOf: RunTerminatedError });
});

test('a subscriber that comes while a run is stopping gets the end with everyone else, once its processes are gone', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', "trap '' TERM; sleep 30"])], { killTimeout: 800 });
  const early = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 1);
  const pids = run.pids();
  t.is(pids.length, 1);
  void run.terminate();
  const late = await new Promise<{ alive: number[] }>((resolve) =>
    run.subscribe({ error: () => resolve({ alive: pids.filter(isAlive) }) }),
  );
  t.deepEqual(late.alive, [], 'its processes were gone when the late subscriber got the end');
  await t.throwsAsync(early, { instanceOf: RunTerminatedError });
});

test("a subscriber that comes from the run's own teardown (its source's finalize) also gets the end once the processes are gone", async (t) => {
  const source = new Subject<Task>();
  let pids: number[] = [];
  let late: Promise<number[]> | undefined;
  const run = schedule$(
    source.pipe(
      finalize(() => {
        late = new Promise((resolve) => run.subscribe({ error: () => resolve(pids.filter(isAlive)) }));
      }),
    ),
    { concurrency: 1, killTimeout: 800 },
  );
  const early = run.toOrderedArray();
  await first(run.progress$, (p) => p.state === 'running'); // subscribed to the source
  source.next(commandTask('sh', ['-c', "trap '' TERM; sleep 30"]));
  await first(run.progress$, (p) => p.running === 1);
  pids = run.pids();
  t.is(pids.length, 1);
  void run.terminate();
  t.truthy(late, 'the teardown ran, and subscribed');
  t.deepEqual(await late, [], 'its processes were gone when the late subscriber got the end');
  await t.throwsAsync(early, { instanceOf: RunTerminatedError });
});

test('a subscriber that leaves in the same synchronous block starts nothing; the next one starts the run', async (t) => {
  const run = schedule$([typed.pid()], { concurrency: 1 });
  run.subscribe().unsubscribe();
  const snapshots: string[] = [];
  run.progress$.subscribe((p) => snapshots.push(p.state));
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(snapshots, ['idle'], 'not started, not ended');
  t.deepEqual(run.pids(), []);
  const [pid] = await run.toOrderedArray();
  t.true(typeof pid === 'number');
  t.is(snapshots.at(-1), 'completed');
});

test('one run executes once: subscribers share it, and a late subscriber after the end gets the end', async (t) => {
  const run = schedule$([1, 2, 3].map((x) => typed.pid()), { concurrency: 1 });
  const a = lastValueFrom(run.pipe(toArray()));
  const b = lastValueFrom(run.pipe(toArray()));
  const [ra, rb] = await Promise.all([a, b]);
  t.is(ra.length, 3);
  t.deepEqual(ra, rb, 'both subscribers saw the same completions');
  t.is(new Set(ra.map((r) => r.value)).size, 1, 'one worker ran everything, once');
  const late = await lastValueFrom(run.pipe(toArray()));
  t.deepEqual(late, [], 'after the end, a new subscriber gets only the completion');
  await t.throwsAsync(run.toOrderedArray(), { message: /toOrderedArray\(\) was first called after/ });
  t.is((await lastValueFrom(run.progress$)).completed, 3, 'progress$ still gives the last snapshot');
});

test('toOrderedArray called after values were emitted rejects instead of returning a partial array', async (t) => {
  const run = schedule$([1, 2].map((x) => typed.sleepThen(x * 30, x)), { concurrency: 1 });
  const seen: number[] = [];
  await new Promise<void>((resolve) => run.ordered$.subscribe({ next: (v) => (seen.push(v), resolve()), error: () => {} }));
  await t.throwsAsync(run.toOrderedArray(), { message: /toOrderedArray\(\) was first called after/ });
  await run.terminate();
});

test('a per-task timeout kills the task and reports a timeout; retries carry the attempt number', async (t) => {
  const timedOut = await t.throwsAsync(schedule$([typed.hang()], { timeout: 100, killTimeout: 200 }).toOrderedArray(), { instanceOf: TaskError });
  t.is(timedOut.kind, 'timeout');
  t.true(timedOut.timedOut);
  t.regex(timedOut.message, /timed out.*longer than 100 ms/);
  const retried = await t.throwsAsync(schedule$([typed.fail('again')], { retries: { retries: 2, delay: 1 } }).toOrderedArray(), {
    instanceOf: TaskError,
  });
  t.is(retried.attempt, 3);
  t.regex(retried.message, /on attempt 3/);
});

test('a taskModule handle logs and prints as its module, awaits as itself, and still makes tasks of any export name', async (t) => {
  // A template made a task for an export named toString and threw "Cannot convert object to
  // primitive value"; console.log showed {}.
  t.is(`${typed}`, `taskModule(${work.href})`);
  t.is(String(typed), `taskModule(${work.href})`);
  t.is(inspect(typed), `taskModule(${work.href})`);
  // Nothing else shows through: it is no { module, export } reference, and has no keys.
  t.false('module' in typed);
  // Read through the Proxy, as inspectors do (chai's loupe): the trap must give what the target holds.
  t.is((typed as unknown as Record<symbol, () => string>)[inspect.custom]!(), `taskModule(${work.href})`);
  t.is(typeof Reflect.get(typed, Symbol.for('nodejs.util.inspect.custom')), 'function');
  t.deepEqual([Object.keys(typed), { ...typed }], [[], {}]);
  t.is(await Promise.resolve(typed), typed, 'not a thenable');
  const loose = taskModule<Record<string, (...args: unknown[]) => unknown>>(work);
  t.like(loose['module']!(1), { kind: 'module', module: work.href, exportName: 'module', args: [1] });
  t.like(loose.task('then', [2]), { exportName: 'then', args: [2] });
  t.deepEqual(await schedule$([typed.square(3)]).toOrderedArray(), [9]);
});
