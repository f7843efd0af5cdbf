/**
 * `Scheduler`: the Python library's API (add tasks, run them, get an ordered list), built on
 * {@link schedule$}. For streams of results, progress and concurrency, use `schedule$` itself;
 * `schedule$(scheduler.tasks, scheduler.scheduleOptions)` runs the same tasks the same way.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import { deserialize, serialize } from 'node:v8';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { isObservable } from 'rxjs';
import { whenAborted } from './abort.js';
import { argumentName, formatValue, OptionError, RunTerminatedError, TaskError, warnOfThrown } from './errors.js';
import { optimalConcurrency } from './optimal-concurrency.js';
import { AUTO_ONLY, KNOWN, checkOptionsObject, checkTaskOptions, resolveOptions, unknownKey, type ScheduleOptions } from './options.js';
import {
  BLOCKING_BOOTSTRAP, reviveError, threadExecArgv, toBlockingTaskSpec,
  type BlockingControlMessage, type BlockingRunMessage, type BlockingRunRequest, type BlockingTaskSpec, type BlockingWorkerData,
} from './run-blocking-worker.js';
import { schedule$, type ScheduledRun } from './schedule.js';
import { commandTask, isTask, moduleTask, nameToPass, processTask, taskLabel, type CommandTaskOptions, type Task, type TaskOptions } from './task.js';
import { isThenable } from './thenable.js';

/**
 * Called as tasks finish, with how much is finished and the total, like the Python library's
 * `progress_callback(finished, total)`. Both count task weights (1 per task unless `weight` says
 * otherwise), so without weights they are task counts.
 *
 * It may be async. `run()` settles only once what it returned has settled, and a rejection ends
 * the run as a throw does. `runBlocking()` calls it between waits on its own thread, which is
 * blocked: what an async callback awaits resumes only after `runBlocking()` has returned, and a
 * rejection then is a process warning (`AsyncProcessSchedulerWarning`).
 */
export type ProgressCallback = (finished: number, total: number) => void;

/**
 * A function that describes a task from its arguments. The usual one is an export of a
 * {@link taskModule} handle (`work.resize`), which checks the arguments and infers the result
 * type from the module's own types; any function returning a task will do
 * (`(f: string) => commandTask('sha256sum', [f])`).
 */
export type TaskFactory<A extends readonly unknown[] = any[], T = unknown> = (...args: A) => Task<T>;

/**
 * An exported function named by its module and export name, without types: the arguments are
 * not checked and the result is `unknown`. Prefer a {@link taskModule} handle.
 */
export interface ExportRef {
  /** Where the module is: a `URL`, a `file:` URL string, an absolute path, or a `node:` builtin. */
  readonly module: URL | string;
  /** The export to call (`'default'` for the default export). */
  readonly export: string;
}

/** Options of {@link Scheduler}: those of {@link schedule$} (but `settle`), and the Python names. */
export interface SchedulerOptions extends Omit<ScheduleOptions, 'settle'> {
  /** Called as tasks finish (the Python `progress_callback`). @default none */
  onProgress?: ProgressCallback;
  /**
   * `true`: concurrency follows CPU load and free memory, up and down (`concurrency: 'auto'`).
   * `false`: a fixed {@link Scheduler.optimalProcessCount} tasks at once. Leave it out when you
   * give `concurrency`. With `false`, or a `concurrency` other than `'auto'`, the options that
   * only steer dynamic concurrency (`cpuThreshold`, `cpuTarget`, `cpuHysteresis`,
   * `sampleInterval`, `concurrencyStep`, `minConcurrency`, `maxConcurrency`, `minFreeMemory`)
   * are an {@link OptionError}, as in {@link schedule$}.
   * @default true
   */
  dynamic?: boolean;
  /**
   * The Python name of `cpuTarget`: in dynamic mode, raise concurrency while system CPU use (percent)
   * is below this. The default is lower than Python's 95 so that the band above it stays below 100%.
   * @default 85
   */
  cpuThreshold?: number;
}

/** What a single {@link Scheduler.run} can be given. */
export interface RunControl {
  /** Aborting it terminates this run, as {@link Scheduler.terminate} does. */
  signal?: AbortSignal;
}

/** The run in progress: an async one, or a blocking one seen from its progress callback. */
type ActiveRun = { kind: 'async'; run: { terminate(): Promise<void> } } | { kind: 'blocking'; cancel: () => void };

const here = import.meta.url;
/** Running from source under a TypeScript loader, the thread loads the `.ts` module beside this one. */
const FROM_SOURCE = here.endsWith('.ts');
const BLOCKING_ENTRY = new URL(`./run-blocking-worker${FROM_SOURCE ? '.ts' : '.js'}`, here).href;

