/**
 * Runs an external program for a {@link commandTask}: spawned without a shell, in a process
 * group of its own, output collected up to a limit and never blocking the program.
 *
 * @module
 */
import { constants as bufferConstants } from 'node:buffer';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { formatValue, toRemoteErrorInfo, type TaskErrorInit } from '../errors.js';
import type { CommandResult, CommandTask } from '../task.js';
import { releaseUnstarted } from './child-exit.js';
import { afterQuiet, Tail, tapOutput, type OutputLine } from './output.js';

const DEFAULT_MAX_BUFFER = 64 * 1024 * 1024;
/** How long to wait, after the program exited, for its pipes to close (a grandchild may hold them). */
const CLOSE_WAIT_MS = 200;
/** The longest the pipes are read after the program exited, while output keeps coming. */
const CLOSE_WAIT_MAX_MS = 5000;

export interface SpawnedJob {
  /** Undefined when the command could not be started (already reported). */
  child: ChildProcess | undefined;
  /**
   * Resolves once the command is settled (its outcome reported, its pipes given up); undefined if
   * it never started. The caller tracks its pid (see LocalRuntime).
   */
  settled?: Promise<void>;
  /** The tail of what it wrote to stderr so far (for a timeout's error). */
  stderrTail?: () => string;
}

export interface CommandHooks {
  /** The run's output mode: in 'capture', lines also go to `line`. */
  capture: boolean;
  line(line: OutputLine): void;
  fulfilled(value: CommandResult<string | Buffer>, durationMs: number, pid: number | undefined): void;
  rejected(init: Omit<TaskErrorInit, 'index' | 'label' | 'attempt'>): void;
}

