/**
 * The seam between the streams and where tasks run. `schedule$` only ever talks to a
 * {@link TaskRuntime}: today's is {@link LocalRuntime} (local processes); a distributed one (a
 * queue served by worker hosts) implements the same few methods.
 *
 * @module
 */
import type { Observable } from 'rxjs';
import type { TaskError } from '../errors.js';
import type { Task } from '../task.js';
import type { OutputLine } from './output.js';

/** What one execution of a task cost. */
export interface TaskStats {
  /** Wall time of the task itself, in milliseconds (inside the worker for module tasks). */
  durationMs: number;
  /**
   * CPU time the task used (user + system), in milliseconds, for module tasks. Undefined for
   * commands and process tasks, and for a module task whose function's previous call took under
   * 0.1 ms: reading CPU time costs more than such a task, so tiny tasks are not measured.
   */
  cpuMs: number | undefined;
  /** The process that ran it. */
  pid: number | undefined;
  /** Which attempt this was (1 for the first). */
  attempt: number;
}

/** One execution of one task. */
export interface JobSpec {
  task: Task;
  index: number;
  attempt: number;
  /** Milliseconds from its start after which the task is killed and fails with `kind: 'timeout'`. */
  timeout: number | undefined;
}

/**
 * How a runtime reports on a job: exactly one of `fulfilled` or `rejected`, unless cancelled
 * first. They are called as methods (`events.fulfilled(value, stats)`), so they may use `this`.
 */
export interface JobEvents {
  fulfilled(value: unknown, stats: TaskStats): void;
  rejected(error: TaskError): void;
  progress(value: unknown): void;
  /** The job starts executing (each attempt, and again if it is moved after a worker gave it back). */
  started?(): void;
  /** An attempt failed, and the next starts after the retry delay: until then the job does not execute. */
  retrying?(): void;
}

/** A job executing now: which task, which attempt, in which process. */
export interface ExecutingJob {
  task: Task;
  index: number;
  attempt: number;
  pid: number | undefined;
}

export interface JobHandle {
  /** Stops the job (killing its process if it is running). No event follows. Idempotent. */
  cancel(): void;
}

/** Where tasks run. */
export interface TaskRuntime {
  /** Starts a job, or queues it until a slot of the runtime frees up. */
  start(job: JobSpec, events: JobEvents): JobHandle;
  /**
   * How many tasks may execute at once. Lowering it never stops a running task; 0 pauses: what
   * runs (and, for module tasks, what was sent ahead to a worker) goes on, and nothing else
   * starts until it rises.
   */
  setConcurrency(limit: number): void;
  /**
   * The caller will start no new tasks (a retry of one already started still may): the runtime
   * need not prepare for more than it holds, such as a process started ahead for the next task.
   */
  endOfInput(): void;
  /**
   * How many tasks per execution slot the caller should hand over ahead of time: more than 1
   * when tasks are so short that waiting for each result before sending the next would idle
   * the processes.
   */
  readonly depth$: Observable<number>;
  /** Tasks executing right now. */
  readonly executing: number;
  /** Process ids of every process the runtime has alive now. */
  pids(): number[];
  /** The jobs executing right now, for the error of a run terminated under them. */
  executingJobs(): ExecutingJob[];
  /** Lines of output, in `output: 'capture'` mode. */
  readonly output$: Observable<OutputLine>;
  /**
   * Stops everything. `graceful`: idle workers are asked to exit; otherwise every process is
   * terminated (SIGTERM, then SIGKILL). Resolves once every process is gone.
   */
  shutdown(graceful: boolean): Promise<void>;
}
