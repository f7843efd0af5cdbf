/**
 * Termination: SIGTERM to a process group, SIGKILL after a grace period, and a check that the
 * whole group is gone, not only its leader.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';

/** How a termination ended. */
export interface KillReport {
  /** True when SIGKILL was needed. */
  forced: boolean;
}

const GROUP_POLL_MS = 10;
/** The least time to wait for dead processes of a group (zombies) to be reaped by their parent. */
const ZOMBIE_WAIT_MIN_MS = 3000;
/** How often a dying group is scanned for zombies (ms). */
const ZOMBIE_SCAN_MS = 100;

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

/**
 * True while any process of the group led by `pid` (or `pid` itself) is alive. A zombie does not
 * count: signal 0 still reaches one until its parent reaps it, and an orphan's new parent (init,
 * or a container's PID 1 that never reaps) may take seconds or forever; on Linux, /proc tells.
 */
export function treeAlive(pid: number): boolean {
  return signalTree(pid, 0 as unknown as NodeJS.Signals) && anyLiving(pid) !== false;
}

/**
 * Whether `pid`, or a member of the group it leads, is a process that is not a zombie, from
 * /proc ({@link living}, `killed` included); undefined where there is no /proc. Asked only once
 * signal 0 says someone is there.
 */
function anyLiving(pid: number, killed = false): boolean | undefined {
  if (process.platform !== 'linux') return undefined;
  const own = procStat(pid);
  if (own && living(own, pid, killed)) return true;
  return livingInGroup(pid, killed);
}

/**
 * False when /proc says the process has ended (a zombie, or no such process), even if its parent
 * has not seen its exit yet; true while it runs; undefined where there is no /proc.
 */
export function runsNow(pid: number): boolean | undefined {
  if (!hasProc()) return undefined;
  const own = procStat(pid);
  // Not living(): asked of workers, whose main thread ends only with them, and right after a kill
  // a dying worker's threads may not be on their way out yet.
  return own !== undefined && own.state !== 'Z' && own.state !== 'X';
}

let procReadable: boolean | undefined;

/** Whether this process can read /proc (Linux, and not a chroot or sandbox without it). */
function hasProc(): boolean {
  return (procReadable ??= process.platform === 'linux' && procStat(process.pid) !== undefined);
}

/** What {@link procStat} reads of a process. */
interface ProcStat {
  /** One letter: R running, S sleeping, Z zombie, X dead, and so on. */
  state: string;
  pgrp: number;
  session: number;
  /** How many threads it has (NaN when the line was cut short). */
  threads: number;
  /** The kernel's flags for it (PF_*): of a thread, when read from /proc/<pid>/task/<tid>/stat. */
  flags: number;
}

/**
 * State, process group, session, threads and flags of a process, from /proc/<pid>/stat (or of a
 * thread, given `<pid>/task/<tid>`); undefined where there is no /proc or no such process.
 */
function procStat(pid: number | string): ProcStat | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : parseStat(stat);
}

/**
 * Reads a /proc/<pid>/stat line. The command name may hold spaces and parentheses: the fields
 * are counted after the last ')' (the state is field 3, the flags field 9, the number of threads
 * field 20).
 */
function parseStat(stat: string): ProcStat {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ', 18);
  return { state: fields[0] ?? '', pgrp: Number(fields[2]), session: Number(fields[3]), flags: Number(fields[6]), threads: Number(fields[17]) };
}

/** The kernel's flag for a thread on its way out (include/linux/sched.h). */
const PF_EXITING = 0x4;

/**
 * Whether the process `pid`, read as `stat`, is alive: neither dead nor a zombie (exited, not yet
 * reaped). A process whose main thread has exited while another thread runs reads as a zombie
 * too, with more than one thread: it is alive while one of its threads is neither a zombie nor on
 * its way out (a process being killed reads the same for a moment, while its threads exit), unless
 * `killed`: its group has been sent SIGKILL.
 */
function living(stat: ProcStat, pid: number | string, killed = false): boolean {
  if (stat.state === 'X') return false;
  if (stat.state !== 'Z') return true;
  // SIGKILLed with its group: every thread of it is on its way out, even one stuck where it cannot
  // act on it yet (a read from a hung NFS mount), which would otherwise be waited for.
  if (killed || !(stat.threads > 1)) return false;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return false;
  }
  for (const tid of tids) {
    const thread = procStat(`${pid}/task/${tid}`);
    if (thread && thread.state !== 'Z' && thread.state !== 'X' && (thread.flags & PF_EXITING) === 0) return true;
  }
  return false;
}

