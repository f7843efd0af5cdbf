/**
 * The error family of the library. Every error a task can end with is a {@link TaskError};
 * options rejected up front are an {@link OptionError}. Brand checks (`isTaskError`) work
 * across copies of the library, where `instanceof` would not.
 *
 * @module
 */

const TASK_ERROR_BRAND = Symbol.for('async-process-scheduler.TaskError');
const OPTION_ERROR_BRAND = Symbol.for('async-process-scheduler.OptionError');
const TERMINATED_BRAND = Symbol.for('async-process-scheduler.RunTerminatedError');

/**
 * Why a task failed.
 *
 * - `threw`: the task's function threw or rejected, in the child.
 * - `exited`: the process exited with a non-zero code (or, for a process task, without sending a result).
 * - `signaled`: the process was killed by a signal it did not ask for (SIGKILL from outside, OOM killer).
 * - `timeout`: the task ran longer than its `timeout` and was killed.
 * - `cancelled`: the run was terminated (unsubscribed, aborted) while the task was running; such
 *   errors are listed on the run's {@link RunTerminatedError} (`cancelled`), as the run delivers
 *   no outcome for them.
 * - `invalid`: the task itself is wrong: unknown module or export, an argument that cannot be
 *   sent to a child process, a command that does not exist, a malformed task object.
 * - `spawn`: a worker process could not be started, or died while starting.
 */
export type TaskFailureKind = 'threw' | 'exited' | 'signaled' | 'timeout' | 'cancelled' | 'invalid' | 'spawn';

/** An error thrown in a child process, as it crossed the process boundary. */
export interface RemoteErrorInfo {
  /** The error's class name in the child, e.g. `TypeError` or a user-defined class. */
  name: string;
  /** The error's message. */
  message: string;
  /** The stack, as printed in the child. */
  stack?: string;
  /** `error.code`, when the child's error had one (e.g. `ENOENT`). */
  code?: string | number;
  /**
   * The error's `cause`, when it had one: an Error cause as a `RemoteErrorInfo` of its own
   * (recursively, 8 deep), any other value as it was cloned, or described as a string when it
   * could not be. Typed `unknown` for that reason: test it before reading `name` or `message`.
   */
  cause?: unknown;
  /**
   * An `AggregateError`'s `errors` (the first 100): each Error as a
   * `RemoteErrorInfo` of its own, any other value as it was cloned or described as a string.
   */
  errors?: unknown[];
  /** Other own enumerable properties that could be cloned. */
  props?: Record<string, unknown>;
}

/** How many of an `AggregateError`'s `errors` cross to the parent. */
export const MAX_REMOTE_ERRORS = 100;

/** Fields a {@link TaskError} is built from. */
export interface TaskErrorInit {
  kind: TaskFailureKind;
  /** 0-based position of the task in the input. */
  index: number;
  /** A short name of the task, e.g. `work.ts#square` or `ffmpeg`. */
  label?: string;
  /** The error from inside the child, when the task threw there. */
  remote?: RemoteErrorInfo;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** The last part of what the process wrote to stderr while this task ran. */
  stderrTail?: string;
  /** Which attempt failed (1 for the first). */
  attempt?: number;
  pid?: number;
  durationMs?: number;
  cause?: unknown;
  /** The detail appended to the generated message. */
  detail?: string;
}

/**
 * The error a task ends with, whatever went wrong: it names the task and says how it failed.
 *
 * The `message` reads like `task #3 (work.ts#square) threw TypeError: x is not a number`.
 * The child's own error is kept in {@link TaskError.remote} (class name, message, stack, cause)
 * and mirrored in `cause` as a real `Error`, so `console.error` prints the whole chain.
 *
 * @example
 * ```ts
 * import { schedule$, moduleTask, isTaskError } from 'async-process-scheduler';
 *
 * // work.js: export function mayThrow(x) { console.error(`checking ${x}`); if (x > 0) throw new RangeError(`${x} is too big`); return x; }
 * try {
 *   await schedule$([moduleTask(new URL('./work.js', import.meta.url), 'mayThrow', [1])]).toOrderedArray();
 * } catch (error) {
 *   if (isTaskError(error)) console.log(error.index, error.kind, error.remote?.name, error.stderrTail); // 0 threw RangeError checking 1
 * }
 * ```
 */
