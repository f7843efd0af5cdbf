/**
 * Progress snapshots and per-task progress.
 *
 * @module
 */
import type { LoadReading } from './load/samplers.js';

/**
 * Where a run is in its life:
 * - `'idle'`: not started (no subscriber yet);
 * - `'running'`: started;
 * - `'stopping'`: terminated, or failed in fail-fast mode, and waiting for its processes to be
 *   gone (at most `killTimeout` and a moment more); no task starts or ends any more;
 * - `'completed'`, `'failed'`, `'terminated'`: ended, every process gone. A run that stops goes
 *   through `'stopping'` first (unless it had not started).
 *
 * @example
 * ```ts
 * import { schedule$, commandTask } from 'async-process-scheduler';
 *
 * const run = schedule$([commandTask('sleep', ['10'])]);
 * run.progress$.subscribe((p) => console.log(p.state)); // idle, running, then stopping and terminated
 * setTimeout(() => void run.terminate(), 500); // a Stop button
 * await run.toOrderedArray().catch(() => {}); // rejects with RunTerminatedError
 * ```
 */
export type RunState = 'idle' | 'running' | 'stopping' | 'completed' | 'failed' | 'terminated';

/** A snapshot of a run, as emitted by `progress$`. */
export interface Progress {
  state: RunState;
  /**
   * How many tasks there are; `undefined` until a lazy source is exhausted, or until an
   * Observable source completes (its tasks may still be waiting for a slot then).
   */
  total: number | undefined;
  /** Tasks that ended well. */
  completed: number;
  /** Tasks that failed (in settle mode; in fail-fast mode at most 1). */
  failed: number;
  /**
   * Tasks executing now. A task whose worker process is still starting counts as queued. 0 from
   * the `'stopping'` snapshot on: what was running then is counted in `cancelled`.
   */
  running: number;
  /**
   * Tasks that had started (they were executing, or between two attempts of a retry) when the
   * run was terminated or failed, and were stopped: they neither completed nor failed. 0 until
   * the run stops that way (from the `'stopping'` snapshot on).
   */
  cancelled: number;
  /**
   * Tasks waiting to start; `undefined` while the total is unknown. In the last snapshot of a
   * terminated or failed run, the tasks that never started.
   */
  queued: number | undefined;
  /**
   * The concurrency limit in force. With an Observable limit, 0 until it first emits (a
   * BehaviorSubject's current value shows from the first snapshot), and 0 while it pauses the run.
   */
  concurrency: number;
  /** The last load reading, while the limit is automatic (`'auto'`, or an Observable's `'auto'`): `{}` from the run's start until the first reading; else, and in the `'idle'` snapshot, undefined. */
  load: LoadReading | undefined;
  /** True while automatic concurrency holds starts back because free memory is low. */
  memoryHeld: boolean;
  /** Milliseconds since the run started, whole. */
  elapsedMs: number;
  /**
   * Estimated milliseconds until the end (whole), once the total is known and a task has ended:
   * the elapsed time scaled by the share of the weight done (see `TaskOptions.weight`; give large
   * tasks a weight), or of the tasks ended; `undefined` while the run is stopping; 0 once it has
   * ended, however it ended.
   */
  etaMs: number | undefined;
  /** Sum of the weights of the tasks that ended (see `TaskOptions.weight`). */
  weightDone: number;
  /**
   * Sum of the weights of all tasks: known from the start for an array of tasks, `undefined`
   * for any other source until every task has been taken from it.
   */
  weightTotal: number | undefined;
}

/** Intermediate progress a task reported from inside its child with `reportProgress`. */
export interface TaskProgress {
  /** The task's 0-based position in the input. */
  index: number;
  /** What it reported. */
  value: unknown;
}

/** The counters behind progress snapshots. */
export class ProgressState {
  state: RunState = 'idle';
  total: number | undefined;
  pulled = 0;
  completed = 0;
  failed = 0;
  cancelled = 0;
  /**
   * Tasks that have started executing and not ended: running, or between two attempts (waiting
   * for a retry, for a failed attempt's process to be killed, or for a new worker).
   */
  begun = 0;
  concurrency: number;
  load: LoadReading | undefined;
  memoryHeld = false;
  startedAt = 0;
  endedAt: number | undefined;
  weightDone = 0;
  weightPulled = 0;
  /** Known from the start for an array of tasks; otherwise once every task has been pulled. */
  weightTotal: number | undefined;

  constructor(concurrency: number, total: number | undefined) {
    this.concurrency = concurrency;
    this.total = total;
  }

  snapshot(running: number): Progress {
    const now = this.endedAt ?? performance.now();
    const elapsedMs = this.startedAt ? now - this.startedAt : 0;
    const ended = this.completed + this.failed;
    const total = this.total;
    const weightTotal = this.weightTotal ?? (total !== undefined && this.pulled >= total ? this.weightPulled : undefined);
    let etaMs: number | undefined;
    if (this.state !== 'running') etaMs = this.state === 'idle' || this.state === 'stopping' ? undefined : 0;
    else if (total !== undefined && ended > 0) {
      const doneShare = weightTotal ? this.weightDone / weightTotal : ended / total;
      etaMs = doneShare > 0 ? Math.round((elapsedMs / doneShare) * (1 - doneShare)) : undefined;
    }
    return {
      state: this.state,
      total,
      completed: this.completed,
      failed: this.failed,
      running,
      cancelled: this.cancelled,
      queued: total === undefined ? undefined : Math.max(0, total - ended - running - this.cancelled),
      concurrency: this.concurrency,
      load: this.load,
      memoryHeld: this.memoryHeld,
      elapsedMs: Math.round(elapsedMs),
      etaMs,
      weightDone: this.weightDone,
      weightTotal,
    };
  }
}
