/**
 * The IPC protocol between the parent and its worker processes.
 *
 * Every library message carries the `$aps` tag, so messages that user code sends with
 * `process.send` can never be mistaken for ours. Messages are compact arrays inside one
 * tagged envelope: a tick's worth of tasks or results travels as one message, which is what
 * makes tiny tasks cheap (one IPC round trip per batch, not per task).
 *
 * The channel is Node's `advanced` one (structured clone). But a batch whose arguments or
 * results are all values JSON carries exactly ({@link jsonExact}) travels as the JSON text of
 * its message ({@link pack}). Besides being quicker to encode and decode for small values, text
 * keeps V8's serializer from holding the batch: a serializer keeps every object it wrote (or
 * read) alive until the serializer itself is collected, so each batch's objects (then a tuple
 * per task) survived the next scavenge, and many were promoted to the old generation: the
 * parent's memory rose in waves between full collections over a run of a million tasks. A
 * string is not an object: nothing holds it.
 *
 * @module
 */
import { deserialize, serialize } from 'node:v8';
import type { RemoteErrorInfo } from '../errors.js';

export const TAG = '$aps';

/**
 * Parent -> worker: define functions (by id) and run tasks.
 *
 * Tasks and results travel flat: one array holds every task's fields one after the other, rather
 * than an array per task. Per task, that is one array (and its backing store) less to build,
 * encode, parse and collect on each side, which is a quarter of what the parent allocates for a
 * tiny task.
 */
export interface RunMessage {
  [TAG]: 'run';
  /** New function definitions: [fnId, moduleUrl, exportName]. */
  defs?: Array<[number, string, string]>;
  /**
   * Tasks, flat: taskId, fnId, args for each ({@link TASK_WIDTH} values), and its index after
   * them when `indexed` ({@link INDEXED_TASK_WIDTH}). Run one at a time, in this order. The index
   * is sent only in `output: 'capture'` mode, for {@link outputMark}.
   */
  tasks: unknown[];
  indexed?: true;
  /**
   * The run's `progressInterval`, from these tasks on, when it differs from what the worker was
   * last told (at first, {@link DEFAULT_PROGRESS_INTERVAL}): beyond {@link PROGRESS_BURST} at once, a
   * task's progress reports are coalesced to one per that many ms.
   */
  progressEvery?: number;
}

/** The default `progressInterval`, and the coalescing of task progress a worker starts with. */
export const DEFAULT_PROGRESS_INTERVAL = 50;
/**
 * How many progress reports a task may send at once, before they are coalesced to one per
 * `progressInterval` (see worker-main.ts).
 */
export const PROGRESS_BURST = 8;

/** Values per task in {@link RunMessage.tasks}: taskId, fnId, args. */
export const TASK_WIDTH = 3;
/** Values per task in an `indexed` {@link RunMessage.tasks}: taskId, fnId, args, index. */
export const INDEXED_TASK_WIDTH = 4;

/** Parent -> worker: do not start this queued task (it was cancelled). */
export interface SkipMessage {
  [TAG]: 'skip';
  id: number;
}

/**
 * Parent -> worker: another worker has nothing to do, and this one is stuck in a long task. Give
 * back up to `count` of the tasks queued last that have not started.
 */
export interface ReclaimMessage {
  [TAG]: 'reclaim';
  count: number;
  /** Echoed in the answer: the parent accepts only the answer to the reclaim it asked. */
  seq: number;
}

/**
 * Parent -> worker: import these task modules now (see WorkerPool.warm), so that the first task of
 * each does not wait for its module. Answered by a {@link PreloadedMessage}.
 */
export interface PreloadMessage {
  [TAG]: 'preload';
  urls: string[];
  /** Echoed in the answer. */
  seq: number;
}

export type ParentMessage = RunMessage | SkipMessage | ReclaimMessage | PreloadMessage;

/**
 * Status codes of a result: fulfilled; the function threw or rejected; the task could
 * not run (module not found, export missing or not a function, result not cloneable).
 */
export const FULFILLED = 0;
export const THREW = 1;
export const INVALID = 2;
/** Fulfilled with `undefined`, which JSON cannot carry: the value slot holds null. */
export const FULFILLED_UNDEFINED = 3;
export type ResultStatus = typeof FULFILLED | typeof THREW | typeof INVALID | typeof FULFILLED_UNDEFINED;

/**
 * Values per result in {@link DoneMessage.results}: taskId, status, value (or RemoteErrorInfo),
 * durationMicros, cpuMicros (-1 when not measured).
 */
export const RESULT_WIDTH = 5;

