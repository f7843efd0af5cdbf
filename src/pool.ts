/**
 * A pool of warm worker processes shared by several runs.
 *
 * @module
 */
import { defaultMaxConcurrency } from './load/controller.js';
import { optimalConcurrency } from './optimal-concurrency.js';
import { checkOptionsObject, numberIn, resolveOptions, unknownKey, type ScheduleOptions } from './options.js';
import { OptionError, formatValue } from './errors.js';
import { normalizeModuleUrl } from './task.js';
import type { WorkerLender } from './runtime/local-runtime.js';
import type { KillReport } from './runtime/kill.js';
import { WorkerProcess, describeExit, type WorkerConfig, type WorkerListener } from './runtime/worker-process.js';

/** Options of a {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** How long (ms) a worker may sit idle in the pool before it exits. @default 30000 */
  idleTimeout?: number;
  /**
   * The most idle workers the pool keeps. A worker a run gives back to a full pool takes the place
   * of the one idle the longest, which exits. @default Infinity
   */
  maxIdleWorkers?: number;
  /** Milliseconds between SIGTERM and SIGKILL when the pool stops a worker that does not exit. @default 3000 */
  killTimeout?: number;
}

/**
 * What {@link WorkerPool.warm} prepares: the worker settings it starts workers with (a run uses
 * them only if its own match), and the task modules they load.
 */
export interface WarmOptions extends Pick<ScheduleOptions, 'output' | 'workerExecArgv' | 'workerStartTimeout' | 'workerEnv'> {
  /**
   * Task modules every idle worker with these settings imports before `warm()` resolves, as
   * `moduleTask` takes them (a URL, a `file:` URL string, or an absolute path). The first task of
   * a module then does not wait for its module to load; the module is evaluated once per worker,
   * as without `warm()`. A module that cannot be loaded makes `warm()` reject, naming it. While a
   * worker loads, no run takes it, and its idle time has not started. What a module's top level
   * prints then belongs to no run (with `output: 'capture'`, it is dropped).
   * @default []
   */
  modules?: ReadonlyArray<string | URL>;
}
const POOL_KEYS: ReadonlySet<string> = new Set(['idleTimeout', 'maxIdleWorkers', 'killTimeout']);
const WARM_KEYS: ReadonlySet<string> = new Set(['output', 'workerExecArgv', 'workerStartTimeout', 'workerEnv', 'modules']);

const lenders = new WeakMap<WorkerPool, WorkerLender>();

/**
 * Keeps module-task workers alive between runs, so the next run starts on warm processes
 * instead of forking new ones (tens of milliseconds each, plus the loading of task modules).
 *
 * Without a pool, every run starts its own workers and stops them before its streams end. With
 * `schedule$(tasks, { pool })`, a run still starts and stops its own commands and process tasks,
 * and kills every worker busy with one of its tasks when it is terminated or fails; but a worker
 * that is idle when the run ends goes back to the pool, and the next run takes it from there.
 * A run only takes a worker started with the same `output`, `workerExecArgv` and `workerEnv`
 * (compared by value; without `workerEnv`, `process.env` as it is when the run starts) as its own.
 *
 * Idle workers in a pool do not keep the program alive: a program may end without closing its
 * pool, and its workers are killed when it exits (or, if it is SIGKILLed, exit on their own when
 * their IPC channel closes). {@link WorkerPool.close} stops them at once.
 *
 * @example
 * ```ts
 * import { WorkerPool, schedule$, moduleTask } from 'async-process-scheduler';
 *
 * // work.js: export function square(x) { return x * x; }
 * const work = new URL('./work.js', import.meta.url);
 * const pool = new WorkerPool();
 * await pool.warm(2); // optional: start two workers now, before the first run needs them
 * for (const batch of [[1, 2], [3, 4]]) {
 *   const tasks = batch.map((x) => moduleTask<number>(work, 'square', [x]));
 *   console.log(await schedule$(tasks, { pool, concurrency: 2 }).toOrderedArray()); // [1, 4], then [9, 16]
 * }
 * await pool.close(); // its workers are gone when this resolves
 * ```
 */
