/**
 * Options of {@link schedule$}, with their defaults, and the one pass that validates them.
 *
 * @module
 */
import { isObservable, type Observable } from 'rxjs';
import { OptionError, formatValue, isOptionError, toRemoteErrorInfo, type TaskFailureKind } from './errors.js';
import {
  DEFAULT_CPU_TARGET, DEFAULT_HYSTERESIS, DEFAULT_MIN_FREE_MEMORY, DEFAULT_SAMPLE_INTERVAL, defaultConcurrencyStep, defaultMaxConcurrency,
} from './load/controller.js';
import { DEFAULT_RETRY_ON } from './retry.js';
import { optimalConcurrency } from './optimal-concurrency.js';
import { WorkerPool } from './pool.js';
import { DEFAULT_PROGRESS_INTERVAL } from './runtime/protocol.js';
import { DEFAULT_START_TIMEOUT } from './runtime/worker-process.js';

/** How many tasks may run at once. */
export type ConcurrencyOption = number | Observable<number | 'auto'> | 'auto';

/** Where a worker's or command's stdout and stderr go. */
export type OutputMode = 'inherit' | 'capture' | 'ignore';

/** The failures a retry policy may name in `on`: `'invalid'` and `'cancelled'` are never retried. */
export type RetryableKind = Exclude<TaskFailureKind, 'invalid' | 'cancelled'>;

/** How failed tasks are retried. */
export interface RetryOptions {
  /** How many times a failed task runs again. Required in a policy (with no `retries` option at all, tasks are not retried). */
  retries: number;
  /** Milliseconds before the first retry. @default 100 */
  delay?: number;
  /** `'exponential'` doubles the delay after each failed attempt; `'fixed'` keeps it. @default 'exponential' */
  backoff?: 'fixed' | 'exponential';
  /** The longest delay. @default 30000 */
  maxDelay?: number;
  /** Randomize each delay between half and all of it, so tasks that failed together do not retry together. @default true */
  jitter?: boolean;
  /**
   * Which failures are retried: any of `'threw'`, `'exited'`, `'signaled'`, `'timeout'` and
   * `'spawn'` (a worker could not start: the retry tries to start one again, even after the run
   * gave up on them). `'invalid'` and `'cancelled'` never are, and naming
   * them here is an {@link OptionError} (and does not compile).
   * @default ['threw', 'exited', 'signaled', 'timeout']
   */
  on?: readonly RetryableKind[];
}

/** Retry options with defaults filled in. */
export interface ResolvedRetry {
  retries: number;
  delay: number;
  backoff: 'fixed' | 'exponential';
  maxDelay: number;
  jitter: boolean;
  on: readonly TaskFailureKind[];
}

