/**
 * The thread behind `Scheduler.runBlocking()`: it runs the schedule with the ordinary async
 * machinery while the calling thread sleeps in `Atomics.wait`, and reports back through a
 * `MessagePort` that the caller reads synchronously with `receiveMessageOnPort`.
 *
 * Everything that crosses between the two threads is plain data: tasks travel as
 * {@link BlockingTaskSpec}s and are rebuilt here with the public task factories, errors travel as
 * {@link SerializedError}s and are rebuilt in the caller, so `TaskError` keeps its class and fields.
 *
 * The thread is started from a tiny inline bootstrap ({@link BLOCKING_BOOTSTRAP}) rather than from
 * this file directly: if this module fails to load (no TypeScript loader in the thread, a broken
 * install), the bootstrap still reports the failure, and the blocked caller wakes up with an error
 * instead of sleeping forever.
 *
 * @module
 * @internal
 */
import { writeSync } from 'node:fs';
import { deserialize, serialize } from 'node:v8';
import { fileURLToPath } from 'node:url';
import type { MessagePort } from 'node:worker_threads';
import { isTaskError, RunTerminatedError, TaskError, type RemoteErrorInfo, type TaskFailureKind } from './errors.js';
import type { ScheduleOptions } from './options.js';
import { stopGuardian } from './runtime/cleanup.js';
import { schedule$ } from './schedule.js';
import { commandTask, moduleTask, type CommandTaskOptions, type Task, type TaskOptions } from './task.js';

/** A task as it crosses to the thread: only module and command tasks are plain data. */
export type BlockingTaskSpec =
  | { kind: 'module'; module: string; exportName: string; args: readonly unknown[]; options: TaskOptions }
  | { kind: 'command'; file: string; args: readonly string[]; options: CommandTaskOptions };

/** What the caller asks the thread to run. */
export interface BlockingRunRequest {
  tasks: BlockingTaskSpec[];
  /** Cloneable options only: no `signal`, no Observable `concurrency` (the caller checks). */
  options: ScheduleOptions;
  /** Send `finished` messages (only when the caller has a progress callback to feed). */
  progress: boolean;
}

/** What the caller sends to the thread. */
export type BlockingControlMessage = { type: 'cancel' };

/** What the thread sends to the caller; `done` or `error` is always the last message. */
export type BlockingRunMessage =
  | { type: 'finished'; indices: number[] }
  /** The results, written by V8's serializer: a message between threads would turn a Buffer into a Uint8Array. */
  | { type: 'done'; values: Uint8Array }
  | { type: 'error'; error: SerializedError };

/** An error as it crosses between threads (structured clone would drop a TaskError's class and fields). */
export type SerializedError =
  | { type: 'TaskError'; message: string; stack: string | undefined; init: SerializedTaskError }
  | { type: 'RunTerminatedError'; message: string; stack: string | undefined; cancelled: SerializedError[] }
  | { type: 'Error'; name: string; message: string; stack: string | undefined; code?: string | number };

interface SerializedTaskError {
  kind: TaskFailureKind;
  index: number;
  label: string | undefined;
  remote: RemoteErrorInfo | undefined;
  exitCode: number | null | undefined;
  signal: NodeJS.Signals | null | undefined;
  stderrTail: string | undefined;
  attempt: number;
  pid: number | undefined;
  durationMs: number | undefined;
  cause: unknown;
}

/** What the bootstrap passes as `workerData`. */
export interface BlockingWorkerData {
  /** URL of this module (`.ts` from source, `.js` from dist). */
  entry: string;
  /** URL of `tsx/esm/api`, to register a TypeScript loader in the thread when the entry is `.ts`. */
  tsxApi: string | undefined;
  /** A {@link BlockingRunRequest}, written by V8's serializer (a Buffer argument stays a Buffer). */
  request: Uint8Array;
  port: MessagePort;
  /** `[0]` counts messages sent; the caller waits on it. */
  state: Int32Array;
  /**
   * The parent's flags (see {@link threadExecArgv}), as the thread's `process.execArgv`: the
   * processes it forks inherit them, as under `run()`, even those a thread may not be started with.
   */
  execArgv: string[];
}

/**
 * The thread's whole program, evaluated from this string (`new Worker(code, { eval: true })`).
 * It only uses Node built-ins, so it always starts; it loads {@link serveBlockingRun} with a
 * dynamic import and turns any failure, including the thread exiting early, into an `error`
 * message, and every message into a wake-up of the caller.
 */