export class TaskError extends Error {
  declare readonly [TASK_ERROR_BRAND]: true;
  override readonly name: string = 'TaskError';
  /** How it failed: see {@link TaskFailureKind}. */
  readonly kind: TaskFailureKind;
  /** The task's 0-based position in the input. */
  readonly index: number;
  /** A short name of the task, e.g. `work.js#square` or `ffmpeg`. */
  readonly label: string | undefined;
  /** The error thrown in the child (class name, message, stack, cause), when it threw there. */
  readonly remote: RemoteErrorInfo | undefined;
  /** The process's exit code, when it exited (a worker ended with 229 by its task reports 1: 229 is the worker's own). */
  readonly exitCode: number | null | undefined;
  /** The signal that killed the process, when one did. */
  readonly signal: NodeJS.Signals | null | undefined;
  /** The last part (up to 8 KiB) of what the process wrote to stderr while the task ran. */
  readonly stderrTail: string | undefined;
  /** Which attempt failed, 1 for the first. */
  readonly attempt: number;
  /** The process that ran the task. */
  readonly pid: number | undefined;
  /** How long the failed attempt ran, in milliseconds, where known. */
  readonly durationMs: number | undefined;
  /** True when the task ran out of time (`kind === 'timeout'`). */
  get timedOut(): boolean {
    return this.kind === 'timeout';
  }
  /** True when the run was terminated while the task ran (`kind === 'cancelled'`). */
  get isCancelled(): boolean {
    return this.kind === 'cancelled';
  }

  constructor(init: TaskErrorInit) {
    super(describeFailure(init), { cause: init.cause ?? (init.remote ? reviveRemoteError(init.remote) : undefined) });
    Object.defineProperty(this, TASK_ERROR_BRAND, { value: true });
    this.kind = init.kind;
    this.index = init.index;
    this.label = init.label;
    this.remote = init.remote;
    this.exitCode = init.exitCode;
    this.signal = init.signal;
    this.stderrTail = init.stderrTail || undefined;
    this.attempt = init.attempt ?? 1;
    this.pid = init.pid;
    this.durationMs = init.durationMs;
  }
}

/**
 * An option passed to {@link schedule$} (or a task factory) is invalid. Thrown synchronously,
 * before anything starts. `option` names the offending option.
 *
 * @example
 * ```ts
 * import { schedule$, OptionError } from 'async-process-scheduler';
 * try { schedule$([], { concurrency: 0 }); } catch (e) { console.log(e instanceof OptionError, (e as OptionError).option); } // true concurrency
 * ```
 */
export class OptionError extends TypeError {
  declare readonly [OPTION_ERROR_BRAND]: true;
  override readonly name: string = 'OptionError';
  /** The option's path, e.g. `concurrency` or `retries.delay`. */
  readonly option: string;
  constructor(option: string, expectation: string, received: unknown, message?: string, options?: { cause?: unknown }) {
    super(message ?? `options.${option} must be ${expectation}, got ${formatValue(received)}`, options);
    Object.defineProperty(this, OPTION_ERROR_BRAND, { value: true });
    this.option = option;
  }
}

/**
 * The run was terminated before it finished: by {@link ScheduledRun.terminate}, by its
 * `signal`, or because every subscriber left. Subscribers still listening, and any that come
 * later, get this error; `cause` holds the abort reason when a signal was aborted.
 *
 * A terminated run delivers no outcome for the tasks it stopped: `cancelled` lists those that
 * were executing at that moment, each as a {@link TaskError} of kind `'cancelled'` (a task that
 * had timed out and whose process was still being killed is one of them; a task waiting between
 * two attempts is counted in the last progress snapshot's `cancelled`, not listed here).
 *
 * @example
 * ```ts
 * import { schedule$, commandTask, RunTerminatedError } from 'async-process-scheduler';
 * const controller = new AbortController();
 * const run = schedule$([commandTask('sleep', ['60']), commandTask('sleep', ['61'])], { concurrency: 2, signal: controller.signal });
 * const done = run.toOrderedArray();
 * setTimeout(() => controller.abort(), 500);
 * await done.catch((e) => {
 *   console.log(e instanceof RunTerminatedError); // true
 *   if (e instanceof RunTerminatedError) console.log(e.cancelled.map((c) => c.message)); // e.g. ['task #0 (sleep 60) was cancelled', 'task #1 (sleep 61) was cancelled']
 * });
 * ```
 */
export class RunTerminatedError extends Error {
  declare readonly [TERMINATED_BRAND]: true;
  override readonly name: string = 'RunTerminatedError';
  /** The tasks that were executing when the run was terminated: kind `'cancelled'`, in input order. */
  cancelled: readonly TaskError[] = [];
  constructor(message?: string, options?: { cause?: unknown }) {
    super(message, options);
    Object.defineProperty(this, TERMINATED_BRAND, { value: true });
  }
}