/** Options of {@link schedule$}. Every field is optional. */
export interface ScheduleOptions {
  /**
   * How many tasks run at once.
   * - a number: fixed;
   * - an `Observable<number | 'auto'>` (a GUI slider, a `BehaviorSubject`): the limit follows it;
   *   raising it starts waiting tasks at once, lowering it never kills a running task, it only
   *   delays new starts, and 0 pauses (nothing else starts until it rises; completing at 0 is a
   *   `RangeError`, since nothing could resume the run). `'auto'` hands the
   *   limit to automatic concurrency, from the limit in force, until the next number (an Auto
   *   checkbox next to the slider);
   * - `'auto'`: starts at {@link optimalConcurrency} and follows CPU load and free memory
   *   between `minConcurrency` and `maxConcurrency`.
   *
   * The options only automatic concurrency reads (`cpuTarget`, `cpuHysteresis`,
   * `sampleInterval`, `minConcurrency`, `maxConcurrency`, `concurrencyStep`, `minFreeMemory`)
   * are an {@link OptionError} with a number here.
   * @default 'auto'
   */
  concurrency?: ConcurrencyOption;
  /**
   * `'auto'` mode: raise concurrency while system CPU use (percent) is below this, or, on Linux,
   * while the tasks are I/O-bound (each wants at most a quarter of a core, time waiting for a CPU
   * included) and one more of them fits within this percent of the CPUs, counting the CPU they use.
   * So tasks that mostly wait keep growing on a host that other programs keep busy.
   * @default 85
   */
  cpuTarget?: number;
  /**
   * `'auto'` mode: lower concurrency only when CPU use exceeds `cpuTarget` by this many points
   * (and not for I/O-bound tasks that fit, as `cpuTarget` describes).
   * `cpuTarget + cpuHysteresis` must be below 100 (an {@link OptionError} otherwise): readings
   * never go above 100, so the limit could rise and never come down.
   * @default 10
   */
  cpuHysteresis?: number;
  /** `'auto'` mode: how often load is sampled, in milliseconds, from 10 to 2^31 - 1. @default 250 */
  sampleInterval?: number;
  /** `'auto'` mode: lower bound. @default 1 */
  minConcurrency?: number;
  /** `'auto'` mode: upper bound. @default the larger of 16 and 4 × optimalConcurrency() */
  maxConcurrency?: number;
  /**
   * `'auto'` mode: the most the limit changes per sample. Below this, a raise never more than
   * doubles the limit, and a lowering starts at 1 and doubles while the load stays too high.
   * @default the larger of 8 and optimalConcurrency()
   */
  concurrencyStep?: number;
  /** `'auto'` mode: hold new starts while available memory is below this many bytes. @default 256 MiB */
  minFreeMemory?: number;
  /**
   * `false` (the default): fail fast; the first failure errors every stream with its
   * `TaskError` and terminates the rest. `true`: keep going; every task's outcome is emitted as
   * `{ status: 'fulfilled', index, value, stats }` or `{ status: 'rejected', index, reason }`, like `Promise.allSettled`.
   * @default false
   */
  settle?: boolean;
  /**
   * Aborting this signal terminates the run, as `terminate()` does, whether it has started or
   * not: its streams end with a `RunTerminatedError` whose `cause` is the abort's reason. A run
   * given a signal that has already aborted is terminated from the start.
   */
  signal?: AbortSignal;
  /** Default per-task timeout in milliseconds, counted from each task's start. @default none */
  timeout?: number;
  /**
   * Retry failed tasks: a count, or a policy. Each task may override it with its own `retries`.
   * Outcomes and errors carry the attempt number.
   * @default 0 (no retries)
   */
  retries?: number | RetryOptions;
  /** Milliseconds between SIGTERM and SIGKILL when a process is terminated (`0`: SIGKILL at once). @default 3000 */
  killTimeout?: number;
  /**
   * A module-task worker is replaced after this many tasks. `1` gives every task a fresh
   * process (the Python library's behaviour): each worker's successor starts once the worker is
   * ready, so it starts while the worker's task runs. Once every task of the run has been taken
   * in, a worker gets a successor only if its lane still has a task waiting.
   * @default Infinity
   */
  maxTasksPerWorker?: number;
  /**
   * A worker idle this long (ms) exits; the pool grows again on demand. `0` stops a worker as soon
   * as it has nothing to do, so a task that comes later starts a new one.
   * @default 5000
   */
  idleTimeout?: number;
  /**
   * A worker whose resident memory exceeds this many bytes after a task is replaced, once the
   * tasks already sent to it are done (memory is read when results come, at most every 50 ms).
   * At least 16 MiB (`16 * 2 ** 20`): every Node process takes more, so a smaller number (megabytes
   * meant, say) is an OptionError rather than a new worker after every task.
   * @default none
   */
  maxWorkerRss?: number;
  /**
   * Where children's stdout and stderr go: `'inherit'` passes them through to this process's
   * (the default), `'capture'` emits them line by line on the run's `output$`, `'ignore'` drops them.
   * In every mode output is always read, so no child ever blocks on a full pipe, and the last
   * part of stderr is kept for error messages.
   * @default 'inherit'
   */
  output?: OutputMode;
  /**
   * Coalesce `progress$` snapshots to at most one per this many milliseconds (the first and
   * last are always emitted). `0` emits once per event-loop turn in which something changed.
   *
   * It also paces each task's `reportProgress` calls, in its worker: a task may send 8 reports at
   * once, and one more per this many ms; a report made beyond that is held (the newest replaces
   * it) and sent as soon as the task may send again, or just before its result. `0` sends every
   * report. See `reportProgress`.
   * @default 50
   */
  progressInterval?: number;
  /** Extra Node flags for worker processes, added to the parent's `execArgv`. @default [] */
  workerExecArgv?: readonly string[];
  /**
   * A worker process that has not started within this many ms (Node itself, the loaders it takes
   * from this process's flags, such as tsx, and the preloads of `workerExecArgv`; loading task
   * modules comes after and is not counted) is killed, and its tasks wait for the next one;
   * after three in a row (no worker ready in between), the run's module tasks fail with kind
   * `'spawn'`, saying so. A preload that never finishes would otherwise hold them for ever.
   * @default 30000
   */
  workerStartTimeout?: number;
  /** Environment of worker processes; each value a string (or undefined, left out). @default process.env */
  workerEnv?: NodeJS.ProcessEnv;
  /**
   * Take module-task workers from this {@link WorkerPool}, and give back those idle when the run
   * ends, so the next run starts on warm processes. Without it, the run starts its own workers
   * and stops them all before its streams end.
   * @default none
   */
  pool?: WorkerPool;
}

