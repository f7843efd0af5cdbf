/**
 * Termination: SIGTERM to a process group, SIGKILL after a grace period, and a check that the
 * whole group is gone, not only its leader.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';

/** How a termination ended. */
export interface KillReport {
  /** True when SIGKILL was needed. */
  forced: boolean;
}

const GROUP_POLL_MS = 10;

/** Sends `signal` to the process group led by `pid`, else to `pid` alone. False when nothing was there. */
export function signalTree(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    try {
      process.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}

/** True while any process of the group led by `pid` (or `pid` itself) is alive. */
export function treeAlive(pid: number): boolean {
  return signalTree(pid, 0 as unknown as NodeJS.Signals);
}

/** True while the process group led by `pid` has a process in it. */
function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    // EPERM: there is someone, but not ours to signal; let the full path decide.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Terminates `child` and every process in its process group: SIGTERM, then SIGKILL once
 * `graceMs` have passed without the group emptying. Resolves when the child has exited and no
 * process of its group is left (a grandchild that moved to a group of its own is out of reach).
 */
export function killTree(child: ChildProcess, graceMs: number): Promise<KillReport> {
  const pid = child.pid;
  if (pid === undefined) return Promise.resolve({ forced: false });
  const exited = child.exitCode !== null || child.signalCode !== null;
  // The usual case after a task ended: the leader is reaped and left no one in its group. One
  // probe says so, with no signal sent and no timer set (the pid alone, reaped, is no one's).
  if (exited && !groupAlive(pid)) return Promise.resolve({ forced: false });
  return new Promise((resolve) => {
    let forced = false;
    let leaderGone = exited;
    let poll: NodeJS.Timeout | undefined;
    const onExit = () => {
      leaderGone = true;
      check();
    };
    const finish = () => {
      clearTimeout(force);
      clearTimeout(poll);
      child.off('exit', onExit);
      resolve({ forced });
    };
    const check = () => {
      clearTimeout(poll);
      if (!leaderGone) return;
      if (!treeAlive(pid)) return finish();
      poll = setTimeout(check, GROUP_POLL_MS);
    };
    const force = setTimeout(() => {
      forced = true;
      signalTree(pid, 'SIGKILL');
      check();
    }, graceMs);
    if (!exited) child.once('exit', onExit);
    if (!signalTree(pid, 'SIGTERM') && exited) return finish();
    if (graceMs === 0) {
      forced = true;
      signalTree(pid, 'SIGKILL');
    }
    check();
  });
}
