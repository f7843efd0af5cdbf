/**
 * Bad input gets a clear, typed error naming the problem and the task, never a hang and never a
 * lost result: the rows of the table in guides/reliability.md that other test files do not cover.
 */
import { ChildProcess, execFile, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { BehaviorSubject, EMPTY, of } from 'rxjs';
import { TaskError, commandTask, liveChildPids, moduleTask, processTask, schedule$, type TaskFailure } from '../src/index.js';
import { leftovers } from './fixtures/chaos-procs.js';
import { first, nextWarning, waitGone, work } from './helpers.js';

/** Runs one task in settle mode; returns its failure (or fails the test if it succeeded). */
async function failureOf(task: unknown): Promise<TaskError> {
  const run = schedule$([task as never], { settle: true, output: 'ignore' });
  const pids = new Set<number>();
  run.progress$.subscribe(() => run.pids().forEach((pid) => pids.add(pid)));
  const [outcome] = await run.toOrderedArray();
  if (outcome!.status !== 'rejected') throw new Error(`the task succeeded: ${String(outcome!.value)}`);
  if (leftovers(pids).length) throw new Error(`processes left: ${leftovers(pids).map((p) => p.pid).join(', ')}`);
  return (outcome as TaskFailure).reason;
}

test('a module with a syntax error: invalid, naming the module and the error', async (t) => {
  const error = await failureOf(moduleTask('data:text/javascript,export const x = ;', 'x'));
  t.true(error instanceof TaskError);
  t.is(error.kind, 'invalid');
  t.regex(error.message, /is invalid/);
  t.is(error.remote?.name, 'SyntaxError');
  t.regex(error.remote?.message ?? '', /^cannot load module data:text\/javascript,export const x = ;: Unexpected token/);
});

test('a module that throws while it loads: invalid, with its error', async (t) => {
  const error = await failureOf(moduleTask('data:text/javascript,throw new RangeError("no config")', 'x'));
  t.is(error.kind, 'invalid');
  t.is(error.remote?.name, 'RangeError');
  t.regex(error.remote?.message ?? '', /cannot load module .*: no config$/);
});

test('arguments that are not an array: invalid, saying what they are', async (t) => {
  const error = await failureOf(moduleTask(work, 'square', 5 as never));
  t.is(error.kind, 'invalid');
  t.is(error.message, 'task #0 (work.ts#square) is invalid: its arguments must be an array, got 5');
});

test('invalid per-task weight or retries: invalid, naming the option', async (t) => {
  const weight = await failureOf(moduleTask(work, 'square', [1], { weight: -1 }));
  t.is(weight.message, 'task #0 (work.ts#square) is invalid: task option weight must be a finite number >= 0, got -1');
  const retries = await failureOf(moduleTask(work, 'square', [1], { retries: -3 }));
  t.is(retries.message, 'task #0 (work.ts#square) is invalid: task option retries must be an integer >= 0, got -3');
});

test('a failing command is named by its command line, quoted as a shell would read it, and cut at 80 characters', async (t) => {
  const error = await failureOf(commandTask('sh', ['-c', "echo 'to stderr' >&2; exit 3"]));
  t.is(error.kind, 'exited');
  t.is(error.label, `sh -c 'echo '\\''to stderr'\\'' >&2; exit 3'`);
  t.is(error.message, `task #0 (sh -c 'echo '\\''to stderr'\\'' >&2; exit 3') exited with code 3`);
  t.is(error.stderrTail, 'to stderr\n');
  const long = await failureOf(commandTask('sh', ['-c', `exit 4; ${'x'.repeat(200)}`, 'an argument']));
  t.is(long.label, `sh -c 'exit 4; ${'x'.repeat(64)}…`);
  t.is(long.label!.length, 80);
  const odd = await failureOf(commandTask('sh', ['-c', 'echo one\nexit 5', '\u001b[31m']));
  t.is(odd.label, "sh -c $'echo one\\nexit 5' $'\\x1b[31m'", 'control characters are escaped as in bash, so the label stays on one line');
  const labelled = await failureOf(commandTask('false', [], { label: 'the check' }));
  t.is(labelled.message, 'task #0 (the check) exited with code 1', 'a label given replaces the command line');
});

/** True (the test passes, having nothing to check) where there is no `ulimit`. */
function noUlimit(t: ExecutionContext): boolean {
  if (process.platform !== 'win32') return false;
  t.pass('ulimit is POSIX');
  return true;
}

/** Runs test/fixtures/fd-shortage.ts under `ulimit -n 128` and returns what it printed. */
async function underFdLimit(...args: string[]) {
  const script = fileURLToPath(new URL('./fixtures/fd-shortage.ts', import.meta.url));
  const command = `ulimit -n 128 && exec "$0" --import tsx "$@"`;
  const { stdout } = await promisify(execFile)('sh', ['-c', command, process.execPath, script, ...args], { timeout: 60_000 });
  return JSON.parse(stdout) as {
    stdouts: string[];
    failures: Array<{ kind: string; message: string }>;
    mostRunning: number;
    strayPipes: number;
    pids: number[];
    live: number[];
  };
}

// Commands and process tasks wait alike. Before, for process tasks, a factory's process that
// could not be spawned (EMFILE: no pid, no IPC channel, its 'error' a tick later) was taken for
// no ChildProcess at all, and that error, unheard, crashed the program. For both, each spawn that
// failed half way (its pipes made, libuv's own not) left its pipes open for good: about 100 of the
// 128 descriptors by the end, and the last commands failed.
for (const { what, mode, count, strayMax } of [
  { what: 'commands', mode: 'crowd', count: 150, strayMax: 3 },
  { what: 'process tasks', mode: 'processes', count: 60, strayMax: 4 },
]) {
  test(`more ${what} at once than the limit on open files allows: they wait for descriptors instead of failing`, async (t) => {
    if (noUlimit(t)) return;
    const result = await underFdLimit(mode, String(count));
    t.deepEqual(result.failures, []);
    t.deepEqual(result.stdouts, Array.from({ length: count }, (_, i) => String(i)), 'every task ran, and its result is in its place');
    t.true(result.mostRunning < count, `at most ${result.mostRunning} ran at once: some had to wait`);
    t.true(result.strayPipes <= strayMax, `${result.strayPipes} pipes left open by failed spawns: at most one spawn's`);
    t.deepEqual(result.live, [], 'the run tracked nothing alive at its end');
    t.deepEqual(await waitGone(result.pids), [], 'every process is gone, by pid');
  });
}

test('more worker processes than the limit on open files allows: the tasks run on the workers that did start', async (t) => {
  if (noUlimit(t)) return;
  // Before, a worker that could not be forked never ended: its tasks waited for nothing, and the
  // program, with nothing left to wait on, exited in the middle of the run.
  const result = await underFdLimit('modules', '120', '40');
  t.deepEqual(result.failures, []);
  t.deepEqual(result.stdouts, Array.from({ length: 120 }, (_, i) => String(i)), 'every task ran once, and its result is in its place');
  t.deepEqual(result.live, []);
  t.deepEqual(await waitGone(result.pids), [], 'every worker is gone, by pid');
});

for (const { what, mode, label, message } of [
  {
    what: 'command',
    mode: 'starved',
    label: "sh -c 'sleep 0.2; echo 0'",
    message: 'cannot run sh: this process has too many open files (EMFILE; its limit, ulimit -n, is 128), and none of the run\'s processes is left to close some. Each running command or process holds two to four: lower the concurrency, or raise the limit',
  },
  {
    what: 'process task',
    mode: 'starved-processes',
    label: 'process',
    message: 'this process has too many open files (EMFILE; its limit, ulimit -n, is 128), and none of the run\'s processes is left to close some. Each running command or process holds two to four: lower the concurrency, or raise the limit',
  },
]) {
  test(`a ${what} that can get no descriptor, with none of the run's processes left to free one: it fails, saying what to change`, async (t) => {
    if (noUlimit(t)) return;
    const result = await underFdLimit(mode, '3');
    t.deepEqual(result.stdouts, []);
    t.deepEqual(
      result.failures.map((failure) => failure.kind),
      ['spawn', 'spawn', 'spawn'],
      'each of them fails; none is left waiting once the first has given up',
    );
    t.is(result.failures[0]!.message, `task #0 (${label}) could not start: ${message}`);
  });
}

test('a command whose working directory does not exist: invalid, saying so (not "command not found")', async (t) => {
  const error = await failureOf(commandTask('echo', ['x'], { cwd: '/nonexistent-aps-dir' }));
  t.is(error.kind, 'invalid');
  t.is(error.message, 'task #0 (echo x) is invalid: its working directory does not exist: /nonexistent-aps-dir');
});

test('a command that does not exist: invalid, ENOENT', async (t) => {
  const error = await failureOf(commandTask('no-such-program-aps', []));
  t.is(error.kind, 'invalid');
  t.is(error.remote?.code, 'ENOENT');
  t.regex(error.message, /command not found: no-such-program-aps \(ENOENT\)$/);
});

test('a command line in one string (as for a shell): invalid, saying there is no shell and how to write it', async (t) => {
  const error = await failureOf(commandTask('ls -la', []));
  t.is(error.kind, 'invalid');
  t.is(
    error.message,
    "task #0 ('ls -la') is invalid: command not found: ls -la (ENOENT); commands run without a shell, so the name is the whole string: write commandTask(\"ls\", [\"-la\"])",
  );
});

test('a command that is not executable, or a directory: invalid, EACCES, a directory named as one', async (t) => {
  const notExecutable = await failureOf(commandTask('/etc/passwd', []));
  t.is(notExecutable.kind, 'invalid');
  t.is(notExecutable.remote?.code, 'EACCES');
  t.regex(notExecutable.message, /cannot run \/etc\/passwd: spawn \/etc\/passwd EACCES$/);
  const directory = await failureOf(commandTask('/tmp', []));
  t.is(directory.kind, 'invalid');
  t.is(directory.remote?.code, 'EACCES');
  t.is(directory.message, 'task #0 (/tmp) is invalid: cannot run /tmp: it is a directory');
});

test('a script whose #! interpreter is missing (or carries a CRLF): invalid, naming the interpreter, not "command not found"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-interp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'crlf.sh'), '#!/bin/sh\r\necho hi\r\n', { mode: 0o755 });
  writeFileSync(join(dir, 'other.sh'), '#!/no/such/interpreter -x\necho hi\n', { mode: 0o755 });
  const crlf = await failureOf(commandTask(join(dir, 'crlf.sh'), []));
  t.is(crlf.kind, 'invalid');
  t.is(crlf.remote?.code, 'ENOENT');
  t.regex(crlf.message, /cannot run .*crlf\.sh: its interpreter "\/bin\/sh\\r", named on its #! line, was not found \(ENOENT\): the script has Windows \(CRLF\) line ends$/);
  const other = await failureOf(commandTask('./other.sh', [], { cwd: dir }));
  t.regex(other.message, /cannot run \.\/other\.sh: its interpreter "\/no\/such\/interpreter", named on its #! line, was not found \(ENOENT\)$/);
});

test('a command whose working directory is a file: invalid, saying so', async (t) => {
  const error = await failureOf(commandTask('pwd', [], { cwd: '/etc/passwd' }));
  t.is(error.kind, 'invalid');
  t.is(error.message, 'task #0 (pwd) is invalid: its working directory is not a directory: /etc/passwd');
});

test('a shell command line in one string: invalid, saying to run it with sh -c, not to split it', async (t) => {
  const error = await failureOf(commandTask('ls | wc -l', []));
  t.is(error.kind, 'invalid');
  t.is(
    error.message,
    `task #0 ('ls | wc -l') is invalid: command not found: ls | wc -l (ENOENT); commands run without a shell, so the name is the whole string: for shell syntax, run a shell, commandTask('sh', ['-c', "ls | wc -l"])`,
  );
});

test('a program not in the default path, with an env that has no PATH: the message says env replaces the environment', async (t) => {
  const error = await failureOf(commandTask('no-such-program-aps', [], { env: { FOO: 'bar' } }));
  t.is(error.kind, 'invalid');
  t.regex(error.message, /command not found: no-such-program-aps \(ENOENT\); its env has no PATH to look it up in \(env replaces the environment: pass \{ \.\.\.process\.env, \.\.\. \} to extend it\)$/);
});

test('a command with an empty name: invalid, not an error of the whole run', async (t) => {
  const error = await failureOf(commandTask('', []));
  t.is(error.kind, 'invalid');
  t.regex(error.message, /^task #0 \(''\) is invalid: cannot run "": .*cannot be empty/);
});

test('a command whose input is neither a string nor bytes: invalid, and no process is started', async (t) => {
  const error = await failureOf(commandTask('cat', [], { input: { not: 'bytes' } as never }));
  t.is(error.kind, 'invalid');
  t.is(error.message, 'task #0 (cat) is invalid: task option input must be a string or a Uint8Array, got an object (Object)');
});

test("a process task whose factory throws: invalid, with the factory's error", async (t) => {
  const error = await failureOf(
    processTask(() => {
      throw new TypeError('bad factory');
    }),
  );
  t.is(error.kind, 'invalid');
  t.is(error.message, 'task #0 (process) is invalid: its process factory threw TypeError: bad factory');
  t.is(error.remote?.name, 'TypeError');
  t.is(error.remote?.message, 'bad factory');
});

test('a process task whose program does not exist: invalid, ENOENT, with or without an IPC channel (the program goes on)', async (t) => {
  // Before, a process whose spawn failed (no pid, not even as a property) was taken for no
  // ChildProcess at all, and its 'error', a tick later and unheard, crashed the whole program.
  for (const stdio of [['ignore', 'pipe', 'pipe', 'ipc'], undefined] as const) {
    const error = await failureOf(processTask(() => spawn('no-such-program-aps', [], stdio ? { stdio: [...stdio] } : {})));
    t.is(error.kind, 'invalid');
    t.is(error.remote?.code, 'ENOENT');
    t.is(error.message, 'task #0 (process) is invalid: its process could not start: spawn no-such-program-aps ENOENT');
  }
});

test('a process task whose factory returns something else: invalid, saying what it returned', async (t) => {
  const error = await failureOf(processTask(() => 42 as never));
  t.is(error.message, 'task #0 (process) is invalid: its factory must return a ChildProcess, returned 42');
});

test('an async process-task factory: invalid, saying the factory must be synchronous, and the process it resolves to is killed', async (t) => {
  let started: ChildProcess | undefined;
  const factory = async () => (started = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'], detached: true }));
  const error = await failureOf(processTask(factory as never));
  t.is(error.kind, 'invalid');
  t.is(error.message, 'task #0 (process factory) is invalid: its factory must return a ChildProcess, returned a Promise: the factory must be synchronous (the process it resolves to is killed)');
  t.truthy(started?.pid);
  t.deepEqual(await waitGone([started!.pid!]), [], 'the process it made is gone: its IPC channel no longer holds this program open');
});

test("a process task whose factory returns execa's subprocess (a ChildProcess that is also a promise): it runs as a process, and is killed when it has no channel", async (t) => {
  const { execa, execaNode } = await import('execa');
  const script = fileURLToPath(new URL('./fixtures/send-result.ts', import.meta.url));
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => void process.off('unhandledRejection', onUnhandled));

  // With a channel (execaNode gives one): its first message is the result.
  let withIpc: ChildProcess | undefined;
  const [value] = await schedule$([processTask(() => (withIpc = execaNode(script, ['21'], { nodeOptions: ['--import=tsx'], detached: true })))]).toOrderedArray();
  t.is(value, 42);
  // Without: invalid, and killed (before, it was rejected as a Promise and left running).
  let bare: ChildProcess | undefined;
  const error = await failureOf(processTask(() => (bare = execa('sleep', ['30'], { detached: true }))));
  t.is(error.kind, 'invalid');
  t.regex(error.message, /its process has no IPC channel/);
  t.deepEqual(await waitGone([withIpc!.pid!, bare!.pid!]), []);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(unhandled, [], "execa's promise, rejected by the kill, is handled");
});

test('a process-task factory that returns the same live process to several tasks: the first task has it, the others are invalid', async (t) => {
  // Before, the process's one message was every task's result.
  const script = fileURLToPath(new URL('./fixtures/send-result.ts', import.meta.url));
  let shared: ChildProcess | undefined;
  const factory = () => (shared ??= fork(script, ['5'], { execArgv: ['--import=tsx'], detached: true }));
  const outcomes = await schedule$([0, 1, 2].map(() => processTask<number>(factory)), { concurrency: 3, settle: true }).toOrderedArray();
  t.like(outcomes[0], { status: 'fulfilled', value: 10 });
  for (const outcome of outcomes.slice(1)) {
    t.is(outcome.status, 'rejected');
    t.is((outcome as TaskFailure).reason.kind, 'invalid');
    t.regex((outcome as TaskFailure).reason.message, /its factory returned a process it had returned before, for this task or another; the factory must start a new process each time it is called$/);
  }
  t.deepEqual(await waitGone([shared!.pid!]), []);
});

test('a process task whose factory returns a process that has already ended: invalid at once (its exit would never come), its pid not kept', async (t) => {
  const ended = spawn(process.execPath, ['-e', ''], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  await once(ended, 'exit');
  const error = await failureOf(processTask(() => ended));
  t.is(error.kind, 'invalid');
  t.is(
    error.message,
    'task #0 (process) is invalid: its factory returned a process that had already ended (it exited with code 0); the factory must start a new process each time it is called',
  );
  t.false(liveChildPids().includes(ended.pid!), 'a pid that may be reused is not kept for a kill on exit');

  // A factory that made its process once, with a retry: the retry gets the same, ended, process.
  const made = spawn(process.execPath, ['-e', ''], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  const [outcome] = await schedule$([processTask(() => made, { retries: 1 })], { settle: true }).toOrderedArray();
  t.is((outcome as TaskFailure).reason.kind, 'invalid');
  t.regex((outcome as TaskFailure).reason.message, /had already ended \(it exited with code 0\)/);

  // One whose spawn failed before (its 'error' long gone), and one never spawned: neither would
  // ever say anything more, and the run would wait for them.
  const failed = spawn('no-such-program-aps', [], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  await once(failed, 'error');
  const failedError = await failureOf(processTask(() => failed));
  t.is(failedError.kind, 'invalid');
  t.regex(failedError.message, /had already ended \(it could not start, ENOENT\); the factory must start a new process each time it is called$/);
  const unspawned = await failureOf(processTask(() => new ChildProcess()));
  t.is(unspawned.message, 'task #0 (process) is invalid: its factory must return a ChildProcess, returned an object (ChildProcess)');
});

test('a process task that closes its IPC channel and goes on: an error on a later send is not a failure to start; its exit decides, and it is tracked until then', async (t) => {
  let child: ChildProcess | undefined;
  let errored: () => void;
  const error = new Promise<void>((resolve) => (errored = resolve));
  const run = schedule$(
    [
      processTask(() => {
        // It runs until the test tells it to end (SIGUSR2): no timing to race with.
        const program = "process.disconnect(); process.on('SIGUSR2', () => process.exit(0)); setInterval(() => {}, 1000);";
        child = spawn(process.execPath, ['-e', program], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'], detached: true });
        // Node emits 'error' (the channel is closed) for a send without a callback.
        child.once('disconnect', () => child!.send('late'));
        child.once('error', () => errored());
        return child;
      }),
    ],
    { settle: true },
  );
  const done = run.toOrderedArray();
  await error;
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.true(liveChildPids().includes(child!.pid!), 'still tracked after the error, while it runs');
  child!.kill('SIGUSR2');
  const [outcome] = await done;
  t.is((outcome as TaskFailure).reason.kind, 'exited');
  t.regex((outcome as TaskFailure).reason.message, /it sent no result/);
  t.deepEqual(await waitGone([child!.pid!]), []);
});

test("a task source whose cleanup throws as a failed run closes it: the run still fails with its task's error, and the program goes on", async (t) => {
  const warned = nextWarning(/cleanup in the generator failed/);
  function* tasks() {
    try {
      yield moduleTask(work, 'fail', ['first task failed']);
      for (;;) yield moduleTask(work, 'sleepThen', [50, 1]);
    } finally {
      throw new Error('cleanup in the generator failed');
    }
  }
  const run = schedule$(tasks(), { concurrency: 1 });
  await t.throwsAsync(run.toOrderedArray(), { instanceOf: TaskError, message: /first task failed/ });
  t.is((await warned).message, 'the task source threw while it was being closed (its return() or teardown): Error: cleanup in the generator failed');
});

test('a process task has killTimeout to finish up after its result, mid-run and as the last task, before it is stopped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-finish-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Sends its result, then spends 300 ms finishing up; says in a file how it ended.
  const program = (name: string) => `
    const { writeFileSync } = require('node:fs');
    const path = ${JSON.stringify(join(dir, name))};
    process.on('SIGTERM', () => { writeFileSync(path, 'SIGTERM'); process.exit(1); });
    process.send('${name}');
    setTimeout(() => { writeFileSync(path, 'finished'); process.exit(0); }, 300);
  `;
  const task = (name: string) => processTask(() => spawn(process.execPath, ['-e', program(name)], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'], detached: true }));
  const values = await schedule$([task('first'), task('last')], { concurrency: 1, killTimeout: 3000 }).toOrderedArray();
  t.deepEqual(values, ['first', 'last']);
  t.is(readFileSync(join(dir, 'first'), 'utf8'), 'finished', 'mid-run');
  t.is(readFileSync(join(dir, 'last'), 'utf8'), 'finished', 'as the run ends');
});

test('a process task without an IPC channel: invalid, and its process is killed', async (t) => {
  let pid = 0;
  const error = await failureOf(
    processTask(() => {
      const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
      pid = child.pid!;
      return child;
    }),
  );
  t.is(error.kind, 'invalid');
  t.regex(error.message, /has no IPC channel; create it with fork\(\), or spawn\(\) with 'ipc' in stdio/);
  for (let i = 0; i < 100 && leftovers([pid]).length; i++) await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(leftovers([pid]), []);
});

test('a concurrency Observable that errors: the run errors with that error, its processes gone; one that completes keeps its last limit, or errors if it had none', async (t) => {
  const failing$ = new BehaviorSubject(2);
  const failing = schedule$([moduleTask(work, 'sleepThen', [5000, 1]), moduleTask(work, 'sleepThen', [5000, 2])], { concurrency: failing$ });
  const done = failing.toOrderedArray();
  const pids = (await first(failing.progress$, (p) => p.running === 2), failing.pids());
  t.is(pids.length, 2);
  failing$.error(new Error('slider broke'));
  await t.throwsAsync(done, { message: 'slider broke' });
  t.deepEqual(await waitGone(pids), [], 'the tasks running when it errored are killed');

  // Completing after a limit keeps that limit.
  const tasks = () => [1, 2, 3, 4].map((n) => moduleTask(work, 'square', [n]));
  t.deepEqual(await schedule$(tasks(), { concurrency: of(2) }).toOrderedArray(), [1, 4, 9, 16]);
  // Completing before any limit would hold the tasks forever: an error instead (this once hung).
  const completed$ = new BehaviorSubject(2);
  completed$.complete();
  for (const concurrency of [EMPTY, completed$]) {
    await t.throwsAsync(schedule$(tasks(), { concurrency }).toOrderedArray(), {
      instanceOf: RangeError,
      message: /^the concurrency Observable completed without emitting a limit/,
    });
  }
});

test('a concurrency Observable that completes at 0 errors the run with a RangeError: the pause could never end', async (t) => {
  // Before, the run stayed paused with nothing left to resume it: a hang.
  await t.throwsAsync(schedule$([moduleTask(work, 'square', [3])], { concurrency: of(0) }).toOrderedArray(), {
    instanceOf: RangeError,
    message: 'the concurrency Observable completed at 0 (paused): the run could never resume',
  });
  // Paused while a task runs, then completed: the running task is stopped with the run.
  const limit$ = new BehaviorSubject(1);
  const run = schedule$([moduleTask(work, 'sleepThen', [5000, 1]), moduleTask(work, 'square', [2])], { concurrency: limit$ });
  const done = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 1);
  const pids = run.pids();
  limit$.next(0);
  limit$.complete();
  await t.throwsAsync(done, { instanceOf: RangeError, message: /completed at 0/ });
  t.deepEqual(await waitGone(pids), []);
  // Completing at 'auto' or at a number keeps that limit.
  const tasks = [1, 2, 3].map((n) => moduleTask(work, 'square', [n]));
  t.deepEqual(await schedule$(tasks, { concurrency: of(0, 'auto' as const) }).toOrderedArray(), [1, 4, 9]);
  t.deepEqual(await schedule$(tasks, { concurrency: of(0, 2) }).toOrderedArray(), [1, 4, 9]);
});

test('a concurrency Observable that emits a fraction: the run errors with a RangeError naming the value (0 pauses, see schedule.test.ts)', async (t) => {
  const limit$ = new BehaviorSubject(2);
  const run = schedule$([moduleTask(work, 'sleepThen', [200, 1])], { concurrency: limit$ });
  const done = run.toOrderedArray();
  limit$.next(2.5);
  await t.throwsAsync(done, { instanceOf: RangeError, message: "the concurrency limit must be a positive integer, 0 (paused), Infinity or 'auto', got 2.5" });
  t.deepEqual(run.pids(), []);
});