/** Options after validation, with defaults filled in. */
export interface ResolvedOptions {
  concurrency: ConcurrencyOption;
  cpuTarget: number;
  cpuHysteresis: number;
  sampleInterval: number;
  minConcurrency: number;
  maxConcurrency: number;
  concurrencyStep: number;
  minFreeMemory: number;
  settle: boolean;
  signal: AbortSignal | undefined;
  timeout: number | undefined;
  retries: ResolvedRetry;
  killTimeout: number;
  maxTasksPerWorker: number;
  idleTimeout: number;
  maxWorkerRss: number | undefined;
  output: OutputMode;
  progressInterval: number;
  workerExecArgv: readonly string[];
  workerStartTimeout: number;
  workerEnv: NodeJS.ProcessEnv | undefined;
  pool: WorkerPool | undefined;
}

export const KNOWN = new Set<string>([
  'concurrency', 'cpuTarget', 'cpuHysteresis', 'sampleInterval', 'minConcurrency', 'maxConcurrency',
  'concurrencyStep', 'minFreeMemory', 'settle', 'signal', 'timeout', 'retries', 'killTimeout', 'maxTasksPerWorker',
  'idleTimeout', 'maxWorkerRss', 'output', 'progressInterval', 'workerExecArgv', 'workerStartTimeout', 'workerEnv', 'pool',
]);

/** Throws the OptionError for options that are not an object; `where` prefixes the message (`warm(count, options): `). */
export function checkOptionsObject(options: unknown, where = ''): asserts options is object {
  let array: boolean;
  try {
    array = Array.isArray(options);
  } catch (error) {
    throw unreadableOptions(error, undefined, where); // a revoked Proxy: nothing of it can be read
  }
  if (typeof options !== 'object' || options === null || array) {
    throw new OptionError('(options)', '', options, `${where}options must be an object, got ${formatValue(options)}`);
  }
}

/** The options only automatic concurrency reads. */
export const AUTO_ONLY = ['cpuTarget', 'cpuHysteresis', 'sampleInterval', 'minConcurrency', 'maxConcurrency', 'concurrencyStep', 'minFreeMemory'] as const;

/** The first key of `options` (own or inherited, enumerable) that is not in `known`, or undefined. */
export function unknownKey(options: object, known: ReadonlySet<string>): string | undefined {
  for (const key in options) if (!known.has(key)) return key;
  return undefined;
}

/**
 * Validates every option once, up front, with one message template
 * (`options.<name> must be <expectation>, got <value>`), and fills in defaults.
 * `names` gives an option the name its caller knows it by (the Scheduler's `cpuThreshold` is
 * `cpuTarget`), for the messages.
 * @throws {OptionError} naming the first invalid option.
 */
export function resolveOptions(options: ScheduleOptions | undefined, names: { cpuTarget?: string } = {}): ResolvedOptions {
  if (options === undefined) options = {};
  checkOptionsObject(options);
  const o = readOnce(options);
  try {
    return resolveRead(o, names);
  } catch (error) {
    if (isOptionError(error)) throw error;
    // An option's value that cannot be looked at (a revoked Proxy, a Proxy whose traps throw).
    throw unreadableOptions(error, unreadablePath(o as Record<string, unknown>));
  }
}

