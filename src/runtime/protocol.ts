/**
 * The IPC protocol between the parent and its worker processes.
 *
 * Every library message carries the `$aps` tag, so messages that user code sends with
 * `process.send` can never be mistaken for ours. Messages are compact arrays inside one
 * tagged envelope: a tick's worth of tasks or results travels as one message, which is what
 * makes tiny tasks cheap (one IPC round trip per batch, not per task).
 *
 * @module
 */
import type { RemoteErrorInfo } from '../errors.js';

export const TAG = '$aps';

/** Parent -> worker: define functions (by id) and run tasks. */
export interface RunMessage {
  [TAG]: 'run';
  /** New function definitions: [fnId, moduleUrl, exportName]. */
  defs?: Array<[number, string, string]>;
  /**
   * Tasks: [taskId, fnId, args, index?]. Run one at a time, in this order. The task's index is
   * sent only in `output: 'capture'` mode, for {@link outputMark}.
   */
  tasks: Array<WorkerTaskTuple>;
}

/** Parent -> worker: do not start this queued task (it was cancelled). */
export interface SkipMessage {
  [TAG]: 'skip';
  id: number;
}

export type ParentMessage = RunMessage | SkipMessage;

/**
 * Status codes in a result tuple: fulfilled; the function threw or rejected; the task could
 * not run (module not found, export missing or not a function, result not cloneable).
 */
export const FULFILLED = 0;
export const THREW = 1;
export const INVALID = 2;
export type ResultStatus = typeof FULFILLED | typeof THREW | typeof INVALID;

/** [taskId, status, value or RemoteErrorInfo, durationMicros, cpuMicros] */
export type ResultTuple = [number, ResultStatus, unknown, number, number];

/** Worker -> parent: the worker's entry is loaded and it is ready. */
export interface ReadyMessage {
  [TAG]: 'ready';
}

/** Worker -> parent: results of finished tasks, in completion order. */
export interface DoneMessage {
  [TAG]: 'done';
  results: ResultTuple[];
}

/** Worker -> parent (and a process task -> parent): intermediate progress of a task. */
export interface ProgressMessage {
  [TAG]: 'progress';
  /** Task id in a worker; absent from a process task (it runs one task). */
  id?: number;
  value: unknown;
}

/** Worker -> parent: an uncaught exception or unhandled rejection; the worker exits next. */
export interface FatalMessage {
  [TAG]: 'fatal';
  id?: number;
  error: RemoteErrorInfo;
}

export type WorkerMessage = ReadyMessage | DoneMessage | ProgressMessage | FatalMessage;

/** True for any tagged library message; everything else is a user's own message. */
export function isTagged(message: unknown): message is { [TAG]: string } {
  return typeof message === 'object' && message !== null && typeof (message as Record<string, unknown>)[TAG] === 'string';
}

/** [taskId, fnId, args, index?]: see {@link RunMessage}. */
export type WorkerTaskTuple = [number, number, readonly unknown[], number?];

/** How an output mark begins; {@link outputMark}. */
export const OUTPUT_MARK = '\u001b]aps;';

/**
 * In `output: 'capture'` mode a worker writes this to stdout or stderr before the first write of
 * each task (an OSC escape sequence, which terminals ignore): the parent reads the marks in the
 * same pipe as the output, so every line is attributed to the task that wrote it, however late
 * the parent reads it. No index: what follows was written between tasks.
 */
export function outputMark(index: number | undefined): string {
  return `${OUTPUT_MARK}${index ?? ''}\u0007`;
}

/** Global hook a worker installs so `reportProgress` (possibly from another copy of the library) finds it. */
export const WORKER_HOOK = Symbol.for('async-process-scheduler.worker');

export interface WorkerHook {
  reportProgress(value: unknown): void;
  readonly taskId: number | undefined;
}