export const BLOCKING_BOOTSTRAP = `
// Valid as a CommonJS script and as an ES module alike (the thread's flags decide which it is):
// no require, no import statement, no top-level await.
(async () => {
  const { workerData } = await import('node:worker_threads');
  const { port, state } = workerData;
  process.execArgv = workerData.execArgv;
  let ended = false;
  const describe = (error) => ({
    type: 'Error', name: (error && error.name) || 'Error', message: String((error && error.message) || error), stack: error && error.stack,
  });
  const report = (message) => {
    if (ended) return;
    if (message.type !== 'finished') ended = true;
    try {
      port.postMessage(message);
    } catch (error) {
      port.postMessage({ type: 'error', error: describe(error) });
    }
    Atomics.add(state, 0, 1);
    Atomics.notify(state, 0);
    if (ended) port.close();
  };
  process.on('exit', (code) => {
    report({ type: 'error', error: describe(new Error('the thread running the schedule exited with code ' + code + ' before the run ended')) });
  });
  process.on('uncaughtException', (error) => {
    report({ type: 'error', error: describe(error) });
    process.exit(1);
  });
  let module;
  try {
    try {
      module = await import(workerData.entry);
    } catch (error) {
      if (!error || error.code !== 'ERR_UNKNOWN_FILE_EXTENSION' || !workerData.tsxApi) throw error;
      // Running from source: TypeScript loaders registered with --import do not reach threads on
      // every Node version. A failed import is cached, so the retry uses a distinct URL.
      (await import(workerData.tsxApi)).register();
      module = await import(workerData.entry + '?tsx');
    }
  } catch (error) {
    report({ type: 'error', error: describe(error) });
    return;
  }
  module.serveBlockingRun(workerData, report);
})();
`;

/**
 * Runs the requested schedule and reports through `report`: batched `finished` indices while it
 * runs (if asked), then exactly one `done` or `error`. A `cancel` message terminates the run.
 *
 * @param data What the bootstrap received.
 * @param report Posts a message and wakes the caller.
 */
export function serveBlockingRun(data: BlockingWorkerData, report: (message: BlockingRunMessage) => void): void {
  writeOutputSynchronously();
  const { port } = data;
  const request = deserialize(data.request) as BlockingRunRequest;
  let run;
  try {
    const tasks = request.tasks.map(rebuildTask);
    run = schedule$(tasks, request.options);
  } catch (error) {
    report({ type: 'error', error: serializeError(error) });
    return;
  }
  const scheduled = run;
  port.on('message', (message: BlockingControlMessage) => {
    if (message?.type === 'cancel') void scheduled.terminate();
  });

  let pending: number[] = [];
  let flushQueued = false;
  const flush = () => {
    flushQueued = false;
    if (pending.length === 0) return;
    const indices = pending;
    pending = [];
    report({ type: 'finished', indices });
  };
  if (request.progress) {
    scheduled.subscribe({
      next: (result) => {
        pending.push(result.index);
        // One wake-up of the caller per turn of this thread's loop, not one per task.
        if (!flushQueued) {
          flushQueued = true;
          setImmediate(flush);
        }
      },
      error: () => {}, // the same error reaches toOrderedArray() below
    });
  }
  // The guardian of the run's commands is this thread's child: stopped and reaped here, before the
  // thread ends, or it would be left a zombie of the process.
  const finish = (message: BlockingRunMessage) => {
    flush();
    void stopGuardian().then(() => report(message));
  };
  scheduled.toOrderedArray().then(
    (values) => finish({ type: 'done', values: serialize(values) }),
    (error: unknown) => finish({ type: 'error', error: serializeError(error) }),
  );
}

/** Turns a task into plain data for the thread, or says why it cannot cross. */
export function toBlockingTaskSpec(task: Task): BlockingTaskSpec | string {
  switch (task.kind) {
    case 'module':
      return { kind: 'module', module: task.module, exportName: task.exportName, args: task.args, options: { ...task.options } };
    case 'command': {
      const { cwd, ...options } = task.options;
      // A URL object does not survive structured clone; a path does.
      const spec: BlockingTaskSpec = { kind: 'command', file: task.file, args: task.args, options };
      if (cwd !== undefined) spec.options.cwd = cwd instanceof URL ? fileURLToPath(cwd) : cwd;
      return spec;
    }
    case 'process':
      return (
        "it is a processTask: its factory is a function, and functions cannot be sent to the thread that runs the schedule; " +
        'use run(), or describe the work as a module task (add) or a command (commandTask)'
      );
    default:
      return 'it is not a task made by moduleTask, taskModule, commandTask or processTask';
  }
}

