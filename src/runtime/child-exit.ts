/**
 * Waiting for a child that has exited to be really done: its IPC messages delivered and its
 * output read, so nothing it sent before exiting is lost.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';

/** How long output pipes may stay open after a worker exited (a process it started holds them). */
const OUTPUT_CLOSE_WAIT_MS = 200;

/**
 * Closes the pipes of a ChildProcess whose spawn failed (ENOENT, EACCES): Node leaves them open
 * until the object is garbage-collected, and many processes that cannot start would hold their
 * file descriptors meanwhile. (After EMFILE or ENFILE Node makes no streams, and what libuv opened
 * cannot be reached from here: see hasSpawnHeadroom in local-runtime.ts.)
 */
export function releaseUnstarted(child: ChildProcess): void {
  for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.destroy();
}

/** Runs `then` once the child's IPC channel is closed (at once if it already is). */
export function afterChannelClosed(child: ChildProcess, then: () => void): void {
  if (child.connected) child.once('disconnect', then);
  else then();
}

/**
 * Runs `then` once the child's stdout and stderr are read to the end, or after a short wait.
 * Pipes still open then are held by a process the child started (a daemon): they are still read
 * while the program runs, but no longer keep it running.
 */
export function afterOutputClosed(child: ChildProcess, then: () => void): void {
  const open = [child.stdout, child.stderr].filter((s) => s && !s.closed);
  if (open.length === 0) return then();
  let left = open.length;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    then();
  };
  const timer = setTimeout(() => {
    for (const stream of open) if (!stream!.closed) (stream as Partial<Socket>).unref?.();
    finish();
  }, OUTPUT_CLOSE_WAIT_MS);
  for (const stream of open) stream!.once('close', () => --left === 0 && finish());
}

/** Resolves once `child` has exited (true), or after `ms` (false), whichever comes first. */
export function exitWithin(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
