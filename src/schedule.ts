/**
 * `schedule$` and `ScheduledRun`: wires the task source, the load-following merge, the runtime
 * and the result, order and progress streams.
 *
 * @module
 */
import {
  EMPTY, Observable, ReplaySubject, Subject, Subscription, combineLatest, concat, defer, distinctUntilChanged, isObservable, map, of, switchMap,
  tap, throwError, throwIfEmpty, type Observer, type Subscriber,
} from 'rxjs';
import { whenAborted } from './abort.js';
import { RunTerminatedError, TaskError, formatValue, toRemoteErrorInfo } from './errors.js';
import { autoConcurrency$ } from './load/controller.js';
import { systemLoadSampler } from './load/samplers.js';
import {
  isValidLimit, mergeWithLimit, START_DIRECT, type DirectInner, type DirectSubscription, type InnerSink, type MergeWithLimitOptions,
} from './operators/merge-map-with-limit.js';
import { isTaskSourceInput, type TaskSourceInput } from './operators/pull-source.js';
import { IndexReorderer, type ReorderTarget } from './operators/reorder.js';
import { checkTaskOptions, isWeight, resolveOptions, type ResolvedOptions, type ScheduleOptions } from './options.js';
import { optimalConcurrency } from './optimal-concurrency.js';
import { ProgressState, type Progress, type TaskProgress } from './progress.js';
import { runWithRetries } from './retry.js';
import { lenderOf } from './pool.js';
import { LocalRuntime } from './runtime/local-runtime.js';
import type { OutputLine } from './runtime/output.js';
import { workerHook } from './runtime/protocol.js';
import type { JobEvents, JobHandle, TaskRuntime, TaskStats } from './runtime/runtime.js';
import { NO_OPTIONS, isTask, taskLabel, taskShapeProblem, type Task, type TaskValue } from './task.js';

/** Stops a run's wait on its signal once the run is collected (see RunCore.#watch). */
const forgetWhenCollected = new FinalizationRegistry<() => void>((stop) => stop());

/** A task that ended well. The run emits these, in the order tasks finish. */
export interface TaskResult<T> {
  /** Always `'fulfilled'`, so results and failures can be told apart in settle mode. */
  status: 'fulfilled';
  /** The task's 0-based position in the input. */
  index: number;
  /** What the task returned (module), sent (process) or produced (command). */
  value: T;
  /** What running it cost, where, and on which attempt. */
  stats: TaskStats;
}

/** A task that failed, as emitted in settle mode. */
export interface TaskFailure {
  /** Always `'rejected'`. */
  status: 'rejected';
  /** The task's 0-based position in the input. */
  index: number;
  /** Why it failed. */
  reason: TaskError;
}

/** How a task ended, in settle mode: like a `PromiseSettledResult`, with the task's index. */
export type TaskOutcome<T> = TaskResult<T> | TaskFailure;

/** Fail fast (the default) or settle every task. */
export type RunMode = 'failFast' | 'settle';

/** What the run emits: results in fail-fast mode, outcomes in settle mode. */
export type Completion<T, M extends RunMode> = M extends 'settle' ? TaskOutcome<T> : TaskResult<T>;

/** What `ordered$` and `toOrderedArray()` give: values in fail-fast mode, outcomes in settle mode. */
export type Ordered<T, M extends RunMode> = M extends 'settle' ? TaskOutcome<T> : T;

/**
 * One run of a set of tasks: an Observable of completions (in the order tasks finish) with the
 * other views of the same run beside it.
 *
 * **One run executes once.** The first subscription to any result stream (the run itself,
 * `ordered$`, `toOrderedArray()`) starts it, at the end of the current microtask, so subscribers
 * added in the same synchronous block all see everything. Later subscribers share the same
 * execution and see:
 * - on the run and `ordered$`: what is emitted after they subscribe, then the run's end
 *   (complete, or the error); after the end, the end at once;
 * - on `progress$`: the latest snapshot at once, then every update (it never starts the run);
 * - `toOrderedArray()`: the same promise on every call; called after results were emitted, it
 *   rejects, since the earlier values are gone.
 *
 * **Terminate** by unsubscribing every subscriber of the result streams before the end, by
 * aborting `options.signal`, or with {@link ScheduledRun.terminate}. Every process is killed
 * (SIGTERM to its process group, SIGKILL after `killTimeout`) and waiting tasks never start.
 * When the run completes or errors, every process it started is already gone.
 *
 * @typeParam T The value type of the tasks.
 * @typeParam M `'settle'` when created with `settle: true`.
 */