/** Worker -> parent: the worker's entry is loaded and it is ready. */
export interface ReadyMessage {
  [TAG]: 'ready';
}

/** Worker -> parent: results of finished tasks, in completion order. */
export interface DoneMessage {
  [TAG]: 'done';
  /** Flat, {@link RESULT_WIDTH} values per result (see {@link RunMessage}). */
  results: unknown[];
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

/** Worker -> parent: the tasks it gave back for a {@link ReclaimMessage} (perhaps none); they will not run there. */
export interface ReclaimedMessage {
  [TAG]: 'reclaimed';
  ids: number[];
  seq: number;
}

/** Worker -> parent: the answer to a {@link PreloadMessage}: the modules that could not be loaded, and why. */
export interface PreloadedMessage {
  [TAG]: 'preloaded';
  seq: number;
  failures: Array<{ url: string; error: RemoteErrorInfo }>;
}

export type WorkerMessage = ReadyMessage | DoneMessage | ProgressMessage | FatalMessage | ReclaimedMessage | PreloadedMessage;

/** True for any tagged library message; everything else is a user's own message. */
export function isTagged(message: unknown): message is { [TAG]: string } {
  return typeof message === 'object' && message !== null && typeof (message as Record<string, unknown>)[TAG] === 'string';
}

/**
 * True for a value JSON carries exactly, so that JSON text and a structured clone of it arrive
 * the same: a string, a boolean, null, or a finite number other than -0.
 */
export function jsonExact(value: unknown): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return value === 0 ? !Object.is(value, -0) : Number.isFinite(value);
    case 'object':
      return value === null;
    default:
      return false;
  }
}

/**
 * A rough size, in bytes, of one of a task's arguments as sent: what strings and binary data
 * hold, with containers (arrays, plain objects, Maps, Sets) judged by a few of their entries
 * and their length. It reads the value as structured clone would (getters run) and never
 * throws. The pipeline keeps what it sends ahead to a worker under a budget by it
 * (local-runtime.ts).
 */
export function roughSize(value: unknown): number {
  if (typeof value !== 'object' || value === null) return sizeOf(value);
  visits = SIZE_VISITS;
  try {
    return sizeOf(value);
  } catch {
    // A Proxy or a getter that throws: sending it fails too, and that failure names the argument.
    return 0;
  }
}

/** Nesting past which a value is read back before it is sent (Node's reader overflows its stack a few thousand levels down). */
const RISKY_DEPTH = 1000;
/** Objects {@link cloneRisk} visits at most; a value with more is read back. */
const RISK_WALK_MAX = 1_000_000;
/** Objects visited before cloneRisk keeps track of those it has seen (a small value needs no Set). */
const RISK_SEEN_AFTER = 64;

/**
 * Whether `value` may not come back as it is sent: Node reads an IPC message in its own code,
 * where an error is uncaught and ends the reading process. True for a value nested more than
 * RISKY_DEPTH levels deep, holding an object that is not plain data, binary data, a Map, Set,
 * Date, RegExp or Error (a class instance, or one of the host's, as a WebAssembly.Module), with
 * strings and binary data of EXACT_SIZE_FROM or more in all, with more than RISK_WALK_MAX
 * objects, or that cannot be read (a getter that throws). Then the sender serializes it and reads
 * it back first. It looks at every object once, as structured clone does, Error causes included.
 */
export function cloneRisk(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (ArrayBuffer.isView(value)) return value.byteLength >= EXACT_SIZE_FROM;
  try {
    return !flatPlain(value) && walkRisk(value);
  } catch {
    return true;
  }
}

/** Longest string a {@link flatPlain} value may hold. */
const FLAT_STRING_MAX = 1 << 20;

/**
 * A plain object or array of at most RISK_SEEN_AFTER entries, none of them an object or a long
 * string: most values are, and need no walk.
 */
function flatPlain(value: object): boolean {
  if (Array.isArray(value)) {
    if (value.length > RISK_SEEN_AFTER) return false;
    for (let i = 0; i < value.length; i++) if (!flatEntry(value[i])) return false;
    return true;
  }
  if (Object.getPrototypeOf(value) !== Object.prototype) return false;
  const keys = Object.keys(value);
  if (keys.length > RISK_SEEN_AFTER) return false;
  for (let i = 0; i < keys.length; i++) if (!flatEntry((value as Record<string, unknown>)[keys[i]!])) return false;
  return true;
}

function flatEntry(entry: unknown): boolean {
  return typeof entry === 'string' ? entry.length <= FLAT_STRING_MAX : typeof entry !== 'object' || entry === null;
}

