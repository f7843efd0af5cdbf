/**
 * The entry of a worker process. Runs the tasks it is sent one at a time, in order, and sends
 * results back in batches. Kept small: everything here runs in every worker.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { objectArray } from '../collections.js';
import { toRemoteErrorInfo, type RemoteErrorInfo } from '../errors.js';
import { sessionEmptyButSelf, sessionStrays, signalGroups, threadCount } from '../runtime/kill.js';
import {
  DEFAULT_PROGRESS_INTERVAL, DISCONNECTED_BY_TASK, PROGRESS_BURST, EXITED_WHILE_LOADING, FULFILLED, FULFILLED_UNDEFINED, INDEXED_TASK_WIDTH, INVALID, RESULT_WIDTH, TAG, TASK_WIDTH, THREW, WORKER_HOOK, WORKER_LEFT_ALONE_EXIT,
  MAX_MESSAGE_BYTES, cloneRisk, describeOversized, jsonExact, outputMark, oversized, pack, readBack, roughSize, unpack,
  type ParentMessage, type ResultStatus, type WorkerHook, type WorkerMessage,
} from '../runtime/protocol.js';
import { isThenable } from '../thenable.js';

type Fn = (...args: unknown[]) => unknown;

const hrtime = process.hrtime;
/**
 * Milliseconds from an arbitrary start, as performance.now() gives them and as fast: the global
 * `performance` costs a worker nearly a millisecond of start-up the first time it is touched (Node
 * loads perf_hooks then), which a fresh process per task pays for each task.
 */
function clock(): number {
  // Indexed, not destructured: before V8 optimizes it, destructuring goes through an iterator.
  const time = hrtime();
  return time[0] * 1e3 + time[1] / 1e6;
}

const send = process.send?.bind(process);

type Exit = (code?: unknown) => never;
const processExits = process as unknown as { reallyExit?: Exit };
/**
 * Node's own exit, taken before any task can replace it (signal-exit does): it runs no 'exit'
 * listener, so no task code between the last look at this worker's session and its end.
 */
const reallyExit = processExits.reallyExit?.bind(process);
/** process.exit as Node made it, for onBeforeExit: a task may have replaced it with one that does nothing. */
const nodeExit = process.exit.bind(process);
/**
 * Whether an exit code would reach the parent as WORKER_LEFT_ALONE_EXIT: the system keeps its
 * low 8 bits, of the integer Node makes of it (-27, 485 and '229' all arrive as 229).
 */
const claimsAlone = (code: unknown): boolean => ((Number(code) | 0) & 0xff) === WORKER_LEFT_ALONE_EXIT;
if (reallyExit) {
  // Every exit but leave()'s goes through here (process.exit() ends with it): a task's code that
  // would claim the worker left alone becomes 1, and the parent looks for what the task left.
  processExits.reallyExit = function exitAsAsked(code?: unknown): never {
    return reallyExit(claimsAlone(code) ? 1 : code);
  };
}
/**
 * This worker's threads as it starts: Node's and V8's own. With a thread more, it does not claim it
 * left alone (sessionEmptyButSelf): a task's worker_thread, left running, could start a process as
 * it exits, after its last look at its session. Once libuv's thread pool has started (a task read a
 * file asynchronously), it cannot be told from a task's threads by their number (4 idle threads
 * look like a pool of 4), and the parent looks too.
 */
const startThreads = threadCount();
if (!send) {
  console.error('async-process-scheduler: the worker entry must be started by the scheduler (no IPC channel)');
  process.exit(70);
}

// Task code shares this process and its IPC channel. What it sends with process.send is not for
// the scheduler, and must never pass for the scheduler's own messages (a forged result would
// settle another task): it is dropped here, before it costs a copy. A task returns its value, and
// reports progress with reportProgress().
let warnedAboutSend = false;
process.send = function sendFromTask(_message: unknown, ...rest: unknown[]): boolean {
  if (!warnedAboutSend) {
    warnedAboutSend = true;
    process.emitWarning('process.send() in a module task is ignored: return the value, or call reportProgress() from async-process-scheduler/child', 'AsyncProcessSchedulerWarning');
  }
  const callback = rest.find((arg) => typeof arg === 'function') as ((error: Error | null) => void) | undefined;
  if (callback) process.nextTick(callback, null);
  return true;
} as typeof process.send;

/** A task function: where it is, then, once its module loaded, the function or why there is none. */
interface FunctionDef {
  url: string;
  name: string;
  fn?: Fn;
  error?: RemoteErrorInfo;
  /** Its last call took long enough for a CPU-time reading not to matter (see CPU_TIMING_MIN_US). */
  timeCpu: boolean;
  /** Its last call outlasted the batching window (FLUSH_AFTER_MS). */
  long: boolean;
}

/** Function definitions by id. */
const functions = new Map<number, FunctionDef>();
/** Each module's namespace, in a wrapper: see {@link reexporting}. */
const modules = new Map<string, Promise<{ n: Record<string, unknown> }>>();
/**
 * Tasks to run, from `head` on, flat: QUEUED_WIDTH values per task (id, fnId, args, index). A
 * cancelled one keeps its place with its id set to SKIPPED.
 */