/**
 * True when `value` is a {@link TaskError}, from this or any other copy of the library.
 *
 * @example
 * ```ts
 * import { isTaskError } from 'async-process-scheduler';
 * console.log(isTaskError(new Error('x'))); // false
 * ```
 * @param value Anything.
 * @returns Whether it is a TaskError.
 */
export function isTaskError(value: unknown): value is TaskError {
  return hasBrand(value, TASK_ERROR_BRAND);
}

/**
 * True when `value` is an {@link OptionError}, from this or any other copy of the library.
 *
 * @example
 * ```ts
 * import { isOptionError, schedule$ } from 'async-process-scheduler';
 * try { schedule$([], { concurrency: -1 }); } catch (e) { console.log(isOptionError(e)); } // true
 * ```
 * @param value Anything.
 * @returns Whether it is an OptionError.
 */
export function isOptionError(value: unknown): value is OptionError {
  return hasBrand(value, OPTION_ERROR_BRAND);
}

/**
 * True when `value` is a {@link RunTerminatedError}, from this or any other copy of the library.
 *
 * @example
 * ```ts
 * import { commandTask, isRunTerminatedError, schedule$ } from 'async-process-scheduler';
 * const run = schedule$([commandTask('sleep', ['60'])]);
 * run.subscribe({ error: (e) => console.log(isRunTerminatedError(e)) }); // true
 * await run.terminate();
 * ```
 * @param value Anything.
 * @returns Whether it is a RunTerminatedError.
 */
export function isRunTerminatedError(value: unknown): value is RunTerminatedError {
  return hasBrand(value, TERMINATED_BRAND);
}

/** Set by the constructor of every copy of the library: `instanceof` sees only this copy's classes. */
function hasBrand(value: unknown, brand: symbol): boolean {
  if (typeof value !== 'object' || value === null) return false;
  try {
    return (value as Record<symbol, unknown>)[brand] === true;
  } catch {
    return false; // a Proxy whose get trap throws, or a revoked one
  }
}

function describeFailure(init: TaskErrorInit): string {
  const who = `task #${init.index}${init.label ? ` (${init.label})` : ''}`;
  const attempt = init.attempt && init.attempt > 1 ? ` on attempt ${init.attempt}` : '';
  const tail = init.detail ? `: ${init.detail}` : '';
  switch (init.kind) {
    case 'threw':
      return `${who} threw${attempt} ${init.remote ? `${init.remote.name}: ${init.remote.message}` : 'an error'}${tail}`;
    case 'exited':
      return `${who} exited with code ${init.exitCode}${attempt}${tail}`;
    case 'signaled':
      return `${who} was killed by ${init.signal ?? 'a signal'}${attempt}${tail}`;
    case 'timeout':
      return `${who} timed out${attempt}${tail}`;
    case 'cancelled':
      return `${who} was cancelled${tail}`;
    case 'invalid':
      return `${who} is invalid${tail || remoteTail(init)}`;
    case 'spawn':
      return `${who} could not start${attempt}${tail || remoteTail(init)}`;
  }
}

function remoteTail(init: TaskErrorInit): string {
  return init.remote ? `: ${init.remote.message}` : '';
}

/** Rebuilds a real `Error` from what crossed the boundary, keeping class name, stack and cause. */
export function reviveRemoteError(info: RemoteErrorInfo): Error {
  const error = new Error(info.message);
  Object.defineProperty(error, 'name', { value: info.name, configurable: true, writable: true });
  if (info.stack !== undefined) error.stack = info.stack;
  if (info.code !== undefined) (error as NodeJS.ErrnoException).code = String(info.code);
  if (info.props) Object.assign(error, info.props);
  if (info.cause !== undefined) {
    const cause = isRemoteErrorInfo(info.cause) ? reviveRemoteError(info.cause) : info.cause;
    Object.defineProperty(error, 'cause', { value: cause, configurable: true, writable: true });
  }
  if (Array.isArray(info.errors)) {
    const errors = info.errors.map((e) => (isRemoteErrorInfo(e) ? reviveRemoteError(e) : e));
    Object.defineProperty(error, 'errors', { value: errors, configurable: true, writable: true });
  }
  return error;
}

/**
 * Emits an `AsyncProcessSchedulerWarning`: `what`, then what was thrown, read as
 * {@link toRemoteErrorInfo} reads anything (a value with no string form included). For an error
 * that has nowhere else to go.
 */
export function warnOfThrown(what: string, thrown: unknown): void {
  const { name, message, stack } = toRemoteErrorInfo(thrown);
  process.emitWarning(`${what}: ${name}: ${message}`, { type: 'AsyncProcessSchedulerWarning', detail: stack });
}

