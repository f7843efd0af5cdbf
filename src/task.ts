/**
 * Task descriptions: what to run, not how. The scheduler decides when and where.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import type { RetryOptions } from './options.js';
import { formatValue } from './errors.js';

const TASK_BRAND = Symbol.for('async-process-scheduler.Task');
/**
 * @internal The options of every task made without any: one frozen object, not one per task (a
 * million tasks are a million objects fewer). Tasks are descriptions and never change. Being
 * frozen and empty, it is valid for every kind of task, and the run need not check it again.
 */
export const NO_OPTIONS: TaskOptions & CommandTaskOptions = Object.freeze({});

/**
 * Options every kind of task accepts. A key not listed here (nor, for a command task, in
 * {@link CommandTaskOptions}) fails the task as `invalid`, naming the key.
 */
export interface TaskOptions {
  /**
   * Kill the task and fail it with `kind: 'timeout'` when it runs longer than this many
   * milliseconds, counted from its start. Overrides the run's `timeout`. A module task with a
   * timeout is not queued in a worker behind tasks without one (the README's FAQ says why).
   * @default the run's `timeout` (none)
   */
  timeout?: number;
  /**
   * A short name used in errors, e.g. `"resize photo 12"`.
   * @default `file.ts#export` for a module task; for a command, its line as a shell would show it (`sh -c 'exit 3'`), cut at 80 characters; `process` and the factory's name for a process task
   */
  label?: string;
  /**
   * How much this task counts in weighted progress (`Progress.weightDone`/`weightTotal`),
   * like the Python library's `subtasks`. @default 1
   */
  weight?: number;
  /** Retry policy of this task; overrides the run's `retries`. @default the run's `retries` */
  retries?: number | RetryOptions;
}

/** Options of a {@link commandTask}. */
export interface CommandTaskOptions extends TaskOptions {
  /** Working directory. @default the parent's `process.cwd()` */
  cwd?: string | URL;
  /**
   * The command's whole environment: it replaces the parent's rather than adding to it, as with
   * `child_process.spawn` (so `PATH` must be in it for a command found by name). To add a
   * variable, pass `{ ...process.env, NAME: 'value' }`. Each value is a string, or undefined to
   * leave the variable out; any other value makes the task invalid. @default the parent's `process.env`
   */
  env?: NodeJS.ProcessEnv;
  /** Written to the command's stdin, which is then closed. @default stdin is empty */
  input?: string | Uint8Array;
  /**
   * When `false`, a non-zero exit code is a result, not a failure (a signal still fails the task).
   * @default true
   */
  reject?: boolean;
  /** `'utf8'` gives `stdout`/`stderr` as strings, `'buffer'` as Buffers. @default 'utf8' */
  encoding?: 'utf8' | 'buffer';
  /**
   * At most this many bytes of stdout (and of stderr) are kept; the rest is read and dropped,
   * so the command never blocks, and `truncated` is set on the result. An integer >= 0, or
   * `Infinity`. Output longer than the result can hold (a string: 512 MiB less 24 bytes; a
   * Buffer: 4 GiB) is not cut: the task fails as `invalid`, saying so. @default 64 MiB
   */
  maxBuffer?: number;
}

/** What a {@link commandTask} resolves with. */
export interface CommandResult<Out extends string | Buffer = string> {
  /** The exit code, or null when a signal ended the program. */
  exitCode: number | null;
  /** The signal that ended the program, if any. */
  signal: NodeJS.Signals | null;
  /** Everything it wrote to stdout (up to `maxBuffer`). */
  stdout: Out;
  /** Everything it wrote to stderr (up to `maxBuffer`). */
  stderr: Out;
  /** Wall time from spawn to exit, in milliseconds. */
  durationMs: number;
  /** True when stdout or stderr was longer than `maxBuffer` and was cut. */
  truncated: boolean;
}

/** A module function call to run in a worker process. Create it with {@link moduleTask}. */
export interface ModuleTask<T = unknown> {
  readonly kind: 'module';
  /** The module's URL as a string (`file:` or `node:`). */
  readonly module: string;
  readonly exportName: string;
  readonly args: readonly unknown[];
  /** Its options, as given; read-only (a task made without options shares one frozen empty object). */
  readonly options: Readonly<TaskOptions>;
  /** Type-only: the result type. */
  readonly __result?: T;
}