/**
 * Runs tasks in child processes and returns their results in the order they were added: the
 * TypeScript form of the Python library's `Scheduler`, built on {@link schedule$}.
 *
 * Every run of a scheduler runs every task added so far, from the start: tasks are descriptions,
 * so running them again is well defined (the Python library crashed with "cannot start a process
 * twice"). A failed task rejects the run with a {@link TaskError} at once and terminates the rest;
 * nothing hangs. Tasks cannot be added while a run is in progress.
 *
 * @example
 * ```ts
 * import { Scheduler, taskModule } from 'async-process-scheduler';
 *
 * // work.ts: export function longCalculation(x: number, y: number): [number, number] { return [x, y]; }
 * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
 *
 * const scheduler = new Scheduler<[number, number]>((finished, total) => console.log(`${finished} of ${total} tasks are complete.`));
 * for (let i = 0; i < 16; i++) scheduler.add(work.longCalculation, [i, i + 1]);
 * const results = await scheduler.run(); // [[0, 1], [1, 2], ...] in the order added
 * ```
 * @typeParam T What the tasks resolve with; tasks whose result is not a `T` do not compile.
 */
export class Scheduler<T = unknown> {
  readonly #tasks: Task<T>[] = [];
  readonly #weights: number[] = [];
  readonly #options: ScheduleOptions;
  readonly #onProgress: ProgressCallback | undefined;
  #active: ActiveRun | undefined;

