/**
 * The parent's handle on one warm worker process: fork, batched sends, results, death.
 *
 * @module
 */
import { fork, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { serialize } from 'node:v8';
import { argumentName, toRemoteErrorInfo, type RemoteErrorInfo } from '../errors.js';
import type { OutputMode } from '../options.js';
import { objectArray } from '../collections.js';
import { guardChild, trackChild } from './cleanup.js';
import { runsNow, killTree, type KillReport } from './kill.js';
import { afterChannelClosed, afterOutputClosed, releaseUnstarted } from './child-exit.js';
import { afterQuiet, tapOutput, type OutputLine, type OutputTap } from './output.js';
import {
  DEFAULT_PROGRESS_INTERVAL, INDEXED_TASK_WIDTH, isTagged, jsonExact, pack, RESULT_WIDTH, TAG, TASK_WIDTH, unpack, WORKER_LEFT_ALONE_EXIT, type ParentMessage, type RunMessage, type WorkerMessage,
} from './protocol.js';

const here = import.meta.url;
/**
 * How much older than `worker-main.js` the bundle may be and still come from the same build.
 * Not zero: npm writes a package's files as it unpacks them, in any order, with their own
 * times, so the bundle may be a few milliseconds older than the graph in a fresh install. A
 * build that left the bundle behind (`tsc` alone, long after `npm run build`) is far older.
 */
const STALE_BUNDLE_MS = 60_000;
/**
 * The worker entry beside this file. Compiled, it is `worker-main.cjs`: the entry and the little it
 * imports bundled into one CommonJS file (`npm run build`), which starts sooner than the ES module
 * graph `worker-main.js`. That one serves a copy compiled without the bundle, or compiled again
 * well after it (a bundle from an older build may not speak the parent's protocol). From source
 * under tsx, it is `worker-main.ts`.
 */
const WORKER_ENTRY = workerEntry();

function workerEntry(): URL {
  if (here.endsWith('.ts')) return new URL('../child/worker-main.ts', here);
  const bundle = new URL('../child/worker-main.cjs', here);
  const graph = new URL('../child/worker-main.js', here);
  const bundled = statSync(bundle, { throwIfNoEntry: false });
  const compiled = statSync(graph, { throwIfNoEntry: false });
  return bundled && (!compiled || bundled.mtimeMs >= compiled.mtimeMs - STALE_BUNDLE_MS) ? bundle : graph;
}

/** See ScheduleOptions.workerStartTimeout. */
export const DEFAULT_START_TIMEOUT = 30_000;

/** How {@link WorkerProcess.startError} begins for a worker that took too long to boot. */
export const START_TIMED_OUT = 'not started within workerStartTimeout,';

export interface WorkerOptions {
  output: OutputMode;
  execArgv: readonly string[];
  env: NodeJS.ProcessEnv | undefined;
  killTimeout: number;
  /** Killed if it has not booted (sent 'ready') within this many ms; startError says so. */
  startTimeout: number;
}

/** What a worker must have been started with to serve a run: see {@link WorkerProcess.fits}. */
export type WorkerConfig = Pick<WorkerOptions, 'output' | 'execArgv' | 'env'>;

/** What a worker tells its owner. */
export interface WorkerListener {
  /**
   * Results, flat: {@link RESULT_WIDTH} values each (see protocol.ts), as the worker sent them. A
   * result whose task id is not a number is not one; the owner skips it.
   */
  results(worker: WorkerProcess, results: readonly unknown[]): void;
  progress(worker: WorkerProcess, id: number, value: unknown): void;
  /** The worker has booted: what it was sent starts now. */
  ready(worker: WorkerProcess): void;
  /** The process is gone. `fatal` is an uncaught error it reported first, if any. */
  exited(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null, fatal: FatalReport | undefined): void;
  output(line: OutputLine): void;
  /** Tasks that could not be sent (an argument that cannot be cloned); the rest of their batch went. */
  unsendable(tasks: UnsendableTask[]): void;
  /** Tasks the worker gave back after {@link WorkerProcess.reclaim}: they will not run there. */
  reclaimed(worker: WorkerProcess, ids: readonly number[]): void;
}

export interface FatalReport {
  id: number | undefined;
  error: RemoteErrorInfo;
}

/** The longest a retiring worker may take to drain its output (it leaves by itself after 60 s). */
const RETIRE_MAX_MS = 65_000;
/**
 * A worker ready this long is entrusted to the guardian (see guardChild): if the parent is killed
 * with SIGKILL while a task keeps the worker in synchronous code, the guardian ends it and its
 * process group. Not sooner: runs of short tasks need no guardian process, and do not pay for its start.
 */
const GUARD_AFTER_MS = 1000;

/** A task that could not be sent (an argument that cannot be cloned). */
export interface UnsendableTask {
  id: number;
  message: string;
}

let nextWorkerId = 1;

export class WorkerProcess {
  readonly id = nextWorkerId++;
  readonly child: ChildProcess;
  readonly pid: number | undefined;
  ready = false;
  /**
   * Tasks sent and neither answered nor skipped. The owner knows their ids (it checks every result
   * against the tasks it sent to this worker) and calls answered() for each result it accepts:
   * one count here, rather than a second set of ids updated twice per task.
   */
  inFlight = 0;
  /** Tasks sent over this worker's life. */
  sent = 0;
  /** A reclaim is on its way: no second one until it is answered. */
  reclaiming = false;
  /**
   * Started ahead of time to take over from a worker that has used up `maxTasksPerWorker`: its
   * lane sends it tasks while it starts, so that start-up overlaps the work before it.
   */
  successor = false;
  /** When its resident memory was last read (performance.now()), with `maxWorkerRss`. */
  rssCheckedAt = -Infinity;
  /** The task index to attribute captured output to; set by the owner. */
  currentIndex: number | undefined;
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  alive = true;
  /**
   * Why no process could be started at all (`spawn node EMFILE`, say), when that happened: the
   * worker then ends at once, with no exit code, and is counted as one that died while starting.
   */
  startError: string | undefined;
  readonly output: OutputTap;
  readonly exited: Promise<void>;
  /** Resolves true once the worker has booted, false if it exits first. */
  readonly booted: Promise<boolean>;

  /** The library asked it to end (retire or kill) while it was alive: its exit is no failure of its own. */
  stopped = false;

  /** Numbers the reclaims; from a random start, so that task code cannot guess the answer's. */
  #reclaimSeq = Math.floor(Math.random() * 2 ** 30);
  /** The preloads asked and not answered, by seq (numbered like the reclaims, for the same reason). */
  readonly #preloads = new Map<number, (failures: PreloadFailure[]) => void>();
  #preloadSeq = Math.floor(Math.random() * 2 ** 30);
  /** Preloads under way. While there are any, the worker keeps the program alive, whatever setRef says. */
  #preloading = 0;
  /** What setRef asked last. */
  #wantRef = true;
  #fnIds = new Map<string, Map<string, number>>();
  #fnCount = 0;
  // Arrays of objects from the start (see objectArray), as every batch's are.
  #defs: Array<[number, string, string]> = objectArray();
  /** Flat: #width values per task (see RunMessage). */
  #tasks: unknown[] = objectArray();
  /** Values per task in #tasks: with the task's index in capture mode. */
  readonly #width: number;
  /** Every argument of the tasks in `#tasks` is jsonExact: the batch can go as JSON text. */
  #packable = true;
  #capture: boolean;
  #killTimeout: number;
  #flushQueued = false;
  /** The progress coalescing its tasks should have (see coalesceProgress), and what the worker was told. */
  #progressEvery = DEFAULT_PROGRESS_INTERVAL;
  #toldProgressEvery = DEFAULT_PROGRESS_INTERVAL;
  /** Made once: a closure made in send(), which runs for every task, would cost a context on every call. */
  readonly #flushTask = (): void => this.#flush();
  #fatal: FatalReport | undefined;
  #untrack: () => void;
  #guardTimer: NodeJS.Timeout | undefined;
  #unguard: (() => void) | undefined;
  #listener: WorkerListener;
  readonly #config: WorkerConfig;
  #booted!: (ready: boolean) => void;

  constructor(options: WorkerOptions, listener: WorkerListener) {
    this.#listener = listener;
    // The environment it starts with, as a copy: without `env` that is process.env as it is now,
    // which the program may change before a later run asks for a worker (see fits).
    this.#config = { output: options.output, execArgv: [...options.execArgv], env: { ...(options.env ?? process.env) } };
    this.booted = new Promise((resolve) => (this.#booted = resolve));
    this.#capture = options.output === 'capture';
    this.#width = this.#capture ? INDEXED_TASK_WIDTH : TASK_WIDTH;
    this.#killTimeout = options.killTimeout;
    this.child = fork(WORKER_ENTRY, [], {
      serialization: 'advanced',
      // Its own process group, so termination reaches whatever its tasks spawn.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      execArgv: [...workerExecArgv(process.execArgv), ...options.execArgv],
      env: channelFree(options.env ?? process.env),
    });
    this.pid = this.child.pid;
    this.#untrack = this.pid === undefined ? () => {} : trackChild(this.pid);
    this.output = tapOutput(this.child.stdout, this.child.stderr, options.output, this.pid, () => this.currentIndex, (line) =>
      this.#listener.output(line),
    );
    this.child.on('message', (message: unknown) => this.#onMessage(unpack(message) as WorkerMessage));
    if (this.pid !== undefined) this.#limitStart(options.startTimeout);
    // 'error' here means a send failed after the channel closed ('exit' follows or has happened),
    // or that no process could be started (below).
    this.child.on('error', () => {});
    this.exited = new Promise((resolve) => {
      let ended = false;
      const end = (code: number | null, signal: NodeJS.Signals | null) => {
        if (ended) return;
        ended = true;
        // Messages still in the channel, and output still in the pipes, come first.
        afterChannelClosed(this.child, () => afterOutputClosed(this.child, () => {
          this.alive = false;
          this.exitCode = code;
          this.exitSignal = signal;
          this.#untrack();
          clearTimeout(this.#guardTimer);
          this.#unguard?.();
          this.output.end();
          this.#booted(false);
          this.#listener.exited(this, code, signal, this.#fatal);
          resolve();
        }));
      };
      this.child.once('exit', end);
      // No process at all (too many open files or processes: EMFILE, EAGAIN): Node emits 'error'
      // and never 'exit'. Its pipes were never connected to anything.
      if (this.pid === undefined) {
        this.child.once('error', (error: NodeJS.ErrnoException) => {
          this.startError = error.message;
          releaseUnstarted(this.child);
          end(null, null);
        });
      }
    });
  }

  #guardLater(): void {
    this.#guardTimer = setTimeout(() => {
      if (this.alive && this.pid !== undefined) this.#unguard = guardChild(this.pid);
    }, GUARD_AFTER_MS);
    this.#guardTimer.unref();
  }

  /** A worker that never boots (a preload of workerExecArgv that never finishes) would be waited for for ever. */
  #limitStart(ms: number): void {
    const timer = setTimeout(() => {
      if (this.ready || !this.alive) return;
      this.startError = `${START_TIMED_OUT} ${ms} ms`;
      void this.kill(this.#killTimeout);
    }, ms);
    timer.unref();
    void this.booted.then(() => clearTimeout(timer));
  }

  /**
   * Alive as far as can be told now, for a worker about to be handed a run's tasks: `alive` stays
   * true until its exit has been handled, a while after it died (killed from outside while idle,
   * say); sent tasks then, it would fail one of them for a death that was none of its doing.
   */
  get usable(): boolean {
    if (!this.alive || this.child.exitCode !== null || this.child.signalCode !== null || !this.child.connected) return false;
    return this.pid === undefined || runsNow(this.pid) !== false;
  }

  /** True if this worker was started with `config`, so it can serve a run that asks for it. */
  fits(config: WorkerConfig): boolean {
    const own = this.#config;
    return (
      own.output === config.output &&
      sameEnv(own.env, config.env ?? process.env) &&
      own.execArgv.length === config.execArgv.length &&
      own.execArgv.every((arg, i) => arg === config.execArgv[i])
    );
  }

  /** Hands the worker to a new owner (a run, or a pool between runs): its events go there from now on. */
  adopt(listener: WorkerListener, killTimeout: number): void {
    this.output.release();
    this.#listener = listener;
    this.#killTimeout = killTimeout;
  }

  /**
   * Whether this worker keeps the parent's event loop alive. An idle worker in a pool does not:
   * a program may end while its pool holds workers (they are killed on exit).
   */
  setRef(ref: boolean): void {
    this.#wantRef = ref;
    this.#applyRef(ref || this.#preloading > 0);
  }

  /** Whether it is loading modules for a preload (see WorkerPool.warm): a pool does not lend it meanwhile. */
  get preloading(): boolean {
    return this.#preloading > 0;
  }

  #applyRef(ref: boolean): void {
    const handles = [this.child, this.child.channel, this.child.stdout, this.child.stderr] as Array<{ ref?(): void; unref?(): void } | null | undefined>;
    for (const handle of handles) {
      if (ref) handle?.ref?.();
      else handle?.unref?.();
    }
  }

  /**
   * Queues a task; tasks queued in the same tick go as one message. `index` is the task's index
   * in the run, for output marks in `output: 'capture'` mode. Its fields are parameters, not an
   * object: they go straight into the flat batch, with nothing built per task on the way.
   */
  send(id: number, module: string, exportName: string, args: readonly unknown[], index: number): void {
    // By module, then export: no key string to build and hash for every task.
    let byExport = this.#fnIds.get(module);
    if (!byExport) this.#fnIds.set(module, (byExport = new Map()));
    let fnId = byExport.get(exportName);
    if (fnId === undefined) {
      fnId = this.#fnCount++;
      byExport.set(exportName, fnId);
      this.#defs.push([fnId, module, exportName]);
    }
    const tasks = this.#tasks;
    tasks.push(id, fnId, args);
    if (this.#capture) tasks.push(index);
    if (this.#packable) this.#packable = allJsonExact(args);
    this.inFlight++;
    this.sent++;
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(this.#flushTask);
    }
  }

  /** The owner accepted the result of one of the tasks it sent. */
  answered(): void {
    this.inFlight--;
  }

  /** The owner took back a task the worker gave back (see reclaim): it neither ran nor counts toward `sent`. */
  gaveBack(): void {
    this.inFlight--;
    this.sent--;
  }

  /** Tells the worker not to start a queued task: one it was sent, that has not been answered. */
  skip(id: number): void {
    this.inFlight--;
    // Not sent yet (tasks go at the end of the tick): it never will be. A skip must never
    // overtake its task, since the worker forgets a skip whose task it does not have.
    const tasks = this.#tasks;
    const width = this.#width;
    for (let i = 0; i < tasks.length; i += width) {
      if (tasks[i] === id) {
        tasks.splice(i, width);
        return;
      }
    }
    this.#post({ [TAG]: 'skip', id });
  }

  /** Asks the worker to exit once it is idle (it exits when its IPC channel closes); one still starting is killed. */
  retire(): Promise<KillReport> {
    if (!this.alive) return Promise.resolve({ forced: false });
    this.stopped = true;
    // Still starting: it has run no task, and would otherwise be waited for until it is ready.
    if (!this.ready) return this.kill(this.#killTimeout);
    if (this.child.connected) this.child.disconnect();
    return Promise.race([
      // A worker that found no one in its session as it left says so with its exit code.
      this.exited.then(() => killTree(this.child, 0, this.child.exitCode === WORKER_LEFT_ALONE_EXIT)).then(() => ({ forced: false })),
      // It drains its output before it exits: wait while the output flows, and stop it once it has
      // been quiet as long as a kill would wait.
      this.#quiet(Math.max(1000, this.#killTimeout)).then(() => killTree(this.child, 0)),
    ]);
  }

  /**
   * Resolves once no output has come from the worker for `quietMs`, `maxMs` have passed, or the
   * worker has exited, whatever comes first.
   */
  outputQuiet(quietMs: number, maxMs: number): Promise<void> {
    return Promise.race([this.#quiet(quietMs, maxMs), this.exited]);
  }

  /**
   * Resolves once no output has come from the worker for `quietMs` (or `maxMs` have passed,
   * whatever comes); never, if the worker exits first.
   */
  #quiet(quietMs: number, maxMs = RETIRE_MAX_MS): Promise<void> {
    return new Promise((resolve) => {
      const stop = afterQuiet([this.child.stdout, this.child.stderr], quietMs, maxMs, resolve, false);
      void this.exited.then(stop);
    });
  }

  /** Terminates the worker and its process group (SIGTERM, then SIGKILL after `graceMs`). */
  kill(graceMs: number): Promise<KillReport> {
    // Not for one already dead: what is killed then is only what it left in its group.
    if (this.alive) this.stopped = true;
    // Resolves once its output is read to the end too, so that nothing it wrote is lost.
    if (this.pid === undefined) return killTree(this.child, graceMs);
    return killTree(this.child, graceMs).then((report) => this.exited.then(() => report));
  }

  /**
   * Tells the worker, with the next tasks it is sent, to coalesce its tasks' progress reports to
   * one per `ms` (the run's `progressInterval`).
   */
  coalesceProgress(ms: number): void {
    this.#progressEvery = ms;
  }

  #flush(): void {
    this.#flushQueued = false;
    if (this.#tasks.length === 0) return;
    const message: RunMessage = { [TAG]: 'run', tasks: this.#tasks };
    if (this.#capture) message.indexed = true;
    if (this.#defs.length) message.defs = this.#defs;
    if (this.#progressEvery !== this.#toldProgressEvery) message.progressEvery = this.#toldProgressEvery = this.#progressEvery;
    const packable = this.#packable;
    this.#tasks = objectArray();
    this.#defs = objectArray();
    this.#packable = true;
    try {
      // Text when it can be (see protocol.ts): V8's serializer would hold on to every argument array.
      this.#post(packable ? pack(message) : message);
    } catch {
      this.#sendOneByOne(message);
    }
  }

  /** A batch could not be cloned: send what can be sent, and report the rest. */
  #sendOneByOne(message: RunMessage): void {
    const bad: UnsendableTask[] = [];
    const { tasks, indexed, defs, progressEvery } = message;
    // What the batch told the worker besides its tasks goes with the first message sent.
    let told: Partial<RunMessage> | undefined = { ...(defs ? { defs } : {}), ...(progressEvery !== undefined ? { progressEvery } : {}) };
    const width = this.#width;
    for (let i = 0; i < tasks.length; i += width) {
      const culprit = findUncloneable(tasks[i + 2] as readonly unknown[]);
      if (culprit) {
        this.inFlight--;
        bad.push({ id: tasks[i] as number, message: culprit });
        continue;
      }
      try {
        this.#post({ [TAG]: 'run', tasks: tasks.slice(i, i + width), ...(indexed ? { indexed } : {}), ...told });
      } catch (error) {
        // Its arguments cloned a moment ago, and not now: a getter that throws on some reads only.
        this.inFlight--;
        bad.push({ id: tasks[i] as number, message: argumentsUnsendable(error) });
        continue;
      }
      told = undefined;
    }
    if (told && Object.keys(told).length > 0) this.#post({ [TAG]: 'run', tasks: [], ...told });
    if (bad.length) this.#listener.unsendable(bad);
  }

  #post(message: ParentMessage | string): void {
    if (this.child.connected) this.child.send(message);
  }

  /**
   * The line of what it wrote to stderr that says why it died: Node prints an uncaught error as
   * source line, caret, then `Error: why`, then the stack. Else the end of its stderr.
   */
  stderrReason(): string {
    const stderr = this.output.stderrTail().trim();
    return /^(?:[A-Z]\w*)?(?:Error|Exception)\b.*$/m.exec(stderr)?.[0] ?? stderr.slice(-500);
  }

  /**
   * Has the worker import task modules now (see WorkerPool.warm). Resolves with the ones it could
   * not load, and why (none: all loaded); rejects if the worker exits first.
   */
  preload(urls: readonly string[]): Promise<PreloadFailure[]> {
    if (!this.alive || !this.child.connected) return Promise.reject(new Error(`worker ${this.pid} has exited`));
    const seq = ++this.#preloadSeq;
    // An awaited warm() must not be cut short: the worker keeps the program alive until it answers.
    this.#preloading++;
    this.#applyRef(true);
    const answered = new Promise<PreloadFailure[]>((resolve, reject) => {
      this.#preloads.set(seq, resolve);
      this.#post({ [TAG]: 'preload', urls: [...urls], seq });
      void this.exited.then(() => {
        if (!this.#preloads.delete(seq)) return;
        const why = this.stderrReason();
        reject(new Error(`worker ${this.pid} exited (${describeExit(this.exitCode, this.exitSignal)}) while it was loading ${urls.join(', ')}${why ? `: ${why}` : ''}`));
      });
    });
    // In capture mode, what the modules printed may still be in the pipes when the answer comes:
    // it stays loading (so no run takes it) until they are quiet, and those lines go to no run.
    const done = this.#capture ? answered.then((failures) => this.outputQuiet(HANDOVER_QUIET_MS, HANDOVER_QUIET_MAX_MS).then(() => failures)) : answered;
    const settled = (): void => {
      this.#preloading--;
      this.#applyRef(this.#wantRef || this.#preloading > 0);
    };
    done.then(settled, settled);
    return done;
  }

  /**
   * Asks the worker to give back up to `count` of its queued tasks that have not started, the
   * ones sent last first; the answer comes to the listener's `reclaimed`.
   */
  reclaim(count: number): void {
    this.reclaiming = true;
    // Tasks of this tick go first: the worker can only give back what it has been sent.
    this.#flush();
    this.#post({ [TAG]: 'reclaim', count, seq: ++this.#reclaimSeq });
  }

  #onMessage(message: WorkerMessage): void {
    // Anything user code sends with process.send is not ours: ignore it rather than be confused by it.
    if (!isTagged(message)) return;
    switch (message[TAG]) {
      case 'done': {
        // Well-formed batches only: flat, whole results. The owner then accepts only results of
        // tasks it sent to this worker and has not seen answered: a forged or repeated id must not
        // settle someone's task.
        const results = message.results as unknown;
        if (Array.isArray(results) && results.length > 0 && results.length % RESULT_WIDTH === 0) this.#listener.results(this, results);
        break;
      }
      case 'progress':
        if (typeof message.id === 'number') this.#listener.progress(this, message.id, message.value);
        break;
      case 'ready':
        // Not one being stopped: killed for not starting in time, its 'ready' may still come (from
        // the pipe, or from a process that outlives its SIGTERM), and tasks sent to it would die with it.
        if (this.ready || this.stopped) break;
        this.ready = true;
        this.#guardLater();
        this.#booted(true);
        this.#listener.ready(this);
        break;
      case 'reclaimed': {
        const ids = message.ids as unknown;
        // Only the answer to the reclaim asked: one forged by task code must not stand in for it
        // (the tasks the worker gives back would then be dropped, or kept ones moved).
        if (!this.reclaiming || message.seq !== this.#reclaimSeq || !Array.isArray(ids) || !ids.every((id) => typeof id === 'number')) break;
        this.reclaiming = false;
        this.#listener.reclaimed(this, ids);
        break;
      }
      case 'preloaded': {
        const done = this.#preloads.get(message.seq);
        const failures = message.failures as unknown;
        // Only an answer to a preload asked, whole: as for a reclaim, task code must not forge one.
        if (!done || !Array.isArray(failures) || !failures.every(isPreloadFailure)) break;
        this.#preloads.delete(message.seq);
        done(failures);
        break;
      }
      case 'fatal':
        if (typeof message.error !== 'object' || message.error === null) break;
        this.#fatal = { id: typeof message.id === 'number' ? message.id : undefined, error: message.error };
        break;
    }
  }
}


/**
 * In `output: 'capture'` mode, how long (ms) a worker's pipes must have been quiet before it changes
 * hands (a run gives it back to its pool; a pool's preload ends), so that what was written before
 * reaches the one it belongs to.
 */
export const HANDOVER_QUIET_MS = 10;
/**
 * The longest that wait lasts: what was written is in the pipes when the result or answer comes,
 * and is read well within it. A worker that keeps writing (a timer or a child a task left
 * running, logging) changes hands then; what it writes while idle in its pool belongs to no run.
 */
export const HANDOVER_QUIET_MAX_MS = 250;

/** How a process ended, for a message: its exit code, or the signal that killed it. */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

/** A module a worker could not preload, and why. */
export interface PreloadFailure {
  url: string;
  error: RemoteErrorInfo;
}

function isPreloadFailure(value: unknown): value is PreloadFailure {
  if (typeof value !== 'object' || value === null) return false;
  const { url, error } = value as Record<string, unknown>;
  return typeof url === 'string' && typeof error === 'object' && error !== null && typeof (error as RemoteErrorInfo).message === 'string';
}

function allJsonExact(values: readonly unknown[]): boolean {
  try {
    for (let i = 0; i < values.length; i++) if (!jsonExact(values[i])) return false;
    return true;
  } catch {
    // An element getter that throws now, though it did not when the task started: the send
    // meets it too, and names it (see findUncloneable).
    return false;
  }
}

/**
 * The parent's Node flags a worker inherits. A debugger flag would make workers fight over the
 * port. A TypeScript loader (tsx) costs hundreds of milliseconds per start: a compiled worker
 * entry drops it and registers it lazily, only when it meets a TypeScript task module.
 */
export function workerExecArgv(parent: readonly string[], compiledEntry = !WORKER_ENTRY.pathname.endsWith('.ts')): string[] {
  const out: string[] = [];
  for (let i = 0; i < parent.length; i++) {
    const arg = parent[i]!;
    if (arg.startsWith('--inspect')) continue;
    // The parent's own program (`node -e code`, `-p`) must not become every worker's program.
    if (/^(-e|-p|-pe|--eval|--print|--input-type)$/.test(arg)) {
      i++; // and its value
      continue;
    }
    if (/^--(eval|print|input-type)=/.test(arg)) continue;
    if (compiledEntry) {
      const takesValue = /^--(import|require|loader|experimental-loader)$/.test(arg) || arg === '-r';
      const value = takesValue ? (parent[i + 1] ?? '') : arg;
      if (/(^|[\\/=@])tsx([\\/]|$)/.test(value)) {
        if (takesValue) i++;
        continue;
      }
    }
    out.push(arg);
  }
  return out;
}

/**
 * The environment without the variables through which Node tells a child about its IPC channel:
 * given in `workerEnv` (copied from a process that had a channel, say), they come before the ones
 * fork() adds, and the worker would read its channel as JSON while the parent writes V8's
 * format, and never be heard from.
 */
function channelFree(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (env.NODE_CHANNEL_SERIALIZATION_MODE === undefined && env.NODE_CHANNEL_FD === undefined) return env;
  const { NODE_CHANNEL_SERIALIZATION_MODE: _mode, NODE_CHANNEL_FD: _fd, ...rest } = env;
  return rest;
}

/** Names the first argument that structured clone refuses, or undefined when all clone. */
function findUncloneable(args: readonly unknown[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    try {
      serialize(args[i]);
    } catch (error) {
      // Whatever it threw: a getter in the value may throw anything.
      return `${argumentName(args, i)} cannot be sent to a child process: ${toRemoteErrorInfo(error).message}`;
    }
  }
  try {
    serialize(args);
  } catch (error) {
    return argumentsUnsendable(error);
  }
  return undefined;
}

/** Why a task's arguments as a whole could not be sent, whatever was thrown. */
function argumentsUnsendable(error: unknown): string {
  return `the arguments cannot be sent to a child process: ${toRemoteErrorInfo(error).message}`;
}

/**
 * Whether two worker environments start the same process: the same variables with the same
 * values, as Node passes them (a value is made a string; an undefined one is left out). By value,
 * so that `{ ...process.env, X: '1' }` written anew for each run still finds the pool's workers.
 */
function sameEnv(a: NodeJS.ProcessEnv | undefined, b: NodeJS.ProcessEnv | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined) return false;
  const passed = (env: NodeJS.ProcessEnv) => Object.keys(env).filter((key) => env[key] !== undefined);
  const keys = passed(a);
  if (keys.length !== passed(b).length) return false;
  return keys.every((key) => b[key] !== undefined && `${a[key]}` === `${b[key]}`);
}