/** An external program to run. Create it with {@link commandTask}. */
export interface CommandTask<T = CommandResult> {
  readonly kind: 'command';
  readonly file: string;
  readonly args: readonly string[];
  /** Its options, as given; read-only (a task made without options shares one frozen empty object). */
  readonly options: Readonly<CommandTaskOptions>;
  readonly __result?: T;
}

/** A child process the user creates. Create it with {@link processTask}. */
export interface ProcessTask<T = unknown> {
  readonly kind: 'process';
  readonly factory: () => ChildProcess;
  /** Its options, as given; read-only (a task made without options shares one frozen empty object). */
  readonly options: Readonly<TaskOptions>;
  readonly __result?: T;
}

/** Anything {@link schedule$} can run. `T` is what the task resolves with. */
export type Task<T = unknown> = ModuleTask<T> | CommandTask<T> | ProcessTask<T>;

/** The result type of a task. */
export type TaskValue<K> = K extends Task<infer T> ? T : never;

/**
 * Describes a call of an exported function of a module, run in a warm worker process.
 *
 * The function may be sync or async; its return value is the task's value. Arguments and
 * the result cross the process boundary with structured-clone semantics: Buffers, typed
 * arrays, Map, Set, Date, BigInt and NaN survive; functions and symbols do not (the task
 * fails with `kind: 'invalid'` naming the argument).
 *
 * `moduleUrl` must say exactly where the module is: a `URL`, a `file:` URL string, an absolute
 * path, or a `node:` builtin. The usual form is `new URL('./work.js', import.meta.url)`.
 * When the parent runs under tsx, the module may be TypeScript.
 *
 * For argument and return types checked against the module, see {@link taskModule}.
 *
 * @example
 * ```ts
 * import { schedule$, moduleTask } from 'async-process-scheduler';
 *
 * // work.js: export function square(x) { return x * x; }
 * const work = new URL('./work.js', import.meta.url);
 * const tasks = [1, 2, 3].map((x) => moduleTask<number>(work, 'square', [x]));
 * console.log(await schedule$(tasks).toOrderedArray()); // [1, 4, 9]
 * ```
 * @param moduleUrl Where the module is.
 * @param exportName The export to call (`'default'` for the default export).
 * @param args Arguments for the call.
 * @param options Per-task options.
 * @returns A task to pass to {@link schedule$}.
 * @throws {TypeError} when `moduleUrl` is relative or a bare name, or `exportName` is not a
 *   non-empty string (a function passed instead of its name, say).
 */
export function moduleTask<T = unknown>(
  moduleUrl: string | URL,
  exportName: string,
  args: readonly unknown[] = [],
  options: TaskOptions = NO_OPTIONS,
): ModuleTask<T> {
  return new ModuleTaskData(normalizeModuleUrl(moduleUrl), checkExportName(exportName), args, options);
}

/**
 * The export's name, checked: a function passed instead (the Python habit) would otherwise reach
 * the worker as nothing, and fail there as "no export named 'null'".
 */
function checkExportName(exportName: unknown): string {
  if (typeof exportName === 'string' && exportName !== '') return exportName;
  const hint =
    typeof exportName === 'function'
      ? `: pass ${nameToPass(exportName)}, or use taskModule(url).${exportName.name || '<name>'}(...); a function cannot be sent to a worker`
      : '';
  throw new TypeError(`exportName must be the name of an export of the module (a string), got ${formatValue(exportName)}${hint}`);
}

/**
 * @internal What to pass instead of a function given where its export's name belongs: the
 * function's own name when it has one. For every API that takes an export name.
 */
export function nameToPass(fn: { name?: string }): string {
  return fn.name ? `its name, '${fn.name}'` : 'the name it is exported under';
}

/** The names of a module's exports that are functions. */
export type FunctionExports<M> = { [K in keyof M]: M[K] extends (...args: any[]) => unknown ? K : never }[keyof M] & string;

/**
 * A typed handle on a task module: one task factory per exported function, but for exports named
 * `task` and `then`, which are reached through `task(name, args)`.
 */
export type TaskModule<M> = {
  readonly [K in Exclude<FunctionExports<M>, 'task' | 'then'>]: M[K] extends (...args: infer A) => infer R ? (...args: A) => ModuleTask<Awaited<R>> : never;
} & {
  /** Like calling the export's factory, with per-task options. */
  task<K extends FunctionExports<M>>(
    exportName: K,
    args: M[K] extends (...args: infer A) => unknown ? A : never,
    options?: TaskOptions,
  ): ModuleTask<M[K] extends (...args: any[]) => infer R ? Awaited<R> : never>;
};