/** Spawns the command; reports through `hooks` exactly once. */
export function runCommand(task: CommandTask<unknown>, index: number, hooks: CommandHooks): SpawnedJob {
  const o = task.options;
  const t0 = performance.now();
  const maxBuffer = o.maxBuffer ?? DEFAULT_MAX_BUFFER;
  if (typeof task.file !== 'string') {
    hooks.rejected({ kind: 'invalid', detail: `its program must be a string, got ${formatValue(task.file)}` });
    return { child: undefined };
  }
  if (!Array.isArray(task.args)) {
    hooks.rejected({ kind: 'invalid', detail: `its arguments must be an array of strings, got ${formatValue(task.args)}` });
    return { child: undefined };
  }
  const notString = task.args.findIndex((arg) => typeof arg !== 'string');
  if (notString >= 0) {
    hooks.rejected({ kind: 'invalid', detail: `its arguments must be strings, got ${formatValue(task.args[notString])} at position ${notString}` });
    return { child: undefined };
  }
  let child: ChildProcess;
  let endLines = (): void => {};
  try {
    child = spawn(task.file, [...task.args], {
      cwd: o.cwd,
      env: o.env,
      shell: false,
      detached: true,
      stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
  } catch (error) {
    // Arguments Node refuses before it tries (an empty file name, a NUL byte in an argument), and
    // a working directory that is a file (ENOTDIR).
    const code = (error as NodeJS.ErrnoException).code;
    const detail =
      code === 'ENOTDIR' || code === 'ENOENT' || code === 'EACCES'
        ? spawnErrorDetail(task.file, o, error as NodeJS.ErrnoException)
        : `cannot run ${JSON.stringify(task.file)}: ${(error as Error).message}`;
    hooks.rejected({ kind: 'invalid', detail, remote: toRemoteErrorInfo(error) });
    return { child: undefined };
  }
  // The output is the result's, so it is never passed through. In capture mode it is split into
  // lines as well; otherwise only the tail of stderr is kept apart, for error messages (one
  // listener per stream: a run of short commands pays for each one it adds).
  let stderrTail: () => string;
  let tail: Tail | undefined;
  if (hooks.capture) {
    const tap = tapOutput(child.stdout, child.stderr, 'capture', child.pid, () => index, hooks.line, { marks: false });
    stderrTail = () => tap.stderrTail();
    endLines = () => tap.end();
  } else {
    tail = new Tail();
    const kept = tail;
    stderrTail = () => kept.bytes().toString('utf8');
    // A read error on a child's pipe is not the command's failure; its exit status tells that.
    child.stdout?.on('error', ignoreError);
    child.stderr?.on('error', ignoreError);
  }
  const out = new Kept(child.stdout, maxBuffer, o.encoding);
  const err = new Kept(child.stderr, maxBuffer, o.encoding, tail);
  if (o.input !== undefined && child.stdin) {
    child.stdin.on('error', () => {}); // the program may exit without reading its input
    child.stdin.end(o.input);
  }
  let settled = false;
  let markSettled!: () => void;
  const whenSettled = new Promise<void>((resolve) => (markSettled = resolve));
  let exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  let stopWaiting = (): void => {};
  const settle = () => {
    if (settled || !exit) return;
    settled = true;
    stopWaiting();
    markSettled();
    endLines();
    // Spawn to exit: not the time its pipes stayed open after (a background process holding them).
    const durationMs = exit.at - t0;
    const { code, signal } = exit;
    const overflow = out.overflow('stdout') ?? err.overflow('stderr');
    if (signal) {
      hooks.rejected({ kind: 'signaled', signal, exitCode: code, stderrTail: stderrTail(), pid: child.pid, durationMs });
    } else if (code !== 0 && o.reject !== false) {
      hooks.rejected({ kind: 'exited', exitCode: code, stderrTail: stderrTail(), pid: child.pid, durationMs });
    } else if (overflow !== undefined) {
      hooks.rejected({ kind: 'invalid', detail: overflow, exitCode: code, stderrTail: stderrTail(), pid: child.pid, durationMs });
    } else {
      const result: CommandResult<string | Buffer> = {
        exitCode: code,
        signal,
        stdout: out.value(),
        stderr: err.value(),
        durationMs,
        truncated: out.truncated || err.truncated,
      };
      hooks.fulfilled(result, durationMs, child.pid);
    }
  };
  child.once('error', (error: NodeJS.ErrnoException) => {
    if (settled || exit) return;
    settled = true;
    markSettled();
    if (child.pid === undefined) releaseUnstarted(child);
    hooks.rejected({
      kind: spawnFailureKind(error.code),
      detail: spawnErrorDetail(task.file, o, error),
      remote: { name: error.name, message: error.message, code: error.code },
      durationMs: performance.now() - t0,
    });
  });
  // Output still arriving after the exit is read to the end: the pipes are given up only once
  // they have been quiet for CLOSE_WAIT_MS (a grandchild that keeps them open), at most
  // CLOSE_WAIT_MAX_MS after the exit.
  child.once('exit', (code, signal) => {
    exit = { code, signal, at: performance.now() };
    stopWaiting = afterQuiet(() => out.chunks + err.chunks, CLOSE_WAIT_MS, CLOSE_WAIT_MAX_MS, () => {
      child.stdout?.destroy();
      child.stderr?.destroy();
      settle();
    });
  });
  child.once('close', () => settle());
  return { child, settled: whenSettled, stderrTail };
}

const ignoreError = (): void => {};

/**
 * Keeps what a stream writes, up to `maxBuffer` bytes, and counts the chunks; with `tail`, its
 * last 8 KiB too. Never more than one string (or one Buffer) can hold: past that the output is
 * an {@link Kept.overflow}, not a result.
 */
class Kept {
  /** Chunks read so far, kept or not. */
  chunks = 0;
  /** More than `maxBuffer` bytes came: the rest was dropped. */
  truncated = false;
  #kept: Buffer[] = [];
  #size = 0;
  /** Bytes read in all, kept or not. */
  #read = 0;
  /** What can be kept: `maxBuffer`, or less when it is larger than the result's type can hold. */
  readonly #limit: number;

  constructor(
    stream: Readable | null,
    readonly maxBuffer: number,
    readonly encoding: 'utf8' | 'buffer' | undefined,
    tail?: Tail,
  ) {
    this.#limit = Math.min(maxBuffer, encoding === 'buffer' ? bufferConstants.MAX_LENGTH : bufferConstants.MAX_STRING_LENGTH);
    stream?.on('data', (chunk: Buffer) => {
      this.chunks++;
      this.#read += chunk.length;
      tail?.push(chunk);
      const room = this.#limit - this.#size;
      if (room < chunk.length && this.#limit === this.maxBuffer) this.truncated = true;
      if (room <= 0) return;
      this.#kept.push(room >= chunk.length ? chunk : chunk.subarray(0, room));
      this.#size += Math.min(room, chunk.length);
    });
  }

  /**
   * Why the output cannot be the result, when `maxBuffer` let through more than a string (UTF-8
   * output: a string has at most 2^29 - 24 characters) or a Buffer can hold; undefined otherwise.
   */
  overflow(name: 'stdout' | 'stderr'): string | undefined {
    if (this.#limit === this.maxBuffer || this.#read <= this.#limit) return undefined;
    const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
    const what = this.encoding === 'buffer' ? 'a Buffer' : 'a string';
    const fix = this.encoding === 'buffer' ? '' : "encoding: 'buffer', or ";
    return (
      `its ${name} (${this.#read} bytes, ${mib(this.#read)}) is longer than ${what} can hold (${this.#limit} bytes, ${mib(this.#limit)}): ` +
      `pass ${fix}a maxBuffer of at most ${this.#limit} to keep only the start of it`
    );
  }

  value(): string | Buffer {
    const all = Buffer.concat(this.#kept, this.#size);
    if (this.encoding === 'buffer') return all;
    // Cut at maxBuffer: a character the cut split in two is dropped, not decoded as U+FFFD.
    return (this.truncated ? withoutCutCharacter(all) : all).toString('utf8');
  }
}

/** Why a command could not start, in the terms of its options: what the user has to change. */
function spawnErrorDetail(file: string, o: CommandTask<unknown>['options'], error: NodeJS.ErrnoException): string {
  const cwd = o.cwd instanceof URL ? fileURLToPath(o.cwd) : o.cwd;
  // A working directory that is missing is reported as ENOENT, one that is a file as ENOTDIR.
  if (cwd !== undefined && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) {
    const directory = isDirectory(cwd);
    if (directory === undefined) return `its working directory does not exist: ${cwd}`;
    if (!directory) return `its working directory is not a directory: ${cwd}`;
  }
  if (error.code === 'ENOENT') {
    const missingInterpreter = interpreterNotFound(file, cwd);
    if (missingInterpreter !== undefined) return missingInterpreter;
    const noPath = o.env !== undefined && !Object.keys(o.env).some((key) => key.toUpperCase() === 'PATH') && !file.includes('/');
    const hint = /\s/.test(file)
      ? noShellHint(file)
      : noPath
        ? '; its env has no PATH to look it up in (env replaces the environment: pass { ...process.env, ... } to extend it)'
        : '';
    return `command not found: ${file} (ENOENT)${hint}`;
  }
  if (error.code === 'EACCES' && isDirectory(file)) return `cannot run ${file}: it is a directory`;
  const shortage = shortageDetail(error.code);
  return `cannot run ${file}: ${shortage ?? error.message}`;
}

/**
 * How a process that could not be spawned fails: `invalid` when its program is missing or cannot
 * be run (the task's fault, for good: not retried), `spawn` otherwise (EMFILE, EAGAIN: the machine's).
 */
export function spawnFailureKind(code: string | undefined): 'invalid' | 'spawn' {
  return code === 'ENOENT' || code === 'EACCES' || code === 'ENOTDIR' ? 'invalid' : 'spawn';
}

/**
 * Why a process could not start for want of file descriptors or processes, and what to change;
 * undefined for any other error code. Said once the run has given up waiting for them.
 */
export function shortageDetail(code: string | undefined): string | undefined {
  if (code === 'EMFILE') {
    const limit = processLimit('Max open files');
    return `this process has too many open files (EMFILE${limit ? `; its limit, ulimit -n, is ${limit}` : ''}), and none of the run's processes is left to close some. Each running command or process holds two to four: lower the concurrency, or raise the limit`;
  }
  if (code === 'ENFILE') return 'the system has too many open files (ENFILE): lower the concurrency';
  if (code === 'EAGAIN') {
    const limit = processLimit('Max processes');
    return `no process can be started now (EAGAIN: the limit on processes${limit ? `, ulimit -u ${limit},` : ''} or on memory is reached), and none of the run's processes is left to end: lower the concurrency`;
  }
  return undefined;
}

/**
 * The text of /proc/self/limits, read when this module loads (about 30 µs): once every descriptor
 * is taken it could not be read any more, and that is when it is wanted. Empty where there is none.
 */
const limits = readLimits();

function readLimits(): string {
  try {
    return readFileSync('/proc/self/limits', 'latin1');
  } catch {
    return '';
  }
}

/** The soft limit named `name` in /proc/self/limits (`Max open files`), where there is one. */
function processLimit(name: string): string | undefined {
  return new RegExp(`^${name}\\s+(\\S+)`, 'm').exec(limits)?.[1];
}

/** `bytes` without a last UTF-8 character that lacks some of its bytes. */
function withoutCutCharacter(bytes: Buffer): Buffer {
  let lead = bytes.length - 1;
  while (lead >= 0 && bytes.length - lead < 4 && (bytes[lead]! & 0xc0) === 0x80) lead--; // continuation bytes
  if (lead < 0) return bytes;
  const first = bytes[lead]!;
  const length = first >= 0xf0 ? 4 : first >= 0xe0 ? 3 : first >= 0xc0 ? 2 : 1;
  return bytes.length - lead < length ? bytes.subarray(0, lead) : bytes;
}

/**
 * For a program that exists but cannot be run because what runs it is missing (ENOENT too): the
 * interpreter of its `#!` line (a script saved with CRLF line ends asks for `/bin/sh\r`).
 */
function interpreterNotFound(file: string, cwd: string | undefined): string | undefined {
  if (!file.includes('/')) return undefined;
  const path = resolve(cwd ?? '.', file);
  let head: string;
  try {
    const fd = openSync(path, 'r');
    try {
      const bytes = Buffer.alloc(256);
      head = bytes.subarray(0, readSync(fd, bytes, 0, 256, 0)).toString('latin1');
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined; // not there: plainly not found
  }
  if (!head.startsWith('#!')) return `cannot run ${file}: it exists, but what it needs to run (its loader or a library) was not found (ENOENT)`;
  // Not trimmed at its end: a '\r' there is the whole story.
  const interpreter = head.slice(2).split('\n', 1)[0]!.replace(/^[ \t]+/, '').split(/[ \t]/, 1)[0]!;
  const hint = interpreter.endsWith('\r') ? ': the script has Windows (CRLF) line ends' : '';
  return `cannot run ${file}: its interpreter ${JSON.stringify(interpreter)}, named on its #! line, was not found (ENOENT)${hint}`;
}

/** Whether `path` is a directory; undefined when it cannot be told (missing, no permission). */
function isDirectory(path: string): boolean | undefined {
  try {
    return statSync(path).isDirectory();
  } catch {
    return undefined;
  }
}

/** Shell syntax: what only a shell gives meaning to. */
const SHELL_SYNTAX = /[|&;<>()$`*?"'\\]|\[/;

/** For a command name with spaces in it: there is no shell to split it. */
function noShellHint(file: string): string {
  if (SHELL_SYNTAX.test(file)) {
    return `; commands run without a shell, so the name is the whole string: for shell syntax, run a shell, commandTask('sh', ['-c', ${JSON.stringify(file)}])`;
  }
  const [name, ...args] = file.trim().split(/\s+/);
  return `; commands run without a shell, so the name is the whole string: write commandTask(${JSON.stringify(name)}, ${JSON.stringify(args)})`;
}