  /**
   * Creates a scheduler with a progress callback and options.
   *
   * @example
   * ```ts
   * import { Scheduler } from 'async-process-scheduler';
   *
   * const onProgress = (finished: number, total: number) => console.log(`${finished} of ${total} tasks are complete.`);
   * const plain = new Scheduler();
   * const withProgress = new Scheduler(onProgress);
   * const tuned = new Scheduler(onProgress, { dynamic: false, timeout: 60_000 });
   * const named = new Scheduler({ onProgress, cpuThreshold: 80 });
   * ```
   * @param onProgress Called as tasks finish, with `(finished, total)`.
   * @param options Everything {@link schedule$} accepts (but `settle`), `dynamic` and `cpuThreshold`.
   * @throws {OptionError} when an option is invalid, or two options say the same thing differently.
   */
  constructor(onProgress?: ProgressCallback, options?: SchedulerOptions & { onProgress?: undefined });
  /**
   * Creates a scheduler with options; `onProgress` may be one of them.
   * @param options Everything {@link schedule$} accepts (but `settle`), `onProgress`, `dynamic` and `cpuThreshold`.
   */
  constructor(options?: SchedulerOptions);
  constructor(first?: ProgressCallback | SchedulerOptions, second?: SchedulerOptions) {
    let callback: ProgressCallback | undefined;
    let options: SchedulerOptions | undefined;
    if (typeof first === 'function' || (first === undefined && second !== undefined)) {
      callback = first as ProgressCallback | undefined;
      options = second;
    } else {
      if (second !== undefined) {
        throw new TypeError('new Scheduler(onProgress, options): the first argument must be a function when options follow it');
      }
      options = first;
    }
    // undefined only: a null is an error (checkOptionsObject says so), as schedule$ makes it.
    if (options === undefined) options = {};
    // The first argument may be either: one that is neither says what both may be.
    checkOptionsObject(options, first === options ? 'new Scheduler(onProgress or options): onProgress must be a function, or ' : '');
    if (callback !== undefined && options.onProgress !== undefined) {
      throw new OptionError('onProgress', 'left out when a progress callback is passed as the first argument', options.onProgress);
    }
    this.#onProgress = callback ?? options.onProgress;
    if (this.#onProgress !== undefined && typeof this.#onProgress !== 'function') {
      throw new OptionError('onProgress', 'a function (finished, total) => void', this.#onProgress);
    }
    this.#options = toScheduleOptions(options);
  }

  /**
   * How many processes this machine runs at once well: the CPUs this process may use (affinity
   * and container quota). The Python `Scheduler.optimal_process_count()`; the same as
   * {@link optimalConcurrency}.
   *
   * @example
   * ```ts
   * import { Scheduler } from 'async-process-scheduler';
   * console.log(`add more than ${Scheduler.optimalProcessCount()} tasks to keep every core busy`);
   * ```
   * @returns A positive integer.
   */
  static optimalProcessCount(): number {
    return optimalConcurrency();
  }

  /**
   * Adds a call of an exported function, checked against its types: pass a {@link taskModule}
   * handle's export and the arguments, like Python's `add(target=f, args=(...))`.
   *
   * @example
   * ```ts
   * import { Scheduler, taskModule } from 'async-process-scheduler';
   *
   * // work.ts: export function myCalculation(x: number, y: number, z: string) { return [x, y, z] as const; }
   * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
   * const scheduler = new Scheduler();
   * const i = scheduler.add(work.myCalculation, [1, 3.14, 'test']);
   * scheduler.add(work.myCalculation, [2, 2.71, 'slow'], { timeout: 10_000, weight: 5 });
   * // scheduler.add(work.myCalculation, ['1', 3.14, 'test']) does not compile.
   * const results = await scheduler.run(); // results[i] is [1, 3.14, 'test']
   * ```
   * @param target A function that describes the task from `args`, usually `handle.exportName`.
   * @param args The arguments, checked against `target`'s parameters.
   * @param options Per-task options: `weight` (the Python `subtasks`), `timeout`, `label`, `retries`.
   * @returns The position of this task's result in what {@link Scheduler.run} returns.
   * @throws {Error} while the scheduler is running. {@link TypeError} when `target` is neither a
   *   function returning a task nor an {@link ExportRef}, or an option is invalid.
   */
  add<F extends TaskFactory<any[], T>>(target: F, args: Readonly<Parameters<F>>, options?: TaskOptions): number;
  /**
   * Adds a call of an export named by module and name, without type checks: the result is taken
   * to be a `T`.
   *
   * @example
   * ```ts
   * import { Scheduler } from 'async-process-scheduler';
   *
   * // work.js: export function describe(n) { return n % 2 ? 'odd' : 'even'; }
   * const scheduler = new Scheduler<string>();
   * scheduler.add({ module: 'node:path', export: 'basename' }, ['/tmp/photo.png']);
   * scheduler.add({ module: new URL('./work.js', import.meta.url), export: 'describe' }, [42]);
   * console.log(await scheduler.run()); // ['photo.png', 'even']
   * ```
   */
  add(target: ExportRef, args?: readonly unknown[], options?: TaskOptions): number;
  add(target: TaskFactory | ExportRef, args: readonly unknown[] = [], options?: TaskOptions): number {
    this.#assertIdle('add a task');
    if (!Array.isArray(args)) throw new TypeError(`add(target, args): args must be an array of arguments, got ${formatValue(args)}`);
    let task: Task;
    if (typeof target === 'function') {
      task = target(...args);
      if (!isTask(task)) {
        // An async function ran here: its promise, not the caller's to handle, must not end the program.
        const promised = isThenable(task);
        if (promised) Promise.resolve(task).then(undefined, () => {});
        throw new TypeError(
          `add(target, args): target must return a task (made by moduleTask, taskModule, commandTask or processTask), ` +
            `it returned ${promised ? 'a Promise (an async function ran here)' : formatValue(task)}. add() calls target here, in this process, to make the task: to run a function ` +
            `of yours in a worker, export it from a module and add taskModule(url).${target.name || 'name'}, or { module, export }; ` +
            'to add your own child process, use addProcess(() => fork(...))',
        );
      }
    } else if (isExportRef(target)) {
      task = moduleTask(target.module, target.export, args);
    } else if (typeof target === 'object' && target !== null && 'module' in target && typeof (target as { export?: unknown }).export === 'function') {
      const fn = (target as { export: { name?: string } }).export;
      throw new TypeError(
        `add(target, args): target.export must be the name of the export (a string), got a function: pass ${nameToPass(fn)}; a function cannot be sent to a worker`,
      );
    } else {
      throw new TypeError(
        `add(target, args): target must be an export of a taskModule handle (work.resize), a function returning a task, ` +
          `or { module, export }, got ${formatValue(target)}`,
      );
    }
    return this.#push(withOptions(task, options) as Task<T>);
  }

  /**
   * Adds your own child process, started when its turn comes: the Python `add_process(process, queue)`.
   * The first IPC message the process sends (`process.send(value)`) is its result; there is no queue
   * to pass. Fork it with `detached: true` so termination also reaches what it starts.
   *
   * @example
   * ```ts
   * import { fork } from 'node:child_process';
   * import { fileURLToPath } from 'node:url';
   * import { Scheduler } from 'async-process-scheduler';
   *
   * // calc.js, beside this file: const [x, y] = process.argv.slice(2).map(Number); process.send([x, y]);
   * const calc = fileURLToPath(new URL('./calc.js', import.meta.url));
   * const scheduler = new Scheduler<[number, number]>();
   * scheduler.addProcess(() => fork(calc, ['1', '2'], { detached: true }));
   * console.log(await scheduler.run()); // [[1, 2]]
   * ```
   * @param factory Creates the process, with an IPC channel (`fork`, or `spawn` with `'ipc'` in `stdio`).
   *   It is called at the task's turn, once per run: a process is never started twice.
   * @param options Per-task options: `weight`, `timeout`, `label`, `retries`.
   * @returns The position of this task's result in what {@link Scheduler.run} returns.
   * @throws {Error} while the scheduler is running. {@link TypeError} when `factory` is not a function.
   */
  addProcess(factory: () => ChildProcess, options?: TaskOptions): number {
    this.#assertIdle('add a task');
    if (typeof factory !== 'function') throw new TypeError(`addProcess(factory): factory must be a function that returns a ChildProcess, got ${formatValue(factory)}`);
    return this.#push(processTask<T>(factory, checkedOptions(options, 'process')));
  }

  /**
   * Adds any task: a {@link moduleTask}, a {@link taskModule} call, a {@link commandTask} or a
   * {@link processTask}.
   *
   * @example
   * ```ts
   * import { Scheduler, commandTask, type CommandResult } from 'async-process-scheduler';
   *
   * const scheduler = new Scheduler<CommandResult>();
   * for (const file of ['a.txt', 'b.txt']) scheduler.addTask(commandTask('sha256sum', [file]));
   * for (const r of await scheduler.run()) console.log(r.stdout.trim());
   * ```
   * @param task The task.
   * @param options Per-task options, over those the task already has.
   * @returns The position of this task's result in what {@link Scheduler.run} returns.
   * @throws {Error} while the scheduler is running. {@link TypeError} when `task` is not a task.
   */
  addTask(task: Task<T>, options?: TaskOptions): number {
    this.#assertIdle('add a task');
    if (!isTask(task)) throw new TypeError(`addTask(task): expected a task made by moduleTask, taskModule, commandTask or processTask, got ${formatValue(task)}`);
    return this.#push(withOptions(task, options) as Task<T>);
  }

  /**
   * Adds one task per argument list: `add(target, args)` for each `args` in `argsList`.
   *
   * @example
   * ```ts
   * import { Scheduler, taskModule } from 'async-process-scheduler';
   *
   * // work.ts: export function square(x: number) { return x * x; }
   * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
   * const scheduler = new Scheduler<number>();
   * scheduler.map(work.square, [[1], [2], [3]]);
   * console.log(await scheduler.run()); // [1, 4, 9]
   * ```
   * @param target As in {@link Scheduler.add}.
   * @param argsList One argument list per task.
   * @param options Per-task options, the same for each task.
   * @returns The positions of the tasks' results in what {@link Scheduler.run} returns.
   * @throws As {@link Scheduler.add}; when it throws, no task of this call has been added.
   */
  map<F extends TaskFactory<any[], T>>(target: F, argsList: Iterable<Readonly<Parameters<F>>>, options?: TaskOptions): number[];
  map(target: ExportRef, argsList: Iterable<readonly unknown[]>, options?: TaskOptions): number[];
  map(target: TaskFactory | ExportRef, argsList: Iterable<readonly unknown[]>, options?: TaskOptions): number[] {
    this.#assertIdle('add a task');
    if (argsList === null || typeof (argsList as Iterable<unknown>)?.[Symbol.iterator] !== 'function') {
      throw new TypeError(`map(target, argsList): argsList must be an iterable of argument arrays, got ${formatValue(argsList)}`);
    }
    const length = this.#tasks.length;
    try {
      return Array.from(argsList, (args, at) => {
        if (!Array.isArray(args)) {
          // Python's pool.map takes one argument per item; here each item is a call's argument list.
          throw new TypeError(`map(target, argsList): each item of argsList must be an array of arguments, got ${formatValue(args)} at position ${at}; for calls of one argument each, wrap them: [[1], [2], [3]]`);
        }
        return this.add(target as ExportRef, args, options);
      });
    } catch (error) {
      this.#tasks.length = length;
      this.#weights.length = length;
      throw error;
    }
  }

  /**
   * Runs every task added so far and resolves with their results in the order they were added.
   * Concurrency is dynamic unless the scheduler was made with `dynamic: false` or a `concurrency`.
   *
   * - A task that fails (throws, exits, is killed, times out) rejects the run with its
   *   {@link TaskError} and terminates the others; the promise settles once every process is gone.
   * - {@link Scheduler.terminate}, or aborting `control.signal`, rejects it with a
   *   {@link RunTerminatedError}.
   * - The progress callback is called with `(0, total)` first, then as each task finishes; if it
   *   throws, the run is terminated and rejects with that error.
   * - Calling it again after it settled runs every task again, from the start. Calling it while
   *   a run is in progress rejects at once, and the running one goes on.
   *
   * @example
   * ```ts
   * import { Scheduler, taskModule } from 'async-process-scheduler';
   *
   * // work.ts: export function square(x: number) { return x * x; }
   * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
   * const scheduler = new Scheduler<number>();
   * scheduler.map(work.square, [[1], [2], [3]]);
   * // A signal ends the run: here, if it is not done within a minute (RunTerminatedError).
   * const results = await scheduler.run({ signal: AbortSignal.timeout(60_000) }); // [1, 4, 9]
   * ```
   * @param control A signal that terminates this run when aborted.
   * @returns The results, in the order the tasks were added.
   */
  run(control: RunControl = {}): Promise<T[]> {
    let run: ScheduledRun<T>;
    let release: () => void;
    let abortedAlready = false;
    const weights = [...this.#weights];
    const total = sum(weights);
    try {
      this.#assertIdle('run() it');
      const signal = control?.signal;
      if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`run(control): control.signal must be an AbortSignal, got ${formatValue(signal)}`);
      const combined = combineSignals(this.#options.signal, signal);
      release = combined.release;
      abortedAlready = combined.signal?.aborted === true;
      run = schedule$([...this.#tasks], { ...this.#options, signal: combined.signal }) as ScheduledRun<T>;
    } catch (error) {
      return Promise.reject(error);
    }
    const active: ActiveRun = { kind: 'async', run };
    this.#active = active;

    const onProgress = this.#onProgress;
    let callbackError: { error: unknown } | undefined;
    const failed = (error: unknown) => {
      if (callbackError) return;
      callbackError = { error };
      void run.terminate();
    };
    /** What async callbacks returned: run() settles once they have, and rejects if one rejected. */
    // Only those not settled yet: a long run with an async callback does not keep one per task.
    const pending = new Set<Promise<void>>();
    const report = (finished: number) => {
      if (!onProgress || callbackError) return;
      try {
        const returned: unknown = onProgress(finished, total);
        if (isThenable(returned)) {
          const settled: Promise<void> = Promise.resolve(returned).then(() => undefined, failed).finally(() => pending.delete(settled));
          pending.add(settled);
        }
      } catch (error) {
        failed(error);
      }
    };
    const values = run.toOrderedArray();
    // A run whose signal had aborted before it began does not begin: no (0, total) to report.
    if (!abortedAlready) report(0);
    if (onProgress) {
      let finished = 0;
      run.subscribe({
        next: (result) => {
          finished += weights[result.index] ?? 1;
          report(finished);
        },
        error: () => {}, // the same error rejects `values`
      });
    }
    // Mark the scheduler idle before the caller's continuation runs, so isRunning() is false there.
    const settle = () => {
      release();
      if (this.#active === active) this.#active = undefined;
    };
    const callbacksDone = () => Promise.all([...pending]);
    return values.then(
      async (results) => {
        await callbacksDone();
        settle();
        if (callbackError) throw callbackError.error;
        return results;
      },
      async (error: unknown) => {
        await callbacksDone();
        settle();
        throw callbackError ? callbackError.error : error;
      },
    );
  }

  /**
   * Runs every task added so far and returns their results in the order they were added,
   * blocking the calling thread until every task is done and every process is gone: for scripts
   * that cannot be async (the Python `run_blocking()`).
   *
   * The schedule runs in a worker thread while this thread sleeps in `Atomics.wait`: timers,
   * I/O callbacks and promises of this thread wait too. The progress callback is called on this
   * thread, between waits; from it, {@link Scheduler.terminate} or aborting the scheduler's
   * `signal` stops the run. Children's output (`output: 'inherit'`) appears as they write it.
   *
   * Tasks must be plain data to reach the thread: module tasks and commands are; a
   * {@link processTask}'s factory is a function, so a scheduler holding one throws here (use
   * {@link Scheduler.run}). So does an Observable `concurrency`.
   *
   * Failures are as in {@link Scheduler.run}: a failed task throws its {@link TaskError} (class,
   * fields and the child's error intact), a terminated run a {@link RunTerminatedError}.
   *
   * Limitation: while the thread is blocked, its signal handlers cannot run, so Ctrl-C ends the
   * program without the usual cleanup, as a SIGKILL would. What the run started still goes, within
   * about 2 s: workers see their channel close and take their process group with them, and the
   * guardian kills running commands.
   *
   * @example
   * ```ts
   * import { Scheduler, taskModule } from 'async-process-scheduler';
   *
   * // work.ts: export function square(x: number) { return x * x; }
   * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
   * const scheduler = new Scheduler<number>((finished, total) => console.log(`${finished}/${total}`));
   * scheduler.map(work.square, [[1], [2], [3]]);
   * const results = scheduler.runBlocking(); // [1, 4, 9]; nothing else ran on this thread meanwhile
   * ```
   * @returns The results, in the order the tasks were added.
   * @throws {TaskError} for the first task that failed. {@link RunTerminatedError} when terminated.
   *   {@link TypeError} when a task (a process task) or an option (an Observable concurrency, a
   *   pool) cannot be sent to the thread; a {@link TaskError} of kind `'invalid'` for an argument
   *   that cannot be cloned, as `run()` gives. Whatever the progress callback threw. {@link Error}
   *   when a run is already in progress.
   */
  runBlocking(): T[] {
    this.#assertIdle('runBlocking() it');
    const options = this.#options;
    if (isObservable(options.concurrency)) {
      throw new TypeError(
        'runBlocking() cannot follow an Observable concurrency: it lives on this thread, which is blocked during the run; ' +
          "use a number or 'auto', or run()",
      );
    }
    if (options.pool !== undefined) {
      throw new TypeError(
        "runBlocking() cannot use a WorkerPool: its workers belong to this thread, and the run takes place on another; leave out options.pool, or use run()",
      );
    }
    const { signal, ...cloneable } = options;
    if (signal?.aborted) throw new RunTerminatedError('the run was aborted before it started', { cause: signal.reason });
    const tasks = this.#tasks;
    const specs: BlockingTaskSpec[] = tasks.map((task, index) => {
      const spec = toBlockingTaskSpec(task);
      if (typeof spec === 'string') throw new TypeError(`runBlocking() cannot run task #${index} (${taskLabel(task)}): ${spec}`);
      return spec;
    });
    const weights = [...this.#weights];
    const total = sum(weights);
    const onProgress = this.#onProgress;
    const state = new Int32Array(new SharedArrayBuffer(4));
    let port1: MessagePort | undefined;
    let cancelled = false;
    const cancel = () => {
      if (cancelled) return;
      cancelled = true;
      port1?.postMessage({ type: 'cancel' } satisfies BlockingControlMessage);
    };
    const active: ActiveRun = { kind: 'blocking', cancel };
    // Running from here: the first callback may terminate() (add() refuses, isRunning() says so).
    this.#active = active;
    let worker: Worker;
    try {
      // Nothing has started: an error here just propagates.
      if (onProgress) warnIfRejects(onProgress(0, total));
      if (cancelled) throw new RunTerminatedError('the run was terminated before it started');
      if (specs.length === 0) {
        this.#active = undefined;
        return [];
      }
      // Written by V8's serializer: a message between threads would turn a Buffer into a Uint8Array.
      let request: Uint8Array;
      try {
        request = serialize({ tasks: specs, options: cloneable, progress: onProgress !== undefined } satisfies BlockingRunRequest);
      } catch (error) {
        throw uncloneableTask(specs, tasks, error);
      }
      const channel = new MessageChannel();
      port1 = channel.port1;
      const port2 = channel.port2;
      const execArgv = threadExecArgv(process.execArgv);
      const data: BlockingWorkerData = {
        entry: BLOCKING_ENTRY,
        tsxApi: tsxApiUrl(),
        request,
        port: port2,
        state,
        execArgv,
      };
      try {
        worker = startBlockingThread(data, port2, execArgv);
      } catch (error) {
        // Not the tasks: they went in `request`, already serialized.
        port1.close();
        port2.close();
        throw error;
      }
    } catch (error) {
      if (this.#active === active) this.#active = undefined;
      throw error;
    }
    const stopWaiting = signal ? whenAborted(signal, cancel) : () => {};
    let callbackError: { error: unknown } | undefined;
    let finished = 0;
    try {
      for (;;) {
        const seen = Atomics.load(state, 0);
        for (let received = receiveMessageOnPort(port1); received; received = receiveMessageOnPort(port1)) {
          const message = received.message as BlockingRunMessage;
          if (message.type === 'finished') {
            // The thread batches wake-ups; the callback still sees each task, as in run().
            for (const index of message.indices) {
              finished += weights[index] ?? 1;
              if (!onProgress || callbackError) continue;
              try {
                warnIfRejects(onProgress(finished, total));
              } catch (error) {
                callbackError = { error };
                cancel();
              }
            }
          } else if (message.type === 'done') {
            if (callbackError) throw callbackError.error;
            return deserialize(message.values) as T[];
          } else {
            if (callbackError) throw callbackError.error;
            const error = reviveError(message.error);
            if (error instanceof RunTerminatedError && signal?.aborted) {
              const aborted = new RunTerminatedError('the run was aborted', { cause: signal.reason });
              aborted.cancelled = error.cancelled;
              throw aborted;
            }
            throw error;
          }
        }
        // Sleeps until the thread has sent something more (returns at once if it already has).
        Atomics.wait(state, 0, seen);
      }
    } finally {
      stopWaiting();
      if (this.#active === active) this.#active = undefined;
      port1!.close();
      // The thread ends by itself once its run has ended; never let it hold the program open.
      worker.unref();
    }
  }

  /**
   * Terminates the run in progress: its processes, and what they started, are killed (SIGTERM,
   * then SIGKILL after `killTimeout`), waiting tasks never start, and the run rejects with a
   * {@link RunTerminatedError}. Resolves once every process of the run is gone.
   *
   * When nothing runs (before the first run, or after one ended), it does nothing and touches no
   * process: the Python library's `terminate()` sent SIGTERM to every child of the program.
   * During {@link Scheduler.runBlocking}, call it from the progress callback.
   *
   * @example
   * ```ts
   * import { Scheduler, taskModule } from 'async-process-scheduler';
   *
   * // work.ts: export async function slowSquare(x: number) { await new Promise((r) => setTimeout(r, 60_000)); return x * x; }
   * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
   * const scheduler = new Scheduler<number>();
   * scheduler.map(work.slowSquare, [[1], [2], [3]]);
   * const results = scheduler.run();
   * setTimeout(() => void scheduler.terminate(), 1000);
   * await results.catch((error) => console.log(error.name)); // RunTerminatedError
   * ```
   * @returns A promise that resolves when every process of the run is gone (at once if none runs).
   */
  terminate(): Promise<void> {
    const active = this.#active;
    if (active === undefined) return Promise.resolve();
    if (active.kind === 'blocking') {
      // This thread is the blocked one: runBlocking() returns (throws) once the processes are gone.
      active.cancel();
      return Promise.resolve();
    }
    // Idle once the processes are gone, as the caller who awaits this expects (to run again): the
    // run() promise settles a little later, after the progress callbacks it waits for.
    return active.run.terminate().then(() => {
      if (this.#active === active) this.#active = undefined;
    });
  }

  /**
   * True from the call of {@link Scheduler.run} or {@link Scheduler.runBlocking} until it returns
   * or rejects, by which time every process of the run is gone; after `await terminate()`, false
   * (a new run may start at once).
   *
   * @example
   * ```ts
   * import { Scheduler } from 'async-process-scheduler';
   * const scheduler = new Scheduler();
   * scheduler.add({ module: 'node:os', export: 'cpus' });
   * const results = scheduler.run();
   * console.log(scheduler.isRunning()); // true
   * await results;
   * console.log(scheduler.isRunning()); // false
   * ```
   * @returns Whether a run is in progress.
   */
  isRunning(): boolean {
    return this.#active !== undefined;
  }

  /**
   * The tasks added so far, in order, with their per-task options applied: to run them with
   * {@link schedule$} and its streams instead.
   *
   * @example
   * ```ts
   * import { Scheduler, schedule$ } from 'async-process-scheduler';
   * const scheduler = new Scheduler<number>({ dynamic: false });
   * scheduler.add({ module: 'node:os', export: 'availableParallelism' });
   * const run = schedule$(scheduler.tasks, { ...scheduler.scheduleOptions, settle: true });
   * run.progress$.subscribe((p) => console.log(p.completed, p.running, p.concurrency));
   * for (const outcome of await run.toOrderedArray()) console.log(outcome.index, outcome.status); // 0 fulfilled
   * ```
   */
  get tasks(): readonly Task<T>[] {
    return [...this.#tasks];
  }

  /**
   * The options each run passes to {@link schedule$}: the scheduler's own, with `dynamic` turned
   * into `concurrency` and `cpuThreshold` into `cpuTarget`.
   *
   * @example
   * ```ts
   * import { Scheduler } from 'async-process-scheduler';
   * console.log(new Scheduler({ dynamic: false }).scheduleOptions.concurrency); // e.g. 8
   * ```
   */
  get scheduleOptions(): Readonly<Omit<ScheduleOptions, 'settle'>> {
    return { ...this.#options };
  }

  #push(task: Task<T>): number {
    this.#tasks.push(task);
    this.#weights.push(task.options.weight ?? 1);
    return this.#tasks.length - 1;
  }

  #assertIdle(what: string): void {
    if (this.#active !== undefined) {
      throw new Error(
        `cannot ${what} while the scheduler is running: wait for the run to end, or terminate() it first`,
      );
    }
  }
}

/**
 * Starts runBlocking()'s thread with the parent's flags, so that its loaders, conditions and
 * warnings settings hold there too. Node refuses flags that concern the whole process
 * (`--max-old-space-size`, `--title`, `--expose-gc`...) when they are given to a thread; then the
 * thread inherits the main thread's settings instead (no list given), which it accepts. The
 * processes it forks get the flags either way, from `data.execArgv`.
 */
function startBlockingThread(data: BlockingWorkerData, port: MessagePort, execArgv: string[]): Worker {
  const start = (flags: string[] | undefined) => new Worker(BLOCKING_BOOTSTRAP, { eval: true, workerData: data, transferList: [port], execArgv: flags });
  try {
    return start(execArgv);
  } catch (error) {
    if ((error as NodeJS.ErrnoException)?.code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw error;
    return start(undefined);
  }
}

/** The Scheduler's options: schedule$'s but `settle`, and its own. */
const SCHEDULER_KEYS: ReadonlySet<string> = new Set(['onProgress', 'dynamic', 'cpuThreshold', ...[...KNOWN].filter((key) => key !== 'settle')]);

/** Options that only steer dynamic (`'auto'`) concurrency. */
const DYNAMIC_ONLY = ['cpuThreshold', ...AUTO_ONLY] as const;

/** Maps the Python-style options onto {@link ScheduleOptions}, and validates them all once. */
function toScheduleOptions(options: SchedulerOptions): ScheduleOptions {
  const { onProgress: _onProgress, dynamic, cpuThreshold, ...rest } = options;
  if ('settle' in rest) {
    throw new OptionError(
      'settle',
      'left out: a Scheduler fails fast; to keep going past failures, use schedule$(scheduler.tasks, { ...scheduler.scheduleOptions, settle: true })',
      (rest as ScheduleOptions).settle,
    );
  }
  // Named among the Scheduler's own options, which a Python user's snake_case names are not.
  const unknown = unknownKey(options, SCHEDULER_KEYS);
  if (unknown !== undefined) {
    throw new OptionError(unknown, '', undefined, `options.${unknown} is not a Scheduler option; the options are ${[...SCHEDULER_KEYS].join(', ')}`);
  }
  if (dynamic !== undefined && typeof dynamic !== 'boolean') throw new OptionError('dynamic', 'a boolean', dynamic);
  if (dynamic !== undefined && rest.concurrency !== undefined) {
    throw new OptionError('dynamic', "left out when options.concurrency is given (dynamic: true is concurrency: 'auto')", dynamic);
  }
  if (cpuThreshold !== undefined && rest.cpuTarget !== undefined) {
    throw new OptionError('cpuThreshold', 'left out when options.cpuTarget is given (it is the same option)', cpuThreshold);
  }
  if (dynamic === false) {
    // These only steer dynamic concurrency. resolveOptions says so for a fixed concurrency the
    // caller gave; this one is made below, so it is named here as the caller put it.
    const given = { cpuThreshold, ...rest } as Record<string, unknown>;
    const steering = DYNAMIC_ONLY.find((key) => given[key] !== undefined);
    if (steering !== undefined) {
      throw new OptionError(steering, 'left out when options.dynamic is false (it only steers dynamic concurrency)', given[steering]);
    }
  }
  const result: ScheduleOptions = { ...rest };
  if (cpuThreshold !== undefined) result.cpuTarget = cpuThreshold;
  if (result.concurrency === undefined) result.concurrency = dynamic === false ? optimalConcurrency() : 'auto';
  // Named as the caller spelled it.
  resolveOptions(result, cpuThreshold === undefined ? {} : { cpuTarget: 'cpuThreshold' });
  return result;
}

function checkedOptions(options: TaskOptions | undefined, kind: Task['kind']): TaskOptions {
  if (options === undefined) return {};
  const problem = checkTaskOptions(options, kind);
  if (problem !== undefined) throw new TypeError(problem);
  return { ...options };
}

/** The task with `options` over its own, re-made with the public factory of its kind. */
function withOptions(task: Task, options: TaskOptions | undefined): Task {
  const merged = checkedOptions(options === undefined ? task.options : { ...task.options, ...options }, task.kind);
  if (options === undefined) return task;
  switch (task.kind) {
    case 'module':
      return moduleTask(task.module, task.exportName, task.args, merged);
    case 'command':
      return commandTask(task.file, task.args, merged as CommandTaskOptions & { encoding?: 'utf8' });
    case 'process':
      return processTask(task.factory, merged);
  }
}

function isExportRef(value: unknown): value is ExportRef {
  if (typeof value !== 'object' || value === null) return false;
  const ref = value as Record<string, unknown>;
  return (typeof ref.module === 'string' || ref.module instanceof URL) && typeof ref.export === 'string' && ref.export !== '';
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

/** One signal that aborts when either does; `release` removes the listeners it added. */
function combineSignals(a: AbortSignal | undefined, b: AbortSignal | undefined): { signal: AbortSignal | undefined; release: () => void } {
  if (!a || !b) return { signal: a ?? b, release: () => {} };
  const controller = new AbortController();
  const onAbortA = () => controller.abort(a.reason);
  const onAbortB = () => controller.abort(b.reason);
  if (a.aborted) onAbortA();
  else if (b.aborted) onAbortB();
  const stopA = whenAborted(a, onAbortA);
  const stopB = whenAborted(b, onAbortB);
  return {
    signal: controller.signal,
    release: () => {
      stopA();
      stopB();
    },
  };
}

/**
 * Where `tsx/esm/api` is, when this library runs from its TypeScript source: TypeScript loaders
 * given with `--import` do not reach worker threads on every Node version, so the thread may
 * have to register one itself. Undefined when running compiled, or when tsx is not installed.
 */
function tsxApiUrl(): string | undefined {
  if (!FROM_SOURCE) return undefined;
  try {
    return import.meta.resolve('tsx/esm/api');
  } catch {
    return undefined;
  }
}

/** Names the first task whose description cannot be sent to the thread. */
function uncloneableTask(specs: readonly BlockingTaskSpec[], tasks: readonly Task[], error: unknown): Error {
  for (let index = 0; index < specs.length; index++) {
    try {
      structuredClone(specs[index]);
    } catch (cloneError) {
      // Named as run() names it: which argument, and what it is.
      const args = specs[index]!.args;
      const at = args.findIndex((arg) => {
        try {
          structuredClone(arg);
          return false;
        } catch {
          return true;
        }
      });
      const what = at === -1 ? 'its arguments or options' : argumentName(args, at);
      return new TaskError({
        kind: 'invalid',
        index,
        label: taskLabel(tasks[index]!),
        detail: `${what} cannot be sent to the thread that runs the schedule: ${(cloneError as Error).message}`,
        cause: cloneError,
      });
    }
  }
  return error as Error;
}

/**
 * What an async progress callback of runBlocking() returned: it settles only once runBlocking()
 * has returned, so a rejection has nowhere to go but a process warning (unhandled, it would end
 * the program).
 */
function warnIfRejects(returned: unknown): void {
  if (!isThenable(returned)) return;
  Promise.resolve(returned).then(undefined, (err: unknown) => warnOfThrown('the progress callback of runBlocking() rejected', err));
}