/**
 * A typed handle on a task module: argument and return types are inferred from the module's
 * own type, so a wrong argument is a compile error. Nothing is imported in the parent.
 *
 * Exports named `task` (the handle's own method) and `then` (which would make the handle look like
 * a promise to `await`) are reached with `handle.task('task', args)` and `handle.task('then', args)`.
 * Logged, or put in a template string, a handle shows its module: `taskModule(file:///.../work.js)`.
 *
 * The types are TypeScript's reading of each export: an overloaded function offers only its last
 * overload, and a generic one gives `ModuleTask<unknown>`. For those, name the result type with
 * {@link moduleTask}: `moduleTask<string>(url, 'over', ['a'])`.
 *
 * @example
 * ```ts
 * import { schedule$, taskModule } from 'async-process-scheduler';
 *
 * // work.ts: import { readFile } from 'node:fs/promises'; export async function head(path: string, n: number) { return (await readFile(path, 'utf8')).split('\n').slice(0, n); }
 * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
 * const run = schedule$(['a.txt', 'b.txt'].map((p) => work.head(p, 3)));
 * const heads = await run.toOrderedArray(); // string[][]: the first 3 lines of each file
 * // work.head(3, 'a.txt') would not compile.
 * ```
 * @param moduleUrl Where the module is (see {@link moduleTask}).
 * @returns An object with one task factory per exported function, and `task(name, args, options)`.
 */
export function taskModule<M>(moduleUrl: string | URL): TaskModule<M> {
  const module = normalizeModuleUrl(moduleUrl);
  const make = (exportName: string, args: readonly unknown[], options: TaskOptions = NO_OPTIONS): ModuleTask =>
    new ModuleTaskData(module, checkExportName(exportName), args, options);
  // What console.log shows: util.inspect looks at a Proxy's target, not through its traps. A
  // symbol, not enumerable: `'module' in handle`, Object.keys and spreading see nothing.
  const shown = () => `taskModule(${module})`;
  const target = Object.defineProperty({}, inspect.custom, { value: shown });
  return new Proxy(target as TaskModule<M>, {
    get(_target, key) {
      if (key === 'task') return make;
      // In a template or String(): its module, not a task for an export named toString.
      if (key === Symbol.toPrimitive || key === inspect.custom) return shown;
      // Keep the handle from looking like a thenable.
      if (typeof key !== 'string' || key === 'then') return undefined;
      return (...args: unknown[]) => make(key, args);
    },
  });
}

/**
 * Describes an external program to run, spawned without a shell (arguments are passed as they
 * are, never interpreted). Resolves with `{ exitCode, signal, stdout, stderr, durationMs, truncated }`.
 * A non-zero exit fails the task unless `reject: false`; a program that does not exist fails
 * it with `kind: 'invalid'` and `remote.code` `'ENOENT'`.
 *
 * @example
 * ```ts
 * import { schedule$, commandTask } from 'async-process-scheduler';
 *
 * const files = ['a.txt', 'b.txt'];
 * const run = schedule$(files.map((f) => commandTask('sha256sum', [f])));
 * for (const r of await run.toOrderedArray()) console.log(r.stdout.trim());
 * ```
 * @param file The program: a name looked up in `PATH`, or a path.
 * @param args Its arguments.
 * @param options Working directory, environment, input, and how to treat the exit code.
 * @returns A task to pass to {@link schedule$}.
 */
export function commandTask(file: string, args?: readonly string[], options?: CommandTaskOptions & { encoding?: 'utf8' }): CommandTask<CommandResult<string>>;
export function commandTask(file: string, args: readonly string[] | undefined, options: CommandTaskOptions & { encoding: 'buffer' }): CommandTask<CommandResult<Buffer>>;
export function commandTask(file: string, args: readonly string[] | undefined, options: CommandTaskOptions): CommandTask<CommandResult<string | Buffer>>;
export function commandTask(file: string, args: readonly string[] = [], options: CommandTaskOptions = NO_OPTIONS): CommandTask<CommandResult<string | Buffer>> {
  return new CommandTaskData(file, args, options);
}

