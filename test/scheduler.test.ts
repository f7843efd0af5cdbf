import { execFile, fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { BehaviorSubject } from 'rxjs';
import { OptionError, RunTerminatedError, TaskError, isTaskError } from '../src/errors.js';
import { optimalConcurrency } from '../src/optimal-concurrency.js';
import { WorkerPool } from '../src/pool.js';
import { schedule$ } from '../src/schedule.js';
import { Scheduler, type ProgressCallback } from '../src/scheduler.js';
import { commandTask, moduleTask, processTask, taskModule, type CommandResult } from '../src/task.js';
import { readProcs } from './fixtures/chaos-procs.js';
import { isAlive, pidsInFiles, stillAlive, until, watchChildPids } from './fixtures/scheduler-helpers.js';

const workUrl = new URL('./fixtures/work.ts', import.meta.url);
const work = taskModule<typeof import('./fixtures/work.js')>(workUrl);
const sw = taskModule<typeof import('./fixtures/scheduler-work.js')>(new URL('./fixtures/scheduler-work.ts', import.meta.url));
const processScript = fileURLToPath(new URL('./fixtures/scheduler-process.ts', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);

/** Records every call of a progress callback. */
function progressLog(): { calls: Array<[number, number]>; onProgress: ProgressCallback } {
  const calls: Array<[number, number]> = [];
  return { calls, onProgress: (finished, total) => calls.push([finished, total]) };
}

// ---------------------------------------------------------------------------------------------
// Construction and options

test('the constructor takes (), (onProgress), (onProgress, options) and (options)', (t) => {
  const onProgress: ProgressCallback = () => {};
  t.notThrows(() => new Scheduler());
  t.notThrows(() => new Scheduler(onProgress));
  t.notThrows(() => new Scheduler(onProgress, { timeout: 1000 }));
  t.notThrows(() => new Scheduler(undefined, { timeout: 1000 }));
  t.notThrows(() => new Scheduler({ onProgress, timeout: 1000 }));
});

test('dynamic maps onto concurrency, cpuThreshold onto cpuTarget', (t) => {
  t.is(new Scheduler().scheduleOptions.concurrency, 'auto');
  t.is(new Scheduler({ dynamic: true }).scheduleOptions.concurrency, 'auto');
  t.is(new Scheduler({ dynamic: false }).scheduleOptions.concurrency, optimalConcurrency());
  t.is(new Scheduler({ concurrency: 3 }).scheduleOptions.concurrency, 3);
  t.is(new Scheduler({ cpuThreshold: 70 }).scheduleOptions.cpuTarget, 70);
  t.is(Scheduler.optimalProcessCount(), optimalConcurrency());
});

test('contradicting or invalid options are an OptionError naming the option', (t) => {
  const option = (fn: () => unknown) => t.throws(fn, { instanceOf: OptionError })?.option;
  t.is(option(() => new Scheduler({ dynamic: false, concurrency: 2 })), 'dynamic');
  t.is(option(() => new Scheduler({ cpuThreshold: 80, cpuTarget: 80 })), 'cpuThreshold');
  t.is(option(() => new Scheduler({ cpuThreshold: 0 })), 'cpuThreshold');
  t.throws(() => new Scheduler({ dynamic: false, cpuThreshold: 70 }), {
    instanceOf: OptionError,
    message: 'options.cpuThreshold must be left out when options.dynamic is false (it only steers dynamic concurrency), got 70',
  });
  t.is(option(() => new Scheduler({ dynamic: false, sampleInterval: 100 })), 'sampleInterval');
  t.throws(() => new Scheduler({ concurrency: 4, cpuThreshold: 70 }), {
    instanceOf: OptionError,
    message: 'options.cpuThreshold only steers automatic concurrency; leave it out with concurrency 4',
  });
  // The Python default threshold with the default band: the limit could never come down.
  t.throws(() => new Scheduler({ cpuThreshold: 95 }), {
    instanceOf: OptionError,
    message: /^options\.cpuThreshold \+ options\.cpuHysteresis must be below 100, got 95 \+ 10/,
  });
  t.is(option(() => new Scheduler({ dynamic: 'yes' as unknown as boolean })), 'dynamic');
  // Refused by the types too (this line would not compile), and at run time for plain JavaScript.
  // @ts-expect-error: onProgress given twice
  t.is(option(() => new Scheduler(() => {}, { onProgress: () => {} })), 'onProgress');
  t.is(option(() => new Scheduler({ onProgress: 42 as unknown as ProgressCallback })), 'onProgress');
  t.is(option(() => new Scheduler({ settle: true } as never)), 'settle');
  // A Python user's names: the message lists the Scheduler's own options (not settle, which it refuses).
  const unknown = t.throws(() => new Scheduler({ cpu_threshold: 80 } as never), { instanceOf: OptionError });
  t.is(unknown.option, 'cpu_threshold');
  t.regex(unknown.message, /^options\.cpu_threshold is not a Scheduler option; the options are onProgress, dynamic, cpuThreshold, concurrency, /);
  t.notRegex(unknown.message, /settle/);
  t.throws(() => new Scheduler(null as never), { instanceOf: OptionError, message: /options must be an object, got null/ });
  // The Python habit: a number where the callback or the options go. Either could be meant.
  t.throws(() => new Scheduler(5 as never), {
    instanceOf: OptionError,
    message: 'new Scheduler(onProgress or options): onProgress must be a function, or options must be an object, got 5',
  });
  t.throws(() => new Scheduler(() => {}, 5 as never), { instanceOf: OptionError, message: 'options must be an object, got 5' });
  t.is(option(() => new Scheduler({ concurrency: 0 })), 'concurrency');
  t.is(option(() => new Scheduler({ progressCallback: () => {} } as never)), 'progressCallback');
  t.throws(() => new Scheduler({ timeout: 5 } as never, {}), { instanceOf: TypeError, message: /first argument must be a function/ });
});

test('add, map, addTask and addProcess check what they are given, before anything runs', (t) => {
  const scheduler = new Scheduler();
  t.throws(() => scheduler.add(42 as never, []), { instanceOf: TypeError, message: /target must be/ });
  t.throws(() => scheduler.add(work as never, []), { instanceOf: TypeError, message: /target must be/ });
  t.throws(() => scheduler.add((() => 'not a task') as never, []), { instanceOf: TypeError, message: /must return a task/ });
  // The Python habit: the work function itself. It ran here; the message says so, and what to do.
  const longCalculation = (x: number, y: number) => [x, y];
  t.throws(() => scheduler.add(longCalculation as never, [1, 2]), {
    instanceOf: TypeError,
    message: /returned an array of 2\. add\(\) calls target here, in this process, to make the task: .* add taskModule\(url\)\.longCalculation/,
  });
  // An async work function: its rejected promise must not become an unhandled rejection.
  const asyncCalculation = async () => {
    throw new Error('ran in the parent');
  };
  t.throws(() => scheduler.add(asyncCalculation as never, []), { instanceOf: TypeError, message: /returned a Promise \(an async function ran here\)/ });
  // Python's pool.map(f, [1, 2, 3]): each item must be a list of arguments.
  t.throws(() => scheduler.map(work.square, [1, 2, 3] as never), {
    instanceOf: TypeError,
    message: 'map(target, argsList): each item of argsList must be an array of arguments, got 1 at position 0; for calls of one argument each, wrap them: [[1], [2], [3]]',
  });
  t.throws(() => scheduler.add({ module: workUrl, export: longCalculation } as never, [1, 2]), {
    instanceOf: TypeError,
    message: "add(target, args): target.export must be the name of the export (a string), got a function: pass its name, 'longCalculation'; a function cannot be sent to a worker",
  });
  // An anonymous one has no name to suggest: the message says which name is meant.
  t.throws(() => scheduler.add({ module: workUrl, export: (() => () => 0)() } as never, []), {
    instanceOf: TypeError,
    message: 'add(target, args): target.export must be the name of the export (a string), got a function: pass the name it is exported under; a function cannot be sent to a worker',
  });
  t.throws(() => scheduler.add(work.square, 3 as never), { instanceOf: TypeError, message: /args must be an array/ });
  t.throws(() => scheduler.add(work.square, [3], { weight: -1 }), { instanceOf: TypeError, message: /weight/ });
  t.throws(() => scheduler.add({ module: './relative.js', export: 'x' }, []), { instanceOf: TypeError, message: /import\.meta\.url/ });
  t.throws(() => scheduler.addTask({ kind: 'module' } as never), { instanceOf: TypeError, message: /addTask/ });
  t.throws(() => scheduler.addProcess('calc.js' as never), { instanceOf: TypeError, message: /addProcess/ });
  t.throws(() => scheduler.map(work.square, [[1], ['x' as unknown as number], 3 as never]), { instanceOf: TypeError });
  t.is(scheduler.tasks.length, 0, 'a map() that throws adds none of its tasks');
});

// ---------------------------------------------------------------------------------------------
// Running

test('results come back in the order tasks were added, whatever the kind of task', async (t) => {
  const scheduler = new Scheduler<unknown>({ concurrency: 3 });
  const indices = [
    scheduler.add(work.square, [3]),
    scheduler.add({ module: workUrl, export: 'inc' }, [41]),
    scheduler.add({ module: 'node:path', export: 'basename' }, ['/tmp/photo.png']),
    scheduler.addTask(commandTask('sh', ['-c', 'echo hi']), { label: 'echo' }),
    scheduler.addProcess(() => fork(processScript, ['21'], { detached: true })),
    ...scheduler.map(sw.slowSquare, [[1, 60], [2, 0], [3, 30]]),
  ];
  t.deepEqual(indices, [0, 1, 2, 3, 4, 5, 6, 7]);
  const results = await scheduler.run();
  t.is(results.length, 8);
  t.deepEqual(results.slice(0, 3), [9, 42, 'photo.png']);
  t.is((results[3] as CommandResult).stdout, 'hi\n');
  t.is((results[4] as [number, number])[0], 42);
  t.deepEqual(results.slice(5), [1, 4, 9]);
});

test('the progress callback gets (0, total) first, then (finished, total) as each task ends', async (t) => {
  const log = progressLog();
  const scheduler = new Scheduler<number>(log.onProgress, { concurrency: 2 });
  scheduler.map(work.square, [[1], [2], [3], [4], [5]]);
  await scheduler.run();
  t.deepEqual(log.calls, [[0, 5], [1, 5], [2, 5], [3, 5], [4, 5], [5, 5]]);
});

test('run() with a signal that has already aborted rejects at once, without calling the progress callback', async (t) => {
  const calls: Array<[number, number]> = [];
  const scheduler = new Scheduler((finished, total) => void calls.push([finished, total]));
  scheduler.add(work.square, [2]);
  const error = await t.throwsAsync(scheduler.run({ signal: AbortSignal.abort(new Error('closed')) }), { instanceOf: RunTerminatedError });
  t.is((error.cause as Error).message, 'closed');
  t.deepEqual(calls, [], 'no (0, total): the run never began');
  t.false(scheduler.isRunning());
});

test('task weights count in progress, like the Python subtasks', async (t) => {
  const log = progressLog();
  const scheduler = new Scheduler<number>(log.onProgress, { concurrency: 2 });
  scheduler.add(work.square, [1], { weight: 5 });
  scheduler.map(work.square, [[2], [3]]);
  scheduler.addTask(work.square(4), { weight: 0 });
  t.deepEqual(await scheduler.run(), [1, 4, 9, 16]);
  t.deepEqual(log.calls[0], [0, 7]);
  t.deepEqual(log.calls.at(-1), [7, 7]);
  t.is(log.calls.length, 5);
  const finished = log.calls.map(([f]) => f);
  t.deepEqual(finished, [...finished].sort((a, b) => a - b), 'finished never goes down');
  t.true(log.calls.every(([, total]) => total === 7));
});

test.serial('run() twice runs every task again; run() during a run rejects and the running one goes on', async (t) => {
  const scheduler = new Scheduler<{ value: number; pid: number }>({ concurrency: 2 });
  scheduler.map(sw.tagged, [[1], [2], [3]]);
  t.false(scheduler.isRunning());
  const first = scheduler.run();
  t.true(scheduler.isRunning());
  await t.throwsAsync(scheduler.run(), { instanceOf: Error, message: /cannot run\(\) it while the scheduler is running/ });
  t.throws(() => scheduler.runBlocking(), { message: /cannot runBlocking\(\) it while the scheduler is running/ });
  t.throws(() => scheduler.add(sw.tagged, [1]), { message: /cannot add a task while the scheduler is running/ });
  const firstResults = await first;
  t.false(scheduler.isRunning(), 'idle as soon as the results are back');
  const secondResults = await scheduler.run();
  t.deepEqual(firstResults.map((r) => r.value), [1, 2, 3]);
  t.deepEqual(secondResults.map((r) => r.value), [1, 2, 3]);
  t.deepEqual(await stillAlive([...firstResults, ...secondResults].map((r) => r.pid)), []);
  // After a run, new tasks may be added; the next run runs all of them.
  scheduler.add(sw.tagged, [4]);
  t.deepEqual((await scheduler.run()).map((r) => r.value), [1, 2, 3, 4]);
});

test.serial('terminate() rejects the run with RunTerminatedError once every process is gone', async (t) => {
  const watch = watchChildPids();
  const scheduler = new Scheduler({ concurrency: 2 });
  scheduler.map(work.hang, [[], [], []]);
  const results = scheduler.run();
  await until(() => watch.seen.size >= 2, 'two workers');
  await scheduler.terminate();
  await t.throwsAsync(results, { instanceOf: RunTerminatedError });
  t.false(scheduler.isRunning());
  const pids = watch.stop();
  t.true(pids.length >= 2);
  t.deepEqual(pids.filter(isAlive), [], 'no process of the run is left when run() rejects');
  await t.notThrowsAsync(scheduler.terminate(), 'terminating an idle scheduler is a no-op');
});

test.serial('once terminate() resolves the scheduler is idle: a Restart button can run() again at once', async (t) => {
  const watch = watchChildPids();
  const scheduler = new Scheduler(() => {}, { concurrency: 1 });
  scheduler.add(work.hang, []);
  const first = scheduler.run();
  first.catch(() => {});
  await until(() => watch.seen.size >= 1, 'a worker');
  await scheduler.terminate();
  t.false(scheduler.isRunning());
  const second = scheduler.run();
  second.catch(() => {});
  t.true(scheduler.isRunning(), 'a new run started');
  await until(() => watch.seen.size >= 2, "the new run's worker");
  await scheduler.terminate();
  await t.throwsAsync(first, { instanceOf: RunTerminatedError });
  await t.throwsAsync(second, { instanceOf: RunTerminatedError });
  t.deepEqual(watch.stop().filter(isAlive), []);
});

const throwingCallbacks: Array<[string, ProgressCallback]> = [
  ['throws', (finished) => {
    if (finished === 1) throw new Error('callback failed');
  }],
  ['is async and rejects', async (finished) => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (finished === 1) throw new Error('callback failed');
  }],
];

for (const [what, callback] of throwingCallbacks) {
  test.serial(`a progress callback that ${what} terminates the run, and run() rejects with its error`, async (t) => {
    const watch = watchChildPids();
    const scheduler = new Scheduler<number>(callback, { concurrency: 2 });
    scheduler.add(work.square, [1]);
    scheduler.map(work.hang, [[], []]);
    await t.throwsAsync(scheduler.run(), { message: 'callback failed' });
    t.deepEqual(watch.stop().filter(isAlive), []);
  });
}

test.serial('an async progress callback: run() settles once the promise of its last call has', async (t) => {
  const seen: number[] = [];
  const slow = new Scheduler<number>(async (finished) => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    seen.push(finished);
  });
  slow.map(work.square, [[2], [3]]);
  t.deepEqual(await slow.run(), [4, 9]);
  t.deepEqual(seen.sort(), [0, 1, 2]);
});