function walkRisk(root: object): boolean {
  const stack: unknown[] = [root, 0];
  let seen: Set<object> | undefined;
  let visited = 0;
  let bytes = 0;
  while (stack.length > 0) {
    const depth = (stack.pop() as number) + 1;
    const node = stack.pop() as object;
    visited++;
    if (seen) {
      if (seen.has(node)) continue;
      seen.add(node);
    } else if (visited > RISK_SEEN_AFTER) {
      // A cycle goes round at most this many times before it is noticed.
      seen = new Set([node]);
    }
    if (depth > RISKY_DEPTH || visited > RISK_WALK_MAX) return true;
    if (ArrayBuffer.isView(node)) bytes += node.byteLength;
    else if (node instanceof ArrayBuffer || node instanceof SharedArrayBuffer) bytes += node.byteLength;
    else if (Array.isArray(node)) for (let i = 0; i < node.length; i++) bytes += pushChild(stack, node[i], depth);
    else if (node instanceof Map) for (const [k, v] of node) bytes += pushChild(stack, k, depth) + pushChild(stack, v, depth);
    else if (node instanceof Set) for (const v of node) bytes += pushChild(stack, v, depth);
    else if (!(node instanceof Date || node instanceof RegExp)) {
      const isError = node instanceof Error;
      const proto: unknown = Object.getPrototypeOf(node);
      if (proto !== Object.prototype && proto !== null && !isError) return true;
      const keys = Object.keys(node);
      for (let i = 0; i < keys.length; i++) bytes += pushChild(stack, (node as Record<string, unknown>)[keys[i]!], depth);
      if (isError) bytes += pushChild(stack, (node as { cause?: unknown }).cause, depth) + pushChild(stack, (node as { errors?: unknown }).errors, depth);
    }
    if (bytes >= EXACT_SIZE_FROM) return true;
  }
  return false;
}

/** Queues an object entry for {@link walkRisk} (its parent at `depth`); returns what a string entry weighs. */
function pushChild(stack: unknown[], child: unknown, depth: number): number {
  if (typeof child === 'string') return 2 * child.length;
  if (typeof child === 'object' && child !== null) stack.push(child, depth);
  return 0;
}

/**
 * Node's IPC channel cannot carry a message of 2 GiB or more: the side that receives it fails to
 * deserialize it ("Unable to deserialize cloned data"), and in the parent that is an uncaught
 * exception (Node 20). Less a margin for the envelope around a value.
 */
export const MAX_MESSAGE_BYTES = 2 ** 31 - 64 * 1024;
/** From this {@link roughSize} on, a value is serialized to know whether it can be sent at all. */
export const EXACT_SIZE_FROM = 2 ** 30;

/**
 * The serialized size of `value` when it is too large for any message ({@link MAX_MESSAGE_BYTES});
 * undefined when it is not, or cannot be cloned at all. `rough` is its {@link roughSize}: below
 * {@link EXACT_SIZE_FROM}, the value is not serialized, and passes.
 */
export function oversized(value: unknown, rough: number): number | undefined {
  if (rough < EXACT_SIZE_FROM) return undefined;
  let bytes: number;
  try {
    bytes = serialize(value).byteLength;
  } catch {
    return undefined; // it cannot be cloned: the send (or readBack) says so, naming it
  }
  return bytes >= MAX_MESSAGE_BYTES ? bytes : undefined;
}

/** Why the process a value is sent to could not take it (see {@link readBack}). */
export interface Unreadable {
  why: 'too large' | 'cannot be cloned' | 'cannot be read back';
  /** The serializer's or deserializer's message, or {@link describeOversized}'s text. */
  detail: string;
}

/**
 * Serializes `value` and reads it back, as sending it to another process will: its size in
 * bytes, or why the other side could not take it. A process reads its IPC messages inside Node's
 * own code, where an error is uncaught and ends it: a value nested a few thousand levels deep, a
 * WebAssembly.Module, or a message of 2 GiB or more. Worth its cost where {@link cloneRisk} says so.
 */
