/**
 * The local runtime: tasks run in processes on this machine.
 *
 * Execution is organised in *lanes*, one per unit of concurrency. A lane runs one task at a
 * time, in order; a lane may own a warm worker process for module tasks. Module tasks are sent
 * to the lane's worker ahead of time (pipelining, up to `depth` per lane) so a worker never
 * idles waiting for its next task; commands and process tasks start when they reach the head of
 * their lane. So at most `concurrency` tasks execute at once, whatever the kinds. A lane left
 * with nothing to do takes a share of the tasks waiting behind another lane's head (see
 * #rebalance), so one slow task does not hold up those sent with it.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { devNull } from 'node:os';
import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import { TaskError, argumentName, toRemoteErrorInfo, type TaskErrorInit } from '../errors.js';
import { IdTable, RingQueue, objectArray } from '../collections.js';
import { optimalConcurrency } from '../optimal-concurrency.js';
import type { OutputMode } from '../options.js';
import { taskLabel, type ModuleTask, type Task } from '../task.js';
import { exitWithin } from './child-exit.js';
import { trackChild } from './cleanup.js';
import { runCommand, shortageDetail } from './command.js';
import { killTree, sweepNow, sweepSession, treeGone } from './kill.js';
import type { OutputLine } from './output.js';
import { runProcessTask } from './process-task.js';
import { checkRss } from './rss.js';
import { DISCONNECTED_BY_TASK, EXACT_SIZE_FROM, EXITED_WHILE_LOADING, FULFILLED, FULFILLED_UNDEFINED, RESULT_WIDTH, THREW, cloneRisk, describeOversized, oversized, readBack, roughSize } from './protocol.js';
import type { ExecutingJob, JobEvents, JobHandle, JobSpec, TaskRuntime, TaskStats } from './runtime.js';
import { HANDOVER_QUIET_MAX_MS, HANDOVER_QUIET_MS, START_TIMED_OUT, WorkerProcess, describeExit, type FatalReport, type UnsendableTask, type WorkerConfig, type WorkerListener } from './worker-process.js';

/** Keeps idle workers between runs (a WorkerPool, seen from a run). */
export interface WorkerLender {
  /**
   * An idle worker started with `config` that has been sent fewer than `maxTasks` tasks, handed
   * over to the caller; or undefined.
   */
  take(config: WorkerConfig, maxTasks: number): WorkerProcess | undefined;
  /** Takes an idle worker back; false when it will not keep it (the caller then stops it). */
  give(worker: WorkerProcess): boolean;
}

export interface LocalRuntimeOptions {
  concurrency: number;
  maxTasksPerWorker: number;
  idleTimeout: number;
  killTimeout: number;
  maxWorkerRss: number | undefined;
  output: OutputMode;
  workerExecArgv: readonly string[];
  workerStartTimeout: number;
  /** A task's progress reports are coalesced to one per this many ms (in its worker). */
  progressInterval: number;
  workerEnv: NodeJS.ProcessEnv | undefined;
  /** Where idle workers come from and go back to, if anywhere. */
  pool?: WorkerLender | undefined;
  /**
   * Told when a task starts executing. Tasks start a microtask after start() (the jobs a tick
   * brings are dispatched together), so a progress report made at start() would not count them.
   * An object with a method rather than a callback: the run's class instance gives the same
   * call target in every run (see schedule.ts).
   */
  progress?: { changed(): void } | undefined;
}

/**
 * Pipelining aims to keep about this much work (µs) queued in each worker, and at most
 * MAX_DEPTH tasks. With tiny tasks the cap is what binds. Every batch sent wakes the worker,
 * and the woken worker often takes the parent's CPU for a while (the more so, the fewer the
 * CPUs): fewer, larger batches keep the parent, the bottleneck with tiny tasks, running.
 * 256 rather than 128: tiny tasks about 5% faster cold, 10% warm, 15% steady and lazily
 * generated (interleaved A/Bs, bench/README.md, "a deeper pipeline after all").
 */
const PIPELINE_BUDGET_US = 1000;
export const MAX_DEPTH = 256;
/**
 * And about this many bytes of arguments ({@link roughSize}) sent ahead to each worker, which
 * holds them until it runs them: tasks with large arguments are pipelined only as deep as this
 * allows, or not at all, and the run admits only as many as its lanes may hold, from the moment
 * they start (see #weigh).
 */
export const PIPELINE_BUDGET_BYTES = 4 * 1024 * 1024;
/**
 * How long a lane may sit idle, with tasks waiting behind another lane's head, before they move
 * to it. Tiny tasks are done by then: only a head that runs long sets it off.
 */
const REBALANCE_AFTER_MS = 20;
/** A worker's resident memory is read at most this often (ms), with `maxWorkerRss`. */
const RSS_CHECK_INTERVAL_MS = 50;
/** Consecutive workers dying before they are ready, after which the runtime stops forking. */
const MAX_BOOT_FAILURES = 3;

/**
 * The most worker processes a run starts at once: twice the CPUs it may use, at least 4. A limit
 * raised to hundreds on a small machine would otherwise start them all together, each slower than
 * in turns (a start is about 60 ms of CPU here), many past `workerStartTimeout`.
 */
export function maxStartingWorkers(): number {
  return Math.max(4, 2 * optimalConcurrency());
}
/**
 * How long a command or process task that cannot start for want of file descriptors or processes
 * (EMFILE, ENFILE, EAGAIN) waits, in all, when none of the run's processes is running to free some: then it fails
 * (kind `spawn`). While some run, it waits for them, however long they take.
 */
const SHORTAGE_WAIT_MAX_MS = 5000;
/** The first pause before such a task tries again when none of the run's processes ended; it doubles up to 1 s. */
const SHORTAGE_RETRY_MS = 10;
/**
 * Descriptors a spawn may need at once: a socket pair for each of up to four piped stdio
 * streams, and the pipe libuv makes to hear of a failed exec.
 */
const SPAWN_FDS = 10;
/**
 * Job ids, unique in the process rather than per runtime: a pooled worker serves one run after
 * another, and an id it was told to skip, or any late message it sends, must never match a task
 * of the next run.
 */
let nextJobId = 1;

type JobState = 'queued' | 'sent' | 'running' | 'done';

/**
 * One job. The spec's fields are copied in rather than the spec kept: the caller's spec object
 * then does not outlive start(), and V8 can leave it unallocated once start() is inlined.
 */
class Job implements JobHandle {
  state: JobState = 'queued';
  readonly task: Task;
  readonly index: number;
  readonly attempt: number;
  readonly timeout: number | undefined;
  lane: Lane | undefined;
  worker: WorkerProcess | undefined;
  child: ChildProcess | undefined;
  timer: NodeJS.Timeout | undefined;
  stderrSince = 0;
  /** A command's or process task's stderr tail so far (a module task's is its worker's). */
  stderrTail: (() => string) | undefined = undefined;
  /** Counted in `executing`: running, and its worker (if it has one) past its start-up. */
  counted = false;
  /** What a module task's arguments weigh ({@link roughSize}), set when it starts; 0 for other tasks. */
  bytes = 0;
  /** When the command or process task first could not start for want of file descriptors or processes. */
  shortSince: number | undefined = undefined;
  /** In the runtime's list of tasks waiting for resources (#short). */
  short = false;
  constructor(
    readonly id: number,
    spec: JobSpec,
    readonly events: JobEvents,
    private readonly runtime: LocalRuntime,
  ) {
    this.task = spec.task;
    this.index = spec.index;
    this.attempt = spec.attempt;
    this.timeout = spec.timeout;
  }
  cancel(): void {
    this.runtime.cancel(this);
  }
}

class Lane {
  readonly jobs = new RingQueue<Job>();
  worker: WorkerProcess | undefined;
  /** A worker started ahead of time, to take over when `worker` reaches maxTasksPerWorker. */
  next: WorkerProcess | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  advanceQueued = false;
  /** Runs the queued advance; made once per lane (see LocalRuntime.#advanceSoon). */
  readonly advanceTask: () => void;
  /**
   * Tasks that were in flight together when their worker died without saying which one it was
   * running: they run again one at a time, so that a second death names its task exactly.
   */
  readonly suspects = new Set<Job>();