/**
 * Wraps a child process you create yourself. The scheduler calls `factory` when the task's turn
 * comes; the first IPC message the process sends is the task's value (later ones are ignored),
 * after which the process is given `killTimeout` to exit and is then killed. A process that exits without sending a
 * message fails the task with its exit code or signal.
 *
 * Pass `detached: true` to `fork` so the process leads its own process group: termination then
 * also reaches the processes it starts.
 *
 * @example
 * ```ts
 * import { fork } from 'node:child_process';
 * import { fileURLToPath } from 'node:url';
 * import { schedule$, processTask } from 'async-process-scheduler';
 *
 * // calc.js, beside this file: process.send(Number(process.argv[2]) * 2);
 * const calc = fileURLToPath(new URL('./calc.js', import.meta.url));
 * const tasks = [1, 2, 3].map((n) => processTask<number>(() => fork(calc, [String(n)], { detached: true })));
 * console.log(await schedule$(tasks).toOrderedArray()); // [2, 4, 6]
 * ```
 * @param factory Creates the process, with an IPC channel: `fork`, `spawn` with `'ipc'` in `stdio`,
 *   or execa's `execaNode` (its subprocess is a ChildProcess; the rejection of its promise when
 *   the process is killed is handled here, so it cannot end your program as an unhandled one).
 * @param options Per-task options.
 * @returns A task to pass to {@link schedule$}.
 */
export function processTask<T = unknown>(factory: () => ChildProcess, options: TaskOptions = NO_OPTIONS): ProcessTask<T> {
  return new ProcessTaskData(factory, options);
}

/**
 * True when `value` was made by one of the task factories.
 *
 * @example
 * ```ts
 * import { isTask, commandTask } from 'async-process-scheduler';
 * console.log(isTask(commandTask('true')), isTask({ file: 'true' })); // true false
 * ```
 * @param value Anything.
 * @returns Whether the scheduler can run it.
 */
export function isTask(value: unknown): value is Task {
  if (typeof value !== 'object' || value === null) return false;
  try {
    return (value as Record<symbol, unknown>)[TASK_BRAND] === true;
  } catch {
    return false; // a Proxy whose get trap throws
  }
}

/**
 * What is wrong with the fields of a task that carries the brand (a task changed after it was
 * made, or made by hand): its kind, and what that kind needs to run. Undefined when nothing is.
 * The arguments of a module task come before its options: moduleTask(url, 'f', 1, 2) is a
 * mistake in the arguments.
 */
export function taskShapeProblem(task: Task): string | undefined {
  switch (task.kind) {
    case 'module':
      if (typeof task.module !== 'string') return `its module must be a URL string, got ${formatValue(task.module)}`;
      if (typeof task.exportName !== 'string') return `its export name must be a string, got ${formatValue(task.exportName)}`;
      return Array.isArray(task.args) ? undefined : `its arguments must be an array, got ${formatValue(task.args)}`;
    case 'command': // its program and arguments are checked when it starts (runCommand)
    case 'process': // its factory, when it is called
      return undefined;
    default:
      return `its kind must be 'module', 'command' or 'process', got ${formatValue((task as { kind: unknown }).kind)}`;
  }
}

/** A short human name for a task, used in errors. Never throws. */
export function taskLabel(task: Task): string {
  try {
    return labelOf(task);
  } catch {
    // A field whose getter throws (plain JavaScript): the message that names the task must not.
    return 'a task whose fields cannot be read';
  }
}

function labelOf(task: Task): string {
  // Checked as a malformed task may come (from plain JavaScript) with anything in its fields.
  const label = typeof task.options === 'object' && task.options !== null ? task.options.label : undefined;
  if (typeof label === 'string' && label !== '') return label;
  switch (task.kind) {
    case 'module': {
      const module = String(task.module);
      return `${module.slice(module.lastIndexOf('/') + 1)}#${String(task.exportName)}`;
    }
    case 'command':
      try {
        return commandLine(task.file, task.args);
      } catch {
        return String(task.file); // arguments whose getters throw (plain JavaScript)
      }
    case 'process':
      return typeof task.factory === 'function' && task.factory.name ? `process ${task.factory.name}` : 'process';
    default:
      return String((task as { kind: unknown }).kind);
  }
}

/** The longest a command's label gets: past it, the command line is cut and ends with `…`. */
const MAX_COMMAND_LABEL = 80;

/**
 * A command as a shell would show it: the program, then its arguments, each quoted when a shell
 * would read it otherwise (`sh -c 'exit 3'`, `'ls -la'` for a program name with a space), on one
 * line (a control character, a newline say, is written as in bash's `$'a\nb'`), cut at
 * {@link MAX_COMMAND_LABEL} characters. Just the program when the arguments are not an array of
 * strings (an invalid task).
 */