export class ScheduledRun<T, M extends RunMode = 'failFast'> extends Observable<Completion<T, M>> {
  /** Values in input order (outcomes in settle mode), each as soon as every earlier task has ended. */
  readonly ordered$: Observable<Ordered<T, M>>;
  /** Progress snapshots. A subscriber gets the latest one at once; completes when the run ends. */
  readonly progress$: Observable<Progress>;
  /** Intermediate progress reported by tasks from inside their child (`reportProgress`). */
  readonly taskProgress$: Observable<TaskProgress>;
  /** Lines children write, with `output: 'capture'` (nothing in the other modes). */
  readonly output$: Observable<OutputLine>;
  /**
   * The concurrency limit in force; a subscriber gets the current one at once. With an Observable
   * limit that has not emitted yet there is none (no task starts), and the first comes when it emits.
   */
  readonly concurrency$: Observable<number>;
  readonly #core: RunCore<T, M>;

  /** @internal Use {@link schedule$}. */
  constructor(core: RunCore<T, M>) {
    super((subscriber) => core.attach(core.completions, subscriber));
    this.#core = core;
    this.ordered$ = new Observable((subscriber) => core.attach(core.ordered, subscriber));
    this.progress$ = core.progress.asObservable();
    this.taskProgress$ = core.taskProgress.asObservable();
    this.output$ = core.output.asObservable();
    this.concurrency$ = core.concurrency.pipe(distinctUntilChanged());
  }

  /**
   * All values in input order (outcomes in settle mode). Starts the run if it has not started.
   *
   * @example
   * ```ts
   * import { schedule$, moduleTask } from 'async-process-scheduler';
   *
   * // work.js: export function square(x) { return x * x; }
   * const work = new URL('./work.js', import.meta.url);
   * const squares = await schedule$([1, 2, 3].map((x) => moduleTask<number>(work, 'square', [x]))).toOrderedArray();
   * console.log(squares); // [1, 4, 9]
   * ```
   * @returns A promise of the values; it rejects with the first `TaskError` in fail-fast mode,
   * and with `RunTerminatedError` if the run is terminated. The promise keeps the run going until
   * it settles (it cannot unsubscribe): to end the run early, use the `signal` option or
   * {@link ScheduledRun.terminate}.
   */
  toOrderedArray(): Promise<Ordered<T, M>[]> {
    return this.#core.toOrderedArray();
  }

  /**
   * Terminates the run: subscribers get a {@link RunTerminatedError}, every process is killed,
   * waiting tasks never start. Resolves once every process the run started is gone. Safe to call
   * at any time, any number of times; after the end it only waits for the processes.
   *
   * @example
   * ```ts
   * import { schedule$, commandTask } from 'async-process-scheduler';
   * const run = schedule$([commandTask('sleep', ['60']), commandTask('sleep', ['60'])]);
   * run.subscribe({ error: (e) => console.log(e.name) }); // RunTerminatedError
   * setTimeout(() => void run.terminate().then(() => console.log(run.pids())), 500); // []
   * ```
   * @returns A promise that resolves once every process of the run has exited.
   */
  terminate(): Promise<void> {
    return this.#core.terminate(new RunTerminatedError('the run was terminated'));
  }

  /**
   * Process ids of the processes the run has alive right now (workers, commands, process tasks),
   * those being stopped included until they have exited.
   *
   * @example
   * ```ts
   * import { schedule$, commandTask } from 'async-process-scheduler';
   * const run = schedule$([commandTask('sleep', ['1'])]);
   * run.progress$.subscribe((p) => p.running && console.log('pids', run.pids()));
   * await run.toOrderedArray();
   * console.log(run.pids()); // [] : everything has exited when the run ends
   * ```
   * @returns The pids, empty before the start and once the run has ended and its processes are gone.
   */
  pids(): number[] {
    return this.#core.runtime?.pids() ?? [];
  }
}

/**
 * Runs tasks in child processes, with concurrency that follows CPU load, and returns the run as
 * an Observable of completions with ordered values and progress beside it.
 *
 * `tasks` may be an array, any iterable (a generator), an async iterable, or an Observable of
 * tasks made with {@link moduleTask}, {@link taskModule}, {@link commandTask} or {@link processTask};
 * iterables are pulled only as slots free up, so a lazy million tasks use constant memory.
 *
 * @example
 * ```ts
 * import { schedule$, moduleTask } from 'async-process-scheduler';
 * import { map } from 'rxjs';
 *
 * // work.js: export function square(x) { return x * x; }
 * const work = new URL('./work.js', import.meta.url);
 * const run = schedule$([1, 2, 3, 4].map((x) => moduleTask<number>(work, 'square', [x])), { concurrency: 2 });
 *
 * run.progress$.subscribe((p) => console.log(`${p.completed}/${p.total}`));
 * run.pipe(map((r) => `#${r.index} = ${r.value}`)).subscribe(console.log); // completion order
 * console.log(await run.toOrderedArray()); // [1, 4, 9, 16]
 * ```
 * @param tasks The tasks.
 * @param options Concurrency, failure mode, timeouts, output handling: see {@link ScheduleOptions}.
 * @returns The run. Nothing starts until something subscribes to its results.
 * @throws {OptionError} when an option is invalid; {@link TypeError} when `tasks` is not a task source;
 *   an Error when called in a worker while it loads a task module (a run started at a task
 *   module's top level would start again in every worker, without end).
 */