/**
 * The option, or the option's field (`retries.on`), that cannot be looked at; undefined if none is
 * found. It never throws: a look that throws names what it was looking at.
 */
function unreadablePath(o: Record<string, unknown>): string | undefined {
  for (const key of KNOWN) {
    const value = o[key]; // read once already (readOnce): a plain value now
    if (!inspectable(value)) return key;
    if (typeof value !== 'object' || value === null) continue;
    let fields: string[];
    try {
      fields = Object.keys(value);
    } catch {
      return key;
    }
    for (const field of fields) {
      try {
        if (!inspectable((value as Record<string, unknown>)[field])) return `${key}.${field}`;
      } catch {
        return `${key}.${field}`;
      }
    }
  }
  return undefined;
}

/**
 * The OptionError for options (or the value of `option`) that could not be read: a getter, or a
 * Proxy, that throws. What it threw is read as toRemoteErrorInfo reads anything, and is the cause.
 */
function unreadableOptions(error: unknown, option?: string, where = ''): OptionError {
  const { name, message } = toRemoteErrorInfo(error);
  return new OptionError(option ?? '(options)', '', undefined, `${where}${option ? `options.${option}` : 'options'} could not be read: ${name}: ${message}`, { cause: error });
}

/** Whether the checks can look at `value`: its prototype, keys and entries read without throwing. */
function inspectable(value: unknown): boolean {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return true;
  try {
    Object.getPrototypeOf(value);
    for (const key of Reflect.ownKeys(value)) void (value as Record<PropertyKey, unknown>)[key];
    return true;
  } catch {
    return false;
  }
}

