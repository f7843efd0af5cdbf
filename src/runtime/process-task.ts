/**
 * Runs a {@link processTask}: the user's own child process, whose first IPC message is its result.
 *
 * @module
 */
import { ChildProcess } from 'node:child_process';
import { getSystemErrorName } from 'node:util';
import { formatValue, toRemoteErrorInfo, type TaskErrorInit } from '../errors.js';
import type { OutputMode } from '../options.js';
import type { ProcessTask } from '../task.js';
import { killTree } from './kill.js';
import { tapOutput, type OutputLine } from './output.js';
import { afterChannelClosed, afterOutputClosed, exitWithin, releaseUnstarted } from './child-exit.js';
import { shortageDetail, spawnFailureKind } from './command.js';
import { isTagged, TAG } from './protocol.js';
import { isThenable } from '../thenable.js';

export interface ProcessHooks {
  output: OutputMode;
  killTimeout: number;
  line(line: OutputLine): void;
  progress(value: unknown): void;
  fulfilled(value: unknown, durationMs: number, pid: number | undefined): void;
  rejected(init: Omit<TaskErrorInit, 'index' | 'label' | 'attempt'>): void;
}

/** A process task's process, and the tail of what it wrote to stderr so far (for a timeout's error). */
export interface StartedProcess {
  child: ChildProcess;
  stderrTail: () => string;
}

/**
 * Every process a task has been given. A factory that returns one of them again (the same fork
 * for every task, say) would have its one message taken as the result of every task it serves.
 */
const given = new WeakSet<ChildProcess>();

/**
 * Calls the factory and watches the process. Returns it, or undefined when the factory failed
 * (already reported through `hooks.rejected`).
 */