  constructor(advance: (lane: Lane) => void) {
    this.advanceTask = () => {
      this.advanceQueued = false;
      advance(this);
    };
  }
}

export class LocalRuntime implements TaskRuntime {
  readonly #options: LocalRuntimeOptions;
  readonly #lanes: Lane[] = objectArray();
  /** Idle workers not attached to a lane. */
  readonly #spares = new Set<WorkerProcess>();
  readonly #spareTimers = new Map<WorkerProcess, NodeJS.Timeout>();
  /**
   * Workers the run has let go of, until they exit or go back to the pool: being stopped, or
   * waiting for their output to be quiet before they go back (see #lend). Their exit is not a
   * crash, and pids() lists them meanwhile.
   */
  readonly #abandoned = new Set<WorkerProcess>();
  /**
   * Jobs that timed out and whose process is being killed, with its pid: their rejection comes
   * once it is gone. Until then they still execute, as far as the run knows, and a cancel (the
   * run stopping meanwhile) means no event follows, as for any job.
   */
  readonly #dying = new Map<Job, number | undefined>();
  /**
   * The jobs sent to a worker and not answered yet (see collections.ts for why not a Map). Room
   * from the start for what two lanes pipeline at full depth (2 × MAX_DEPTH, with gaps): a table
   * that grows once V8 has optimized the code that fills it throws that code away (a deoptimization
   * for a path it had not seen), and costs a second compilation early in every cold run.
   */
  readonly #jobsById = new IdTable<Job>(8 * MAX_DEPTH);
  readonly #children = new Set<ChildProcess>();
  readonly #stopping = new Set<Promise<unknown>>();
  readonly #depth = new BehaviorSubject(1);
  readonly #output = new Subject<OutputLine>();
  #target: number;
  #avgUs: number | undefined;
  /** What a task's arguments weigh ({@link roughSize}), a moving average over the tasks started. */
  #avgBytes: number | undefined;
  /** Arguments found unreadable by a worker (see #refuseUnreadable), and why. */
  readonly #unreadable = new WeakMap<object, string>();
  /** The arguments of the module task started last (see #weigh). */
  #lastArgs: readonly unknown[] = [];
  /** What #depth holds: read for every result, and a BehaviorSubject's value is three calls away. */
  #depthNow = 1;
  #bootFailures = 0;
  /** Workers this run forked that are not ready yet; at most #maxStarting (see maxStartingWorkers). */
  readonly #starting = new Set<WorkerProcess>();
  readonly #maxStarting = maxStartingWorkers();
  #broken: string | undefined;
  #brokenStderr: string | undefined;
  #closing = false;
  /**
   * Commands and process tasks that could not start for want of file descriptors or processes (see
   * SHORTAGE_WAIT_MAX_MS), oldest first: queued again at the head of their lanes, they start one
   * at a time as the run's processes end.
   */
  readonly #short: Job[] = [];
  #shortTimer: NodeJS.Timeout | undefined;
  #shortDelay = SHORTAGE_RETRY_MS;
  /** When one of the run's commands or process tasks last exited, freeing what it held. */
  #freedAt = Number.NEGATIVE_INFINITY;
  /** A spawn of this run has failed for want of file descriptors: later ones check first (see hasSpawnHeadroom). */
  #nearFdLimit = false;
  /** The run starts no new tasks (see endOfInput). */
  #inputEnded = false;
  /** The limit is 0: tasks handed over wait, as they are, until it rises (what runs, or was sent ahead to a worker, goes on). */
  #paused = false;
  executing = 0;