export function schedule$<K extends Task<unknown>>(tasks: TaskSourceInput<K>, options: ScheduleOptions & { settle: true }): ScheduledRun<TaskValue<K>, 'settle'>;
export function schedule$<K extends Task<unknown>>(tasks: TaskSourceInput<K>, options?: ScheduleOptions & { settle?: false }): ScheduledRun<TaskValue<K>>;
export function schedule$<K extends Task<unknown>>(tasks: TaskSourceInput<K>, options?: ScheduleOptions): ScheduledRun<TaskValue<K>, RunMode>;
export function schedule$<K extends Task<unknown>>(tasks: TaskSourceInput<K>, options?: ScheduleOptions): ScheduledRun<TaskValue<K>, RunMode> {
  const loading = workerHook()?.loading;
  if (loading !== undefined) {
    // Every worker that loads the module would start the run again, and its workers again:
    // processes without end.
    throw new Error(
      `schedule$ was called while a worker was loading the task module ${loading}: a run started at the top level of a task module ` +
        'would start again in every worker that loads it, without end. Start the run from your program, not from a module its tasks ' +
        "load, or guard it with `if (!isWorker())` (from 'async-process-scheduler/child')",
    );
  }
  const resolved = resolveOptions(options);
  if (!isTaskSourceInput(tasks)) {
    throw new TypeError(`tasks must be an array, an iterable, an async iterable or an Observable of tasks, got ${formatValue(tasks)}`);
  }
  return new ScheduledRun(new RunCore<TaskValue<K>, RunMode>(tasks as TaskSourceInput<Task>, resolved));
}

type Terminal = { kind: 'complete' } | { kind: 'error'; error: unknown };

/** @internal The shared execution behind a ScheduledRun. */
export class RunCore<T, M extends RunMode> {
  readonly completions = new Fanout<Completion<T, M>>();
  readonly ordered = new Fanout<Ordered<T, M>>();
  readonly taskProgress = new Subject<TaskProgress>();
  readonly output = new Subject<OutputLine>();
  readonly concurrency = new ReplaySubject<number>(1);
  /** A ReplaySubject, not a BehaviorSubject: it still gives the last snapshot after the end. */
  readonly progress = new ReplaySubject<Progress>(1);
  runtime: TaskRuntime | undefined;
  #options: ResolvedOptions;
  #source: TaskSourceInput<Task>;
  #state: ProgressState;
  #limit: number;
  #refs = 0;
  /** concurrency$ has emitted #limit. */
  #limitShown = false;
  #startQueued = false;
  #terminal: Terminal | undefined;
  #subscription: Subscription | undefined;
  #emittedOrdered = false;
  #orderedArray: Promise<Ordered<T, M>[]> | undefined;
  #stopped: Promise<void> = Promise.resolve();
  /** The streams have ended (#finish ran): the run's processes are gone. */
  #finished = false;
  #progressTimer: NodeJS.Timeout | undefined;
  #progressQueued = false;
  /** When the last snapshot went out; none yet, so the run's first change shows at once. */
  #lastProgressAt = -Infinity;
  #abortListener: (() => void) | undefined;
  /** What every task's inner needs of the run: one object per run, not closures per task. */
  readonly #innerContext: InnerContext;

  constructor(source: TaskSourceInput<Task>, options: ResolvedOptions) {
    this.#source = source;
    this.#options = options;
    const initial = typeof options.concurrency === 'number'
      ? options.concurrency
      : isObservable(options.concurrency) ? currentLimit(options.concurrency, options) : clampAuto(options);
    const total = Array.isArray(source) ? source.length : undefined;
    this.#state = new ProgressState(initial, total);
    // An array's weights are known at once, so a weighted progress bar has its scale from the start.
    if (Array.isArray(source)) this.#state.weightTotal = sumOfWeights(source);
    this.#limit = initial;
    // 0 here means not known yet (an Observable that has not emitted), not paused.
    this.#limitShown = initial > 0;
    if (initial > 0) this.concurrency.next(initial);
    this.progress.next(this.#state.snapshot(0));
    this.#innerContext = new InnerContext(this.#state, options.settle, this, this.taskProgress);
    if (options.signal) this.#watch(options.signal);
  }

  /**
   * Ends the run when `signal` aborts, started or not (as terminate() would), and at once if it
   * has. A run nobody subscribed to and nobody holds is not kept alive by a long-lived signal:
   * the signal holds it weakly, and forgets it once it is collected.
   */
  #watch(signal: AbortSignal): void {
    if (signal.aborted) {
      this.#aborted(signal);
      return;
    }
    const run = new WeakRef(this);
    const stop = whenAborted(signal, () => {
      const live = run.deref();
      if (live) live.#aborted(signal);
    });
    this.#abortListener = stop;
    forgetWhenCollected.register(this, stop, this);
  }