export class WorkerPool {
  readonly #idle = new Map<WorkerProcess, NodeJS.Timeout | undefined>();
  readonly #stopping = new Set<Promise<unknown>>();
  readonly #idleTimeout: number;
  readonly #maxIdle: number;
  readonly #killTimeout: number;
  #closed = false;
  /**
   * Workers a warm() started and is still waiting for (to boot, then to load its modules),
   * wherever they are: in the pool, they keep the program alive and their idle time waits; a run
   * may take one meanwhile, and give it back.
   */
  readonly #held = new Set<WorkerProcess>();
  readonly #listener: WorkerListener = {
    results: () => {},
    progress: () => {},
    ready: () => {},
    output: () => {},
    unsendable: () => {}, // an idle worker is sent nothing
    reclaimed: () => {}, // the answer to a run that has given the worker back: nothing is left to move
    // An idle worker died (killed from outside, or its code crashed between tasks): forget it,
    // and kill what it may have left in its process group.
    exited: (worker) => {
      if (!this.#idle.has(worker)) return;
      clearTimeout(this.#idle.get(worker));
      this.#idle.delete(worker);
      this.#stop(worker.kill(this.#killTimeout));
    },
  };

  /**
   * @param options Idle timeout, the most idle workers kept, kill grace period.
   * @throws {OptionError} when an option is invalid.
   */
  constructor(options: WorkerPoolOptions = {}) {
    checkOptionsObject(options);
    const unknown = unknownKey(options, POOL_KEYS);
    if (unknown !== undefined) throw new OptionError(unknown, '', undefined, `options.${unknown} is not a WorkerPool option; they are ${[...POOL_KEYS].join(', ')}`);
    this.#idleTimeout = numberIn('idleTimeout', options.idleTimeout, 30_000, 0, 2 ** 31 - 1);
    this.#killTimeout = numberIn('killTimeout', options.killTimeout, 3000, 0, 2 ** 31 - 1);
    const max = options.maxIdleWorkers ?? Infinity;
    if (!(max === Infinity || (Number.isInteger(max) && max >= 0))) {
      throw new OptionError('maxIdleWorkers', 'an integer >= 0 or Infinity', max);
    }
    this.#maxIdle = max;
    lenders.set(this, {
      take: (config, maxTasks) => this.#take(config, maxTasks),
      give: (worker) => this.#give(worker),
    });
  }

  /**
   * Starts workers until `count` idle ones with these settings are in the pool (never more than
   * `maxIdleWorkers`), and waits until they have booted. A run that begins afterwards starts on
   * them at once. With `modules`, every idle worker with these settings also imports those task
   * modules before this resolves, so that their first tasks do not wait for them.
   *
   * @example
   * ```ts
   * import { WorkerPool, schedule$, taskModule } from 'async-process-scheduler';
   *
   * // work.ts: export function square(x: number) { return x * x; }
   * const url = new URL('./work.js', import.meta.url);
   * const work = taskModule<typeof import('./work.js')>(url);
   * const pool = new WorkerPool();
   * await pool.warm(4, { modules: [url] }); // four workers started, work.js loaded in each
   * console.log(pool.pids().length); // 4
   * console.log(await schedule$([work.square(3)], { pool }).toOrderedArray()); // [9], at once
   * await pool.close();
   * ```
   * @param count How many idle workers to have: at most 4 × CPUs (at least 16), since they start at once.
   * @param options The worker settings of the runs that will use them (by default, a run's
   *   defaults), and the task modules to load in them.
   * @returns Resolves once they have booted, and have loaded `modules`. Never throws: every
   *   failure is a rejection (await it).
   * @throws Rejects with an {@link OptionError} for a bad `count`, setting or module URL (checked
   *   as `schedule$` and `moduleTask` check them); with an Error naming the cause when a worker dies while
   *   starting or loading, naming the module when one cannot be loaded (the workers stay in the
   *   pool, and that module's tasks fail as they would have), or saying so when the pool is closed
   *   meanwhile.
   */
  async warm(count: number, options: WarmOptions = {}): Promise<void> {
    // Workers start all at once: a count far past what the machine can run would fork them all.
    const most = defaultMaxConcurrency(optimalConcurrency());
    if (!(Number.isInteger(count) && count >= 0 && count <= most)) {
      throw new OptionError('count', '', count, `warm(count): count must be an integer from 0 to ${most} (4 × CPUs, at least 16), got ${formatValue(count)}`);
    }
    checkOptionsObject(options, 'warm(count, options): ');
    const unknown = unknownKey(options, WARM_KEYS);
    if (unknown !== undefined) throw new OptionError(unknown, '', undefined, `warm(count, options): ${unknown} is not a warm() option; they are ${[...WARM_KEYS].join(', ')}`);
    const modules = warmModules(options.modules);
    if (this.#closed) throw new Error('the WorkerPool is closed: warm() cannot start workers in it');
    // The same validation and defaults as a run's, so that the workers fit the runs meant to use them.
    const { output, workerExecArgv, workerStartTimeout, workerEnv } = resolveOptions({
      output: options.output,
      workerExecArgv: options.workerExecArgv,
      workerStartTimeout: options.workerStartTimeout,
      workerEnv: options.workerEnv,
    });
    const config: WorkerConfig = { output, execArgv: workerExecArgv, env: workerEnv };
    const started: WorkerProcess[] = [];
    // Idle ones another warm() is still starting count too: this one waits for them as well.
    const counted = [...this.#idle.keys()].filter((w) => w.fits(config)).slice(0, count);
    try {
      for (let have = counted.length; have < count && this.#idle.size < this.#maxIdle; have++) {
        const worker = new WorkerProcess({ ...config, killTimeout: this.#killTimeout, startTimeout: workerStartTimeout }, this.#listener);
        started.push(worker);
        counted.push(worker);
        // Held until this warm() is done (see #held): it keeps the program alive meanwhile, so that
        // an awaited warm() is not cut short, and its idle time has not started.
        this.#held.add(worker);
        this.#park(worker);
      }
      const booted = await Promise.all(counted.map((w) => w.booted));
      if (this.#closed && booted.includes(false)) throw new Error('the WorkerPool was closed while warm() was starting its workers');
      // One stopped by the library (a run that took it and was terminated, say) did not fail,
      // unless it was stopped for not starting in time.
      const failed = counted.find((w, i) => !booted[i] && (!w.stopped || w.startError !== undefined));
      if (failed) {
        if (failed.startError !== undefined) throw new Error(`a worker process could not be started (${failed.startError})`);
        const why = failed.stderrReason();
        throw new Error(`a worker process exited while starting (${describeExit(failed.exitCode, failed.exitSignal)})${why ? `: ${why}` : ''}`);
      }
      if (modules.length > 0) await this.#preload(config, modules);
    } finally {
      for (const worker of started) {
        this.#held.delete(worker);
        if (this.#idle.has(worker)) this.#park(worker);
      }
    }
  }

  /**
   * Has every idle worker with these settings import `modules`; rejects naming the first module
   * that failed. Meanwhile they keep the program alive (see WorkerProcess.preload), no run takes
   * them (a task would run while a module's top level does, and the top level's schedule$ guard
   * could not tell the two apart), and their idle time starts only once they have loaded.
   */
  async #preload(config: WorkerConfig, modules: readonly string[]): Promise<void> {
    const workers = [...this.#idle.keys()].filter((w) => w.fits(config) && w.usable);
    const answers = await Promise.allSettled(workers.map((w) => w.preload(modules)));
    for (const worker of workers) if (this.#idle.has(worker)) this.#park(worker);
    if (this.#closed) throw new Error('the WorkerPool was closed while warm() was loading modules');
    for (const [i, answer] of answers.entries()) {
      if (answer.status === 'rejected') throw new Error(`warm(): ${(answer.reason as Error).message}`);
      const failure = answer.value[0];
      if (failure) throw new Error(`warm(): worker ${workers[i]!.pid} cannot load module ${failure.url}: ${failure.error.name}: ${failure.error.message}`);
    }
  }

  /**
   * Process ids of the idle workers in the pool now (workers lent to a run are the run's:
   * see `ScheduledRun.pids()`).
   *
   * @example
   * ```ts
   * import { WorkerPool } from 'async-process-scheduler';
   *
   * const pool = new WorkerPool();
   * await pool.warm(1);
   * console.log(pool.pids()); // e.g. [12345]
   * await pool.close();
   * ```
   * @returns The pids.
   */
  pids(): number[] {
    const pids: number[] = [];
    for (const worker of this.#idle.keys()) if (worker.alive && worker.pid !== undefined) pids.push(worker.pid);
    return pids;
  }

  /** Whether {@link WorkerPool.close} was called. A closed pool keeps no workers: runs using it start and stop their own. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Stops every idle worker (each exits when asked, or is killed after `killTimeout`) and keeps
   * no workers from now on. Workers busy in a run stay that run's, and stop when it ends.
   *
   * @example
   * ```ts
   * import { WorkerPool, schedule$, moduleTask } from 'async-process-scheduler';
   *
   * // work.js: export function square(x) { return x * x; }
   * const work = new URL('./work.js', import.meta.url);
   * const pool = new WorkerPool();
   * await schedule$([moduleTask(work, 'square', [3])], { pool }).toOrderedArray();
   * await pool.close();
   * console.log(pool.pids()); // []
   * ```
   * @returns Resolves once the pool's workers are gone.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const [worker, timer] of this.#idle) {
      clearTimeout(timer);
      worker.setRef(true); // an awaited close() must not be cut short
      this.#stop(worker.retire());
    }
    this.#idle.clear();
    while (this.#stopping.size) await Promise.all([...this.#stopping]);
  }

  #take(config: WorkerConfig, maxTasks: number): WorkerProcess | undefined {
    for (const [worker, timer] of this.#idle) {
      if (worker.sent >= maxTasks || !worker.fits(config) || worker.preloading) continue;
      clearTimeout(timer);
      this.#idle.delete(worker);
      if (!worker.usable) {
        // Dead, and its exit not handled yet: it is forgotten now, and what it left is killed.
        this.#stop(worker.kill(this.#killTimeout));
        continue;
      }
      worker.setRef(true);
      return worker;
    }
    return undefined;
  }

  #give(worker: WorkerProcess): boolean {
    if (this.#closed || !worker.usable || worker.inFlight > 0 || this.#maxIdle === 0) return false;
    // Full: the worker idle the longest makes room (the Map keeps them in the order they were
    // parked). Else runs of a second kind (other output, env or flags) would never find a worker
    // of theirs kept, with the pool full of the first kind. Not one that warm() is still booting
    // or loading: then the worker given back goes instead.
    for (const [oldest, timer] of this.#idle) {
      if (this.#idle.size < this.#maxIdle) break;
      if (!oldest.ready || oldest.preloading || this.#held.has(oldest)) continue;
      clearTimeout(timer);
      this.#idle.delete(oldest);
      this.#stop(oldest.retire());
    }
    if (this.#idle.size >= this.#maxIdle) return false;
    worker.adopt(this.#listener, this.#killTimeout);
    this.#park(worker);
    return true;
  }

  /**
   * Keeps `worker` idle in the pool, its idle time starting now (again, if it was there). One that
   * a warm() holds, or that is still booting, is not idle yet, and has no idle time running: a
   * held one keeps the program alive (its warm() parks it again when done); a booting one a run
   * gave back does not, and is parked again once it is ready.
   */
  #park(worker: WorkerProcess): void {
    clearTimeout(this.#idle.get(worker));
    const held = this.#held.has(worker);
    if (held || !worker.ready) {
      worker.setRef(held);
      this.#idle.set(worker, undefined);
      if (!held) {
        void worker.booted.then((ready) => {
          if (ready && this.#idle.has(worker) && this.#idle.get(worker) === undefined && !this.#held.has(worker)) this.#park(worker);
        });
      }
      return;
    }
    worker.setRef(false);
    const timer = setTimeout(() => {
      // Loading modules for warm() is not being idle: #preload parks it again once it has loaded.
      if (worker.preloading) return;
      this.#idle.delete(worker);
      this.#stop(worker.retire());
    }, this.#idleTimeout);
    timer.unref();
    this.#idle.set(worker, timer);
  }

  #stop(promise: Promise<KillReport>): void {
    this.#stopping.add(promise);
    void promise.finally(() => this.#stopping.delete(promise));
  }
}

/** The `modules` option of warm(), as URL strings; an OptionError names a bad one. */
function warmModules(modules: unknown): string[] {
  if (modules === undefined) return [];
  if (!Array.isArray(modules)) throw new OptionError('modules', 'an array of module URLs', modules, `warm(count, options): options.modules must be an array of module URLs, got ${formatValue(modules)}`);
  return modules.map((url: unknown, i) => {
    try {
      return normalizeModuleUrl(url as string | URL, 'a module');
    } catch (error) {
      throw new OptionError('modules', '', url, `warm(count, options): options.modules[${i}]: ${(error as Error).message}`);
    }
  });
}

/** @internal The pool's side of the runtime seam, for the runs that use it. */
export function lenderOf(pool: WorkerPool): WorkerLender | undefined {
  return lenders.get(pool);
}