function resolveRead(o: ScheduleOptions, names: { cpuTarget?: string }): ResolvedOptions {
  const cpus = optimalConcurrency();
  const cpuTargetName = names.cpuTarget ?? 'cpuTarget';
  // Left out means automatic; null is a mistake (a value that was meant to be there), said so below.
  const concurrency = o.concurrency === undefined ? 'auto' : o.concurrency;
  if (!(concurrency === 'auto' || isObservable(concurrency) || isPositiveInteger(concurrency) || concurrency === Infinity)) {
    throw new OptionError('concurrency', "a positive integer, Infinity, an Observable<number | 'auto'> or 'auto'", concurrency);
  }
  if (typeof concurrency === 'number') {
    // They would silently do nothing: only automatic concurrency reads them (an Observable may
    // hand the limit to it).
    const unused = AUTO_ONLY.find((key) => o[key] !== undefined);
    if (unused !== undefined) {
      const name = unused === 'cpuTarget' ? cpuTargetName : unused;
      throw new OptionError(name, '', o[unused], `options.${name} only steers automatic concurrency; leave it out with concurrency ${formatValue(concurrency)}`);
    }
  }
  const minConcurrency = positiveInteger('minConcurrency', o.minConcurrency, 1);
  const maxConcurrency = positiveInteger('maxConcurrency', o.maxConcurrency, Math.max(minConcurrency, defaultMaxConcurrency(cpus)));
  if (maxConcurrency < minConcurrency) {
    throw new OptionError('maxConcurrency', `at least minConcurrency (${minConcurrency})`, maxConcurrency);
  }
  // 100 would leave no room for a band above it (see below).
  const cpuTarget = numberIn(cpuTargetName, o.cpuTarget, DEFAULT_CPU_TARGET, 1, 99);
  const cpuHysteresis = numberIn('cpuHysteresis', o.cpuHysteresis, DEFAULT_HYSTERESIS, 0, 100);
  if (cpuTarget + cpuHysteresis >= 100) {
    // Readings never go above 100: the limit could rise, and never come down again.
    const defaulted = o.cpuTarget === undefined ? ` (${cpuTargetName} defaults to ${DEFAULT_CPU_TARGET})` : o.cpuHysteresis === undefined ? ` (cpuHysteresis defaults to ${DEFAULT_HYSTERESIS})` : '';
    const [name, value] = o.cpuTarget === undefined ? ['cpuHysteresis', cpuHysteresis] : [cpuTargetName, cpuTarget];
    throw new OptionError(
      name,
      '',
      value,
      `options.${cpuTargetName} + options.cpuHysteresis must be below 100, got ${cpuTarget} + ${cpuHysteresis}${defaulted}: ` +
        'CPU readings never go above 100, so concurrency could rise and never come down',
    );
  }
  const output = o.output ?? 'inherit';
  if (output !== 'inherit' && output !== 'capture' && output !== 'ignore') {
    throw new OptionError('output', "'inherit', 'capture' or 'ignore'", output);
  }
  if (o.settle !== undefined && typeof o.settle !== 'boolean') throw new OptionError('settle', 'a boolean', o.settle);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new OptionError('signal', 'an AbortSignal', o.signal);
  if (o.workerExecArgv !== undefined && !(Array.isArray(o.workerExecArgv) && o.workerExecArgv.every((a) => typeof a === 'string'))) {
    throw new OptionError('workerExecArgv', 'an array of strings', o.workerExecArgv);
  }
  if (o.workerEnv !== undefined && (typeof o.workerEnv !== 'object' || o.workerEnv === null)) {
    throw new OptionError('workerEnv', 'an object', o.workerEnv);
  }
  if (o.workerEnv !== undefined) {
    const key = nonStringEnvKey(o.workerEnv);
    if (key !== undefined) throw new OptionError(`workerEnv.${key}`, 'a string (or undefined, to leave it out)', (o.workerEnv as Record<string, unknown>)[key]);
  }
  if (o.pool !== undefined && !(o.pool instanceof WorkerPool)) throw new OptionError('pool', 'a WorkerPool', o.pool);
  return {
    concurrency,
    cpuTarget,
    cpuHysteresis,
    sampleInterval: numberIn('sampleInterval', o.sampleInterval, DEFAULT_SAMPLE_INTERVAL, 10, 2 ** 31 - 1),
    minConcurrency,
    maxConcurrency,
    concurrencyStep: positiveInteger('concurrencyStep', o.concurrencyStep, defaultConcurrencyStep(cpus)),
    minFreeMemory: numberIn('minFreeMemory', o.minFreeMemory, DEFAULT_MIN_FREE_MEMORY, 0, Number.MAX_VALUE),
    settle: o.settle ?? false,
    signal: o.signal,
    timeout: o.timeout === undefined ? undefined : numberIn('timeout', o.timeout, 0, 1, 2 ** 31 - 1),
    retries: resolveRetry('retries', o.retries),
    killTimeout: numberIn('killTimeout', o.killTimeout, 3000, 0, 2 ** 31 - 1),
    maxTasksPerWorker: o.maxTasksPerWorker === Infinity ? Infinity : positiveInteger('maxTasksPerWorker', o.maxTasksPerWorker, Infinity),
    idleTimeout: numberIn('idleTimeout', o.idleTimeout, 5000, 0, 2 ** 31 - 1),
    maxWorkerRss: o.maxWorkerRss === undefined ? undefined : workerRssLimit(o.maxWorkerRss),
    output,
    progressInterval: numberIn('progressInterval', o.progressInterval, DEFAULT_PROGRESS_INTERVAL, 0, 2 ** 31 - 1),
    workerExecArgv: o.workerExecArgv ?? [],
    workerStartTimeout: numberIn('workerStartTimeout', o.workerStartTimeout, DEFAULT_START_TIMEOUT, 1, 2 ** 31 - 1),
    workerEnv: o.workerEnv,
    pool: o.pool,
  };
}

/**
 * The options' values, each read once (a getter runs once), after the check for unknown keys. A
 * getter that throws, or a Proxy whose traps do, makes the options unreadable: an OptionError
 * saying so, with what was thrown as its cause.
 */