  #aborted(signal: AbortSignal): void {
    const before = this.#state.state === 'idle' ? ' before it started' : '';
    void this.terminate(new RunTerminatedError(`the run was aborted${before}`, { cause: signal.reason }));
  }

  /** Subscribes `subscriber` to one of the result streams, counting it; starts the run. */
  attach<V>(stream: Fanout<V>, subscriber: Observer<V>): () => void {
    if (this.#terminal) {
      if (this.#finished) {
        this.#deliverTerminal(subscriber);
        return () => {};
      }
      // Ending, its processes not all gone yet: the end comes when it does for everyone.
      let detached = false;
      void this.#stopped.then(() => detached || this.#deliverTerminal(subscriber));
      return () => {
        detached = true;
      };
    }
    this.#refs++;
    const detach = stream.add(subscriber);
    if (this.#state.state === 'idle' && !this.#startQueued) {
      this.#startQueued = true;
      queueMicrotask(() => {
        this.#startQueued = false;
        if (this.#refs > 0 && this.#state.state === 'idle' && !this.#terminal) {
          try {
            this.#start();
          } catch (error) {
            // In a microtask, an exception would be uncaught: the run fails with it instead.
            this.#shutdownThen(false, 'failed', { kind: 'error', error });
          }
        }
      });
    }
    return () => {
      detach();
      // Every task has ended (the last subscriber left on the last value, say): the run is
      // completing, not abandoned.
      const state = this.#state;
      const allEnded = state.total !== undefined && state.completed + state.failed >= state.total;
      if (--this.#refs === 0 && !this.#terminal && state.state === 'running' && !allEnded) {
        void this.terminate();
      }
    };
  }

  toOrderedArray(): Promise<Ordered<T, M>[]> {
    if (!this.#orderedArray) {
      if (this.#emittedOrdered) {
        this.#orderedArray = Promise.reject(
          new Error('toOrderedArray() was first called after the run had emitted ordered values, which are gone; call it before the run starts'),
        );
      } else {
        this.#orderedArray = new Promise((resolve, reject) => {
          this.attach(this.ordered, new OrderedCollector(resolve, reject));
        });
      }
    }
    return this.#orderedArray;
  }

  /**
   * Ends the run early. Current and later subscribers of the result streams get `error`
   * (a RunTerminatedError saying why).
   */
  terminate(error?: Error): Promise<void> {
    if (this.#terminal) return this.#stopped;
    const terminal: Terminal = { kind: 'error', error: error ?? new RunTerminatedError('the run was terminated: every subscriber unsubscribed') };
    if (this.#state.state === 'idle') this.#end('terminated', terminal); // nothing started, nothing to kill
    else this.#shutdownThen(false, 'terminated', terminal);
    return this.#stopped;
  }

  #start(): void {
    const options = this.#options;
    const state = this.#state;
    state.state = 'running';
    state.startedAt = performance.now();
    const runtime = new LocalRuntime({
      // Not Math.max: optimized, it returns a boxed double, and every comparison with the
      // runtime's limit on the hot path would then leave V8's fast integer path (a deoptimization).
      concurrency: this.#limit >= 1 ? this.#limit : 1,
      maxTasksPerWorker: options.maxTasksPerWorker,
      idleTimeout: options.idleTimeout,
      killTimeout: options.killTimeout,
      maxWorkerRss: options.maxWorkerRss,
      output: options.output,
      workerExecArgv: options.workerExecArgv,
      workerStartTimeout: options.workerStartTimeout,
      progressInterval: options.progressInterval,
      workerEnv: options.workerEnv,
      pool: options.pool && lenderOf(options.pool),
      progress: this.#innerContext,
    });
    this.runtime = runtime;
    const subscription = new Subscription();
    this.#subscription = subscription;
    // Not part of \`subscription\`: lines still in a pipe when shutdown starts must arrive too.
    // The runtime completes output$ once its processes are gone, before #finish ends our streams.
    runtime.output$.subscribe({ next: (line) => this.output.next(line) });

    // An Observable limit (a slider) may pause the run with 0; the others never emit 0.
    const limit$ = this.#limit$(runtime).pipe(
      map((limit) => {
        if (!isValidLimit(limit, 0)) {
          throw new RangeError(`the concurrency limit must be a positive integer, 0 (paused), Infinity or 'auto', got ${formatValue(limit)}`);
        }
        if (limit !== this.#limit || !this.#limitShown) {
          this.#limitShown = true;
          this.concurrency.next((this.#limit = limit));
        }
        state.concurrency = limit;
        // Paused (0): what was already handed to the runtime waits there; nothing more comes.
        runtime.setConcurrency(limit);
        this.#progressChanged();
        return limit;
      }),
    );
    const admission$ = combineLatest([limit$, runtime.depth$]).pipe(map(([limit, depth]) => limit * depth));

    // The merged outcomes go to completions$ as they come, and to ordered$ through reorderByIndex's
    // buffer, called directly rather than through a Subject and an operator (two Subscribers per task).
    const output = new RunOutput<T, M>(this, options.settle);
    const merged = mergeWithLimit<Task, TaskOutcome<T>>(new TaskFeed<T>(this, runtime, this.#source, admission$, state));

    subscription.add(merged.subscribe(output));
    this.#progressChanged();
  }

  #limit$(runtime: TaskRuntime): Observable<number> {
    const o = this.#options;
    if (typeof o.concurrency === 'number') return of(o.concurrency);
    if (isObservable(o.concurrency)) {
      // A limit that never comes would hold every task forever: completing first is an error. So
      // is completing at 0, a pause that nothing could end.
      let last: unknown;
      return concat(
        o.concurrency.pipe(
          throwIfEmpty(() => new RangeError('the concurrency Observable completed without emitting a limit (a completed BehaviorSubject emits none)')),
          tap((limit) => (last = limit)),
        ),
        defer(() => (last === 0 ? throwError(() => new RangeError('the concurrency Observable completed at 0 (paused): the run could never resume')) : EMPTY)),
      ).pipe(
        // 'auto' hands the limit to automatic concurrency, from the limit in force, until a number comes.
        distinctUntilChanged(),
        switchMap((limit) => (limit === 'auto' ? this.#auto$(runtime) : this.#manual(limit))),
      );
    }
    return this.#auto$(runtime);
  }

  /** A limit from the user: no load is read meanwhile. */
  #manual(limit: number): Observable<number> {
    this.#state.load = undefined;
    this.#state.memoryHeld = false;
    return of(limit);
  }

  /** Automatic concurrency, from the limit in force (where it starts when there is none, or 0). */
  #auto$(runtime: TaskRuntime): Observable<number> {
    const o = this.#options;
    const state = this.#state;
    return autoConcurrency$(
      {
        initial: this.#limit >= 1 ? this.#limit : clampAuto(o),
        min: o.minConcurrency,
        max: o.maxConcurrency,
        cpuTarget: o.cpuTarget,
        hysteresis: o.cpuHysteresis,
        step: o.concurrencyStep,
        sampleInterval: o.sampleInterval,
        minFreeMemory: o.minFreeMemory,
      },
      systemLoadSampler({ childPids: () => runtime.pids() }),
      () => ({
        running: runtime.executing,
        waiting: state.total === undefined || state.pulled < state.total || state.pulled - state.completed - state.failed > runtime.executing,
      }),
    ).pipe(
      map((s) => {
        state.load = s.load;
        state.memoryHeld = s.memoryHeld;
        this.#progressChanged();
        return s.limit;
      }),
    );
  }

  /** @internal Whether the run has ended (its streams get nothing more). */
  get ended(): boolean {
    return this.#terminal !== undefined;
  }

  /** @internal An ordered value goes out (see RunOutput). */
  emitOrdered(value: Ordered<T, M>): void {
    this.#emittedOrdered = true;
    this.ordered.next(value);
  }

  /** @internal The merged task outcomes ended, well (`error` undefined) or not. */
  outcomesEnded(error: unknown, graceful: boolean): void {
    if (graceful) this.#shutdownThen(true, 'completed', { kind: 'complete' });
    else this.#shutdownThen(false, 'failed', { kind: 'error', error });
  }

  /** @internal Something progress$ shows has changed. */
  progressChanged(): void {
    this.#progressChanged();
  }

  /** Starts one task's inner (see TaskObservable): its outcome goes to `sink`. */
  startTask(runtime: TaskRuntime, task: Task, index: number, sink: InnerSink<TaskOutcome<T>>): TaskInner<T> {
    const valid = isTask(task);
    const inner = new TaskInner<T>(this.#innerContext, sink, index, valid ? weightOf(task) : 1);
    this.#state.weightPulled += inner.weight;
    let invalid: string | undefined;
    let label: string | undefined;
    try {
      // Here only: the runtimes take the task as well formed.
      invalid = !valid
        ? `it is not a task: expected one made by moduleTask, taskModule, commandTask or processTask, got ${formatValue(task)}${copyHint(task)}`
        : (taskShapeProblem(task) ?? (task.options === NO_OPTIONS ? undefined : checkTaskOptions(task.options, task.kind)));
      if (invalid !== undefined && valid) label = taskLabel(task);
    } catch (error) {
      // A task whose fields are getters that throw (plain JavaScript can make anything).
      const thrown = toRemoteErrorInfo(error);
      invalid = `reading it threw ${thrown.name}: ${thrown.message}`;
    }
    if (invalid !== undefined) {
      inner.rejected(new TaskError({ kind: 'invalid', index, label, detail: invalid }));
      return inner;
    }
    inner.handle = runWithRetries(runtime, task, index, this.#options, inner);
    this.#progressChanged();
    return inner;
  }

  /** Stops the runtime, then ends every stream. */
  #shutdownThen(graceful: boolean, state: 'completed' | 'failed' | 'terminated', terminal: Terminal): void {
    if (this.#terminal) return;
    this.#terminal = terminal; // from here on, new subscribers get the end; events are ignored
    const runtime = this.runtime;
    // What runs now is stopped, not completed: the last snapshot says so.
    if (!graceful) this.#state.cancelled = this.#state.begun;
    // A terminated run delivers no outcome for the tasks it stops: its error lists them.
    if (runtime && terminal.kind === 'error' && terminal.error instanceof RunTerminatedError) {
      terminal.error.cancelled = runtime
        .executingJobs()
        .sort((a, b) => a.index - b.index)
        .map((job) => new TaskError({ kind: 'cancelled', index: job.index, label: taskLabel(job.task), attempt: job.attempt, pid: job.pid }));
    }
    const subscription = this.#subscription;
    // Shut the runtime first, so the inner teardowns below do not each kill a process.
    const stopped = runtime ? runtime.shutdown(graceful) : Promise.resolve();
    this.#stopped = stopped.then(
      () => this.#finish(state, terminal),
      (error) => this.#finish(state, { kind: 'error', error }),
    );
    if (!graceful) {
      // Say at once that the run is stopping: its processes may take up to killTimeout to go, and
      // a GUI's Stop button should not go on showing the run as running meanwhile.
      this.#state.state = 'stopping';
      this.progress.next(this.#state.snapshot(0));
    }
    // Only now: the teardowns run user code (the source's finalize, say), which may subscribe to
    // the run or call terminate(), and must then wait for the end above.
    subscription?.unsubscribe();
  }

  #end(state: 'completed' | 'failed' | 'terminated', terminal: Terminal): void {
    this.#terminal = terminal;
    this.#stopped = Promise.resolve().then(() => this.#finish(state, terminal));
  }

  #finish(state: 'completed' | 'failed' | 'terminated', terminal: Terminal): void {
    this.#finished = true;
    this.#abortListener?.();
    forgetWhenCollected.unregister(this);
    clearTimeout(this.#progressTimer);
    this.#state.state = state;
    this.#state.endedAt = performance.now();
    this.progress.next(this.#state.snapshot(0));
    this.#deliverTerminal(this.completions);
    this.#deliverTerminal(this.ordered);
    this.progress.complete();
    this.taskProgress.complete();
    this.output.complete();
    this.concurrency.complete();
  }

  #deliverTerminal(target: Pick<Observer<never>, 'error' | 'complete'>): void {
    const terminal = this.#terminal!;
    if (terminal.kind === 'complete') target.complete();
    else target.error(terminal.error);
  }

  /** Coalesces progress snapshots (see `progressInterval`). Called about twice per task. */
  #progressChanged(): void {
    if (this.#progressQueued || this.#terminal) return;
    this.#progressQueued = true;
    const wait = this.#lastProgressAt + this.#options.progressInterval - performance.now();
    if (wait <= 0) queueMicrotask(this.#emitProgress);
    else this.#progressTimer = setTimeout(this.#emitProgress, wait);
  }

  /** Made once: a closure made in #progressChanged would cost a context on every call. */
  readonly #emitProgress = (): void => {
    this.#progressQueued = false;
    if (this.#terminal) return;
    this.#lastProgressAt = performance.now();
    this.progress.next(this.#state.snapshot(this.runtime?.executing ?? 0));
  };
}

/**
 * A result stream of the run: a Subject cut down to what it needs. rxjs's Subject.next allocates
 * a closure and an iterator on every call, and these streams emit once per task.
 */
class Fanout<V> {
  #subscribers: Observer<V>[] = [];

  /** True while someone subscribes: with no one, a value need not be built. */
  get observed(): boolean {
    return this.#subscribers.length > 0;
  }

  /** Adds a subscriber; returns what removes it. */
  add(subscriber: Observer<V>): () => void {
    // Copied on write, so a next() in progress goes on with the list it started with.
    this.#subscribers = [...this.#subscribers, subscriber];
    return () => {
      this.#subscribers = this.#subscribers.filter((s) => s !== subscriber);
    };
  }

  next(value: V): void {
    const subscribers = this.#subscribers;
    for (let i = 0; i < subscribers.length; i++) subscribers[i]!.next(value);
  }

  error(error: unknown): void {
    for (const subscriber of this.#end()) subscriber.error(error);
  }

  complete(): void {
    for (const subscriber of this.#end()) subscriber.complete();
  }

  #end(): Observer<V>[] {
    const subscribers = this.#subscribers;
    this.#subscribers = [];
    return subscribers;
  }
}

/*
 * The run's hot paths go through the classes below rather than closures made per run: a method
 * on a prototype is the same function in every run, so code V8 optimized in one run, with these
 * calls inlined, still holds in the next. A closure made per run is a new call target each time,
 * and the optimized code that inlined the last one is thrown away at the start of the next run.
 */

/** What toOrderedArray() attaches to ordered$: a class, for the reason above. */
class OrderedCollector<V> implements Observer<V> {
  readonly #values: V[] = [];

  constructor(
    private readonly resolve: (values: V[]) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  next(value: V): void {
    this.#values.push(value);
  }

  error(error: unknown): void {
    this.reject(error);
  }

  complete(): void {
    this.resolve(this.#values);
  }
}

/** The run's side of every task's inner (see TaskInner), and the runtime's progress hook. */
class InnerContext {
  constructor(
    readonly state: ProgressState,
    readonly settle: boolean,
    private readonly core: { progressChanged(): void },
    readonly taskProgress: Subject<TaskProgress>,
  ) {}

  /**
   * Schedules a progress snapshot. It calls through even when one is queued already: a test of
   * that here would be a branch taken once per `progressInterval`, with no type feedback when V8
   * optimizes the result loop that inlines it, which is then thrown away mid-run (a
   * deoptimization, seen with --trace-deopt) and compiled again.
   */
  changed(): void {
    this.core.progressChanged();
  }
}

/** What the merge engine pulls and runs: the run's tasks, each as a TaskObservable. */
class TaskFeed<T> implements MergeWithLimitOptions<Task, TaskOutcome<T>> {
  constructor(
    private readonly core: RunCore<T, RunMode>,
    private readonly runtime: TaskRuntime,
    readonly source: TaskSourceInput<Task>,
    readonly limit$: Observable<number>,
    private readonly state: ProgressState,
  ) {}

  project(task: Task, index: number): TaskObservable<T> {
    return new TaskObservable(this.core, this.runtime, task, index);
  }

  onStart(): void {
    this.state.pulled++;
  }

  onSourceSize(total: number): void {
    // An Observable of tasks completed while they waited (a paused run): the count is known now.
    this.state.total = total;
    this.core.progressChanged();
  }

  onSourceDone(total: number): void {
    this.state.total = total;
    // Exact now, and what was summed at schedule$ may be off: an array changed before it was read.
    this.state.weightTotal = this.state.weightPulled;
    this.runtime.endOfInput();
    this.core.progressChanged();
  }
}

/** Where the merged outcomes go: completions$ as they come, ordered$ in input order. */
class RunOutput<T, M extends RunMode> implements Observer<TaskOutcome<T>>, ReorderTarget<Ordered<T, M>> {
  /**
   * What ordered$ will emit, waiting for its turn: the value alone in fail-fast mode, so that a
   * result that waits does not keep its outcome and stats objects alive meanwhile.
   */
  readonly #reorder = new IndexReorderer<Ordered<T, M>>(0, this);

  constructor(
    private readonly core: RunCore<T, M>,
    private readonly settle: boolean,
  ) {}

  next(outcome: TaskOutcome<T>): void {
    // A plain Subject replays nothing: with no subscriber, there is no one to tell.
    if (this.core.completions.observed) this.core.completions.next(outcome as Completion<T, M>);
    // An index out of order or repeated means a task was lost or doubled: a bug, never silent.
    const ordered = (this.settle ? outcome : (outcome as TaskResult<T>).value) as Ordered<T, M>;
    const error = this.#reorder.push(outcome.index, ordered);
    if (error) this.core.outcomesEnded(error, false);
  }

  error(error: unknown): void {
    this.core.outcomesEnded(error, false);
  }

  complete(): void {
    const gap = this.#reorder.end();
    this.core.outcomesEnded(gap, gap === undefined);
  }

  /** In input order (the reorder buffer calls it). */
  emit(ordered: Ordered<T, M>): void {
    this.core.emitOrdered(ordered);
  }

  stopped(): boolean {
    return this.core.ended;
  }
}

/**
 * The inner Observable of one task: it emits the task's outcome and completes, or errors in
 * fail-fast mode. Subscribed to like any Observable, it runs the task once per subscription;
 * the run's merge engine starts it through {@link START_DIRECT} instead, which does the same
 * without a Subscriber, a finalizer list and their teardown for every task.
 */
class TaskObservable<T> extends Observable<TaskOutcome<T>> implements DirectInner<TaskOutcome<T>> {
  constructor(
    private readonly core: RunCore<T, RunMode>,
    private readonly runtime: TaskRuntime,
    private readonly task: Task,
    private readonly index: number,
  ) {
    // One subscribe function for every task: rxjs calls it with the Observable as `this`.
    super(subscribeTask as (this: Observable<TaskOutcome<T>>, subscriber: Subscriber<TaskOutcome<T>>) => TaskInner<T>);
  }

  [START_DIRECT](sink: InnerSink<TaskOutcome<T>>): TaskInner<T> {
    return this.core.startTask(this.runtime, this.task, this.index, sink);
  }
}

function subscribeTask(this: TaskObservable<unknown>, subscriber: Subscriber<TaskOutcome<unknown>>): TaskInner<unknown> {
  return this[START_DIRECT](subscriber);
}

/**
 * One start of a task's inner: the runtime's events for the task, and, as an Unsubscribable, its
 * teardown (which cancels the task). One object per task where closures would take five.
 */
class TaskInner<T> implements JobEvents, DirectSubscription {
  handle: JobHandle | undefined = undefined;
  closed = false;
  innerSlot = -1;
  /** It has started executing (counted in the run's `begun` until it ends). */
  #begun = false;

  constructor(
    private readonly run: InnerContext,
    private readonly sink: InnerSink<TaskOutcome<T>>,
    readonly index: number,
    readonly weight: number,
  ) {}

  fulfilled(value: unknown, stats: TaskStats): void {
    const { state } = this.run;
    if (this.#begun) state.begun--;
    state.completed++;
    state.weightDone += this.weight;
    this.run.changed();
    this.closed = true;
    this.sink.next({ status: 'fulfilled', index: this.index, value: value as T, stats });
    this.sink.complete(this);
  }

  rejected(reason: TaskError): void {
    const { state } = this.run;
    if (this.#begun) state.begun--;
    state.failed++;
    state.weightDone += this.weight;
    this.run.changed();
    this.closed = true;
    if (this.run.settle) {
      this.sink.next({ status: 'rejected', index: this.index, reason });
      this.sink.complete(this);
    } else {
      this.sink.error(reason);
    }
  }

  progress(value: unknown): void {
    this.run.taskProgress.next({ index: this.index, value });
  }

  started(): void {
    if (this.#begun) return;
    this.#begun = true;
    this.run.state.begun++;
  }

  retrying(): void {
    // It no longer executes; no outcome says so.
    this.run.changed();
  }

  unsubscribe(): void {
    this.handle?.cancel();
  }
}

/**
 * What a task counts in weighted progress, from its options: its `weight`, or 1 when it has
 * none, or none that is valid (such a task fails as invalid, and still ends). The options of a
 * task made in plain JavaScript may be anything.
 */
function weightOf(task: Task): number {
  let weight: unknown;
  try {
    const options: unknown = task.options;
    if (options === NO_OPTIONS) return 1;
    weight = typeof options === 'object' && options !== null ? (options as { weight?: unknown }).weight : undefined;
  } catch {
    // A getter that throws: the task is invalid (startTask says why); it counts 1 meanwhile.
  }
  return isWeight(weight) ? weight : 1;
}

/** What every task of an array counts in weighted progress; a non-task counts 1, as when it is pulled. */
function sumOfWeights(tasks: readonly unknown[]): number {
  let sum = 0;
  for (let i = 0; i < tasks.length; i++) {
    const task = tasks[i];
    sum += isTask(task) ? weightOf(task) : 1;
  }
  return sum;
}

function clampAuto(options: ResolvedOptions): number {
  return Math.max(options.minConcurrency, Math.min(options.maxConcurrency, optimalConcurrency()));
}

/**
 * The limit a concurrency Observable holds now, when it can say without a subscription (a
 * BehaviorSubject, of this copy of rxjs or another): the first snapshot then shows it. Otherwise
 * 0, in progress snapshots, until the Observable first emits.
 */
function currentLimit(source: Observable<number | 'auto'>, options: ResolvedOptions): number {
  const getValue = (source as { getValue?: unknown }).getValue;
  if (typeof getValue !== 'function') return 0;
  try {
    const value: unknown = getValue.call(source);
    if (value === 'auto') return clampAuto(options);
    return isValidLimit(value, 1) ? value : 0;
  } catch {
    return 0; // a closed or errored subject: the run meets that when it subscribes
  }
}

/**
 * For a non-task with a task's kind: a copy of one (`{ ...task }`, `structuredClone`, JSON) has its
 * fields but not what makes it a task. Said, with what to do instead.
 */
function copyHint(value: unknown): string {
  let kind: unknown;
  try {
    kind = typeof value === 'object' && value !== null ? (value as { kind?: unknown }).kind : undefined;
  } catch {
    return ''; // a Proxy whose get trap throws: formatValue has said what it could
  }
  const make = kind === 'module' ? 'moduleTask' : kind === 'command' ? 'commandTask' : kind === 'process' ? 'processTask' : undefined;
  return make === undefined
    ? ''
    : ` (a copy of a task, made with { ...task } or structuredClone, is not one: make it again with ${make}(), with the options it needs)`;
}