  readonly depth$: Observable<number> = this.#depth.asObservable();
  readonly output$: Observable<OutputLine> = this.#output.asObservable();
  readonly #workerConfig: WorkerConfig;
  /**
   * The runtime's side of its workers' events. A class rather than an object of closures: its
   * methods are the same functions in every run, so a pooled worker's calls into them stay
   * optimized from one run to the next (a new closure per run was a new call target, and V8
   * threw the optimized code away at the start of each run).
   */
  static readonly #Listener = class implements WorkerListener {
    constructor(private readonly runtime: LocalRuntime) {}
    results(worker: WorkerProcess, results: readonly unknown[]): void {
      this.runtime.#onResults(worker, results);
    }
    ready(worker: WorkerProcess): void {
      this.runtime.#onWorkerReady(worker);
    }
    progress(worker: WorkerProcess, id: number, value: unknown): void {
      const job = this.runtime.#jobsById.get(id);
      if (job && job.worker === worker && job.state !== 'done') job.events.progress(value);
    }
    exited(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null, fatal: FatalReport | undefined): void {
      this.runtime.#onWorkerExit(worker, code, signal, fatal);
    }
    output(line: OutputLine): void {
      this.runtime.#output.next(line);
    }
    unsendable(tasks: UnsendableTask[]): void {
      this.runtime.#onUnsendable(tasks);
    }
    reclaimed(worker: WorkerProcess, ids: readonly number[]): void {
      this.runtime.#onReclaimed(worker, ids);
    }
  };
  readonly #listener: WorkerListener = new LocalRuntime.#Listener(this);
  #rebalanceTimer: NodeJS.Timeout | undefined;

  constructor(options: LocalRuntimeOptions) {
    this.#options = options;
    this.#target = options.concurrency;
    // Without workerEnv, process.env as it is when the run starts: its workers start with it, and
    // pooled ones are compared with it (once, rather than reading process.env at each comparison).
    this.#workerConfig = { output: options.output, execArgv: options.workerExecArgv, env: options.workerEnv ?? { ...process.env } };
  }

  start(spec: JobSpec, events: JobEvents): JobHandle {
    const job = new Job(nextJobId++, spec, events, this);
    if (this.#closing) {
      job.state = 'done';
      return job;
    }
    // The task is well formed (arguments an array, options valid): RunCore.startTask checked it.
    if (job.task.kind === 'module') {
      try {
        const unsureFrom = this.#weigh(job, job.task.args);
        if (job.bytes >= EXACT_SIZE_FROM && this.#refuseOversized(job)) return job;
        if (unsureFrom >= 0 && this.#refuseUnreadable(job, unsureFrom)) return job;
      } catch (error) {
        // An element of the arguments array is a getter that throws (plain JavaScript), on the
        // first read or on a later one.
        this.#refuse(job, `its arguments cannot be read: ${toRemoteErrorInfo(error).message}`);
        return job;
      }
    }
    // A retried task gives worker starts another chance (a retry on 'spawn' would else fail at
    // once); one more failure gives up again.
    if (job.attempt > 1 && this.#broken !== undefined && job.task.kind === 'module') {
      this.#broken = this.#brokenStderr = undefined;
      this.#bootFailures = MAX_BOOT_FAILURES - 1;
    }
    const lane = this.#pickLane();
    job.lane = lane;
    lane.jobs.push(job);
    // Once per lane and tick, not once per job: #advance walks the lane's jobs in flight, and a
    // tick may bring a hundred new ones.
    this.#advanceSoon(lane);
    return job;
  }

  endOfInput(): void {
    this.#inputEnded = true;
  }

  setConcurrency(limit: number): void {
    const resumed = this.#paused && limit > 0;
    // Paused: one lane keeps what was handed over, and none of it starts (#advance).
    this.#paused = limit === 0;
    if (this.#paused) limit = 1;
    const lowered = limit < this.#target;
    this.#target = limit;
    if (resumed) {
      for (const lane of this.#lanes) this.#advanceSoon(lane);
      this.#retryShort();
    }
    if (!lowered) return;
    // Lanes past the limit keep their running task, but hand back tasks that have not started,
    // their first included: one still waiting for its worker to start (the limit was raised a
    // moment ago, and starts go a few at a time) would otherwise start a worker past the limit.
    // Not one waiting for file descriptors (#short): that wait is a start in progress.
    const moved: Job[] = [];
    for (let i = limit; i < this.#lanes.length; i++) {
      const lane = this.#lanes[i]!;
      for (let j = lane.jobs.length - 1; j >= 0; j--) {
        const job = lane.jobs.at(j)!;
        if (job.state === 'queued' && !job.short) {
          lane.jobs.removeAt(j);
          moved.push(job);
        }
      }
    }
    moved.sort((a, b) => a.index - b.index);
    for (const job of moved) {
      const lane = this.#pickLane();
      job.lane = lane;
      lane.jobs.push(job);
      this.#advance(lane);
    }
    this.#trimLanes();
  }

  pids(): number[] {
    const pids: number[] = [];
    const add = (w: WorkerProcess | undefined) => {
      if (w?.alive && w.pid !== undefined) pids.push(w.pid);
    };
    for (const lane of this.#lanes) {
      add(lane.worker);
      add(lane.next);
    }
    for (const w of this.#spares) add(w);
    // Still alive while they stop: a run's processes are listed until they are gone.
    for (const w of this.#abandoned) add(w);
    for (const c of this.#children) if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) pids.push(c.pid);
    return pids;
  }

  executingJobs(): ExecutingJob[] {
    const jobs: ExecutingJob[] = [];
    for (const lane of this.#lanes) {
      for (let i = 0; i < lane.jobs.length; i++) {
        const job = lane.jobs.at(i)!;
        if (job.counted) jobs.push({ task: job.task, index: job.index, attempt: job.attempt, pid: job.worker?.pid ?? job.child?.pid });
      }
    }
    for (const [job, pid] of this.#dying) jobs.push({ task: job.task, index: job.index, attempt: job.attempt, pid });
    return jobs;
  }

  async shutdown(graceful: boolean): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#rebalanceTimer);
    clearTimeout(this.#shortTimer);
    this.#short.length = 0;
    const workers = new Set<WorkerProcess>(this.#spares);
    for (const timer of this.#spareTimers.values()) clearTimeout(timer);
    this.#spareTimers.clear();
    this.#spares.clear();
    for (const lane of this.#lanes) {
      clearTimeout(lane.idleTimer);
      for (const job of lane.jobs.takeAll()) {
        clearTimeout(job.timer);
        job.state = 'done';
      }
      if (lane.worker) workers.add(lane.worker);
      if (lane.next) workers.add(lane.next);
      lane.worker = lane.next = undefined;
    }
    this.#lanes.length = 0;
    this.#jobsById.clear();
    this.executing = 0;
    for (const worker of workers) {
      // An idle worker may go back to the pool even when the run failed or was terminated:
      // only the processes busy with the run's tasks have to die with it.
      if (this.#lend(worker)) continue;
      this.#abandoned.add(worker);
      this.#stop(graceful && worker.inFlight === 0 ? worker.retire() : worker.kill(this.#options.killTimeout));
    }
    const killTimeout = this.#options.killTimeout;
    for (const child of this.#children) {
      // A run that ends well has only processes whose tasks are done (a process task after its
      // result): they have killTimeout to exit on their own, as they would have mid-run.
      this.#stop(graceful ? exitWithin(child, killTimeout).then(() => killTree(child, killTimeout)) : killTree(child, killTimeout));
    }
    // Commands that exited lately wait for a look at their sessions: it comes now.
    sweepNow();
    while (this.#stopping.size) await Promise.all([...this.#stopping]);
    this.#depth.complete();
    this.#output.complete();
  }

  /** Cancels a job: no event follows; its process is killed if it was running. */
  cancel(job: Job): void {
    if (this.#dying.delete(job)) return; // its kill goes on; its timeout is not reported
    if (job.state === 'done' || this.#closing) {
      job.state = 'done';
      return;
    }
    this.#abort(job);
  }

  // ---- dispatch ------------------------------------------------------------------------------

  #pickLane(): Lane {
    let best: Lane | undefined;
    const usable = Math.min(this.#target, this.#lanes.length);
    for (let i = 0; i < usable; i++) {
      const lane = this.#lanes[i]!;
      if (lane.jobs.length === 0) return lane;
      if (!best || lane.jobs.length < best.jobs.length) best = lane;
    }
    if (this.#lanes.length < this.#target) {
      const lane = new Lane((it) => this.#advance(it));
      this.#lanes.push(lane);
      return lane;
    }
    return best!;
  }

  /** Called for every task: a closure made here would cost a context on every call, used or not. */
  #advanceSoon(lane: Lane): void {
    if (lane.advanceQueued) return;
    lane.advanceQueued = true;
    queueMicrotask(lane.advanceTask);
  }

  /** Starts the head of the lane if it can, and sends module tasks ahead to its worker. */
  #advance(lane: Lane): void {
    if (this.#closing) return;
    const head = lane.jobs.at(0);
    if (!head) {
      this.#laneIdle(lane);
      return;
    }
    clearTimeout(lane.idleTimer);
    lane.idleTimer = undefined;
    // Workers cannot be started: a lane whose worker is alive goes on with it; the others fail
    // their module tasks, and run their commands and process tasks, which need no worker. A module
    // task that came meanwhile (a failure reported here lets the run start the next task at once)
    // is not sent below, which would start a worker for it: it fails at the next advance.
    const noWorker = this.#broken !== undefined && !lane.worker?.alive;
    if (noWorker) this.#failBroken(lane);
    const oneAtATime = lane.suspects.size > 0 && hasSuspects(lane);
    // A task is timed from when it reaches the head of its lane, and a worker sends the results
    // of tiny tasks in batches: behind a task without a timeout, a task that hangs synchronously
    // would hold that task's result in its worker, never reach the head, and never time out. So
    // a task with a timeout is sent only when every task ahead of it on the worker has one too.
    let untimedAhead = false;
    for (let i = 0; i < lane.jobs.length; i++) {
      const job = lane.jobs.at(i)!;
      if (job.task.kind === 'module') {
        if (noWorker || (oneAtATime && i > 0)) break;
        if (job.state === 'queued' && (this.#paused || (untimedAhead && job.timeout !== undefined) || !this.#send(lane, job))) break;
        if (job.timeout === undefined) untimedAhead = true;
        if (i === 0 && job.state === 'sent') this.#markRunning(job);
      } else {
        if (i === 0 && job.state === 'queued' && !this.#paused) this.#startProcessJob(job);
        break;
      }
    }
  }

  /** Sends a module job to the lane's worker; false when it has to wait (worker quota). */
  #send(lane: Lane, job: Job): boolean {
    const max = this.#options.maxTasksPerWorker;
    let worker = lane.worker;
    if (worker && (!worker.alive || worker.sent >= max)) {
      if (worker.alive && worker.inFlight > 0) return false;
      this.#retireWorker(worker);
      worker = lane.worker = undefined;
    }
    if (!worker) {
      // None to be had while as many as may are starting: the task waits for one of them to be ready.
      const next = lane.next ?? this.#takeSpare() ?? this.#spawnWorker();
      if (!next) return false;
      worker = lane.worker = next;
      lane.next = undefined;
    }
    // A worker still starting runs nothing until it is ready, and what is sent to it cannot be
    // taken back until then. While another worker is ready, the task waits here instead, where a
    // lane with nothing to do can take it (#rebalance); the lane sends it once its worker is ready.
    // Not for a successor: it was started early so that its start-up overlaps work.
    if (!worker.ready && !worker.successor && this.#someWorkerReady()) return false;
    const task = job.task as ModuleTask;
    // Large arguments: no more ahead than the byte budget allows, judged by the larger of the
    // average and this task's own weight (so a first large task after small ones waits for them).
    if (worker.inFlight > 0 && worker.inFlight * Math.max(this.#avgBytes ?? 0, job.bytes) >= PIPELINE_BUDGET_BYTES) return false;
    job.state = 'sent';
    job.worker = worker;
    this.#jobsById.set(job);
    worker.send(job.id, task.module, task.exportName, task.args, job.index);
    this.#spawnAhead(lane, worker);
    return true;
  }

  /**
   * A worker that has used up its tasks (a fresh process per task): its successor starts while
   * its task runs, so start-up overlaps work. Not before it is ready itself: two processes
   * starting for one lane compete for the CPU that start-up needs (tiny tasks, each in a fresh
   * process, on two CPUs: 12% slower with the successor started at once, in bench/measure.ts).
   * Once the run's input has ended, only for a lane that still has a task waiting: a successor
   * after the last task would start only to be stopped. (A task that comes later, a retry, or
   * one moved from a lane given up, starts its worker when it is sent.)
   */
  #spawnAhead(lane: Lane, worker: WorkerProcess): void {
    if (!this.#closing && worker.ready && worker.sent >= this.#options.maxTasksPerWorker && lane.worker === worker && !lane.next) {
      if (this.#inputEnded && !hasQueuedModuleJob(lane)) return;
      const next = this.#spawnWorker();
      if (!next) return;
      lane.next = next;
      next.successor = true;
    }
  }

  #markRunning(job: Job): void {
    job.state = 'running';
    const worker = job.worker;
    if (worker) {
      worker.currentIndex = job.index;
      job.stderrSince = worker.output.stderrBytes;
    }
    // A booting worker has not started the task yet: its clock starts when the worker is ready,
    // and only then does the task count as executing (for progress$, and for automatic
    // concurrency, which would take a worker waiting on its start-up for an I/O-bound task).
    if (!worker || worker.ready) {
      this.#countExecuting(job);
      this.#armTimeout(job);
    }
  }

  #countExecuting(job: Job): void {
    job.counted = true;
    this.executing++;
    job.events.started?.();
    this.#options.progress?.changed();
  }

  /** A job stops running (ends, or goes back to the queue): it no longer counts as executing. */
  #uncount(job: Job): void {
    if (!job.counted) return;
    job.counted = false;
    this.executing--;
  }

  #onWorkerReady(worker: WorkerProcess): void {
    // Workers can be started: failures to start counted before this one are no longer "in a row".
    this.#bootFailures = 0;
    if (this.#starting.delete(worker)) this.#startWaiting();
    for (const lane of this.#lanes) {
      if (lane.worker === worker) {
        this.#spawnAhead(lane, worker);
        // Tasks that waited in the parent for it (see #send).
        this.#advanceSoon(lane);
      }
      const head = lane.jobs.at(0);
      if (head?.worker === worker && head.state === 'running') {
        if (!head.counted) this.#countExecuting(head);
        clearTimeout(head.timer);
        this.#armTimeout(head);
      }
    }
    // A lane may have gone idle while this worker was starting: it can give tasks back now.
    if (this.#idleLanes().length > 0) this.#rebalanceSoon();
  }

  /** A start has ended: the lanes that waited for one may start a worker now. */
  #startWaiting(): void {
    for (const lane of this.#lanes) if (!lane.worker && lane.jobs.length > 0) this.#advanceSoon(lane);
  }

  /** @internal Worker processes of this run still starting (tests). */
  get startingWorkers(): number {
    return this.#starting.size;
  }

  #armTimeout(job: Job): void {
    const timeout = job.timeout;
    if (timeout !== undefined) this.#setTimer(job, timeout);
  }

  /** Starts a command or process task's process (reported through the hooks); returns it. */
  #spawnProcessJob(
    job: Job,
    capture: boolean,
    line: (l: OutputLine) => void,
    settle: () => boolean,
    rejected: (init: Omit<TaskErrorInit, 'index' | 'label' | 'attempt'>) => void,
  ): ChildProcess | undefined {
    const { task, index } = job;
    let child: ChildProcess | undefined;
    if (task.kind === 'command') {
      const spawned = runCommand(task, index, {
        capture,
        line,
        fulfilled: (value, durationMs, pid) => settle() && job.events.fulfilled(value, this.#stats(job, durationMs, undefined, pid)),
        rejected,
      });
      child = spawned.child;
      job.stderrTail = spawned.stderrTail;
      // A run ends only once its commands are settled: until then their pids are tracked.
      if (spawned.settled) this.#stop(spawned.settled);
    } else if (task.kind === 'process') {
      const started = runProcessTask(task, index, {
        output: this.#options.output,
        killTimeout: this.#options.killTimeout,
        line,
        progress: (value) => job.state !== 'done' && job.events.progress(value),
        fulfilled: (value, durationMs, pid) => settle() && job.events.fulfilled(value, this.#stats(job, durationMs, undefined, pid)),
        rejected,
      });
      child = started?.child;
      job.stderrTail = started?.stderrTail;
    }
    return child;
  }

  /** Apart from #armTimeout, which runs for every task: its closure would cost a context on each call. */
  #setTimer(job: Job, timeout: number): void {
    job.timer = setTimeout(() => this.#timedOut(job), timeout);
  }

  #startProcessJob(job: Job): void {
    job.state = 'running';
    this.#countExecuting(job);
    this.#armTimeout(job);
    const { task, index } = job;
    const settle = () => this.#finish(job);
    const capture = this.#options.output === 'capture';
    const line = (l: OutputLine) => this.#output.next(l);
    const rejected = (init: Omit<TaskErrorInit, 'index' | 'label' | 'attempt'>) => {
      if (isShortage(init)) {
        if (init.remote?.code !== 'EAGAIN') this.#nearFdLimit = true;
        if (this.#waitForResources(job)) return;
      }
      if (settle()) job.events.rejected(this.#error(job, init));
      // It gave up waiting: the others still wait, and need a timer to try again.
      if (this.#short.length > 0) this.#armShortTimer();
    };
    if (this.#nearFdLimit && !hasSpawnHeadroom()) {
      const why = shortageDetail('EMFILE')!;
      rejected({
        kind: 'spawn',
        detail: task.kind === 'command' ? `cannot run ${task.file}: ${why}` : why,
        remote: { name: 'Error', message: 'too many open files to start a process', code: 'EMFILE' },
      });
      return;
    }
    let child: ChildProcess | undefined;
    try {
      child = this.#spawnProcessJob(job, capture, line, settle, rejected);
    } catch (error) {
      // Plain JavaScript can hand over anything: an argument whose getter throws, a factory that
      // returns a Proxy. This runs in a microtask, where the error would be uncaught.
      const remote = toRemoteErrorInfo(error);
      rejected({ kind: 'invalid', detail: `it could not be started: ${remote.message}`, remote });
      return;
    }
    // It started: what it waited for was there, so the next one waiting may have it too.
    if (child?.pid !== undefined && job.shortSince !== undefined) {
      job.shortSince = undefined;
      this.#shortDelay = SHORTAGE_RETRY_MS;
      if (this.#short.length > 0) queueMicrotask(() => this.#retryShort());
    }
    // One that could not start (no pid) has nothing to stop, and gets no 'exit' to forget it by.
    if (child && child.pid !== undefined) {
      job.child = child;
      this.#children.add(child);
      // Commands and process tasks do not notice their parent's death: the guardian does. Tracked
      // until their process group is gone, not only until they exit: a task may settle while what
      // it left in its group is still being stopped, and a parent that dies then must take that too.
      const untrack = trackChild(child.pid, { guard: true });
      child.once('exit', () => {
        // Its clock stops: what is left is reading its pipes (a background process may hold them
        // for a while), not the task running past its timeout.
        clearTimeout(job.timer);
        this.#children.delete(child);
        this.#freedAt = performance.now();
        // Its pipes close once they are read to the end: a command waiting for descriptors tries then.
        if (this.#short.length > 0) child.once('close', () => this.#retryShort());
        // The task is over: whatever is left in its process group was started by it, and orphaned;
        // so is what is left in the other groups of its session (tracked until then).
        if (treeGone(child)) this.#stop(sweepSession(child.pid!, this.#options.killTimeout).finally(untrack));
        else this.#stop(killTree(child, this.#options.killTimeout).finally(untrack));
      });
    }
  }

  /**
   * A command or process task could not start for want of file descriptors or processes: it goes
   * back to the head of its lane, no longer counted as executing, and tries again once another of
   * the run's processes has ended (or after a pause, since what is missing may be held by someone
   * else). A process task's factory is called again then.
   * False, so that it fails, once none of the run's processes is left to free anything and it has
   * waited SHORTAGE_WAIT_MAX_MS since it began to wait, or since the last of them exited.
   */
  #waitForResources(job: Job): boolean {
    if (this.#closing || job.state !== 'running') return false;
    const now = performance.now();
    const again = job.shortSince !== undefined;
    job.shortSince ??= now;
    if (this.#children.size === 0 && now - Math.max(job.shortSince, this.#freedAt) >= SHORTAGE_WAIT_MAX_MS) return false;
    this.#uncount(job);
    clearTimeout(job.timer);
    job.state = 'queued';
    job.stderrTail = undefined;
    // Once: a waiting head its lane started again on its own (an advance) may come back here. One
    // that tried again and still could not start keeps its place, first in line.
    if (!job.short) {
      job.short = true;
      if (again) this.#short.unshift(job);
      else this.#short.push(job);
    }
    this.#options.progress?.changed();
    this.#armShortTimer();
    return true;
  }

  /** Makes sure the tasks waiting for resources try again after a pause, if nothing else wakes them. */
  #armShortTimer(): void {
    if (this.#shortTimer || this.#closing) return;
    this.#shortTimer = setTimeout(() => {
      this.#shortTimer = undefined;
      this.#shortDelay = Math.min(1000, this.#shortDelay * 2);
      this.#retryShort();
    }, this.#shortDelay);
  }

  /** Starts the oldest task that is waiting for resources; if it starts, the next one tries too. */
  #retryShort(): void {
    clearTimeout(this.#shortTimer);
    this.#shortTimer = undefined;
    // Resuming calls this again.
    if (this.#paused) return;
    while (this.#short.length > 0 && !this.#closing) {
      const job = this.#short.shift()!;
      job.short = false;
      const lane = job.lane;
      // Cancelled, or moved on meanwhile: nothing to do for it.
      if (job.state !== 'queued' || !lane || lane.jobs.at(0) !== job) continue;
      this.#startProcessJob(job);
      return;
    }
    if (this.#short.length === 0) this.#shortDelay = SHORTAGE_RETRY_MS;
  }

  // ---- outcomes ------------------------------------------------------------------------------

  /** Removes a finished job from its lane; false if it had already ended (cancelled, timed out). */
  #finish(job: Job): boolean {
    if (job.state === 'done') return false;
    this.#uncount(job);
    job.state = 'done';
    clearTimeout(job.timer);
    const lane = job.lane;
    if (lane) {
      lane.jobs.remove(job);
      job.lane = undefined;
      this.#advanceSoon(lane);
    }
    return true;
  }

  /** `results` is flat, RESULT_WIDTH values per result (see protocol.ts). */
  #onResults(worker: WorkerProcess, results: readonly unknown[]): void {
    const lanes = new Set<Lane>();
    for (let i = 0; i + RESULT_WIDTH <= results.length; i += RESULT_WIDTH) {
      const id = results[i];
      // Not a number: not a result, and not worth a lookup that would teach IdTable other types.
      if (typeof id !== 'number') continue;
      const status = results[i + 1];
      const value = results[i + 2];
      const durationUs = results[i + 3] as number;
      const cpuUs = results[i + 4] as number;
      // Only a task sent to this worker and not answered yet: a forged or repeated id is ignored.
      const job = this.#jobsById.get(id);
      if (!job || job.worker !== worker) continue;
      this.#jobsById.delete(id);
      worker.answered();
      // Failed meanwhile (its lane could get no worker): its outcome is given.
      if (job.state === 'done') continue;
      const lane = job.lane;
      this.#uncount(job);
      job.state = 'done';
      if (job.timer !== undefined) clearTimeout(job.timer); // most tasks have none: no call for them
      if (lane) {
        // Results come in lane order, so this is nearly always the head (remove finds it first).
        lane.jobs.remove(job);
        job.lane = undefined;
        lanes.add(lane);
      }
      this.#learnDuration(durationUs);
      // Divided whether or not it was measured: a division first reached mid-run (a worker
      // measures CPU time only now and then) would make V8 throw this optimized loop away.
      const cpuMs = cpuUs / 1000;
      if (status === FULFILLED || status === FULFILLED_UNDEFINED) {
        job.events.fulfilled(status === FULFILLED ? value : undefined, this.#stats(job, durationUs / 1000, cpuUs < 0 ? undefined : cpuMs, worker.pid));
      } else {
        job.events.rejected(
          this.#error(job, {
            kind: status === THREW ? 'threw' : 'invalid',
            remote: value as TaskErrorInit['remote'],
            stderrTail: worker.output.stderrTail(job.stderrSince),
            pid: worker.pid,
            durationMs: durationUs / 1000,
          }),
        );
      }
    }
    // Before the lanes send more: a worker found above maxWorkerRss gets no further task.
    this.#checkRss(worker);
    for (const lane of lanes) this.#advance(lane);
  }

  #onUnsendable(tasks: UnsendableTask[]): void {
    for (const { id, message } of tasks) {
      const job = this.#jobsById.get(id);
      if (!job) continue;
      this.#jobsById.delete(id);
      if (this.#finish(job)) job.events.rejected(this.#error(job, { kind: 'invalid', detail: message }));
    }
  }

  #onWorkerExit(worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null, fatal: FatalReport | undefined): void {
    if (this.#starting.delete(worker)) this.#startWaiting();
    this.#spares.delete(worker);
    clearTimeout(this.#spareTimers.get(worker));
    this.#spareTimers.delete(worker);
    let owner: Lane | undefined;
    for (const lane of this.#lanes) {
      if (lane.worker === worker) {
        lane.worker = undefined;
        owner = lane;
      }
      if (lane.next === worker) lane.next = undefined;
    }
    if (this.#abandoned.delete(worker) || this.#closing) return;
    // It died on its own: what its tasks started is still in its process group, orphaned.
    this.#stop(worker.kill(this.#options.killTimeout));
    // Counted since the last worker became ready (#onWorkerReady resets the count).
    if (!worker.ready && ++this.#bootFailures >= MAX_BOOT_FAILURES) {
      // The line that says why is the one to show; the whole tail goes in stderrTail.
      const why = worker.stderrReason();
      this.#broken =
        worker.startError !== undefined
          ? `worker processes cannot be started (${worker.startError}, ${MAX_BOOT_FAILURES} times in a row)${startErrorHint(worker.startError, this.#options.workerExecArgv.length > 0)}`
          : `worker processes die while starting (${describeExit(code, signal)}, ${MAX_BOOT_FAILURES} times in a row)${why ? `: ${why}` : ''}`;
      this.#brokenStderr = worker.output.stderrTail().trim();
    }
    if (!owner) return;
    // The lane's head is the task the worker was running, as far as this process knows; the
    // tasks queued behind it never started: send them again. But results travel in batches, and
    // a worker killed by a signal never sends what it had buffered: with several tasks in flight,
    // the head may have finished long ago and any task behind it may be the one that died.
    // Blame none of them then: they run again one at a time, and a second death names its task.
    // (An exit with a code flushes the results first; an uncaught error names its task.)
    const inFlight = owner.jobs.toArray().filter((j) => j.worker === worker);
    const unsure = signal !== null && !fatal && inFlight.length > 1;
    let culprit: Job | undefined;
    // Settle the lane's state before reporting, since a report can start new tasks here.
    for (const job of inFlight) {
      this.#jobsById.delete(job.id);
      job.worker = undefined;
      if (job.state === 'running' && worker.ready && !culprit && !unsure) {
        culprit = job;
        continue;
      }
      this.#requeue(job);
      if (unsure && worker.ready) owner.suspects.add(job);
    }
    if (culprit) {
      this.#finish(culprit);
      const stderrTail = worker.output.stderrTail(culprit.stderrSince);
      const why = fatal && (fatal.id === culprit.id || fatal.id === undefined) ? fatal : undefined;
      const init = { exitCode: code, signal, stderrTail, pid: worker.pid, ...workerDeath(code, signal, stderrTail, why) };
      culprit.events.rejected(this.#error(culprit, init));
    }
    this.#advance(owner);
  }

  #timedOut(job: Job): void {
    if (job.state !== 'running') return;
    const worker = job.worker;
    const lane = job.lane;
    const sameWorker = worker && lane ? lane.jobs.toArray().filter((j) => j.worker === worker) : [];
    if (worker && lane && sameWorker.some((j) => j !== job)) {
      // Tasks were sent behind this one: the worker may be stuck in one of them, with this
      // one's result unsent in its outbox. Kill it and run them again one at a time (see
      // #onWorkerExit): then the timeout, if it comes again, names its task.
      if (lane.worker === worker) lane.worker = undefined;
      for (const other of sameWorker) {
        this.#jobsById.delete(other.id);
        other.worker = undefined;
        this.#requeue(other);
        lane.suspects.add(other);
      }
      this.#abandoned.add(worker);
      this.#stop(worker.kill(this.#options.killTimeout));
      this.#advance(lane);
      return;
    }
    const pid = worker?.pid ?? job.child?.pid;
    const kill = this.#abort(job);
    const limit = job.timeout;
    this.#dying.set(job, pid);
    void kill.then(({ forced }) => {
      if (!this.#dying.delete(job)) return;
      // Read once it is gone: what it wrote just before may have been in its pipe, unread, when
      // the timer fired (a busy event loop runs its timers before it reads).
      const stderrTail = worker ? worker.output.stderrTail(job.stderrSince) : job.stderrTail?.();
      job.events.rejected(
        this.#error(job, { kind: 'timeout', detail: `it ran longer than ${limit} ms and was killed${forced ? ' (SIGKILL was needed)' : ''}`, stderrTail, pid }),
      );
    });
  }

  /** Ends a job early, killing what runs it. Resolves when its process is gone. */
  #abort(job: Job): Promise<{ forced: boolean }> {
    const wasRunning = job.state === 'running';
    const wasSent = job.state === 'sent';
    const lane = job.lane;
    this.#finish(job);
    const worker = job.worker;
    if (worker) {
      this.#jobsById.delete(job.id);
      if (wasRunning) {
        // The worker is busy with this very task: it has to go. Tasks queued behind it never started.
        if (lane?.worker === worker) lane.worker = undefined;
        for (const other of lane?.jobs.toArray() ?? []) {
          if (other.worker === worker) {
            this.#jobsById.delete(other.id);
            other.worker = undefined;
            other.state = 'queued';
          }
        }
        this.#abandoned.add(worker);
        return this.#stop(worker.kill(this.#options.killTimeout));
      }
      if (wasSent) worker.skip(job.id);
    } else if (job.child && wasRunning) {
      return this.#stop(killTree(job.child, this.#options.killTimeout));
    }
    return Promise.resolve({ forced: false });
  }

  /** Puts a job that was sent to a worker back in the queued state, to be sent again. */
  #requeue(job: Job): void {
    this.#uncount(job);
    clearTimeout(job.timer);
    job.state = 'queued';
    // No outcome follows to say it no longer executes.
    this.#options.progress?.changed();
  }

  #stop<T>(promise: Promise<T>): Promise<T> {
    this.#stopping.add(promise);
    void promise.finally(() => this.#stopping.delete(promise));
    return promise;
  }

  // ---- workers -------------------------------------------------------------------------------

  /**
   * A worker for a lane: an idle one from the pool if it has one that fits, else a new one, unless
   * as many as may are starting already (undefined then).
   */
  #spawnWorker(): WorkerProcess | undefined {
    // Not one that has already run this run's maxTasksPerWorker (in earlier runs): it would be
    // sent a task past the limit (with 1, a task would not get the fresh process it asked for).
    const lent = this.#options.pool?.take(this.#workerConfig, this.#options.maxTasksPerWorker);
    if (!lent && this.#starting.size >= this.#maxStarting) return undefined;
    const worker = lent ?? new WorkerProcess({ ...this.#workerConfig, killTimeout: this.#options.killTimeout, startTimeout: this.#options.workerStartTimeout }, this.#listener);
    if (lent) lent.adopt(this.#listener, this.#options.killTimeout);
    else this.#starting.add(worker);
    worker.coalesceProgress(this.#options.progressInterval);
    return worker;
  }

  /**
   * Hands a worker back to the pool, if there is one and the worker may serve again (the pool
   * takes only live, idle workers); false when the caller has to stop it.
   */
  #lend(worker: WorkerProcess): boolean {
    const pool = this.#options.pool;
    if (pool === undefined || worker.sent >= this.#options.maxTasksPerWorker) return false;
    if (this.#options.output !== 'capture') return pool.give(worker);
    // What the worker's last task wrote was in its pipes before its result came, but may not have
    // been read yet: it is this run's. The worker goes back once its pipes are quiet, its last
    // unfinished line given to this run (see OutputTap.release); listed by pids() meanwhile.
    this.#abandoned.add(worker);
    this.#stop(
      worker.outputQuiet(HANDOVER_QUIET_MS, HANDOVER_QUIET_MAX_MS).then(() => {
        this.#abandoned.delete(worker);
        if (pool.give(worker)) return undefined;
        // Died meanwhile (its exit, seen as a stop of ours, killed nothing): its group goes now.
        if (!worker.alive) return worker.kill(this.#options.killTimeout);
        this.#abandoned.add(worker);
        return worker.retire();
      }),
    );
    return true;
  }

  #takeSpare(): WorkerProcess | undefined {
    for (const worker of this.#spares) {
      this.#spares.delete(worker);
      clearTimeout(this.#spareTimers.get(worker));
      this.#spareTimers.delete(worker);
      if (worker.usable) return worker;
      if (!worker.alive) continue; // its exit has been handled
      // Dead, its exit not handled yet: stopped like the run's other leftovers.
      this.#abandoned.add(worker);
      this.#stop(worker.kill(this.#options.killTimeout));
    }
    return undefined;
  }

  #retireWorker(worker: WorkerProcess): void {
    if (this.#lend(worker)) return;
    this.#abandoned.add(worker);
    this.#stop(worker.retire());
  }

  #laneIdle(lane: Lane): void {
    const at = this.#lanes.indexOf(lane);
    // A lane already trimmed away (an advance queued before it went): nothing of it is left.
    if (at === -1) return;
    if (at >= this.#target) {
      this.#trimLanes();
      return;
    }
    if (!lane.worker && !lane.next) return;
    this.#rebalanceSoon();
    clearTimeout(lane.idleTimer);
    lane.idleTimer = setTimeout(() => {
      lane.idleTimer = undefined;
      if (lane.jobs.length) return;
      if (lane.worker) this.#retireWorker(lane.worker);
      if (lane.next) this.#retireWorker(lane.next);
      lane.worker = lane.next = undefined;
    }, this.#options.idleTimeout);
  }

  /** Drops empty lanes past the limit; their workers become spares. */
  #trimLanes(): void {
    while (this.#lanes.length > this.#target) {
      const lane = this.#lanes[this.#lanes.length - 1]!;
      if (lane.jobs.length) return;
      this.#lanes.pop();
      clearTimeout(lane.idleTimer);
      const workers = [lane.worker, lane.next];
      // The lane lets go of its workers: a spare may serve another lane from now on.
      lane.worker = lane.next = undefined;
      for (const worker of workers) {
        if (!worker?.alive) continue;
        this.#spares.add(worker);
        this.#spareTimers.set(worker, setTimeout(() => {
          this.#spares.delete(worker);
          this.#spareTimers.delete(worker);
          this.#retireWorker(worker);
        }, this.#options.idleTimeout));
      }
    }
  }

  // ---- balance -------------------------------------------------------------------------------

  #rebalanceSoon(): void {
    if (this.#rebalanceTimer !== undefined || this.#closing) return;
    this.#rebalanceTimer = setTimeout(() => {
      this.#rebalanceTimer = undefined;
      this.#rebalance();
    }, REBALANCE_AFTER_MS);
  }

  /**
   * Tasks are given to a lane when they are taken in, and tiny ones are sent to its worker ahead
   * of time. When a lane has nothing to do while another lane's head runs long (a slow task among
   * tiny ones, or the last tasks of a run), the tasks waiting behind that head move: those still
   * in the parent at once, those sent to the busy worker once it gives them back (between two
   * tasks, or at once while an async task waits). A share for each idle lane moves, the busy lane
   * keeps its own, so two lanes with work never trade all of it back and forth.
   */
  #rebalance(): void {
    if (this.#closing || this.#broken !== undefined) return;
    const idle = this.#idleLanes();
    if (idle.length === 0) return;
    // Only lanes whose worker is ready take from a lane whose worker is still starting: a lane
    // without a worker would start one of its own for them.
    const readyIdle = idle.filter((lane) => lane.worker !== undefined);
    let next = 0;
    for (const lane of this.#lanes) {
      if (lane.suspects.size > 0 || idle.includes(lane)) continue;
      const worker = lane.worker;
      // A lane whose worker is still starting runs nothing yet: all it holds in the parent may
      // go, its head included (see #send), to lanes that can run it now.
      const starting = worker !== undefined && !worker.ready;
      if (starting && readyIdle.length === 0) continue;
      const from = starting ? 0 : 1;
      if (lane.jobs.length <= from) continue;
      const queued: Job[] = [];
      let sentAhead = 0;
      for (let i = from; i < lane.jobs.length; i++) {
        const job = lane.jobs.at(i)!;
        if (job.state === 'queued') queued.push(job);
        else if (job.state === 'sent' && job.worker === worker) sentAhead++;
      }
      // The idle lanes' share of all that waits, taken from what is still in the parent first
      // (the last of it): only what is missing is asked back from the worker.
      const waiting = queued.length + sentAhead;
      const to = starting ? readyIdle : idle;
      const share = starting ? waiting : waiting - Math.floor(waiting / (idle.length + 1));
      const moving = Math.min(share, queued.length);
      for (const job of queued.slice(queued.length - moving)) this.#moveJob(job, to[next++ % to.length]!);
      const asked = share - moving;
      if (asked > 0 && worker && worker.ready && worker.alive && !worker.reclaiming) worker.reclaim(asked);
    }
  }

  /** True if a worker of this runtime is ready: one that is starting then gets no task ahead (#send). */
  #someWorkerReady(): boolean {
    for (const lane of this.#lanes) {
      const worker = lane.worker;
      if (worker !== undefined && worker.ready && worker.alive) return true;
    }
    return false;
  }

  /**
   * Lanes in use with nothing to do, whose worker is ready, or that have none (it left after
   * `idleTimeout`: a task sent there starts one).
   */
  #idleLanes(): Lane[] {
    const idle: Lane[] = [];
    const usable = Math.min(this.#target, this.#lanes.length);
    for (let i = 0; i < usable; i++) {
      const lane = this.#lanes[i]!;
      const worker = lane.worker;
      if (lane.jobs.length === 0 && (worker ? worker.ready && worker.alive : !lane.next)) idle.push(lane);
    }
    return idle;
  }

  /**
   * Tasks a worker gave back (see #rebalance): they go to the idle lanes or, when none is left,
   * to the end of their own lane. Not back where they were: tasks sent to that worker meanwhile
   * are ahead of them now, and a lane's order must stay the order its worker runs them in.
   */
  #onReclaimed(worker: WorkerProcess, ids: readonly number[]): void {
    if (this.#closing) return;
    const idle = this.#idleLanes();
    let next = 0;
    // The worker gives back the tasks queued last first: in input order, they are the reverse.
    for (let i = ids.length - 1; i >= 0; i--) {
      const job = this.#jobsById.get(ids[i]!);
      // 'running' too: a lane's head is marked running when it reaches the front, but the worker
      // says it never started it (it gave it back between two tasks).
      if (!job || job.worker !== worker || (job.state !== 'sent' && job.state !== 'running')) continue;
      this.#jobsById.delete(job.id);
      worker.gaveBack();
      job.worker = undefined;
      this.#requeue(job);
      if (idle.length > 0) this.#moveJob(job, idle[next++ % idle.length]!);
      else this.#putBack(job);
    }
  }

  /**
   * A task given back when no lane is idle any more: in its own lane, after the tasks still on
   * its worker and before those waiting in the parent, so the lane's order stays the order the
   * worker runs them in. A lane past the concurrency limit (being trimmed) gets nothing new.
   */
  #putBack(job: Job): void {
    const lane = job.lane;
    if (!lane || this.#lanes.indexOf(lane) >= this.#target) {
      this.#moveJob(job, this.#pickLane());
      return;
    }
    // It goes to the end, and then so do the others waiting in the parent, in their order.
    const waiting = lane.jobs.toArray().filter((other) => other !== job && other.state === 'queued');
    this.#moveJob(job, lane);
    for (const other of waiting) this.#moveJob(other, lane);
  }

  /** Moves a job that has not started to the end of lane `to` (its own, or another). */
  #moveJob(job: Job, to: Lane): void {
    const from = job.lane;
    from?.jobs.remove(job);
    job.lane = to;
    to.jobs.push(job);
    this.#advanceSoon(to);
    // It may have been the head: the next one starts (its clock, its count as executing).
    if (from && from !== to) this.#advanceSoon(from);
  }

  #checkRss(worker: WorkerProcess): void {
    const limit = this.#options.maxWorkerRss;
    if (limit === undefined || worker.pid === undefined || !worker.alive) return;
    // Reading /proc is cheap, but not free: results of tiny tasks come a thousand times a second.
    const now = performance.now();
    if (now - worker.rssCheckedAt < RSS_CHECK_INTERVAL_MS) return;
    worker.rssCheckedAt = now;
    // Recycled once the tasks it was sent are done.
    checkRss(worker.pid, limit, () => (worker.sent = Infinity));
  }

  /**
   * A lane with no worker, when workers cannot be started: its tasks that have not started move to
   * the lanes whose workers are alive (too many processes for the machine's limits, say, while
   * some did start), or fail when there are none.
   */
  #failBroken(lane: Lane): void {
    const jobs = lane.jobs.takeAll();
    let live: Lane[] | undefined;
    for (const job of jobs) {
      if (job.task.kind !== 'module') {
        lane.jobs.push(job);
        continue;
      }
      job.lane = undefined;
      if (job.state === 'queued') {
        live ??= this.#lanes.filter((other) => other !== lane && other.worker?.alive);
        if (live.length > 0) {
          const to = live.reduce((a, b) => (b.jobs.length < a.jobs.length ? b : a));
          job.lane = to;
          to.jobs.push(job);
          this.#advanceSoon(to);
          continue;
        }
      }
      if (this.#finish(job)) job.events.rejected(this.#error(job, { kind: 'spawn', detail: this.#broken, stderrTail: this.#brokenStderr }));
    }
  }

  // ---- helpers -------------------------------------------------------------------------------

  /**
   * Fails a module task whose arguments no message can carry: sent, they would kill the worker
   * that cannot read them, with Node's cryptic message. Reported a microtask later, as failures
   * to send are.
   */
  #refuseOversized(job: Job): boolean {
    const bytes = oversized((job.task as ModuleTask).args, job.bytes);
    if (bytes === undefined) return false;
    this.#refuse(job, `its arguments are too large to send to a worker: ${describeOversized(bytes)}; pass a file's path instead`);
    return true;
  }

  /** Fails a task that will not be sent, as `invalid`, once start() has returned its handle. */
  #refuse(job: Job, detail: string): void {
    queueMicrotask(() => this.#finish(job) && job.events.rejected(this.#error(job, { kind: 'invalid', detail })));
  }

  /**
   * Weighs a module task's arguments as it starts, and lowers the admitted depth at once when they
   * are large: waiting for results would let a run that had tiny tasks admit hundreds of large
   * ones meanwhile. An object that was also an argument of the task started just before counts
   * once: tasks sharing a lookup table travel together in a batch, which carries it once.
   */
  #weigh(job: Job, args: readonly unknown[]): number {
    const last = this.#lastArgs;
    let bytes = 0;
    let unsureFrom = -1;
    for (let i = 0; i < args.length; i++) {
      const arg = args[i];
      if (typeof arg !== 'object' || arg === null) {
        bytes += roughSize(arg);
        continue;
      }
      // Sent with the task before, and weighed then; but refused then, it is refused again.
      if (sentBefore(last, arg)) {
        if (unsureFrom < 0 && this.#unreadable.has(arg)) unsureFrom = i;
        continue;
      }
      bytes += roughSize(arg);
      if (unsureFrom < 0 && cloneRisk(arg)) unsureFrom = i;
    }
    this.#lastArgs = args;
    job.bytes = bytes;
    const before = this.#avgBytes;
    this.#avgBytes = before === undefined ? bytes : before + (bytes - before) * 0.1;
    if (bytes > PIPELINE_BUDGET_BYTES / MAX_DEPTH) this.#updateDepth();
    return unsureFrom;
  }

  /**
   * A worker that could not read an argument would die, with the tasks sent with it (see
   * readBack). So arguments that may not read back (see cloneRisk) are read back here first, from
   * the first such one on, and a task whose argument fails is refused (`invalid`, naming it); so is
   * a later task given the same object. One that cannot be cloned at all is left to the send,
   * which names it.
   */
  #refuseUnreadable(job: Job, from: number): boolean {
    const args = (job.task as ModuleTask).args;
    for (let i = from; i < args.length; i++) {
      const arg = args[i];
      if (typeof arg !== 'object' || arg === null || ArrayBuffer.isView(arg)) continue;
      let why = this.#unreadable.get(arg);
      if (why === undefined) {
        const back = readBack(arg);
        if (typeof back === 'number' || back.why === 'cannot be cloned') continue;
        why = back.why === 'too large' ? `is too large to send to a worker: ${back.detail}; pass a file's path instead` : `cannot be read by a worker process: ${back.detail}`;
        this.#unreadable.set(arg, why);
      }
      this.#refuse(job, `${argumentName(args, i)} ${why}`);
      return true;
    }
    return false;
  }

  #learnDuration(us: number): void {
    this.#avgUs = this.#avgUs === undefined ? us : this.#avgUs + (us - this.#avgUs) * 0.1;
    this.#updateDepth();
  }

  #updateDepth(): void {
    const byTime = this.#avgUs === undefined ? 1 : Math.floor(PIPELINE_BUDGET_US / Math.max(this.#avgUs, 1));
    const want = Math.max(1, Math.min(MAX_DEPTH, byTime, Math.floor(PIPELINE_BUDGET_BYTES / Math.max(this.#avgBytes ?? 0, 1))));
    const have = this.#depthNow;
    // Hysteresis: small wobbles in task duration do not move the admission limit.
    if (want !== have && (want === 1 || want > have * 1.3 || want < have * 0.75)) this.#depth.next((this.#depthNow = want));
  }

  #stats(job: Job, durationMs: number, cpuMs: number | undefined, pid: number | undefined): TaskStats {
    return { durationMs, cpuMs, pid, attempt: job.attempt };
  }

  #error(job: Job, init: Omit<TaskErrorInit, 'index' | 'label' | 'attempt'>): TaskError {
    return new TaskError({ ...init, index: job.index, label: taskLabel(job.task), attempt: job.attempt });
  }
}

/**
 * How the task a worker was running when it died failed: from what the worker said before it
 * went (an uncaught error it reported; a line on stderr for an exit while loading a module, or a
 * task's process.disconnect()), else from how it ended.
 */
function workerDeath(code: number | null, signal: NodeJS.Signals | null, stderrTail: string, fatal: FatalReport | undefined): Pick<TaskErrorInit, 'kind' | 'remote' | 'detail'> {
  if (fatal) return { kind: 'threw', remote: fatal.error, detail: 'uncaught in the worker, which exited' };
  if (!signal && stderrTail.includes(EXITED_WHILE_LOADING)) {
    return { kind: 'invalid', detail: `its module ended the worker process as it loaded (exit code ${code}): a task module's top level must not call process.exit()` };
  }
  if (signal && stderrTail.includes(DISCONNECTED_BY_TASK)) {
    return { kind: 'signaled', detail: 'it called process.disconnect(), which ends its worker process (and what it started)' };
  }
  const how = /JavaScript heap out of memory/.test(stderrTail) ? 'it ran out of memory (JavaScript heap out of memory); ' : '';
  return signal ? { kind: 'signaled', detail: `${how}the worker process died while running it` } : { kind: 'exited', detail: `${how}the worker process exited while running it` };
}

/** What to change when workers cannot be started for want of file descriptors or processes. */
function startErrorHint(message: string, preloads: boolean): string {
  if (/\bE[MN]FILE\b/.test(message)) return ': too many open files; each worker holds four (its pipes and its channel): lower the concurrency, or raise the limit (ulimit -n)';
  if (/\bEAGAIN\b/.test(message)) return ': no more processes can be started (ulimit -u, or memory): lower the concurrency';
  if (message.startsWith(START_TIMED_OUT)) {
    return preloads
      ? ': a preload in workerExecArgv that never finishes? (a slow one needs a longer workerStartTimeout)'
      : ": a machine too busy to start Node in time, or a loader the workers take from this process's flags (tsx, say)? raise workerStartTimeout";
  }
  return '';
}

/**
 * Whether SPAWN_FDS more file descriptors can be opened now. Near the limit, a spawn can fail half
 * way: libuv opens the stdio pipes, then cannot make its own pipe (EMFILE), and Node, which takes
 * EMFILE to mean that no pipe was made, never closes them (Node 20, libuv 1.46). Each such failure
 * would take two or three descriptors for good, and a run that crosses the limit often would end
 * with none left. About twenty system calls: asked only once a run has met the limit.
 */
function hasSpawnHeadroom(): boolean {
  if (!headroomCheckable) return true;
  const fds: number[] = [];
  try {
    for (let i = 0; i < SPAWN_FDS; i++) fds.push(openSync(devNull, 'r'));
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') return false;
    headroomCheckable = false; // no null device to open: spawns go unchecked, as before
    return true;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
let headroomCheckable = true;

/** True for a command or process task that could not start for want of file descriptors or processes, not for a fault of its own. */
function isShortage(init: Omit<TaskErrorInit, 'index' | 'label' | 'attempt'>): boolean {
  const code = init.remote?.code;
  return init.kind === 'spawn' && (code === 'EMFILE' || code === 'ENFILE' || code === 'EAGAIN');
}

/** True if a module task waits in the lane, not yet sent to a worker. */
function hasQueuedModuleJob(lane: Lane): boolean {
  for (let i = 0; i < lane.jobs.length; i++) {
    const job = lane.jobs.at(i)!;
    if (job.state === 'queued' && job.task.kind === 'module') return true;
  }
  return false;
}

/** True while some of the lane's suspects are still waiting to run; forgets those that ended. */
function hasSuspects(lane: Lane): boolean {
  for (const job of lane.suspects) if (job.state === 'done' || job.lane !== lane) lane.suspects.delete(job);
  return lane.suspects.size > 0;
}

/**
 * Whether `arg` was also an argument of the task started before. Its arguments are read again
 * here, and an element getter of that task's that throws now is that task's, not this one's.
 */
function sentBefore(last: readonly unknown[], arg: unknown): boolean {
  try {
    return last.includes(arg);
  } catch {
    return false;
  }
}