export function readBack(value: unknown): number | Unreadable {
  let data: Buffer;
  try {
    data = serialize(value);
  } catch (error) {
    return { why: 'cannot be cloned', detail: errorText(error) };
  }
  if (data.byteLength >= MAX_MESSAGE_BYTES) return { why: 'too large', detail: describeOversized(data.byteLength) };
  try {
    deserialize(data);
  } catch (error) {
    return { why: 'cannot be read back', detail: errorText(error) };
  }
  return data.byteLength;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** "2049.0 MiB serialized, and a message between processes must be under 2047.9 MiB". */
export function describeOversized(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB serialized, and a message between processes must be under ${(MAX_MESSAGE_BYTES / 2 ** 20).toFixed(1)} MiB`;
}

/** How many containers {@link roughSize} looks into, in all, in one argument. */
const SIZE_VISITS = 64;
/** How many entries of one container it weighs. */
const SIZE_SAMPLE = 5;
let visits = 0;

/**
 * The k-th entry (k < SIZE_SAMPLE) weighed out of `n`: all of them when there are few, else the
 * first three, the middle one and the last, so that a large entry after small ones counts too.
 */
function pick(k: number, n: number): number {
  return n <= SIZE_SAMPLE || k < 3 ? k : k === 3 ? n >> 1 : n - 1;
}

function sizeOf(value: unknown): number {
  if (typeof value === 'string') return 8 + value.length;
  if (typeof value !== 'object' || value === null) return 8;
  if (ArrayBuffer.isView(value)) return 8 + value.byteLength;
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return 8 + value.byteLength;
  if (--visits < 0) return 64;
  if (value instanceof Map || value instanceof Set) {
    if (value.size === 0) return 8;
    let sum = 0;
    let seen = 0;
    for (const entry of value.values()) {
      sum += sizeOf(entry);
      if (++seen === SIZE_SAMPLE) break;
    }
    return 8 + Math.round((sum / seen) * value.size * (value instanceof Map ? 2 : 1));
  }
  const keys = Array.isArray(value) ? undefined : Object.keys(value);
  const n = keys ? keys.length : (value as unknown[]).length;
  if (n === 0) return 8;
  const weighed = Math.min(n, SIZE_SAMPLE);
  let sum = 0;
  for (let k = 0; k < weighed; k++) {
    const i = pick(k, n);
    const key = keys?.[i];
    sum += key === undefined ? sizeOf((value as unknown[])[i]) : 8 + key.length + sizeOf((value as Record<string, unknown>)[key]);
  }
  return 8 + Math.round((sum / weighed) * n);
}

/**
 * JSON's functions as they were when this module loaded: a task that replaces JSON.parse or
 * JSON.stringify in its worker would otherwise leave the worker unable to read its next tasks.
 */
const { parse: parseJson, stringify: stringifyJson } = JSON;

/** The start of a packed message: JSON text of an object whose first key is the tag. */
const PACKED_START = `{${JSON.stringify(TAG)}:`;

/**
 * A message as JSON text; only for one whose values are all {@link jsonExact}, and built with
 * the tag as its first key (`{ [TAG]: ..., ... }`), which is how {@link unpack} knows it.
 */
export function pack(message: RunMessage | DoneMessage): string {
  return stringifyJson(message);
}

/**
 * A message as sent: a packed one parsed back (text that does not parse is a user's, and comes
 * back unchanged, like any other message that is not ours).
 */
export function unpack(message: unknown): unknown {
  if (typeof message !== 'string' || !message.startsWith(PACKED_START)) return message;
  try {
    return parseJson(message);
  } catch {
    return message;
  }
}

/**
 * What a worker writes to stderr before it ends because a task called process.disconnect(): the
 * parent, which sees only a death by SIGKILL (the worker ends its process group), finds it there.
 */
export const DISCONNECTED_BY_TASK = 'async-process-scheduler: a task called process.disconnect(), so this worker can no longer hear the scheduler; it ends';

/**
 * The exit code of a worker that left when its channel closed and found no process but itself in
 * its session: the parent that retired it need not look there again. Any other exit whose code
 * would arrive as this one (229, -27, '229') arrives as 1 instead (see exitAsAsked in the worker),
 * so that a task cannot pass for it.
 */
export const WORKER_LEFT_ALONE_EXIT = 229;

/**
 * What a worker writes to stderr when it exits while it loads a task module for a task: the
 * module's top level called process.exit(). The parent, which sees only an exit code, finds it
 * there, and fails the task as invalid rather than as a crash to retry.
 */
export const EXITED_WHILE_LOADING = 'async-process-scheduler: the top level of a task module ended this worker as it loaded: ';

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
  /** The task module this worker is loading (evaluating its top level), if any. */
  readonly loading: string | undefined;
  /**
   * Called by the child API as it loads: from then on, a report made by code a task left behind
   * (a timer that fires during a later task) is told apart and dropped. Absent in a worker of an
   * older copy of the library.
   */
  trackTasks?(): void;
}

/** The hook of the worker this code runs in; undefined outside a worker. */
export function workerHook(): WorkerHook | undefined {
  return (globalThis as Record<symbol, unknown>)[WORKER_HOOK] as WorkerHook | undefined;
}