function rebuildTask(spec: BlockingTaskSpec): Task {
  return spec.kind === 'module'
    ? moduleTask(spec.module, spec.exportName, spec.args, spec.options)
    : commandTask(spec.file, spec.args, spec.options as CommandTaskOptions & { encoding?: 'utf8' });
}

/** Describes an error so that {@link reviveError} can rebuild it in another thread. */
export function serializeError(error: unknown): SerializedError {
  if (isTaskError(error)) {
    return {
      type: 'TaskError',
      message: error.message,
      stack: error.stack,
      init: {
        kind: error.kind,
        index: error.index,
        label: error.label,
        remote: error.remote,
        exitCode: error.exitCode,
        signal: error.signal,
        stderrTail: error.stderrTail,
        attempt: error.attempt,
        pid: error.pid,
        durationMs: error.durationMs,
        // The cause is rebuilt from `remote` when there is one; otherwise keep it if it clones.
        cause: error.remote ? undefined : cloneOrDescribe(error.cause),
      },
    };
  }
  if (error instanceof RunTerminatedError) {
    return { type: 'RunTerminatedError', message: error.message, stack: error.stack, cancelled: error.cancelled.map(serializeError) };
  }
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { type: 'Error', name: error.name, message: error.message, stack: error.stack, ...(code !== undefined ? { code } : {}) };
  }
  return { type: 'Error', name: 'Error', message: String(error), stack: undefined };
}

/** Rebuilds an error described by {@link serializeError}, with its class, fields, message and stack. */
export function reviveError(serialized: SerializedError): Error {
  let error: Error;
  switch (serialized.type) {
    case 'TaskError': {
      const { cause, ...init } = serialized.init;
      error = new TaskError(cause === undefined ? init : { ...init, cause });
      break;
    }
    case 'RunTerminatedError':
      error = new RunTerminatedError(serialized.message);
      (error as RunTerminatedError).cancelled = serialized.cancelled.map((c) => reviveError(c) as TaskError);
      break;
    default:
      error = new Error(serialized.message);
      Object.defineProperty(error, 'name', { value: serialized.name, configurable: true, writable: true });
      if (serialized.code !== undefined) (error as NodeJS.ErrnoException).code = String(serialized.code);
  }
  // The generated message can lose a detail that only the original carried: keep the original.
  Object.defineProperty(error, 'message', { value: serialized.message, configurable: true, writable: true });
  if (serialized.stack !== undefined) error.stack = serialized.stack;
  return error;
}

function cloneOrDescribe(value: unknown): unknown {
  if (value === undefined) return undefined;
  try {
    return structuredClone(value);
  } catch {
    return String(value);
  }
}

/**
 * Children's output (`output: 'inherit'`) is written to this thread's `process.stdout`, which
 * Node forwards to the main thread asynchronously: the main thread is asleep, so the output
 * would pile up until `runBlocking()` returns, and be lost if the program then exits at once.
 * Writing straight to the file descriptors keeps it live.
 */
function writeOutputSynchronously(): void {
  for (const [stream, fd] of [[process.stdout, 1], [process.stderr, 2]] as const) {
    stream.write = ((chunk: string | Uint8Array, encoding?: BufferEncoding | ((error?: Error | null) => void), callback?: (error?: Error | null) => void) => {
      const done = typeof encoding === 'function' ? encoding : callback;
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8') : chunk;
      writeFully(fd, bytes);
      if (done) queueMicrotask(() => done(null));
      return true;
    }) as typeof stream.write;
  }
}

const pause = new Int32Array(new SharedArrayBuffer(4));

function writeFully(fd: number, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.byteLength) {
    try {
      offset += writeSync(fd, bytes, offset);
    } catch (error) {
      // A non-blocking pipe that is full: wait for the reader a little, then go on.
      if ((error as NodeJS.ErrnoException).code === 'EAGAIN') {
        Atomics.wait(pause, 0, 0, 1);
        continue;
      }
      return; // closed (EPIPE) or unwritable: drop it, as a closed stdout would
    }
  }
}

/**
 * The parent's Node flags, for the thread: without those that say what the main program is
 * (`-e`, `-p`, `--input-type`): the thread's own program is the bootstrap, and the processes it
 * forks inherit its flags in turn.
 */
export function threadExecArgv(parent: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < parent.length; i++) {
    const arg = parent[i]!;
    if (/^(-e|--eval|-p|--print|-pe|--input-type)$/.test(arg)) {
      i++; // and its value
      continue;
    }
    if (/^(--eval|--print|--input-type)=/.test(arg)) continue;
    out.push(arg);
  }
  return out;
}