/**
 * The start of a file of /proc (up to 512 bytes), or undefined when it cannot be read. Into one
 * buffer, not with readFileSync: no fstat, no allocation, and a third of readFileSync's cost in a
 * process that has not read a file yet (a worker looking at its session as it leaves).
 */
function readProc(path: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    return procBuffer.toString('latin1', 0, readSync(fd, procBuffer, 0, procBuffer.length, 0));
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Enough for what is read of a stat: its first 20 fields, after a command name of at most 64 bytes. */
const procBuffer = Buffer.allocUnsafe(512);

/** Living processes by session, then by process group, from one scan of /proc: shared by the kills of one tick. */
let sessionsScan: Map<number, Set<number>> | undefined;

/**
 * The process groups, other than its own, of the living processes in the session that `sid`
 * leads: descendants that moved to a group of their own without leaving the session, as
 * coreutils `timeout` and a shell's job control do. Every child this library starts leads a
 * session (`detached`), so they are its own; a process that started a session of its own
 * (`setsid`) is out of reach. Empty where there is no /proc, and for a pid that leads no session.
 */
export function strayGroups(sid: number): number[] {
  if (!hasProc()) return [];
  if (!sessionsScan) {
    // Kills come in bursts (a run's workers, a terminated run's commands): one scan serves a tick.
    sessionsScan = sessionGroupsSince(0);
    setImmediate(() => (sessionsScan = undefined)).unref();
  }
  return [...(sessionsScan.get(sid) ?? [])];
}

/** How long the sessions of children that exited wait to be looked at together (see {@link sweepSession}). */
const SWEEP_DELAY_MS = 50;
const sweepQueue: Array<{ sid: number; graceMs: number; done: () => void }> = [];
let sweepTimer: NodeJS.Timeout | undefined;

/**
 * For a child that led its session and exited leaving its own process group empty: ends what is
 * left in the other groups of its session (coreutils `timeout` sent to the background), SIGTERM
 * then SIGKILL after `graceMs`, and resolves once they are gone (at once where there is no /proc).
 * The sessions of children that exit close together are looked at with one scan of /proc, of
 * the processes started after the oldest of them: a burst of short commands costs one scan.
 * With `soon`, the scan comes at once instead of up to SWEEP_DELAY_MS later.
 */
export function sweepSession(sid: number, graceMs: number, soon = false): Promise<void> {
  if (!hasProc()) return Promise.resolve();
  return new Promise((done) => {
    sweepQueue.push({ sid, graceMs, done });
    if (soon) sweepNow();
    else sweepTimer ??= setTimeout(sweep, SWEEP_DELAY_MS);
  });
}

/** Looks at the sessions waiting for {@link sweepSession} now: a run that is ending does not wait for the batch. */
export function sweepNow(): void {
  clearTimeout(sweepTimer);
  if (sweepQueue.length > 0) sweep();
  else sweepTimer = undefined;
}

function sweep(): void {
  sweepTimer = undefined;
  const batch = sweepQueue.splice(0);
  let oldest = Infinity;
  for (const { sid } of batch) oldest = Math.min(oldest, sid);
  const found = sessionGroupsSince(oldest);
  for (const { sid, graceMs, done } of batch) {
    const groups = found.get(sid);
    if (groups === undefined) done();
    else void endStrays(sid, [...groups], graceMs).then(() => done());
  }
}

/**
 * The process groups other than its own of each session, among the living processes whose pid is
 * `minPid` or more: pids grow until they wrap around, so a session's members are younger than its
 * leader. All processes once the pids have wrapped since (or when that cannot be told).
 */
function sessionGroupsSince(minPid: number): Map<number, Set<number>> {
  const found = new Map<number, Set<number>>();
  eachLivingSince(minPid, (_, pgrp, session) => {
    if (pgrp === session) return;
    let groups = found.get(session);
    if (!groups) found.set(session, (groups = new Set()));
    groups.add(pgrp);
  });
  return found;
}

/**
 * Calls `visit` for each living process (not a zombie) whose pid is `minPid` or more, or for all
 * once the pids have wrapped around since (or when that cannot be told), but `except`. False when
 * /proc cannot be listed.
 */
function eachLivingSince(minPid: number, visit: (pid: number, pgrp: number, session: number) => void, except?: number): boolean {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return false;
  }
  const all = minPid <= 1 || lastPid() < minPid;
  for (const name of names) {
    const first = name.charCodeAt(0);
    if (first < 48 || first > 57) continue; // not a pid
    const pid = Number(name);
    if ((!all && pid < minPid) || pid === except) continue;
    const stat = procStat(name);
    if (stat && living(stat, name)) visit(pid, stat.pgrp, stat.session);
  }
  return true;
}

