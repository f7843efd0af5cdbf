/**
 * No child outlives its parent: every live child process is registered here, and killed
 * (with its process group) when the parent exits, is interrupted, or is terminated.
 *
 * A parent killed with SIGKILL runs nothing on its way out. Workers then exit by themselves when
 * their IPC channel closes, taking their process group with them. A command has no IPC channel,
 * and a process task's program may not watch its own: for those, a guardian process stands by
 * (see {@link trackChild}).
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { signalTree } from './kill.js';

const live = new Set<number>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let installed = false;

/**
 * Registers a child's pid; returns the function that unregisters it. With `guard`, the child's
 * process group is also entrusted to the guardian, which kills it if this process dies without a
 * chance to (SIGKILL): for children that would not notice by themselves.
 */
export function trackChild(pid: number, { guard = false }: { guard?: boolean } = {}): () => void {
  live.add(pid);
  if (!installed) install();
  if (guard) guardian.add(pid);
  return () => {
    live.delete(pid);
    if (guard) guardian.remove(pid);
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

/**
 * The guardian's program: it reads `+pid` and `-pid` lines, and when its stdin ends (this process
 * is gone, however it died) SIGKILLs the process group of every pid still listed, then exits. It
 * ignores the signals a terminal sends to a whole foreground group, and has a group of its own,
 * so that what kills this process does not kill it first.
 */
const GUARDIAN_PROGRAM = `
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']) process.on(s, () => {});
const pids = new Set();
let text = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  text += chunk;
  for (let nl = text.indexOf('\\n'); nl !== -1; nl = text.indexOf('\\n')) {
    const line = text.slice(0, nl);
    text = text.slice(nl + 1);
    if (line[0] === '+') pids.add(Number(line.slice(1)));
    else if (line[0] === '-') pids.delete(Number(line.slice(1)));
  }
});
const end = () => {
  for (const pid of pids) {
    try { process.kill(-pid, 'SIGKILL'); } catch { try { process.kill(pid, 'SIGKILL'); } catch {} }
  }
  process.exit(0);
};
process.stdin.on('end', end);
process.stdin.on('error', end);
`;

/** How long the guardian stays after the last guarded child is gone, so a run of commands reuses it. */
const GUARDIAN_IDLE_MS = 1000;

/**
 * One small Node process per parent, started on first need: it holds the read end of a pipe from
 * this process, and the kernel closes the write end when this process dies, SIGKILL included.
 */
const guardian = {
  child: undefined as ChildProcess | undefined,
  pids: new Set<number>(),
  idle: undefined as NodeJS.Timeout | undefined,
  add(pid: number): void {
    this.pids.add(pid);
    clearTimeout(this.idle);
    this.idle = undefined;
    if (!this.child) this.start();
    else this.write(`+${pid}\n`);
  },
  remove(pid: number): void {
    if (!this.pids.delete(pid)) return;
    this.write(`-${pid}\n`);
    if (this.pids.size === 0 && this.child) {
      this.idle = setTimeout(() => this.stop(), GUARDIAN_IDLE_MS);
      this.idle.unref();
    }
  },
  start(): void {
    if (process.platform === 'win32') return;
    let child: ChildProcess;
    try {
      // No inherited Node options (a TypeScript loader would slow its start), no output.
      child = spawn(process.execPath, ['-e', GUARDIAN_PROGRAM], { detached: true, stdio: ['pipe', 'ignore', 'ignore'], env: {} });
    } catch {
      return; // the 'exit' and signal handlers still cover every death but SIGKILL
    }
    this.child = child;
    const lost = () => {
      if (this.child === child) this.child = undefined;
    };
    child.on('error', lost);
    child.on('exit', lost);
    child.stdin!.on('error', lost);
    // It must not keep this process alive.
    child.unref();
    (child.stdin as unknown as { unref(): void }).unref();
    this.write([...this.pids].map((pid) => `+${pid}\n`).join(''));
  },
  stop(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  },
  write(text: string): void {
    if (text && this.child?.stdin?.writable) this.child.stdin.write(text);
  },
};

/** @internal The guardian's pid while it runs (tests exclude it from their process scans). */
export function guardianPid(): number | undefined {
  return guardian.child?.pid;
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
