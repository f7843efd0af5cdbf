/**
 * No child outlives its parent: every live child process is registered here, and killed
 * (with its process group) when the parent exits, is interrupted, or is terminated.
 *
 * Workers also exit by themselves when their IPC channel closes, which covers a parent killed
 * with SIGKILL; a command has no IPC channel, so only what runs here protects it.
 *
 * @module
 */
import { signalTree } from './kill.js';

const live = new Set<number>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let installed = false;

/** Registers a child's pid; returns the function that unregisters it. */
export function trackChild(pid: number): () => void {
  live.add(pid);
  if (!installed) install();
  return () => {
    live.delete(pid);
    if (live.size === 0) uninstall();
  };
}

/**
 * The pids of every child process the library has alive right now, across all runs: a check
 * that nothing was left behind.
 *
 * @example
 * ```ts
 * import { liveChildPids, schedule$, commandTask } from 'async-process-scheduler';
 * await schedule$([commandTask('true')]).toOrderedArray();
 * console.log(liveChildPids()); // []
 * ```
 * @returns The pids.
 */
export function liveChildPids(): number[] {
  return [...live];
}

function killAll(): void {
  for (const pid of live) signalTree(pid, 'SIGKILL');
  live.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  killAll();
  uninstall();
  // Our listener suppressed Node's default action. Re-raise the signal so the process ends as
  // it would have, unless the application listens for it itself.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function install(): void {
  installed = true;
  process.on('exit', killAll);
  for (const signal of SIGNALS) process.on(signal, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', killAll);
  for (const signal of SIGNALS) process.off(signal, onSignal);
}
