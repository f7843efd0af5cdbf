/**
 * No child outlives its parent: every live child process is registered here, and killed
 * (with its process group) when the parent exits, is interrupted, or is terminated.
 *
 * A parent killed with SIGKILL runs nothing on its way out. Workers then exit by themselves when
 * their IPC channel closes, taking their process group with them, unless a synchronous task holds
 * them up. A command has no IPC channel, and a process task's program may not watch its own: for
 * those, and for workers that have lived a while, a guardian process stands by (see
 * {@link trackChild} and {@link guardChild}).
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onExit } from 'signal-exit';
import { exitWithin } from './child-exit.js';
import { signalGroups, signalTree, strayGroups } from './kill.js';

const live = new Set<number>();
/** Removes the exit hook; set while children are alive, and for HOOK_IDLE_MS after the last. */
let removeExitHook: (() => void) | undefined;
let hookIdle: NodeJS.Timeout | undefined;
/**
 * How long the exit hook stays after the last child is gone: hooking a signal and unhooking it
 * costs system calls for each of the fifteen or so signals, which a run of short commands, each
 * the only child for a moment, would otherwise pay for every command.
 */
const HOOK_IDLE_MS = 1000;

/**
 * Registers a child's pid; returns the function that unregisters it. With `guard`, the child's
 * process group is also entrusted to the guardian, which kills it if this process dies without a
 * chance to (SIGKILL): for children that would not notice by themselves.
 */
export function trackChild(pid: number, { guard = false }: { guard?: boolean } = {}): () => void {
  live.add(pid);
  // signal-exit, as execa and many others use it: on exit, and on a signal that would end the
  // process (SIGINT, SIGTERM, SIGHUP and the other fatal ones), unless the program listens for
  // that signal itself; then the program decides, and the children go when it exits. Its copies
  // cooperate: with two hooks of their own, neither would act, each taking the other for the
  // program's, and the signal would be ignored.
  clearTimeout(hookIdle);
  hookIdle = undefined;
  removeExitHook ??= onExit(killAll);
  const unguard = guard ? guardChild(pid) : undefined;
  return () => {
    live.delete(pid);
    unguard?.();
    if (live.size === 0 && removeExitHook && !hookIdle) {
      hookIdle = setTimeout(() => {
        hookIdle = undefined;
        if (live.size > 0) return;
        removeExitHook?.();
        removeExitHook = undefined;
      }, HOOK_IDLE_MS);
      hookIdle.unref();
    }
  };
}

/**
 * Entrusts a live child's process group to the guardian from now on (see {@link trackChild}'s
 * `guard`); returns what takes it back. For workers that have lived a while: one in a long
 * synchronous task does not notice its parent's death until the task returns.
 */
export function guardChild(pid: number): () => void {
  guardian.add(pid);
  return () => guardian.remove(pid);
}

/**
 * The pids of every child process the library has alive right now, across all runs: a check
 * that nothing was left behind. A command or process task stays listed after it exits, until
 * what it left in its process group is gone too.
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
  for (const pid of live) {
    signalTree(pid, 'SIGKILL');
    signalGroups(strayGroups(pid), 'SIGKILL');
  }
  live.clear();
}

/**
 * The guardian's program, for `/bin/sh` (a few milliseconds to start; Node takes tens). Its
 * stdin is a pipe from this process; it returns from `read` when that pipe ends (this process is
 * gone, however it died, or has no more use for it). Then it SIGKILLs the process group of every
 * pid in the table on fd 3, and of every pid `+pid` and `-pid` lines on stdin left listed (when
 * there is no table), then of every process in the session one of them leads (from /proc, where
 * there is one: coreutils `timeout` and a shell's job control move a command to a group of its
 * own, not out of its session), and exits. It ignores the signals a terminal sends to a whole foreground
 * group (and so does `tr`, which inherits that), and has a group of its own, so that what kills
 * this process does not kill it first.
 */
const GUARDIAN_PROGRAM = `
trap '' INT TERM HUP QUIT
pids=' '
while read -r line || [ -n "$line" ]; do
  case $line in
    +*) pids="$pids\${line#?} " ;;
    -*) pid=\${line#?}; case $pids in *" $pid "*) pids="\${pids%%" $pid "*} \${pids#*" $pid "}" ;; esac ;;
  esac
  line=
done
all=" $pids $(tr -c 0-9 ' ' 2>/dev/null <&3) "
for pid in $all; do
  kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL -- "$pid" 2>/dev/null
done
case $all in *[0-9]*) ;; *) exit 0 ;; esac
for stat in /proc/[0-9]*/stat; do
  read -r line 2>/dev/null <"$stat" || continue
  set -f; set -- \${line##*) }; set +f
  case $all in *" $4 "*) kill -s KILL -- "-$3" 2>/dev/null ;; esac
done
`;

/** How long the guardian stays after the last guarded child is gone, so a run of commands reuses it. */
const GUARDIAN_IDLE_MS = 1000;
/** One slot of the pid table: a pid in decimal, space-padded, and a newline. */
const SLOT_BYTES = 12;
const EMPTY_SLOT = Buffer.from(`${' '.repeat(SLOT_BYTES - 1)}\n`);
/** Where a slot is prepared before it is written (one write at a time). */
const SLOT = Buffer.alloc(SLOT_BYTES);