/** Turns anything thrown into a cloneable description. Used on the child side. */
export function toRemoteErrorInfo(error: unknown, depth = 0): RemoteErrorInfo {
  try {
    return remoteInfo(error, depth);
  } catch {
    // A Proxy whose every trap throws, say: nothing of it can be read, not even its keys.
    return { name: 'NonErrorThrown', message: 'a value was thrown that cannot be inspected (reading it threw)' };
  }
}

function remoteInfo(error: unknown, depth: number): RemoteErrorInfo {
  if (!(error instanceof Error)) {
    const info: RemoteErrorInfo = { name: 'NonErrorThrown', message: `a non-Error value was thrown: ${formatValue(error)}` };
    // A plain object thrown as an error (`throw { code: 'E_BUSY' }`) keeps its fields.
    if (typeof error === 'object' && error !== null) {
      const message = read(error, 'message');
      if (typeof message === 'string') info.message += ` with message ${formatValue(message)}`;
      copyFields(error, info, ['message']);
    }
    return info;
  }
  // Each field read on its own: a getter that throws (a broken or hostile error class) costs that
  // field, not the rest, nor the worker.
  const constructorName = read(read(error, 'constructor'), 'name');
  const name = read(error, 'name');
  const message = read(error, 'message');
  const info: RemoteErrorInfo = {
    name: typeof constructorName === 'string' && constructorName !== '' && constructorName !== 'Error' ? constructorName : typeof name === 'string' ? name : 'Error',
    message: typeof message === 'string' ? message : message === undefined ? '(its message could not be read)' : formatValue(message),
  };
  if (typeof name === 'string' && name && name !== 'Error' && name !== info.name) info.name = name;
  const stack = read(error, 'stack');
  if (typeof stack === 'string') info.stack = stack;
  const cause = read(error, 'cause');
  if (cause !== undefined && depth < 8) {
    info.cause = cause instanceof Error ? toRemoteErrorInfo(cause, depth + 1) : primitiveOrString(cause);
  }
  // An AggregateError's errors are an own property, but not an enumerable one.
  const errors = read(error, 'errors');
  if (Array.isArray(errors) && depth < 8) {
    info.errors = errors.slice(0, MAX_REMOTE_ERRORS).map((e: unknown) => (e instanceof Error ? toRemoteErrorInfo(e, depth + 1) : primitiveOrString(e)));
  }
  copyFields(error, info, ['cause', 'stack', 'message', 'name', 'errors']);
  return info;
}

/** `from[key]`, or undefined when reading it throws (a getter, a Proxy). */
function read(from: unknown, key: string): unknown {
  if (from === null || from === undefined) return undefined;
  try {
    return (from as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/** `code` (a string or number) and the other own enumerable fields of `from`, but those named in `skip`. */
function copyFields(from: object, info: RemoteErrorInfo, skip: readonly string[]): void {
  const code = read(from, 'code');
  if (typeof code === 'string' || typeof code === 'number') info.code = code;
  const props: Record<string, unknown> = {};
  let any = false;
  for (const key of Object.keys(from)) {
    if (key === 'code' || skip.includes(key)) continue;
    props[key] = primitiveOrString(read(from, key));
    any = true;
  }
  if (any) info.props = props;
}

function isRemoteErrorInfo(value: unknown): value is RemoteErrorInfo {
  return typeof value === 'object' && value !== null && typeof (value as RemoteErrorInfo).message === 'string' && typeof (value as RemoteErrorInfo).name === 'string';
}

function primitiveOrString(value: unknown): unknown {
  if (value === null || ['string', 'number', 'boolean', 'bigint', 'undefined'].includes(typeof value)) return value;
  try {
    return structuredClone(value);
  } catch {
    return formatValue(value);
  }
}

/**
 * How messages name a task's argument that cannot be sent: `args[1] (a function (f))`, an index
 * no one reads as a count.
 */
export function argumentName(args: readonly unknown[], index: number): string {
  let value: unknown;
  try {
    value = args[index];
  } catch {
    // An element getter that worked when the argument was first read, and throws now.
    return `args[${index}] (a getter that throws)`;
  }
  return `args[${index}] (${formatValue(value)})`;
}

/** A short, safe rendering of any value for messages. */
export function formatValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  if (typeof value === 'function') return `a function (${value.name || 'anonymous'})`;
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'symbol') return value.toString();
  if (value === null || typeof value !== 'object') return String(value);
  try {
    if (Array.isArray(value)) return `an array of ${value.length}`;
    const name: unknown = value.constructor?.name;
    return `an object (${typeof name === 'string' ? name : 'null prototype'})`;
  } catch {
    // A Proxy whose traps throw, or a constructor getter that does.
    return 'an object that cannot be inspected';
  }
}