function commandLine(file: unknown, args: unknown): string {
  let line = shellWord(String(file));
  if (Array.isArray(args) && args.every((arg) => typeof arg === 'string')) {
    for (const arg of args as string[]) {
      if (line.length > MAX_COMMAND_LABEL) break;
      line += ` ${shellWord(arg)}`;
    }
  }
  if (line.length <= MAX_COMMAND_LABEL) return line;
  // Not between the two halves of a surrogate pair, which would print as U+FFFD.
  const cut = /[\uD800-\uDBFF]/.test(line[MAX_COMMAND_LABEL - 2]!) ? MAX_COMMAND_LABEL - 2 : MAX_COMMAND_LABEL - 1;
  return `${line.slice(0, cut)}…`;
}

/** What bash writes in `$'...'` for these characters; others as `\xNN`. */
const ANSI_C_ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', "'": "\\'", '\n': '\\n', '\t': '\\t', '\r': '\\r' };

/** One word of a command line, quoted only if a shell would read it otherwise. */
function shellWord(word: string): string {
  if (/^[\w@%+=:,./-]+$/.test(word)) return word;
  if (/[\x00-\x1f\x7f]/.test(word)) {
    const escaped = word.replace(/[\\'\x00-\x1f\x7f]/g, (c) => ANSI_C_ESCAPES[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
    return `$'${escaped}'`;
  }
  return `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * Tasks are instances of these classes, whose shared prototype carries the brand: a task is one
 * object of five or four fields, and costs no property definition to make (defining a
 * non-enumerable brand on each task took about 0.4 µs and 88 bytes more per task). Their own
 * enumerable properties are the task's fields, as on a plain object: a copy (`{ ...task }`,
 * structured clone) has them but not the brand, so it is not a task.
 */
class TaskData {}
Object.defineProperty(TaskData.prototype, TASK_BRAND, { value: true });

// Fields are declared in the order of a task's keys, kind first (as tasks were plain objects).
class ModuleTaskData extends TaskData implements ModuleTask<never> {
  readonly kind = 'module';
  readonly module: string;
  readonly exportName: string;
  readonly args: readonly unknown[];
  readonly options: Readonly<TaskOptions>;
  constructor(module: string, exportName: string, args: readonly unknown[], options: Readonly<TaskOptions>) {
    super();
    this.module = module;
    this.exportName = exportName;
    this.args = args;
    this.options = options;
  }
}

class CommandTaskData extends TaskData implements CommandTask<never> {
  readonly kind = 'command';
  readonly file: string;
  readonly args: readonly string[];
  readonly options: Readonly<CommandTaskOptions>;
  constructor(file: string, args: readonly string[], options: Readonly<CommandTaskOptions>) {
    super();
    this.file = file;
    this.args = args;
    this.options = options;
  }
}

class ProcessTaskData extends TaskData implements ProcessTask<never> {
  readonly kind = 'process';
  readonly factory: () => ChildProcess;
  readonly options: Readonly<TaskOptions>;
  constructor(factory: () => ChildProcess, options: Readonly<TaskOptions>) {
    super();
    this.factory = factory;
    this.options = options;
  }
}

/**
 * @internal Where a task module is, as a URL string: from a URL, a file: URL string or an absolute
 * path. Relative paths and bare names are refused here: the worker would resolve them from its own
 * location, which is never what was meant. `name` is what the messages call the value.
 */
export function normalizeModuleUrl(moduleUrl: string | URL, name = 'moduleUrl'): string {
  if (moduleUrl instanceof URL) return moduleUrl.href;
  if (typeof moduleUrl !== 'string') {
    throw new TypeError(`${name} must be a URL or a string, got ${typeof moduleUrl}`);
  }
  if (/^(file|node|data):/.test(moduleUrl)) return moduleUrl;
  if (isAbsolute(moduleUrl)) return pathToFileURL(moduleUrl).href;
  const relative = moduleUrl.startsWith('.') ? moduleUrl : `./${moduleUrl}`;
  // 'lodash' or '@scope/pkg/x.js' may be a file next to this one, or a package.
  const bare = !moduleUrl.startsWith('.') && /^(@[\w.-]+\/)?[\w.-]+(\/|$)/.test(moduleUrl);
  throw new TypeError(
    `${name} must be a URL, a file: URL string or an absolute path, got ${JSON.stringify(moduleUrl)}; ` +
      `use new URL('${relative}', import.meta.url) (in CommonJS: path.join(__dirname, '${relative}'))` +
      (bare ? `, or, for a package, import.meta.resolve('${moduleUrl}') (in CommonJS: require.resolve('${moduleUrl}'))` : ''),
  );
}