function readOnce(options: ScheduleOptions): ScheduleOptions {
  try {
    const unknown = unknownKey(options, KNOWN);
    if (unknown !== undefined) throw new OptionError(unknown, '', undefined, `options.${unknown} is not an option; the options are ${[...KNOWN].join(', ')}`);
    const values: Record<string, unknown> = {};
    for (const key of KNOWN) values[key] = (options as Record<string, unknown>)[key];
    return values as ScheduleOptions;
  } catch (error) {
    if (isOptionError(error)) throw error;
    throw unreadableOptions(error);
  }
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

function positiveInteger(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (!isPositiveInteger(value)) throw new OptionError(name, 'a positive integer', value);
  return value;
}

/**
 * The smallest `maxWorkerRss`: a Node process takes more than this as soon as it starts, so a
 * smaller limit would replace every worker after every task. Such a number is nearly always
 * megabytes written where bytes are meant.
 */
const MIN_WORKER_RSS = 16 * 2 ** 20;
/** The largest `maxWorkerRss` read as megabytes in the message (64 GiB). */
const MAX_MIB_MEANT = 2 ** 16;

function workerRssLimit(value: unknown): number {
  if (typeof value === 'number' && value > 0 && value < MIN_WORKER_RSS) {
    // A whole number small enough to be a count of megabytes gets the fix for that reading.
    const hint = Number.isInteger(value) && value <= MAX_MIB_MEANT ? `; for ${value} MiB write ${value} * 2 ** 20` : '';
    throw new OptionError(
      'maxWorkerRss',
      '',
      value,
      `options.maxWorkerRss is in bytes and must be at least ${MIN_WORKER_RSS} (16 MiB, less than any Node process takes), got ${value}${hint}`,
    );
  }
  return numberIn('maxWorkerRss', value, 0, MIN_WORKER_RSS, Number.MAX_VALUE);
}

/** A number option from `min` to `max`, or `fallback` when it is undefined. @throws {OptionError} */
export function numberIn(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max) {
    const unbounded = max === Number.MAX_VALUE || max === Number.MAX_SAFE_INTEGER;
    throw new OptionError(name, unbounded ? `a number of at least ${min}` : `a number from ${min} to ${max}`, value);
  }
  return value;
}

const FAILURE_KINDS: readonly TaskFailureKind[] = ['threw', 'exited', 'signaled', 'timeout', 'cancelled', 'invalid', 'spawn'];
const RETRY_KEYS: ReadonlySet<string> = new Set(['retries', 'delay', 'backoff', 'maxDelay', 'jitter', 'on']);
const RETRYABLE: readonly TaskFailureKind[] = ['threw', 'exited', 'signaled', 'timeout', 'spawn'];

/** Validates a retry option (a count or a policy) and fills in its defaults. */
export function resolveRetry(name: string, value: unknown): ResolvedRetry {
  const policy: RetryOptions = typeof value === 'number' || value === undefined ? { retries: value ?? 0 } : (value as RetryOptions);
  if (typeof policy !== 'object' || policy === null) throw new OptionError(name, 'a number or a retry policy object', value);
  const unknown = unknownKey(policy, RETRY_KEYS);
  if (unknown !== undefined) {
    throw new OptionError(`${name}.${unknown}`, '', undefined, `options.${name}.${unknown} is not a retry option; they are ${[...RETRY_KEYS].join(', ')}`);
  }
  const retries = policy.retries;
  if (!(typeof retries === 'number' && Number.isInteger(retries) && retries >= 0)) {
    throw new OptionError(typeof value === 'number' ? name : `${name}.retries`, 'an integer >= 0', retries);
  }
  const backoff = policy.backoff ?? 'exponential';
  if (backoff !== 'fixed' && backoff !== 'exponential') throw new OptionError(`${name}.backoff`, "'fixed' or 'exponential'", backoff);
  if (policy.jitter !== undefined && typeof policy.jitter !== 'boolean') throw new OptionError(`${name}.jitter`, 'a boolean', policy.jitter);
  const on = policy.on ?? DEFAULT_RETRY_ON;
  if (!Array.isArray(on)) throw new OptionError(`${name}.on`, `an array of failure kinds (${RETRYABLE.join(', ')})`, on);
  // A kind that is never retried would be a promise the policy does not keep: an error too.
  const bad = on.findIndex((k) => !RETRYABLE.includes(k));
  if (bad !== -1) {
    const never = FAILURE_KINDS.includes(on[bad]!) ? ` (${formatValue(on[bad])} failures are never retried)` : '';
    throw new OptionError(`${name}.on[${bad}]`, '', on[bad], `options.${name}.on[${bad}] must be a failure kind that can be retried (${RETRYABLE.join(', ')}), got ${formatValue(on[bad])}${never}`);
  }
  return {
    retries,
    delay: numberIn(`${name}.delay`, policy.delay, 100, 0, 2 ** 31 - 1),
    backoff,
    maxDelay: numberIn(`${name}.maxDelay`, policy.maxDelay, 30_000, 0, 2 ** 31 - 1),
    jitter: policy.jitter ?? true,
    on: [...on],
  };
}