test('a failing task rejects run() with its TaskError, keeping the child error', async (t) => {
  const scheduler = new Scheduler({ concurrency: 2 });
  scheduler.add(work.square, [2]);
  scheduler.add(work.fail, ['boom']);
  const error = await t.throwsAsync(scheduler.run(), { instanceOf: TaskError });
  t.is(error?.index, 1);
  t.is(error?.kind, 'threw');
  t.is(error?.remote?.name, 'CustomError');
});

// ---------------------------------------------------------------------------------------------
// runBlocking

test.serial('runBlocking() returns the ordered results and really blocks the calling thread', (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  let immediateRan = false;
  setImmediate(() => {
    immediateRan = true;
  });
  const seenDuringRun: number[] = [];
  const scheduler = new Scheduler<number>((finished) => seenDuringRun.push(ticks), { concurrency: 2 });
  scheduler.map(sw.slowSquare, [[1, 30], [2, 0], [3, 20], [4, 0]]);
  const results = scheduler.runBlocking();
  clearInterval(timer);
  t.deepEqual(results, [1, 4, 9, 16]);
  t.is(ticks, 0, 'no timer of this thread ran during runBlocking()');
  t.false(immediateRan, 'no setImmediate callback of this thread ran during runBlocking()');
  t.true(seenDuringRun.length >= 2, 'the progress callback ran on this thread during the run');
  t.true(seenDuringRun.every((n) => n === 0));
  t.false(scheduler.isRunning());
});