/**
 * One small shell process per parent, started on first need: it holds the read end of a pipe from
 * this process, and the kernel closes the write end when this process dies, SIGKILL included.
 *
 * The guarded pids go in a table: a deleted temporary file that this process and the guardian
 * share, one fixed slot per pid, written in place (so it never grows beyond the most children
 * guarded at once). A write there wakes no one: a line down the pipe per pid made the guardian
 * wake up, and cost as much CPU as a few percent of a short command's run. If no such file can
 * be made, the pids go down the pipe as lines.
 */
const guardian = {
  child: undefined as ChildProcess | undefined,
  /** The pid table's file descriptor; undefined when the pipe carries the pids. */
  table: undefined as number | undefined,
  /** Each guarded pid, and its slot in the table. */
  slots: new Map<number, number>(),
  freeSlots: [] as number[],
  /** Set once a write to a table failed: from then on, pipes only. */
  tableFailed: false,
  idle: undefined as NodeJS.Timeout | undefined,
  add(pid: number): void {
    if (this.slots.has(pid)) return;
    const slot = this.freeSlots.pop() ?? this.slots.size;
    this.slots.set(pid, slot);
    clearTimeout(this.idle);
    this.idle = undefined;
    if (!this.child) this.start();
    else this.record(pid, slot, true);
  },
  remove(pid: number): void {
    const slot = this.slots.get(pid);
    if (slot === undefined) return;
    this.slots.delete(pid);
    this.freeSlots.push(slot);
    this.record(pid, slot, false);
    if (this.slots.size === 0 && this.child) {
      this.idle = setTimeout(() => this.stop(), GUARDIAN_IDLE_MS);
      this.idle.unref();
    }
  },
  /** Tells the running guardian that `pid` is guarded (`on`) or no longer. */
  record(pid: number, slot: number, on: boolean): void {
    if (!this.child) return;
    if (this.table !== undefined) {
      try {
        if (on) SLOT.write(`${String(pid).padStart(SLOT_BYTES - 1)}\n`, 'latin1');
        writeSync(this.table, on ? SLOT : EMPTY_SLOT, 0, SLOT_BYTES, slot * SLOT_BYTES);
        return;
      } catch {
        // The file system refused (full?). The table can no longer be trusted: a new guardian
        // takes over, told through its pipe; this one goes without killing anything.
        this.tableFailed = true;
        this.child.kill('SIGKILL');
        this.child = undefined;
        this.closeTable();
        this.start();
        return;
      }
    }
    this.write(`${on ? '+' : '-'}${pid}\n`);
  },
  start(): void {
    if (process.platform === 'win32') return;
    this.table = this.tableFailed ? undefined : openTable();
    let child: ChildProcess;
    try {
      const table = this.table ?? 'ignore';
      child = spawn('/bin/sh', ['-c', GUARDIAN_PROGRAM], { detached: true, stdio: ['pipe', 'ignore', 'ignore', table], env: {} });
    } catch {
      this.closeTable();
      return; // the 'exit' and signal handlers still cover every death but SIGKILL
    }
    this.child = child;
    const lost = () => {
      if (this.child !== child) return;
      this.child = undefined;
      this.closeTable();
    };
    child.on('error', lost);
    child.on('exit', lost);
    child.stdin!.on('error', lost);
    // It must not keep this process alive.
    child.unref();
    (child.stdin as unknown as { unref(): void }).unref();
    for (const [pid, slot] of this.slots) this.record(pid, slot, true);
  },
  stop(): void {
    this.child?.stdin?.end();
    this.child = undefined;
    this.closeTable();
  },
  write(text: string): void {
    if (text && this.child?.stdin?.writable) this.child.stdin.write(text);
  },
  closeTable(): void {
    if (this.table !== undefined) closeSync(this.table);
    this.table = undefined;
  },
};

/** A new, empty, already deleted file for the pid table (nothing to clean up after a crash); undefined if none can be made. */
function openTable(): number | undefined {
  // In memory where there is such a file system: a write to a disk's file system may go through
  // its journal.
  for (const dir of ['/dev/shm', tmpdir()]) {
    const path = join(dir, `aps-guardian-${process.pid}-${randomBytes(6).toString('hex')}`);
    let fd: number | undefined;
    try {
      fd = openSync(path, 'wx+', 0o600);
      unlinkSync(path);
      return fd;
    } catch {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return undefined;
}

/**
 * Stops the guardian now, if no child is guarded, and resolves once it has exited (at most 1 s):
 * for a thread about to end (runBlocking's), whose guardian nobody would reap once the thread,
 * which started it, is gone.
 */
export function stopGuardian(): Promise<void> {
  const child = guardian.child;
  if (!child || guardian.slots.size > 0) return Promise.resolve();
  clearTimeout(guardian.idle);
  guardian.idle = undefined;
  guardian.stop();
  return exitWithin(child, 1000).then(() => undefined);
}

/** @internal The guardian's pid while it runs (tests exclude it from their process scans). */
export function guardianPid(): number | undefined {
  return guardian.child?.pid;
}