const queue: unknown[] = objectArray();
const QUEUED_WIDTH = 4;
const SKIPPED = -1;
let head = 0;
let pumping = false;
let currentId: number | undefined;
// Arrays of any values from the start (see objectArray): a `[]` would change kind at its first
// push, under code V8 optimized for the last outbox, and throw that code away. Flat:
// RESULT_WIDTH values per result (see protocol.ts).
let outbox: unknown[] = objectArray();
let outboxSince = 0;
/** Every value in the outbox is jsonExact: the batch can go as JSON text (see protocol.ts). */
let outboxPackable = true;
/** Some value in the outbox may not be read back by the parent as it is (see readBack). */
let outboxUnsure = false;

/** A result at least this large (roughSize) goes back in a message of its own. */
const SEND_ALONE_BYTES = 64 * 2 ** 20;
// Results wait at most this long for companions before they are sent.
const FLUSH_AFTER_MS = 2;
/** After the parent let go: how long output may stay undrained before this process leaves anyway. */
const DRAIN_STALL_MS = 5000;
/** After the parent let go: the longest this process drains its output. */
const DRAIN_MAX_MS = 60_000;
const FLUSH_AFTER_COUNT = 256;
/** After a synchronous task this long, the worker reads its messages before the next task. */
const YIELD_AFTER_MS = 10;
/** Tasks shorter than this (µs) are not worth a CPU-time reading (see pump). */
const CPU_TIMING_MIN_US = 100;

/** The task a piece of code runs for (see {@link owners}). */
interface TaskOwner {
  readonly id: number;
  readonly index: number | undefined;
}
/**
 * Each task's own async context, once something needs to know which task a piece of code runs
 * for: a task module that loads the child API (reportProgress), or captured output. A timer a
 * task left behind may fire while the next task runs; its reports are then dropped, and what it
 * prints is marked as the task's that set it, instead of being credited to the one running.
 * Off until then: a context costs every task a little, and every promise a hook.
 */
let owners: AsyncLocalStorage<TaskOwner> | undefined;

/** A report or write made now comes from a task other than the one running (one that has ended). */
function strayOwner(): TaskOwner | undefined {
  const owner = owners?.getStore();
  return owner !== undefined && owner.id !== currentId ? owner : undefined;
}

// A task's progress reports are coalesced. It may send PROGRESS_BURST of them at once (a few
// phases, say), and one more for each `progressEvery` ms that passes; a report made when it may
// not is held, replacing any report held before it, and sent as soon as it may, or just before
// the task's result. A task that reports on every step of a tight loop would otherwise send a
// message per step (12 µs each here, a million of them 12 s), and the parent would handle each.
/** The run's progressInterval (see RunMessage.progressEvery); 0 sends every report. */
let progressEvery = DEFAULT_PROGRESS_INTERVAL;
/** The running task reported progress: {@link finish} sends what is held. */
let reported = false;
/** How many reports the running task may send now, as of `allowanceAt`. */
let allowance = PROGRESS_BURST;
let allowanceAt = 0;
let holding = false;
let heldProgress: unknown;
let heldTimer: NodeJS.Timeout | undefined;
/** A held report of the running task that could not be sent: the task fails with it. */
let progressError: Error | undefined;

/** Whether the running task may send a report now. */
function mayReport(now: number): boolean {
  if (progressEvery === 0) return true;
  allowance = Math.min(PROGRESS_BURST, allowance + (now - allowanceAt) / progressEvery);
  allowanceAt = now;
  return allowance >= 1;
}

function sendProgress(id: number, value: unknown): void {
  try {
    // What the parent could not read back would end it (see readBack).
    const back = cloneRisk(value) ? readBack(value) : 0;
    if (typeof back !== 'number') {
      throw new RangeError(back.why === 'too large' ? `it is too large: ${back.detail}` : back.why === 'cannot be read back' ? `it could not be read back: ${back.detail}` : back.detail);
    }
    post({ [TAG]: 'progress', id, value });
  } catch (error) {
    // Else the task fails with V8's bare "() => 1 could not be cloned", which names no call.
    throw new TypeError(`reportProgress: the value cannot be sent to the parent process: ${(error as Error).message}`, { cause: error });
  }
  allowance--;
}

/** Sends the held report by a timer, once the task may send again, if it is still waiting then. */
function sendHeldLater(): void {
  heldTimer = setTimeout(sendHeld, (1 - allowance) * progressEvery);
}

function sendHeld(): void {
  heldTimer = undefined;
  if (!holding || currentId === undefined) return;
  if (mayReport(clock())) sendHeldNow(currentId);
  else sendHeldLater();
}

/** The running task's held report, now: its worker is about to end. */
function sendHeldBeforeExit(): void {
  if (holding && currentId !== undefined) sendHeldNow(currentId);
}

function sendHeldNow(id: number): void {
  const value = heldProgress;
  holding = false;
  heldProgress = undefined;
  try {
    sendProgress(id, value);
  } catch (error) {
    progressError ??= error as Error;
  }
}

const hook: WorkerHook = {
  reportProgress(value: unknown) {
    if (currentId === undefined || strayOwner()) return;
    const now = clock();
    if (!reported) {
      reported = true;
      allowance = PROGRESS_BURST;
      allowanceAt = now;
    }
    if (mayReport(now)) {
      // Sent now, and so cloned now: a value that cannot be cloned throws here, at the call.
      holding = false;
      heldProgress = undefined;
      sendProgress(currentId, value);
      return;
    }
    // Held, as it is: it is cloned when it is sent.
    holding = true;
    heldProgress = value;
    if (heldTimer === undefined) sendHeldLater();
  },
  get taskId() {
    return currentId;
  },
  get loading() {
    return loadingUrl;
  },
  trackTasks() {
    owners ??= new AsyncLocalStorage();
  },
};
/** The task module being imported: a run started meanwhile would start in every worker (see schedule$). */
let loadingUrl: string | undefined;
/**
 * The preloads asked, one after the other (see onMessage). A pool lends no worker while it
 * preloads (WorkerPool.warm), so no import overlaps another, and `loadingUrl` names the one under way.
 */