/** A valid `weight` task option: a finite number >= 0. */
export function isWeight(value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && Number.isFinite(value);
}

/** The options each kind of task takes (see TaskOptions and CommandTaskOptions). */
const TASK_OPTION_KEYS: ReadonlySet<string> = new Set(['timeout', 'label', 'weight', 'retries']);
const COMMAND_OPTION_KEYS: ReadonlySet<string> = new Set([...TASK_OPTION_KEYS, 'cwd', 'env', 'input', 'reject', 'encoding', 'maxBuffer']);

/**
 * Validates one task's options, for a task of `kind`; used when a task is pulled from the source.
 * Returns a message or undefined.
 */
export function checkTaskOptions(options: unknown, kind: 'module' | 'command' | 'process'): string | undefined {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return `task options must be an object, got ${formatValue(options)}`;
  const o = options as Record<string, unknown>;
  const known = kind === 'command' ? COMMAND_OPTION_KEYS : TASK_OPTION_KEYS;
  // A misspelt option would otherwise be dropped without a word (a timeout that never fires).
  const unknown = unknownKey(o, known);
  if (unknown !== undefined) return `task option ${unknown} is not an option of a ${kind} task; they are ${[...known].join(', ')}`;
  if (o.timeout !== undefined && !(typeof o.timeout === 'number' && o.timeout >= 1 && o.timeout <= 2 ** 31 - 1)) {
    return `task option timeout must be a number from 1 to ${2 ** 31 - 1}, got ${formatValue(o.timeout)}`;
  }
  if (o.label !== undefined && typeof o.label !== 'string') return `task option label must be a string, got ${formatValue(o.label)}`;
  if (o.weight !== undefined && !isWeight(o.weight)) {
    return `task option weight must be a finite number >= 0, got ${formatValue(o.weight)}`;
  }
  if (o.retries !== undefined) {
    try {
      resolveRetry('retries', o.retries);
    } catch (error) {
      return `task ${(error as Error).message.replace(/^options\./, 'option ')}`;
    }
  }
  return kind === 'command' ? checkCommandOptions(o) : undefined;
}

/**
 * The first variable of an environment whose value is neither a string nor undefined: Node
 * would pass `null` as "null" and an object as "[object Object]".
 */
function nonStringEnvKey(env: object): string | undefined {
  for (const [key, value] of Object.entries(env)) if (value !== undefined && typeof value !== 'string') return key;
  return undefined;
}

function checkCommandOptions(o: Record<string, unknown>): string | undefined {
  if (o.cwd !== undefined && typeof o.cwd !== 'string' && !(o.cwd instanceof URL)) {
    return `task option cwd must be a string or a file: URL, got ${formatValue(o.cwd)}`;
  }
  if (o.env !== undefined && (typeof o.env !== 'object' || o.env === null)) return `task option env must be an object, got ${formatValue(o.env)}`;
  const envKey = o.env === undefined ? undefined : nonStringEnvKey(o.env);
  if (envKey !== undefined) {
    return `task option env.${envKey} must be a string (or undefined, to leave it out), got ${formatValue((o.env as Record<string, unknown>)[envKey])}`;
  }
  if (o.input !== undefined && typeof o.input !== 'string' && !(o.input instanceof Uint8Array)) {
    return `task option input must be a string or a Uint8Array, got ${formatValue(o.input)}`;
  }
  if (o.reject !== undefined && typeof o.reject !== 'boolean') return `task option reject must be true or false, got ${formatValue(o.reject)}`;
  if (o.encoding !== undefined && o.encoding !== 'utf8' && o.encoding !== 'buffer') {
    return `task option encoding must be 'utf8' or 'buffer', got ${formatValue(o.encoding)}`;
  }
  const max = o.maxBuffer;
  if (max !== undefined && !(typeof max === 'number' && max >= 0 && (Number.isInteger(max) || max === Infinity))) {
    return `task option maxBuffer must be an integer >= 0 (bytes) or Infinity, got ${formatValue(max)}`;
  }
  return undefined;
}