test.serial('runBlocking() reports weighted progress on the calling thread and leaves no process', (t) => {
  const log = progressLog();
  const scheduler = new Scheduler<{ value: number; pid: number }>(log.onProgress, { concurrency: 2 });
  scheduler.add(sw.tagged, [1], { weight: 3 });
  scheduler.map(sw.tagged, [[2], [3]]);
  const results = scheduler.runBlocking();
  t.deepEqual(results.map((r) => r.value), [1, 2, 3]);
  t.deepEqual(log.calls[0], [0, 5]);
  t.deepEqual(log.calls.at(-1), [5, 5]);
  // The run's processes were gone before runBlocking() returned.
  t.deepEqual(results.map((r) => r.pid).filter(isAlive), []);
});

test.serial('runBlocking() throws the failed task’s TaskError, with its class and fields', (t) => {
  const scheduler = new Scheduler({ concurrency: 2 });
  scheduler.add(work.square, [2]);
  scheduler.add(work.fail, ['boom'], { label: 'the failing one' });
  const error = t.throws(() => scheduler.runBlocking(), { instanceOf: TaskError });
  t.true(isTaskError(error));
  t.is(error?.index, 1);
  t.is(error?.kind, 'threw');
  t.is(error?.label, 'the failing one');
  t.is(error?.remote?.name, 'CustomError');
  t.is((error?.cause as Error).name, 'CustomError');
  t.regex(error?.message ?? '', /task #1 \(the failing one\) threw CustomError: boom/);
  t.regex(error?.stack ?? '', /CustomError/);
});

test.serial('runBlocking() refuses what cannot reach its thread, with a clear error and nothing started', (t) => {
  const withProcess = new Scheduler();
  withProcess.add(work.square, [1]);
  withProcess.addProcess(() => fork(processScript, ['1']));
  t.throws(() => withProcess.runBlocking(), { instanceOf: TypeError, message: /cannot run task #1 \(process\): it is a processTask/ });

  const withSlider = new Scheduler({ concurrency: new BehaviorSubject(2) });
  withSlider.add(work.square, [1]);
  t.throws(() => withSlider.runBlocking(), { instanceOf: TypeError, message: /Observable concurrency/ });

  const pool = new WorkerPool();
  const withPool = new Scheduler({ pool });
  withPool.add(work.square, [1]);
  t.throws(() => withPool.runBlocking(), { instanceOf: TypeError, message: /runBlocking\(\) cannot use a WorkerPool/ });
  void pool.close();

  const withFunction = new Scheduler();
  withFunction.add(work.square, [1]);
  withFunction.addTask(moduleTask(workUrl, 'echo', [() => 1]));
  const error = t.throws(() => withFunction.runBlocking(), { instanceOf: TaskError });
  t.is(error?.kind, 'invalid');
  t.is(error?.index, 1);
  t.regex(error?.message ?? '', /args\[0\] \(a function.*\) cannot be sent to the thread that runs the schedule/, 'names the argument, as run() does');

  const aborted = new Scheduler({ signal: AbortSignal.abort() });
  aborted.add(work.square, [1]);
  t.throws(() => aborted.runBlocking(), { instanceOf: RunTerminatedError });
  t.false(aborted.isRunning());
});

/** A scheduler whose run hangs in two tasks that each start a grandchild, once both have written their pids. */
function hangingBlockingRun(onProgress: ProgressCallback, signal?: AbortSignal): { scheduler: Scheduler; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'aps-blocking-'));
  const scheduler = new Scheduler(onProgress, { concurrency: 3, ...(signal ? { signal } : {}) });
  const files = [join(dir, 'a'), join(dir, 'b')];
  for (const file of files) scheduler.add(sw.spawnGrandchildAndHang, [file]);
  scheduler.add(sw.waitForFiles, [files]); // finishes once both hanging tasks run: the cue to stop
  return { scheduler, dir };
}

test.serial('terminate() or aborting the signal from the progress callback stops runBlocking(), leaving no process', (t) => {
  for (const how of ['terminate', 'abort'] as const) {
    const controller = new AbortController();
    const { scheduler, dir } = hangingBlockingRun((finished) => {
      if (finished !== 1) return;
      if (how === 'terminate') void scheduler.terminate();
      else controller.abort(new Error('user cancelled'));
    }, controller.signal);
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const error = t.throws(() => scheduler.runBlocking(), { instanceOf: RunTerminatedError });
    if (how === 'abort') t.is((error?.cause as Error).message, 'user cancelled');
    // Across the thread too, the error lists the two tasks it stopped while they ran.
    t.deepEqual(
      error?.cancelled.map((c) => [c.index, c.kind, c instanceof TaskError]),
      [
        [0, 'cancelled', true],
        [1, 'cancelled', true],
      ],
    );
    t.false(scheduler.isRunning());
    const pids = pidsInFiles(dir);
    t.is(pids.length, 4, 'two workers and their grandchildren');
    t.deepEqual(pids.filter(isAlive), [], 'workers and grandchildren are gone when runBlocking() throws');
  }
});

test.serial("runBlocking() with commands leaves no zombie: its thread's guardian is reaped before it ends", async (t) => {
  const zombies = () => [...readProcs().values()].filter((p) => p.ppid === process.pid && p.state === 'Z').map((p) => `${p.comm} ${p.pid}`);
  const before = zombies();
  for (let i = 0; i < 2; i++) {
    const scheduler = new Scheduler({ concurrency: 1 });
    scheduler.addTask(commandTask('true'));
    t.is((scheduler.runBlocking()[0] as CommandResult<string>).exitCode, 0);
  }
  // A zombie is a process that has exited: give the kernel a moment, not the library.
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.deepEqual(zombies().filter((z) => !before.includes(z)), []);
});

test.serial('a progress callback that throws stops runBlocking(), which throws its error', (t) => {
  const { scheduler, dir } = hangingBlockingRun((finished) => {
    if (finished > 0) throw new RangeError('callback failed');
  });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.throws(() => scheduler.runBlocking(), { instanceOf: RangeError, message: 'callback failed' });
  t.false(scheduler.isRunning());
  t.deepEqual(pidsInFiles(dir).filter(isAlive), []);
});

test.serial('runBlocking() gives Buffers back as Buffers, as run() does', async (t) => {
  // Its results come from a worker thread, and a message between threads turns a Buffer into a
  // plain Uint8Array: before, String() of one gave "104,105" and the type still said Buffer.
  const scheduler = new Scheduler<unknown>();
  scheduler.addTask(commandTask('printf', ['hi'], { encoding: 'buffer' }));
  scheduler.add(work.echo, [{ bytes: Buffer.from('hi'), plain: new Uint8Array([1, 2]) }]);
  for (const results of [scheduler.runBlocking(), await scheduler.run()]) {
    const [command, echoed] = results as [CommandResult<Buffer>, { bytes: Buffer; plain: Uint8Array }];
    t.true(Buffer.isBuffer(command.stdout));
    t.is(command.stdout.toString(), 'hi');
    t.true(Buffer.isBuffer(echoed.bytes));
    t.false(Buffer.isBuffer(echoed.plain), 'a Uint8Array stays one');
    t.deepEqual([...echoed.plain], [1, 2]);
  }
});

test.serial("runBlocking()'s first progress callback, (0, total), sees the run: running, add() refused, terminate() stops it", (t) => {
  // Before, it came before the run was marked as running: terminate() did nothing, and add() took
  // a task that was never run.
  let running: boolean | undefined;
  let added: unknown;
  const scheduler: Scheduler<number> = new Scheduler<number>((finished) => {
    if (finished !== 0 || running !== undefined) return;
    running = scheduler.isRunning();
    try {
      scheduler.add(work.square, [3]);
    } catch (error) {
      added = error;
    }
    void scheduler.terminate();
  });
  scheduler.add(work.square, [2]);
  t.throws(() => scheduler.runBlocking(), { instanceOf: RunTerminatedError, message: 'the run was terminated before it started' });
  t.true(running);
  t.true(added instanceof Error);
  t.is(scheduler.tasks.length, 1);
  t.false(scheduler.isRunning());
  t.deepEqual(scheduler.runBlocking(), [4], 'it runs again afterwards');
});

test.serial('an async progress callback of runBlocking() that rejects: a process warning, not an unhandled rejection', async (t) => {
  // Its promise settles only after runBlocking() has returned, with nowhere to report to: before,
  // the rejection went unhandled, which ends a Node program.
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  t.teardown(() => void process.off('warning', onWarning));
  const scheduler = new Scheduler<{ value: number; pid: number }>(async (finished, total) => {
    if (finished === total) throw new RangeError('async callback failed');
  });
  scheduler.add(sw.tagged, [1]);
  t.deepEqual(scheduler.runBlocking().map((r) => r.value), [1]);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(warnings.length, 1);
  t.is(warnings[0]!.name, 'AsyncProcessSchedulerWarning');
  t.is(warnings[0]!.message, 'the progress callback of runBlocking() rejected: RangeError: async callback failed');

  // Whatever it rejects with: a value that cannot be turned into a string made the warning throw.
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  for (const reason of [Object.create(null), proxy]) {
    const odd = new Scheduler<{ value: number; pid: number }>(async (finished, total) => {
      if (finished === total) throw reason;
    });
    odd.add(sw.tagged, [1]);
    t.is(odd.runBlocking().length, 1);
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(warnings.length, 3);
  t.regex(warnings[1]!.message, /^the progress callback of runBlocking\(\) rejected: NonErrorThrown: /);
});

test.serial('runBlocking() works from the compiled library under plain node, without tsx', async (t) => {
  t.timeout(180_000);
  const outDir = join(root, 'scratch', `scheduler-dist-${process.pid}`);
  mkdirSync(outDir, { recursive: true });
  t.teardown(() => rmSync(outDir, { recursive: true, force: true }));
  // Compile only what the Scheduler needs (the worker entries are loaded by URL, so name them too).
  await run(
    process.execPath,
    [
      join(root, 'node_modules/typescript/bin/tsc'),
      ...['src/scheduler.ts', 'src/run-blocking-worker.ts', 'src/child/worker-main.ts', 'src/child/index.ts'].map((f) => join(root, f)),
      '--outDir', outDir, '--rootDir', join(root, 'src'), '--module', 'nodenext', '--moduleResolution', 'nodenext',
      '--target', 'es2022', '--strict', '--skipLibCheck', '--types', 'node',
    ],
    { cwd: root },
  ).catch((error: { stdout?: string }) => t.log(`tsc reported errors (it emits anyway): ${error.stdout?.slice(0, 500)}`));
  const program = join(outDir, 'program.mjs');
  writeFileSync(
    program,
    `import { Scheduler } from './scheduler.js';
    const progress = [];
    const scheduler = new Scheduler((f, total) => progress.push(f + '/' + total), { dynamic: false });
    scheduler.add({ module: 'node:path', export: 'basename' }, ['/a/b.txt']);
    scheduler.add({ module: 'node:path', export: 'join' }, ['x', 'y']);
    const results = scheduler.runBlocking();
    console.log(JSON.stringify({ results, progress, execArgv: process.execArgv }));
    `,
  );
  const { stdout } = await run(process.execPath, [program], { cwd: root, env: { ...process.env, NODE_OPTIONS: '' }, timeout: 120_000 });
  const report = JSON.parse(stdout.trim().split('\n').at(-1)!) as { results: string[]; progress: string[]; execArgv: string[] };
  t.deepEqual(report.execArgv, [], 'no TypeScript loader in play');
  t.deepEqual(report.results, ['b.txt', 'x/y']);
  t.deepEqual(report.progress, ['0/2', '1/2', '2/2']);
});

/** Runs `code` as `node --import tsx --input-type=module -e code`; a forked child that runs the code again exits at once. */
async function runEval(code: string, flags: string[] = []): Promise<string> {
  const guard = "if (process.send) { console.log('a forked worker ran the -e code'); process.exit(0); }\n";
  const { stdout } = await run(process.execPath, ['--import', 'tsx', ...flags, '--input-type=module', '-e', guard + code], {
    cwd: root,
    timeout: 120_000,
  });
  return stdout.trim().split('\n').at(-1)!;
}

const evalProgram = (method: 'run' | 'runBlocking') => `
  const { Scheduler } = await import(${JSON.stringify(join(root, 'src/scheduler.ts'))});
  const scheduler = new Scheduler({ concurrency: 1 });
  scheduler.add({ module: 'node:path', export: 'basename' }, ['/a/b.txt']);
  try {
    console.log(JSON.stringify(await scheduler.${method}()));
  } catch (error) {
    console.log(error.message);
  }
`;

test.serial('runBlocking() works in a program given with node -e', async (t) => {
  t.timeout(180_000);
  t.is(await runEval(evalProgram('runBlocking')), '["b.txt"]');
});

// A thread refuses per-process flags (ERR_WORKER_INVALID_EXEC_ARGV); a server's --max-old-space-size is common.
test.serial("runBlocking() works in a program started with flags a thread may not have, and its workers get them", async (t) => {
  t.timeout(180_000);
  const program = `
    const { Scheduler } = await import(${JSON.stringify(join(root, 'src/scheduler.ts'))});
    const scheduler = new Scheduler({ concurrency: 1 });
    scheduler.add({ module: ${JSON.stringify(workUrl.href)}, export: 'execArgv' }, []);
    try {
      console.log(JSON.stringify(scheduler.runBlocking()[0]));
    } catch (error) {
      console.log(error.message);
    }
  `;
  const flags = ['--max-old-space-size=300', '--title=aps-blocking-test', '--stack-size=900'];
  const output = await runEval(program, flags);
  t.notRegex(output, /invalid execArgv/);
  const workerFlags = JSON.parse(output) as string[];
  for (const flag of flags) t.true(workerFlags.includes(flag), `the worker process got ${flag}: ${output}`);
});

// Workers must not inherit the parent's `-e <code>` / `--input-type`: they would run the parent's program.
test.serial('run() works in a program given with node -e (worker processes must not inherit -e)', async (t) => {
  t.timeout(180_000);
  t.is(await runEval(evalProgram('run')), '["b.txt"]');
});

// ---------------------------------------------------------------------------------------------
// Types (checked by `npm run typecheck`; never executed)

function typeLevelChecks(): void {
  const numbers = new Scheduler<number>();
  numbers.add(work.square, [2]);
  numbers.map(work.square, [[1], [2]]);
  numbers.addTask(work.square(3));
  const frozen = [3] as const;
  numbers.add(work.square, frozen);
  const viaRef: number = numbers.add({ module: workUrl, export: 'square' }, [2]);
  void viaRef;
  const results: Promise<number[]> = numbers.run();
  void results;
  // As the migration guide shows: the scheduler's options make a fail-fast run, typed as one.
  const viaSchedule: Promise<number[]> = schedule$(numbers.tasks, numbers.scheduleOptions).toOrderedArray();
  void viaSchedule;
  // @ts-expect-error: square takes a number
  numbers.add(work.square, ['2']);
  // @ts-expect-error: square takes one argument
  numbers.add(work.square, [1, 2]);
  // @ts-expect-error: add takes two numbers
  numbers.add(sw.add, [1]);
  // @ts-expect-error: greet resolves with a string, not a number
  numbers.add(sw.greet, ['world']);
  // @ts-expect-error: each argument list is checked
  numbers.map(work.square, [[1], ['2']]);
  // @ts-expect-error: a task of another result type
  numbers.addTask(sw.greet('x'));
  // @ts-expect-error: a process factory is not a task factory
  numbers.add(() => fork('calc.js'), []);
  const anything = new Scheduler();
  anything.add(sw.greet, ['world']);
  anything.addTask(processTask(() => fork('calc.js')));
  const hashes = new Scheduler<CommandResult>();
  hashes.add((file: string) => commandTask('sha256sum', [file]), ['a.txt']);
  // @ts-expect-error: the command factory takes a string
  hashes.add((file: string) => commandTask('sha256sum', [file]), [1]);
}
void typeLevelChecks;