let preloads: Promise<void> = Promise.resolve();
(globalThis as Record<symbol, unknown>)[WORKER_HOOK] = hook;

// In `output: 'capture'` mode (the parent then sends each task's index) the first write of each
// task to stdout or stderr is preceded by a mark naming the task, in the same pipe: the parent
// reads output and results on different channels, so only an in-band mark tells it exactly which
// task wrote a line. Processes a task starts write to the pipe directly: the last mark names them.
let marking = false;
let markIndex: number | undefined;
/**
 * Counts the changes of task in capture mode (a task starts; it ends): a mark goes before the
 * first write after each, even when it has the index of the one before (a retry, or the next run
 * on a pooled worker), so that the parent ends there whatever line the one before left unfinished.
 */
let markSeq = 0;
/**
 * The worker's stdout and stderr streams that exist. Node makes each the first time it is read
 * (a pipe's costs a worker start about half a millisecond): until a task writes, neither does, and
 * neither holds output to drain.
 */
const streams: NodeJS.WriteStream[] = [];
/**
 * Code may have run in this process before this file: a preload (`--import`, `--require`), a
 * loader, or a flag with which Node warns as it starts (an ES module entry runs after the
 * warning). Whatever wrote through the console made a stream, which the console keeps and never
 * reads again: with any flag at all, the streams are made and wrapped now.
 */
const ranBefore = process.execArgv.length > 0 || (process.env.NODE_OPTIONS ?? '').trim() !== '';
for (const name of ['stdout', 'stderr'] as const) {
  const descriptor = Object.getOwnPropertyDescriptor(process, name);
  const get = descriptor?.get;
  if (ranBefore || !get || !descriptor.configurable) {
    markWrites(process[name]);
    continue;
  }
  let stream: NodeJS.WriteStream | undefined;
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: descriptor.enumerable,
    get: () => stream ?? markWrites((stream = get.call(process) as NodeJS.WriteStream)),
  });
}