/**
 * The process groups, other than its own, of the living processes in the session `sid` leads,
 * from one look at the processes younger than its leader (see {@link strayGroups}, which looks at
 * all, and shares its look with the other kills of a tick). Empty where there is no /proc.
 */
export function sessionStrays(sid: number): number[] {
  if (!hasProc()) return [];
  return [...(sessionGroupsSince(sid).get(sid) ?? [])];
}

/**
 * True when the session this process leads has no living process but this one (nothing in its
 * own process group or in another), and this process has as many threads as `startThreads`, the
 * number it started with (a thread more could start a process after the look). From one
 * look at the processes younger than this one (see {@link sessionStrays}), which is no snapshot: a
 * member that forks and exits while it runs would go unseen, and so would its child. So the pids
 * the kernel gave out meanwhile (to anyone: few, on most machines) are looked at one by one, and
 * those given out while they were, until none came: what was not seen had no pid yet, and no one
 * of the session was left to start it. False when any of that does not hold, when too many pids
 * came to look at, or where it cannot be told (no /proc).
 */
export function sessionEmptyButSelf(startThreads: number | undefined): boolean {
  const self = process.pid;
  let seen = lastPid();
  if (seen === 0 || procStat(self)?.session !== self) return false;
  if (startThreads === undefined || threadCount() !== startThreads) return false;
  let alone = true;
  const looked = eachLivingSince(self, (_, __, session) => {
    if (session === self) alone = false;
  }, self);
  if (!looked || !alone) return false;
  const limit = Error.stackTraceLimit;
  const muted = muteStacks(); // most of those pids are gone, or threads: each miss is an error
  try {
    for (let round = 0; round < NEW_PIDS_ROUNDS; round++) {
      const last = lastPid();
      if (last === seen) return true;
      // Wrapped around, or too many: the look is no longer worth its cost.
      if (last < seen || last - seen > NEW_PIDS_MAX) return false;
      for (let pid = seen + 1; pid <= last; pid++) {
        // A thread's id reads as its process (a new thread of this one's too: then not alone).
        const stat = procStat(pid);
        if (stat?.session === self && living(stat, pid)) return false;
      }
      seen = last;
    }
    return false;
  } finally {
    if (muted) Error.stackTraceLimit = limit;
  }
}

/** How many times {@link sessionEmptyButSelf} looks at the pids given out since its last look. */
const NEW_PIDS_ROUNDS = 4;
/** The most pids given out since its last look that {@link sessionEmptyButSelf} looks at one by one. */
const NEW_PIDS_MAX = 128;

/** This process's number of threads, from /proc; undefined where it cannot be read. */
export function threadCount(): number | undefined {
  try {
    return readdirSync('/proc/self/task').length;
  } catch {
    return undefined;
  }
}

/** The last pid the kernel gave out in this pid namespace; 0 when it cannot be read. */
function lastPid(): number {
  return Number(readProc('/proc/sys/kernel/ns_last_pid')) || 0;
}

/**
 * SIGTERM to `groups` of the session `sid` leads, SIGKILL to what is left of its groups once
 * `graceMs` have passed (looked at every ZOMBIE_SCAN_MS); resolves once none is left, with
 * whether SIGKILL was needed. Gives up as killTree does: only unreaped zombies stay that long.
 */
async function endStrays(sid: number, groups: number[], graceMs: number): Promise<boolean> {
  let forced = graceMs === 0;
  signalGroups(groups, forced ? 'SIGKILL' : 'SIGTERM');
  const start = performance.now();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, ZOMBIE_SCAN_MS));
    const left = sessionStrays(sid);
    if (left.length === 0) return forced;
    const waited = performance.now() - start;
    if (waited >= graceMs) {
      forced = true;
      signalGroups(left, 'SIGKILL');
    }
    if (waited >= graceMs + ZOMBIE_WAIT_MIN_MS) return forced;
  }
}