export function runProcessTask(task: ProcessTask<unknown>, index: number, hooks: ProcessHooks): StartedProcess | undefined {
  const t0 = performance.now();
  if (typeof task.factory !== 'function') {
    hooks.rejected({ kind: 'invalid', detail: `its factory must be a function that returns a ChildProcess, got ${formatValue(task.factory)}` });
    return undefined;
  }
  let child: ChildProcess;
  try {
    child = task.factory();
  } catch (error) {
    const remote = toRemoteErrorInfo(error);
    hooks.rejected({ kind: 'invalid', detail: `its process factory threw ${remote.name}: ${remote.message}`, remote });
    return undefined;
  }
  if (child instanceof ChildProcess && isThenable(child)) {
    // A process that is also a promise of its end (execa's subprocess): the process is what
    // counts. Its promise rejects when the process is killed, which unhandled would end the
    // program; the factory's caller gave it up, so it is handled here.
    (child as PromiseLike<unknown>).then(undefined, () => {});
  } else if (isThenable(child)) {
    // An async factory: the process it resolves to would run untracked, and its IPC channel
    // would hold this program open. It is killed as soon as it comes.
    void Promise.resolve(child).then(
      (late: unknown) => {
        if (late && typeof late === 'object' && typeof (late as ChildProcess).pid === 'number') void killTree(late as ChildProcess, 0);
      },
      () => {},
    );
    hooks.rejected({
      kind: 'invalid',
      detail: 'its factory must return a ChildProcess, returned a Promise: the factory must be synchronous (the process it resolves to is killed)',
    });
    return undefined;
  }
  // A process whose spawn failed (EMFILE, say) has no pid, not even as a property, and reports
  // why in an 'error' a tick later: it is a ChildProcess all the same, and that error is awaited.
  // One that was never spawned (new ChildProcess()) would report nothing, ever.
  if (
    !child ||
    typeof child !== 'object' ||
    typeof child.on !== 'function' ||
    !(child instanceof ChildProcess ? child.spawnfile : 'pid' in child)
  ) {
    hooks.rejected({ kind: 'invalid', detail: `its factory must return a ChildProcess, returned ${formatValue(child)}` });
    return undefined;
  }
  const started = child.pid !== undefined;
  if (child.exitCode !== null || child.signalCode !== null) {
    // Its 'exit' (or, for a spawn that failed, its 'error') has been emitted already, and would
    // never come again: a factory that returns the same process every time, say, on a retry. Its
    // pid may belong to someone else by now.
    const how = !started
      ? `could not start, ${errorName(child.exitCode)}`
      : child.signalCode
        ? `was killed by ${child.signalCode}`
        : `exited with code ${child.exitCode}`;
    hooks.rejected({
      kind: 'invalid',
      detail: `its factory returned a process that had already ended (it ${how}); the factory must start a new process each time it is called`,
      pid: child.pid,
    });
    return undefined;
  }
  if (given.has(child)) {
    // Not killed: it is another task's (or was), and that task decides.
    hooks.rejected({
      kind: 'invalid',
      detail: 'its factory returned a process it had returned before, for this task or another; the factory must start a new process each time it is called',
      pid: child.pid,
    });
    return undefined;
  }
  given.add(child);
  if (started && typeof child.send !== 'function') {
    // No channel: the result could never arrive. Do not leave the process behind.
    void killTree(child, hooks.killTimeout);
    hooks.rejected({
      kind: 'invalid',
      detail: "its process has no IPC channel; create it with fork(), or spawn() with 'ipc' in stdio",
      pid: child.pid,
    });
    return undefined;
  }
  const tap = tapOutput(child.stdout, child.stderr, hooks.output, child.pid, () => index, hooks.line);
  let settled = false;
  // Stays attached once the task is settled, to ignore what comes later: messages read together
  // with the result are emitted on the next ticks, after the channel is closed below, and Node
  // throws from its own code (an uncaught exception) for a message no listener takes then.
  const onMessage = (message: unknown) => {
    if (settled) return;
    if (isTagged(message)) {
      if (message[TAG] === 'progress') hooks.progress((message as { value?: unknown }).value);
      return;
    }
    settled = true;
    hooks.fulfilled(message, performance.now() - t0, child.pid);
    // Its work is done: it has killTimeout to finish up and exit on its own, and is stopped then.
    if (child.connected) child.disconnect();
    void exitWithin(child, hooks.killTimeout).then((exited) => {
      if (!exited) void killTree(child, hooks.killTimeout);
    });
  };
  child.on('message', onMessage);
  // Every 'error' is listened to, or a second one would be thrown. Once the process has a pid it
  // started: a later error (a send on a channel the process closed) is not a failure to start,
  // and its exit decides the outcome.
  child.on('error', (error: NodeJS.ErrnoException) => {
    if (settled || child.pid !== undefined) return;
    settled = true;
    releaseUnstarted(child);
    const shortage = shortageDetail(error.code);
    const kind = spawnFailureKind(error.code);
    hooks.rejected({
      kind,
      // Kind spawn already says "could not start".
      detail: `${kind === 'invalid' ? 'its process could not start: ' : ''}${error.message}${shortage ? `: ${shortage}` : ''}`,
      remote: toRemoteErrorInfo(error),
    });
  });
  child.once('exit', (code, signal) => {
    // A process it started that holds its output pipes must not keep the program running.
    afterOutputClosed(child, () => {});
    // Messages still in the channel are delivered before it reports 'disconnect': decide after that.
    afterChannelClosed(child, () => {
      tap.end();
      if (settled) return;
      settled = true;
      const base = { exitCode: code, signal, stderrTail: tap.stderrTail(), pid: child.pid, durationMs: performance.now() - t0 };
      if (signal) hooks.rejected({ ...base, kind: 'signaled' });
      else hooks.rejected({ ...base, kind: 'exited', detail: 'it sent no result' });
    });
  });
  return { child, stderrTail: () => tap.stderrTail() };
}

/** ENOENT for -2: what a ChildProcess whose spawn failed keeps as its exit code. */
function errorName(code: number | null): string {
  try {
    return getSystemErrorName(code as number);
  } catch {
    return String(code);
  }
}