/** Puts the output marks of capture mode in what is written to `stream`; lists it in `streams`. */
function markWrites(stream: NodeJS.WriteStream): NodeJS.WriteStream {
  streams.push(stream);
  let marked = 0;
  const write = stream.write;
  stream.write = function markedWrite(this: typeof stream, ...args: unknown[]): boolean {
    if (marking) {
      const stray = strayOwner();
      if (stray) {
        // Written by a timer of a task that has ended: its own. The running task's next write
        // gets its mark again.
        write.call(this, outputMark(stray.index));
        marked = -1;
      } else if (marked !== markSeq) {
        marked = markSeq;
        write.call(this, outputMark(markIndex));
      }
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof write;
  return stream;
}

process.on('message', onMessage);

function onMessage(received: unknown): void {
  const message = unpack(received) as ParentMessage;
  if (typeof message !== 'object' || message === null) return;
  if (message[TAG] === 'run') {
    if (message.progressEvery !== undefined) progressEvery = message.progressEvery;
    if (message.defs) for (const [id, url, name] of message.defs) functions.set(id, { url, name, timeCpu: true, long: true });
    const tasks = message.tasks;
    if (message.indexed) {
      hook.trackTasks!();
      for (let i = 0; i + INDEXED_TASK_WIDTH <= tasks.length; i += INDEXED_TASK_WIDTH) queue.push(tasks[i], tasks[i + 1], tasks[i + 2], tasks[i + 3]);
    } else {
      for (let i = 0; i + TASK_WIDTH <= tasks.length; i += TASK_WIDTH) queue.push(tasks[i], tasks[i + 1], tasks[i + 2], undefined);
    }
    if (!pumping) void pump();
  } else if (message[TAG] === 'reclaim') {
    // Another worker is idle while this one is in a long task: the tasks queued last, which have
    // not started, go back to the parent to run there.
    const ids: number[] = [];
    let count = typeof message.count === 'number' ? message.count : 0;
    while (count > 0 && queue.length > head) {
      const at = queue.length - QUEUED_WIDTH;
      const id = queue[at];
      queue.length = at;
      if (id === SKIPPED) continue;
      ids.push(id as number);
      count--;
    }
    post({ [TAG]: 'reclaimed', ids, seq: message.seq });
  } else if (message[TAG] === 'preload') {
    const { urls, seq } = message;
    preloads = preloads.then(() => preload(urls, seq));
  } else if (message[TAG] === 'skip') {
    // The parent sends a skip only after the task itself (see WorkerProcess.skip). Not found in
    // the queue, it has started or run already: its result is on its way, and will be ignored.
    for (let i = head; i < queue.length; i += QUEUED_WIDTH) {
      if (queue[i] === message.id) {
        queue[i] = SKIPPED;
        queue[i + 2] = undefined;
        break;
      }
    }
  }
}

/**
 * A task that removed the process's listeners (process.removeAllListeners(), say, or a library
 * that takes over 'message') would leave this worker deaf: the tasks sent next would be dropped,
 * and the run would wait for them. Node says so through 'removeListener'; our listeners are put
 * back after the task, before the next message can come. A flag to test on every tiny task.
 */
let listenersRemoved = false;
const onRemoveListener = (_event: string | symbol, listener: unknown): void => {
  if (ours.some(([, own]) => own === listener)) listenersRemoved = true;
};

function keepListening(): void {
  // The count too: process.removeAllListeners('removeListener') first would leave us unwarned.
  if (!listenersRemoved && process.listenerCount('message') > 0) return;
  listenersRemoved = false;
  const emitter = process as NodeJS.EventEmitter;
  for (const [event, listener] of ours) if (!emitter.listeners(event).includes(listener)) emitter.on(event, listener);
  // Node keeps the IPC channel referenced while 'message' has listeners, through listeners of its
  // own on 'newListener' and 'removeListener'. process.removeAllListeners() removes those too: the
  // channel, unreferenced, would no longer keep this process alive, and it would exit between two
  // tasks. Referenced explicitly from now on: the worker leaves on 'disconnect' anyway.
  process.channel?.ref();
}

// The parent let go of this worker (it retires it, exited, or was killed): nothing will read our
// results. Output still buffered for a full pipe would be lost by process.exit, so it drains first
// (a live parent reads it; a dead parent's pipe fails at once: EPIPE). Then whatever tasks started in this worker's
// process group goes with it: after a parent's SIGKILL, no one else is left to end it.
process.on('disconnect', onDisconnect);

/** A task closed the channel itself (see DISCONNECTED_BY_TASK). */
let disconnectedByTask = false;
const disconnect = process.disconnect.bind(process);
process.disconnect = function disconnectFromTask(): void {
  // Node calls it too, when the parent closes the channel: a worker it retires is idle.
  if (currentId !== undefined) disconnectedByTask = true;
  disconnect();
};

function onDisconnect(): void {
  if (disconnectedByTask) process.stderr.write(`${DISCONNECTED_BY_TASK}\n`);
  const leave = () => {
    // Usually no task left anything: the exit code says so, and a parent that retired this worker
    // does not look at its session again (a look is a scan of /proc, each time a worker ends).
    if (reallyExit && !disconnectedByTask && sessionEmptyButSelf(startThreads)) reallyExit(WORKER_LEFT_ALONE_EXIT);
    // What a task started in another group of this worker's session (coreutils `timeout`): the
    // parent does it when it can, but it may be gone (SIGKILLed before it entrusted this worker to
    // its guardian).
    signalGroups(sessionStrays(process.pid), 'SIGKILL');
    try {
      process.kill(-process.pid, 'SIGKILL');
    } catch {
      // not a group leader: only this process to end
    }
    process.exit(0);
  };
  const buffered = streams.filter((s) => s.writableLength > 0);
  let left = buffered.length;
  if (left === 0) return leave();
  for (const stream of buffered) stream.write('', () => --left === 0 && leave());
  // A busy parent reads slowly: wait while the output drains, and leave once it has not moved
  // for DRAIN_STALL_MS (or after DRAIN_MAX_MS in all: output that keeps coming cannot hold us).
  const unsent = () => streams.reduce((sum, s) => sum + s.writableLength, 0);
  const since = Date.now();
  let last = unsent();
  let stalledSince = since;
  setInterval(() => {
    const now = Date.now();
    const current = unsent();
    if (current < last) stalledSince = now;
    last = current;
    if (now - stalledSince >= DRAIN_STALL_MS || now - since >= DRAIN_MAX_MS) leave();
  }, 250);
}

// A message that cannot be sent because the parent let go meanwhile (EPIPE: a worker it stopped
// while booting, a parent that died) is reported on \`process\` as 'error', and would otherwise
// be an uncaught exception printed as one. Nothing is lost: no one is left to read it, and the
// 'disconnect' handler above ends this process.
const onError = (): void => {};
process.on('error', onError);

// A task that calls process.exit() must not take the results of earlier tasks with it.
const onExit = (code: number): void => {
  // Not for a task to claim (see exitAsAsked; an empty event loop goes through it too, onBeforeExit).
  if (claimsAlone(process.exitCode ?? code)) process.exitCode = 1;
  if (loadingForTask !== undefined && !dying) process.stderr.write(`${EXITED_WHILE_LOADING}${loadingForTask} (exit code ${code})\n`);
  // And not its own last progress report.
  sendHeldBeforeExit();
  flush();
};
process.on('exit', onExit);
// An empty event loop (a task unreferenced the channel) ends an idle worker through process.exit(),
// so through exitAsAsked: its code, which an 'exit' listener that runs after the worker's could set
// to WORKER_LEFT_ALONE_EXIT, never reaches a parent that retired it unchecked. A task still at work
// may finish from a 'beforeExit' listener of its own: if it does not, the worker ends with the
// task running, and its parent, which did not retire it, looks at its session whatever its code.
const onBeforeExit = (): void => {
  if (!pumping) nodeExit();
};
process.on('beforeExit', onBeforeExit);
const onUncaught = (error: unknown): void => fatal(error);
process.on('uncaughtException', onUncaught);
process.on('unhandledRejection', onUncaught);

/** This worker's own listeners on `process`, which a task must not take away (see keepListening). */
const ours: Array<[string, (...args: any[]) => void]> = [
  ['message', onMessage],
  ['disconnect', onDisconnect],
  ['error', onError],
  ['exit', onExit],
  ['beforeExit', onBeforeExit],
  ['uncaughtException', onUncaught],
  ['unhandledRejection', onUncaught],
  ['removeListener', onRemoveListener],
];
process.on('removeListener', onRemoveListener);

post({ [TAG]: 'ready' });

/** Why {@link runReady} stopped. */
const EMPTY = 0;
const LOAD = 1;
const AWAIT = 2;
const YIELD = 3;
type Stop = typeof EMPTY | typeof LOAD | typeof AWAIT | typeof YIELD;

/** What runReady stopped at, for pump: the function to load, or the task whose promise to await. */
let stopDef: FunctionDef | undefined;
let stopId = 0;
let stopPromise: PromiseLike<unknown> | undefined;
let stopT0 = 0;
let stopCpu0: NodeJS.CpuUsage | undefined;

/**
 * Runs the queue. The loop itself is {@link runReady}, a plain function: it runs every task it
 * can without waiting and returns what it has to wait for, which this async function waits for.
 * (One async function with the whole loop in it cost V8 two or three large optimizing compiles
 * per worker, on-stack replacement included, in the first second of a worker's life.)
 */
async function pump(): Promise<void> {
  pumping = true;
  try {
    for (let stop = runReady(); stop !== EMPTY; stop = runReady()) {
      if (stop === LOAD) {
        await load(stopDef!);
      } else if (stop === AWAIT) {
        const def = stopDef!;
        const id = stopId;
        const promise = stopPromise!;
        const t0 = stopT0;
        const cpu0 = stopCpu0;
        stopPromise = stopCpu0 = undefined;
        let status: ResultStatus = FULFILLED;
        let value: unknown;
        try {
          value = await promise;
        } catch (error) {
          status = THREW;
          value = toRemoteErrorInfo(error);
        }
        finish(def, id, status, value, t0, cpu0, true);
      } else {
        // After a long synchronous task, messages that came meanwhile (a skip, a reclaim) are
        // read before the next task starts, not once the whole queue has run. Twice: started
        // from a message handler (the poll phase), the first resumes in the same turn of the
        // event loop, before the channel is read again; the second after it is.
        await new Promise(setImmediate);
        await new Promise(setImmediate);
      }
      stopDef = undefined;
    }
  } finally {
    pumping = false;
    queue.length = 0;
    head = 0;
    flush();
  }
}

/** Runs queued tasks until the queue is empty or a task needs waiting for; says which. */
function runReady(): Stop {
  while (head < queue.length) {
    const id = queue[head] as number;
    const fnId = queue[head + 1] as number;
    const def = id === SKIPPED ? undefined : functions.get(fnId);
    // Loaded before it leaves the queue: until it starts, a skip or a reclaim still finds it.
    if (def && !def.fn && !def.error) {
      stopDef = def;
      return LOAD;
    }
    const args = queue[head + 2] as unknown[];
    const index = queue[head + 3] as number | undefined;
    queue[head + 2] = undefined; // the arguments are the task's from now on
    head += QUEUED_WIDTH;
    if (head >= 4096 && head * 2 >= queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    if (id === SKIPPED) continue;
    if (!def) {
      record(id, INVALID, { name: 'ProtocolError', message: `unknown function id ${fnId}` }, 0, 0);
      continue;
    }
    if (def.error) {
      record(id, INVALID, def.error, 0, 0);
      continue;
    }
    // A function whose last call outlasted the batching window: the results waiting in the
    // outbox go first, or they would wait as long again (and a timed task's result, held back,
    // would make it look hung). Tiny functions never pay for a send here.
    if (def.long && outbox.length > 0) flush();
    currentId = id;
    if (index !== undefined) {
      marking = true;
      markSeq++;
    }
    markIndex = index;
    // Reading CPU time is a system call that costs more than a tiny task: it is read only
    // for functions whose last call took long enough for it not to matter.
    const cpu0 = def.timeCpu ? process.cpuUsage() : undefined;
    const t0 = clock();
    let status: ResultStatus = FULFILLED;
    let value: unknown;
    try {
      value = owners ? owners.run({ id, index }, def.fn!, ...args) : def.fn!(...args);
      if (isThenable(value)) {
        // Before the await: messages may come meanwhile (finish listens again for the others).
        keepListening();
        // Results waiting in the outbox should not wait for a slow task.
        flush();
        stopDef = def;
        stopId = id;
        stopPromise = value;
        stopT0 = t0;
        stopCpu0 = cpu0;
        return AWAIT;
      }
    } catch (error) {
      status = THREW;
      value = toRemoteErrorInfo(error);
    }
    const durationUs = finish(def, id, status, value, t0, cpu0, false);
    if (durationUs >= YIELD_AFTER_MS * 1000 && head < queue.length) {
      flush();
      return YIELD;
    }
  }
  return EMPTY;
}

/** Records the result of the task that started at `t0`; returns its duration in µs. */
function finish(def: FunctionDef, id: number, status: ResultStatus, value: unknown, t0: number, cpu0: NodeJS.CpuUsage | undefined, async: boolean): number {
  const t1 = clock();
  keepListening();
  const durationUs = Math.round((t1 - t0) * 1000);
  let cpuUs = -1;
  if (cpu0) {
    const cpu = process.cpuUsage(cpu0);
    // Rounded: process.cpuUsage() gives doubles, and a double among the results would change
    // the kind of its array mid-run and make V8 throw the optimized loop away.
    cpuUs = Math.round(cpu.user + cpu.system);
  }
  def.timeCpu = async || durationUs >= CPU_TIMING_MIN_US;
  def.long = durationUs >= FLUSH_AFTER_MS * 1000;
  if (reported) {
    // Its last report goes before its result; a report that could not be sent fails it (unless
    // it failed already: its own error says more).
    reported = false;
    if (holding) sendHeldNow(id);
    clearTimeout(heldTimer);
    heldTimer = undefined;
    if (progressError !== undefined) {
      if (status !== THREW) {
        status = THREW;
        value = toRemoteErrorInfo(progressError);
      }
      progressError = undefined;
    }
  }
  currentId = undefined;
  if (markIndex !== undefined) {
    markIndex = undefined;
    markSeq++; // what is written between tasks is marked as no task's
  }
  record(id, status, value, durationUs, cpuUs, t1);
  return durationUs;
}

/** Queues a result; `cpuUs` is -1 when CPU time was not measured. */
function record(id: number, status: ResultStatus, value: unknown, durationUs: number, cpuUs: number, now = clock()): void {
  if (outbox.length === 0) outboxSince = now;
  if (status === FULFILLED && value === undefined) {
    status = FULFILLED_UNDEFINED;
    value = null;
  }
  if (status === FULFILLED && !(outboxPackable && jsonExact(value))) {
    outboxPackable = false;
    // Not plain data: it may be large (Buffers, typed arrays). Weighed, cheaply: a large one goes
    // in a message of its own, and one too large for any message fails its task instead.
    if (typeof value === 'object' && value !== null) {
      const size = roughSize(value);
      const unsure = cloneRisk(value);
      if (size >= SEND_ALONE_BYTES) {
        sendAlone(id, value, size, unsure, durationUs, cpuUs);
        return;
      }
      if (unsure) outboxUnsure = true;
    }
  } else if (outboxPackable) {
    outboxPackable = status === FULFILLED_UNDEFINED || status === FULFILLED;
  }
  // An error's own fields may hold anything.
  if (status === THREW) outboxUnsure = true;
  outbox.push(id, status, value, durationUs, cpuUs);
  if (outbox.length >= FLUSH_AFTER_COUNT * RESULT_WIDTH || now - outboxSince >= FLUSH_AFTER_MS) flush();
}

/** A large result: in a message of its own, after those waiting; an error if no message can hold it. */
function sendAlone(id: number, value: unknown, size: number, unsure: boolean, durationUs: number, cpuUs: number): void {
  flush();
  outboxUnsure = unsure;
  const bytes = oversized(value, size);
  if (bytes !== undefined) {
    outbox.push(id, INVALID, tooLargeResult(describeOversized(bytes)), durationUs, cpuUs);
  } else {
    outbox.push(id, FULFILLED, value, durationUs, cpuUs);
  }
  outboxPackable = false;
  flush();
}

function flush(): void {
  if (outbox.length === 0) return;
  const results = outbox;
  const packable = outboxPackable;
  const unsure = outboxUnsure;
  outbox = objectArray();
  outboxPackable = true;
  outboxUnsure = false;
  // Read back first what the parent might not read (see readBack); text always reads.
  if (!packable && unsure && typeof readBack(results) !== 'number') {
    postMarked(results);
    return;
  }
  try {
    // Text when it can be (see protocol.ts): V8's serializer would hold on to every result it sent.
    post(packable ? pack({ [TAG]: 'done', results }) : { [TAG]: 'done', results });
  } catch {
    // Some value could not be cloned.
    postMarked(results);
  }
}

/**
 * Sends results, each that the parent could not take failed instead (see markUnreadable); one
 * per message when those left are too large together for one.
 */
function postMarked(results: unknown[]): void {
  if (markUnreadable(results) < MAX_MESSAGE_BYTES) {
    post({ [TAG]: 'done', results });
    return;
  }
  for (let i = 0; i < results.length; i += RESULT_WIDTH) post({ [TAG]: 'done', results: results.slice(i, i + RESULT_WIDTH) });
}

/**
 * Reads back each value of a batch the parent could not take whole (see readBack), and fails the
 * task of each that fails (`invalid`, saying why); a task's error that cannot travel keeps its
 * name, message and stack. Binary views are not read back: nothing in them can fail. Returns the
 * size of what is left.
 */
function markUnreadable(results: unknown[]): number {
  let bytes = 0;
  for (let i = 0; i + RESULT_WIDTH <= results.length; i += RESULT_WIDTH) {
    const value = results[i + 2];
    if (typeof value === 'string') bytes += value.length;
    // A function or a symbol cannot be cloned; other primitives always can.
    if ((typeof value !== 'object' && typeof value !== 'function' && typeof value !== 'symbol') || value === null) continue;
    if (ArrayBuffer.isView(value)) {
      bytes += value.byteLength;
      continue;
    }
    const back = readBack(value);
    if (typeof back === 'number') {
      bytes += back;
    } else if (results[i + 1] === THREW) {
      // Its error, with what cannot travel left out: name, message and stack are strings.
      const info = value as Partial<RemoteErrorInfo>;
      results[i + 2] = { name: String(info.name), message: String(info.message), stack: info.stack === undefined ? undefined : String(info.stack) };
    } else {
      results[i + 1] = INVALID;
      results[i + 2] =
        back.why === 'too large'
          ? tooLargeResult(back.detail)
          : { name: 'DataCloneError', message: `the task's result cannot be ${back.why === 'cannot be cloned' ? 'sent to' : 'read by'} the parent process: ${back.detail}` };
    }
  }
  return bytes;
}

/** A result too large for any message, as its task's failure. */
function tooLargeResult(size: string): RemoteErrorInfo {
  return { name: 'RangeError', message: `the task's result is too large to send to the parent process: ${size}; write it to a file and return the file's path` };
}

/**
 * Imports task modules ahead of their tasks (WorkerPool.warm): into the same cache their tasks
 * load from, so a module is evaluated once either way, and one that fails fails its tasks as it
 * would have. One at a time, like the imports tasks start. Answers with the ones that failed.
 */
async function preload(urls: unknown, seq: unknown): Promise<void> {
  const failures: Array<{ url: string; error: RemoteErrorInfo }> = [];
  for (const url of Array.isArray(urls) ? urls : []) {
    if (typeof url !== 'string') continue;
    try {
      let pending = modules.get(url);
      if (!pending) modules.set(url, (pending = importModule(url)));
      await pending;
    } catch (error) {
      failures.push({ url, error: toRemoteErrorInfo(error) });
    }
  }
  // A module's top level is task code too: it may have taken this worker's listeners away.
  keepListening();
  // What the modules printed is in the pipes before the answer leaves (writes to a pipe are
  // asynchronous): the parent waits for the pipes to be quiet, so those lines go to no run.
  await Promise.all(streams.map((stream) => new Promise<void>((resolve) => {
    try {
      stream.write('', () => resolve());
    } catch {
      resolve();
    }
  })));
  post({ [TAG]: 'preloaded', seq: typeof seq === 'number' ? seq : -1, failures });
}

async function load(def: { url: string; name: string; fn?: Fn; error?: RemoteErrorInfo }): Promise<void> {
  let namespace: Record<string, unknown>;
  loadingForTask = def.url;
  try {
    let pending = modules.get(def.url);
    if (!pending) modules.set(def.url, (pending = importModule(def.url)));
    namespace = (await pending).n;
  } catch (error) {
    const info = toRemoteErrorInfo(error);
    def.error = { ...info, message: `cannot load module ${def.url}: ${info.message}` };
    return;
  } finally {
    loadingForTask = undefined;
  }
  const candidate = namespace[def.name];
  if (typeof candidate === 'function' && isClass(candidate as Fn)) {
    // Calling it would throw ("cannot be invoked without 'new'"), as a task's error, and be retried.
    def.error = {
      name: 'ExportNotFunctionError',
      message: `export '${def.name}' of module ${def.url} is a class, not a function a task can call; export a function that uses it`,
    };
  } else if (typeof candidate === 'function') {
    def.fn = candidate as Fn;
  } else if (!(def.name in namespace)) {
    // Classes are functions too, but not ones a task can call.
    const names = Object.keys(namespace).filter((k) => typeof namespace[k] === 'function' && !isClass(namespace[k] as Fn));
    def.error = {
      name: 'ExportNotFoundError',
      message: `module ${def.url} has no export named '${def.name}' (its function exports: ${names.join(', ') || 'none'})`,
    };
  } else {
    def.error = {
      name: 'ExportNotFunctionError',
      message: `export '${def.name}' of module ${def.url} is not a function (it is ${candidate === null ? 'null' : typeof candidate})`,
    };
  }
}

function isClass(fn: Fn): boolean {
  try {
    return /^class\b/.test(Function.prototype.toString.call(fn));
  } catch {
    return false;
  }
}

/**
 * Imports a task module. A TypeScript module in a worker started without a TypeScript loader
 * (the compiled library drops tsx from workers, since it slows every start) gets tsx registered
 * on first need, from the application's own dependencies.
 */
async function importModule(url: string): Promise<{ n: Record<string, unknown> }> {
  // Registered before the first import: Node caches a failed import, so there is no retry.
  if (needsTypeScript(url) && !process.execArgv.some((arg) => /tsx/.test(arg))) await (tsLoader ??= registerTsx(url));
  // Only the first module: see requirablePath.
  const path = loadedAny ? undefined : requirablePath(url);
  loadedAny = true;
  loadingUrl = url;
  try {
    return (path !== undefined ? await requireSettled(path) : undefined) ?? ((await import(reexporting(url))) as { n: Record<string, unknown> });
  } catch (error) {
    // "Cannot find module ... imported from data:...": the importer is this file's wrapper, not the user's.
    if (error instanceof Error) error.message = error.message.replace(/ imported from data:\S*$/, '');
    throw error;
  } finally {
    loadingUrl = undefined;
  }
}

/** The module a task is waiting for, while it loads (see EXITED_WHILE_LOADING). */
let loadingForTask: string | undefined;

/** Whether this worker has loaded a task module yet. */
let loadedAny = false;

/**
 * Where Node can `require()` an ES module (20.19+, 22.12+), and nothing in this process changes
 * how modules load (`--import`, `--loader`, `--require`: hooks that `require()` would bypass, or
 * a transform that would load the file as CommonJS). Checked once: a worker's flags do not change.
 */
const requireWorks =
  (process.features as { require_module?: boolean }).require_module === true &&
  ![...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((arg) =>
    /^(--import|--loader|--experimental-loader|--require|-r|--experimental-wasm-modules|--experimental-network-imports)(=|$)/.test(arg),
  );

/**
 * The path to load a worker's first task module from with `require()`, when that loads it exactly
 * as `import()` would: a `file:` URL with no query or hash, of a file Node takes for an ES module
 * whoever loads it (`.mjs`, or `.js` under `"type": "module"`). The module then lands in the same
 * cache `import()` reads, evaluated once, and the worker is spared starting Node's asynchronous
 * module loader: 4 to 7 ms of every worker's start here (see bench/README.md). Undefined when
 * that does not apply (a file that is not there included: `import()` reports it as it always has).
 *
 * The first module only: once task code has run, it may have left an `import()` under way (a
 * `require()` of a module that import is still loading fails inside Node), registered loader
 * hooks with `module.register()` (which `require()` does not run), or patched `require()`
 * itself. Later modules are loaded by `import()`. (A TypeScript loader, registered for a first
 * module that needs one, leaves no `.js` or `.mjs` file to require.)
 */
function requirablePath(url: string): string | undefined {
  if (!requireWorks || !url.startsWith('file:')) return undefined;
  let path: string;
  try {
    const parsed = new URL(url);
    if (parsed.search !== '' || parsed.hash !== '') return undefined;
    path = fileURLToPath(parsed);
  } catch {
    return undefined;
  }
  return (path.endsWith('.mjs') || (path.endsWith('.js') && inModuleScope(dirname(path)))) && plainFile(path) ? path : undefined;
}

/**
 * Loads an ES module with `require()`; undefined when `import()` is to load it after all. Then
 * waits a turn of the event loop: what the module's top level deferred (a promise callback, an
 * await) still runs while it counts as loading, as it does before `import()` settles, so a run
 * started there is refused like one started at the top level (see hook.loading).
 */
async function requireSettled(path: string): Promise<{ n: Record<string, unknown> } | undefined> {
  try {
    const loaded: unknown = createRequire(path)(path);
    // Loaded as CommonJS after all (a package.json read differently): import() gives the namespace
    // it would have, from the module require() left in its cache, without evaluating it again.
    return Object.prototype.toString.call(loaded) === '[object Module]' ? { n: loaded as Record<string, unknown> } : undefined;
  } catch (error) {
    // Top-level await: refused before evaluation, so import() evaluates it, once. Any other error
    // is the module's (syntax, a missing export, its code threw) and import() would give the same
    // one; it is not asked, since Node does not import a module again after require() failed it.
    const code = (error as { code?: unknown } | null)?.code;
    if (code === 'ERR_REQUIRE_ASYNC_MODULE' || code === 'ERR_REQUIRE_ESM') return undefined;
    throw error;
  } finally {
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * A regular file (`require()` would load a folder's index.js, where `import()` refuses one) that
 * does not start with a byte-order mark and `#!` (Node 20's `require()` of an ES module refuses
 * those, where `import()` takes them). False when it cannot be read: `import()` says why.
 */
function plainFile(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    if (!fstatSync(fd).isFile()) return false;
    const head = Buffer.alloc(5);
    readSync(fd, head, 0, 5, 0);
    return !head.equals(BOM_SHEBANG);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

const BOM_SHEBANG = Buffer.from([0xef, 0xbb, 0xbf, 0x23, 0x21]);

/**
 * Whether the nearest package.json above `dir` says `"type": "module"`, read as Node reads it:
 * the first one found, and none past a `node_modules` folder.
 */
function inModuleScope(dir: string): boolean {
  for (;;) {
    let text: string | undefined;
    try {
      text = readFileSync(join(dir, 'package.json'), 'utf8');
    } catch {
      // none here
    }
    if (text !== undefined) {
      try {
        return (JSON.parse(text) as { type?: unknown }).type === 'module';
      } catch {
        return false;
      }
    }
    const parent = dirname(dir);
    if (parent === dir || basename(dir) === 'node_modules') return false;
    dir = parent;
  }
}

/**
 * A module that re-exports the task module's namespace as `n`. `import()` settles its promise
 * with the namespace it loads, and a namespace with a `then` export is taken for a promise: its
 * `then` is called and the import waits for it forever. Kept as a property of another namespace,
 * never itself the value of a promise, it is not awaited.
 */
function reexporting(url: string): string {
  return `data:text/javascript,${encodeURIComponent(`import*as n from${JSON.stringify(url)};export{n}`)}`;
}

let tsLoader: Promise<void> | undefined;

/**
 * A TypeScript module: a `.ts`-like URL, or (the usual TypeScript ESM idiom) a `./work.js` URL
 * whose file exists only as `work.ts`.
 */
function needsTypeScript(url: string): boolean {
  if (/\.[cm]?tsx?$/.test(url)) return true;
  if (!url.startsWith('file:') || !/\.[cm]?js$/.test(url)) return false;
  const path = fileURLToPath(url);
  return !existsSync(path) && ['.ts', '.tsx', '.mts', '.cts'].some((ext) => existsSync(path.replace(/\.[cm]?js$/, ext)));
}

async function registerTsx(url: string): Promise<void> {
  let register: () => unknown;
  try {
    ({ register } = (await import('tsx/esm/api' as string)) as { register: () => unknown });
  } catch (error) {
    throw new Error(`${url} is TypeScript and no TypeScript loader is available: install tsx, or run the task module compiled to JavaScript`, {
      cause: error,
    });
  }
  register();
}

function post(message: WorkerMessage | string): void {
  if (process.connected) send!(message);
}

let dying = false;
function fatal(error: unknown): void {
  if (dying) return;
  dying = true;
  // The task's last progress report, then its neighbours' results, then why this process ends.
  sendHeldBeforeExit();
  flush();
  const message: WorkerMessage = { [TAG]: 'fatal', id: currentId, error: toRemoteErrorInfo(error) };
  // Print it too, as Node would have: the parent keeps the tail of stderr for the TaskError.
  console.error(error);
  const exit = () => process.exit(1);
  try {
    if (process.connected) send!(message, undefined, undefined, exit);
    else exit();
  } catch {
    exit();
  }
  setTimeout(exit, 1000).unref();
}