/** Sends `signal` to each process group in `groups`. */
export function signalGroups(groups: readonly number[], signal: NodeJS.Signals): void {
  for (const group of groups) {
    try {
      process.kill(-group, signal);
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * Whether the process group `pgid` has a member that is not a zombie ({@link living}, `killed`
 * included), from /proc; undefined where it cannot be read. A scan of /proc: only while a group
 * is dying.
 */
function livingInGroup(pgid: number, killed = false): boolean | undefined {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return undefined;
  }
  for (const name of names) {
    const first = name.charCodeAt(0);
    if (first < 48 || first > 57) continue; // not a pid
    const stat = procStat(name); // undefined: gone meanwhile
    if (stat?.pgrp === pgid && living(stat, name, killed)) return true;
  }
  return false;
}

/** True while the process group led by `pid` has a process in it. */
function groupAlive(pid: number): boolean {
  // The probe fails with ESRCH after almost every command, and the stack Node captures for that
  // error costs more than the system call (8 µs against 2.5 here): none is captured.
  const limit = Error.stackTraceLimit;
  const muted = muteStacks();
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    // EPERM: there is someone, but not ours to signal; let the full path decide.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  } finally {
    if (muted) Error.stackTraceLimit = limit;
  }
}

/**
 * Sets `Error.stackTraceLimit` to 0 where it can be set; says whether it was. Asked every time:
 * a program may freeze `Error` at any point, and then the assignment throws.
 */
function muteStacks(): boolean {
  try {
    Error.stackTraceLimit = 0;
    return true;
  } catch {
    return false;
  }
}

/**
 * True when `child` has exited and left no one in its process group: then there is nothing for
 * {@link killTree} to do, and it is not called (its promise costs a command a few allocations).
 */
export function treeGone(child: ChildProcess): boolean {
  return child.pid !== undefined && (child.exitCode !== null || child.signalCode !== null) && !groupAlive(child.pid);
}

/**
 * Terminates `child` and every process in its process group, and in the groups of its session
 * ({@link strayGroups}): SIGTERM, then SIGKILL once `graceMs` have passed without them emptying.
 * Resolves when the child has exited and no process of its group or session is left (a
 * grandchild that started a session of its own is out of reach), or when only zombies are left
 * and they have not been reaped for `graceMs` (at least 3 s: an init that reaps by polling, as on
 * some VMs, takes up to 2 s; a container's PID 1 may never do it). With `sessionSeen`, a child
 * that has exited and left no one in its group is taken at its word that no one was left in its
 * session either (a worker that exited with WORKER_LEFT_ALONE_EXIT).
 */
export function killTree(child: ChildProcess, graceMs: number, sessionSeen = false): Promise<KillReport> {
  const pid = child.pid;
  if (pid === undefined) return Promise.resolve({ forced: false });
  const exited = child.exitCode !== null || child.signalCode !== null;
  // The usual case after a task ended: the leader is reaped and left no one in its group. One
  // probe says so (the pid alone, reaped, is no one's); then a look at its session (sweepSession),
  // unless the child looked there itself as it left and found no one (`sessionSeen`).
  if (exited && !groupAlive(pid)) return sessionSeen ? Promise.resolve({ forced: false }) : sweepSession(pid, graceMs, true).then(() => ({ forced: false }));
  const strays = strayGroups(pid);
  const group = new Promise<KillReport>((resolve) => {
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
    let zombiesSince: number | undefined;
    let scannedAt = -Infinity;
    const check = () => {
      clearTimeout(poll);
      if (!leaderGone) return;
      if (!signalTree(pid, 0 as unknown as NodeJS.Signals)) return finish();
      // Only zombies left? Their new parent (init) normally reaps them at once; a container's PID 1
      // may never do it. Wait a while for the pids to be free, not forever. (Once only zombies are
      // left, none can come back or start another: the /proc scan is not needed again.)
      // A scan of /proc costs a millisecond or two: not every poll while a process takes its time.
      const now = performance.now();
      if (zombiesSince === undefined && now - scannedAt >= ZOMBIE_SCAN_MS) {
        scannedAt = now;
        if (anyLiving(pid, forced) === false) zombiesSince = now;
      }
      if (zombiesSince !== undefined && now - zombiesSince >= Math.max(graceMs, ZOMBIE_WAIT_MIN_MS)) return finish();
      poll = setTimeout(check, GROUP_POLL_MS);
    };
    const force = setTimeout(() => {
      if (treeAlive(pid)) {
        forced = true;
        signalTree(pid, 'SIGKILL');
      }
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
  if (strays.length === 0) return group;
  return Promise.all([group, endStrays(pid, strays, graceMs)]).then(([report, straysForced]) => ({ forced: report.forced || straysForced }));
}
