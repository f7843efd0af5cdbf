import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import pidusage from 'pidusage';
import { processRss } from '../runtime/rss.js';

/** One measurement of how busy the host is. Every field is optional: a sampler reports what it knows. */
export interface LoadReading {
  /**
   * System-wide CPU utilisation in percent (0..100), from `os.cpus()` time deltas since the previous sample.
   * `undefined` when unknown: no time passed between two samples, or the CPU count changed.
   */
  cpu?: number;
  /** Bytes available for new work: `MemAvailable` from /proc/meminfo where present, else `os.freemem()`. */
  freeMemory?: number;
  /**
   * CPU use of the scheduler's own child processes, summed, in percent of one core
   * (two children each keeping a core busy read 200). A pid reads 0 on its first sample.
   * On Linux from the schedstat of their threads, and each child counts with the processes it
   * started, and theirs (up to 256 processes per child); elsewhere through pidusage, the children alone.
   */
  childrenCpu?: number;
  /**
   * Resident set size of the scheduler's own child processes, summed, in bytes. On Linux from
   * `VmRSS` in /proc/<pid>/status, each child with the processes it started; elsewhere through
   * pidusage, the children alone.
   */
  childrenRss?: number;
  /**
   * CPU *demand* of the scheduler's own child processes, summed, in percent of one core: the time
   * their threads ran **or waited for a CPU** (Linux `/proc/<pid>/task/<tid>/schedstat`), over the interval
   * since the previous sample. Unlike `childrenCpu` it does not shrink when other programs crowd the
   * CPU: a busy loop reads about 100 however many processes it shares a core with, a task that mostly
   * waits for I/O or timers reads near 0 (one that wakes very often on a crowded host reads higher:
   * it waits for a CPU after each wake-up). Only children that have finished starting up count (see
   * `STARTUP_DEMAND` and `childrenMeasured`): a process's start-up says nothing about its tasks.
   * Each child counts with the processes it started, and theirs: a command run through `sh -c`
   * does its work in a grandchild while the shell only waits. `undefined` where
   * `/proc/<pid>/schedstat` does not exist (not Linux).
   */
  childrenDemand?: number;
  /**
   * The part of `childrenDemand` that the children spent waiting for a CPU rather than running, in
   * percent of one core: `childrenDemand - childrenWait` is the CPU they used.
   */
  childrenWait?: number;
  /** How many child processes `childrenDemand` covers (each with the processes it started). */
  childrenMeasured?: number;
}

/** Where readings come from. The controller depends only on this, so tests inject scripted readings. */
export interface LoadSampler {
  /** Takes one reading. May be synchronous (scripted samplers in tests) or asynchronous (the system sampler). */
  sample(): LoadReading | Promise<LoadReading>;
  /** Releases what the sampler holds. Called once when the controller is unsubscribed. */
  close?(): void;
}

/** Options of {@link systemLoadSampler}. */
export interface SystemLoadSamplerOptions {
  /**
   * The pids whose CPU and memory use to report as `childrenCpu` and `childrenRss`, asked afresh at
   * every sample. Without it those two fields stay `undefined`.
   */
  childPids?: () => readonly number[];
}

/** Cumulative CPU times of the whole host, as `os.cpus()` reports them (milliseconds since boot). */
export interface CpuTimesSnapshot {
  readonly idle: number;
  readonly total: number;
  /** How many CPUs were counted: a different count makes two snapshots incomparable. */
  readonly cpus: number;
}

/**
 * Where there is no /proc, children are measured through pidusage. pidusage keeps one open file
 * descriptor per sampled pid (on Linux) until the pid has not been asked about for `maxage` ms. It must outlive the gap between two samples, or every sample would
 * start a fresh history and read 0% CPU; it should be short, so the descriptors of exited children
 * are closed soon.
 */
const CHILD_HISTORY_MIN_MS = 10_000;
const CHILD_HISTORY_GAPS = 3;

/**
 * A child counts in `childrenDemand` once its demand has been at most this (percent of one core) for
 * {@link STARTUP_CALM_MS} in a row, or from when it is {@link STARTUP_MAX_MS} old.
 * Starting a Node process keeps its threads running or runnable nearly the whole time (tens of
 * milliseconds on an idle host, over a second on a crowded one), with short pauses (page faults, a
 * file read): counted, that would make every I/O-bound task look CPU-bound right after each raise.
 * A process that has finished starting and waits for anything reads far below this.
 */
export const STARTUP_DEMAND = 50;
/**
 * See {@link STARTUP_DEMAND}: how long (ms) a child must read calm, in consecutive readings, to
 * count: one reading at the default 250 ms interval. With short intervals it takes several: a
 * process idles for a few tens of milliseconds here and there (a pause in its start-up, its exit,
 * a shell whose busy child has just ended), which says nothing about its task.
 */
export const STARTUP_CALM_MS = 200;
/** See {@link STARTUP_DEMAND}: a CPU-bound child never reads low, yet must count from some age on (ms since first seen). */
export const STARTUP_MAX_MS = 5000;

/**
 * The most processes measured as one child: the child and what it started, and so on down,
 * breadth first. A command that forks hundreds of processes at once is measured by its first
 * 256, which is plenty to tell CPU-bound from waiting, and a reading stays cheap.
 */
export const MAX_TREE = 256;

/** What the system sampler remembers of one child between samples. */
interface ChildHistory {
  /** What was known of the child and of each process under it at the last sample, by pid. */
  members: Map<number, MemberHistory>;
  /** Run nanoseconds of the whole tree at the last sample: the members' and what they have reaped. */
  runNs: number;
  /** `process.hrtime.bigint()` when the child was first seen. */
  firstSeen: bigint;
  /** Nanoseconds of the consecutive intervals at or below {@link STARTUP_DEMAND} just before. */
  calmNs: number;
  /** It has finished starting up: its demand counts. */
  started: boolean;
}

/** Scheduler statistics of a thread (or the sum over a process's threads), cumulative (nanoseconds). */
export interface SchedStat {
  /** Time spent running on a CPU. */
  runNs: number;
  /** Time spent runnable but waiting for a CPU. */
  waitNs: number;
}

/**
 * Sums the CPU times of all CPUs.
 *
 * @example
 * ```ts
 * import { cpuTimesSnapshot } from './samplers.js';
 * const { idle, total, cpus } = cpuTimesSnapshot();
 * console.log(`${cpus} CPUs, idle ${((100 * idle) / total).toFixed(1)}% since boot`);
 * ```
 * @param cpus What `os.cpus()` returned; read afresh when omitted.
 * @returns The summed idle and total times and the number of CPUs counted.
 */
export function cpuTimesSnapshot(cpus: readonly os.CpuInfo[] = os.cpus()): CpuTimesSnapshot {
  let idle = 0;
  let total = 0;
  for (const { times } of cpus) {
    idle += times.idle;
    total += times.user + times.nice + times.sys + times.idle + times.irq;
  }
  return { idle, total, cpus: cpus.length };
}

/** {@link cpuTimesSnapshot}, or undefined when `os.cpus()` fails: a reading without `cpu`, not a failed sampler. */
function hostCpuTimes(): CpuTimesSnapshot | undefined {
  try {
    return cpuTimesSnapshot();
  } catch {
    return undefined;
  }
}

/**
 * Computes the host's CPU utilisation between two snapshots.
 *
 * @example
 * ```ts
 * import { cpuUtilisation } from './samplers.js';
 * const before = { idle: 1000, total: 2000, cpus: 2 };
 * const after = { idle: 1500, total: 4000, cpus: 2 };
 * console.log(cpuUtilisation(before, after)); // 75
 * console.log(cpuUtilisation(after, after)); // undefined: no time passed
 * ```
 * @param previous The earlier snapshot.
 * @param next The later snapshot.
 * @returns Busy time as a percentage (0..100) of all CPU time that passed, or `undefined` when no
 * CPU time passed or the CPU count changed (a reading we cannot trust is better reported as unknown).
 */
export function cpuUtilisation(previous: CpuTimesSnapshot, next: CpuTimesSnapshot): number | undefined {
  if (previous.cpus === 0 || previous.cpus !== next.cpus) return undefined;
  const total = next.total - previous.total;
  const idle = next.idle - previous.idle;
  if (!(total > 0) || !Number.isFinite(idle)) return undefined;
  return Math.min(100, Math.max(0, (100 * (total - idle)) / total));
}

/**
 * Extracts `MemAvailable` from the text of /proc/meminfo.
 *
 * @example
 * ```ts
 * import { parseMemAvailable } from './samplers.js';
 * console.log(parseMemAvailable('MemTotal: 2048 kB\nMemAvailable:    1024 kB\n')); // 1048576
 * ```
 * @param meminfo The file's text.
 * @returns The available memory in bytes, or `undefined` when the line is missing (kernels before 3.14).
 */
export function parseMemAvailable(meminfo: string): number | undefined {
  const match = /^MemAvailable:\s+(\d+)\s*kB/m.exec(meminfo);
  return match ? Number(match[1]) * 1024 : undefined;
}

/**
 * Parses the text of `/proc/<pid>/schedstat`: run time, run-queue wait time (both in nanoseconds) and
 * the number of time slices.
 *
 * @example
 * ```ts
 * import { parseSchedstat } from './samplers.js';
 * console.log(parseSchedstat('206824842 10504249 404\n')); // { runNs: 206824842, waitNs: 10504249 }
 * console.log(parseSchedstat('')); // undefined
 * ```
 * @param text The file's text.
 * @returns Both times, or `undefined` when the text is not two non-negative numbers.
 */
export function parseSchedstat(text: string): SchedStat | undefined {
  const [run, wait] = text.trim().split(/\s+/).map(Number);
  if (run === undefined || wait === undefined || !(run >= 0) || !(wait >= 0)) return undefined;
  return { runNs: run, waitNs: wait };
}

/**
 * Measures the host: CPU utilisation, available memory and, optionally, the CPU use, CPU demand and
 * memory of a set of child processes.
 *
 * The CPU baseline is taken when the sampler is created, so the first `sample()` already reports
 * the utilisation since then (or `undefined` if no measurable time has passed). A child that has
 * exited, or any other failure to measure one, is skipped rather than thrown.
 *
 * @example
 * ```ts
 * import { setTimeout as sleep } from 'node:timers/promises';
 * import { systemLoadSampler } from './samplers.js';
 *
 * const sampler = systemLoadSampler({ childPids: () => [process.pid] });
 * await sleep(200);
 * const { cpu, freeMemory, childrenCpu, childrenRss, childrenDemand } = await sampler.sample();
 * console.log({ cpu, freeMemory, childrenCpu, childrenRss, childrenDemand });
 * sampler.close?.();
 * ```
 * @param options Which child processes to measure.
 * @returns A sampler whose `sample()` resolves to a {@link LoadReading}.
 */
export function systemLoadSampler(options: SystemLoadSamplerOptions = {}): LoadSampler {
  const { childPids } = options;
  let previousCpu = hostCpuTimes();
  // Stays true until /proc/meminfo proves absent or useless; then os.freemem() without retrying.
  let procMeminfo = process.platform !== 'win32';
  // Linux: children are measured from /proc directly (see procChildren); elsewhere through pidusage.
  const procfs = process.platform === 'linux' && existsSync(`/proc/self/task/${process.pid}/schedstat`);
  let history = new Map<number, ChildHistory>();
  let lastProcSampleAt: bigint | undefined;
  let lastPidusageAt: number | undefined;
  // pidusage asks `getconf` (two shell commands) for the clock tick on its first call in a process;
  // on a crowded host that takes long enough to delay the first reading by a whole interval.
  if (childPids && !procfs) pidusage(process.pid, { maxage: CHILD_HISTORY_MIN_MS }).catch(() => {});

  function freeMemory(): number {
    if (procMeminfo) {
      try {
        // Synchronous: generated from memory, and several times cheaper than through the thread pool.
        const available = parseMemAvailable(readFileSync('/proc/meminfo', 'utf8'));
        if (available !== undefined) return available;
      } catch {
        // Not Linux, or /proc is not mounted: fall through.
      }
      procMeminfo = false;
    }
    return os.freemem();
  }

  /**
   * Measures the children from /proc: CPU use and demand from the schedstat of every thread, memory
   * from `VmRSS`. Demand counts only children that have finished starting up (see
   * {@link STARTUP_DEMAND}); CPU use and memory count every child. Children that are gone are
   * forgotten, so the history stays as small as the pool.
   */
  function procChildren(pids: readonly number[]): ChildFields {
    const now = process.hrtime.bigint();
    const elapsedNs = lastProcSampleAt === undefined ? 0 : Number(now - lastProcSampleAt);
    lastProcSampleAt = now;
    const next = new Map<number, ChildHistory>();
    let runNs = 0;
    let rss = 0;
    let demandNs = 0;
    let waitNs = 0;
    let measured = 0;
    const budget = { left: MAX_READ };
    for (const pid of pids) {
      const tree = readTree(pid, budget);
      if (!tree) continue; // exited
      rss += tree.rss;
      const before = history.get(pid);
      // Each member's run time never goes down: a thread that ends takes its time out of the sum of
      // the live threads' (while the process's own utime + stime, in ticks, keeps it).
      const members = new Map<number, MemberHistory>();
      let treeRunNs = 0;
      let gainedWait = 0;
      let endedBusy = false;
      for (const [member, stat] of tree.members) {
        const was = before?.members.get(member);
        const run = Math.max(was?.runNs ?? 0, stat.runNs, stat.cpuNs);
        // A process not there at the last sample has started since: all its time is new.
        const gained = run - (was?.runNs ?? 0) + Math.max(0, stat.waitNs - (was?.waitNs ?? 0));
        members.set(member, { runNs: run, waitNs: stat.waitNs, busy: elapsedNs > 0 && (100 * gained) / elapsedNs > STARTUP_DEMAND });
        treeRunNs += run + stat.reapedNs;
        if (before) gainedWait += Math.max(0, stat.waitNs - (was?.waitNs ?? 0));
      }
      // The tree's run time counts what its members reaped: a process that exited since the last
      // sample took its run time to its parent's `cutime`.
      if (before) for (const [member, was] of before.members) if (was.busy && !members.has(member)) endedBusy = true;
      const entry: ChildHistory = {
        members,
        runNs: treeRunNs,
        firstSeen: before?.firstSeen ?? now,
        calmNs: before?.calmNs ?? 0,
        started: before?.started ?? false,
      };
      next.set(pid, entry);
      if (!before || !(elapsedNs > 0)) continue;
      const gainedRun = Math.max(0, treeRunNs - before.runNs);
      const gained = gainedRun + gainedWait;
      runNs += gainedRun;
      // Not calm when a process that was busy has just ended: a shell whose busy child ended
      // idles for a moment, which says nothing about its task.
      const calm = (100 * gained) / elapsedNs <= STARTUP_DEMAND && !endedBusy;
      entry.calmNs = calm ? entry.calmNs + elapsedNs : 0;
      entry.started ||= entry.calmNs / 1e6 >= STARTUP_CALM_MS || Number(now - entry.firstSeen) / 1e6 >= STARTUP_MAX_MS;
      if (entry.started) {
        demandNs += gained;
        waitNs += gainedWait;
        measured += 1;
      }
    }
    history = next;
    const percent = (ns: number) => (elapsedNs > 0 ? (100 * ns) / elapsedNs : 0);
    return {
      childrenCpu: percent(runNs),
      childrenRss: rss,
      childrenDemand: percent(demandNs),
      childrenWait: percent(waitNs),
      childrenMeasured: measured,
    };
  }

  /** Measures the children through pidusage, where there is no /proc: CPU use and memory only. */
  async function pidusageChildren(pids: readonly number[]): Promise<ChildFields> {
    const now = Date.now();
    const gap = lastPidusageAt === undefined ? 0 : now - lastPidusageAt;
    lastPidusageAt = now;
    if (pids.length === 0) return { childrenCpu: 0, childrenRss: 0 };
    const maxage = Math.max(CHILD_HISTORY_MIN_MS, CHILD_HISTORY_GAPS * gap);
    let childrenCpu = 0;
    let childrenRss = 0;
    for (const stat of await processStats(pids, maxage)) {
      if (Number.isFinite(stat.cpu)) childrenCpu += stat.cpu;
      if (Number.isFinite(stat.memory)) childrenRss += stat.memory;
    }
    return { childrenCpu, childrenRss };
  }

  function childUsage(): ChildFields | Promise<ChildFields> {
    if (!childPids) return {};
    let pids: number[];
    try {
      pids = [...new Set(childPids())].filter((pid) => Number.isInteger(pid) && pid > 0);
    } catch {
      // A broken pid list must not cost the CPU and memory readings.
      return {};
    }
    return procfs ? procChildren(pids) : pidusageChildren(pids);
  }

  return {
    async sample() {
      // Everything that can be is read synchronously, at once: the interval measured ends here.
      const nextCpu = hostCpuTimes();
      const cpu = previousCpu && nextCpu ? cpuUtilisation(previousCpu, nextCpu) : undefined;
      previousCpu = nextCpu;
      const children = await childUsage();
      const reading: LoadReading = { freeMemory: freeMemory(), ...children };
      if (cpu !== undefined) reading.cpu = cpu;
      return reading;
    },
    close() {
      // Deliberately no pidusage.clear(): it is process-wide (it would reset the history of every
      // other live sampler) and on Linux it drops pidusage's open /proc/<pid>/stat descriptors
      // without closing them. Left alone, pidusage closes each one `maxage` ms after its last use.
      lastPidusageAt = undefined;
      history = new Map();
      lastProcSampleAt = undefined;
    },
  };
}

/** The children's part of a reading. */
type ChildFields = Pick<LoadReading, 'childrenCpu' | 'childrenRss' | 'childrenDemand' | 'childrenWait' | 'childrenMeasured'>;

/** What the sampler remembers of one process of a child's tree between samples. */
interface MemberHistory {
  /** Its run nanoseconds so far, as counted: never lower than at the sample before. */
  runNs: number;
  /** The wait nanoseconds of its live threads. */
  waitNs: number;
  /** It ran or waited for more than {@link STARTUP_DEMAND} in the interval before the sample. */
  busy: boolean;
}

/** One process of a child's tree, as read at one sample (nanoseconds). */
interface MemberStat extends SchedStat {
  /** Its `utime + stime`: ticks, so coarse, but with the time of its threads that have ended. */
  cpuNs: number;
  /** The CPU time of the processes it has waited for, theirs included (`cutime + cstime`). */
  reapedNs: number;
}

/**
 * The most processes read in one reading, all children's trees together: past it, a child is
 * measured alone, so that a reading stays cheap (about 0.2 ms per process) whatever the trees hold.
 */
const MAX_READ = 1024;

/**
 * One child and the processes under it (its children, theirs, and so on, breadth first, at most
 * {@link MAX_TREE}, and only while `budget` lasts): the schedstat and `/proc/<pid>/stat` times of
 * each (a process that exited and was waited for hands its CPU time to its parent's `cutime` and
 * `cstime`), and their resident memory. `undefined` when the child itself has exited. A process
 * that exits while the tree is read is left out.
 */
function readTree(pid: number, budget: { left: number }): { members: Map<number, MemberStat>; rss: number } | undefined {
  const members = new Map<number, MemberStat>();
  let rss = 0;
  const queue = [pid];
  for (let i = 0; i < queue.length && members.size < MAX_TREE && (i === 0 || budget.left > 0); i++) {
    const member = queue[i]!;
    if (members.has(member)) continue;
    const sched = readSchedstat(member);
    if (!sched) continue;
    budget.left -= 1;
    const times = readTimes(member);
    members.set(member, { ...sched, cpuNs: times?.cpuNs ?? 0, reapedNs: times?.reapedNs ?? 0 });
    rss += processRss(member) ?? 0;
    for (const child of readChildren(member)) queue.push(child);
  }
  return members.has(pid) ? { members, rss } : undefined;
}

/**
 * From `/proc/<pid>/stat`: the CPU time of the process (`utime + stime`, its ended threads
 * included) and of the processes it has waited for (`cutime + cstime`), in nanoseconds (the file
 * counts in the kernel's fixed 100 ticks per second); undefined when it cannot be read.
 */
function readTimes(pid: number): { cpuNs: number; reapedNs: number } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // After the command name (which may hold spaces and parentheses), fields from the 3rd (state):
  // utime is the 14th, stime the 15th, cutime the 16th, cstime the 17th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ', 15);
  const ns = (a: string | undefined, b: string | undefined) => {
    const ticks = Number(a) + Number(b);
    return Number.isFinite(ticks) && ticks > 0 ? ticks * (1e9 / USER_HZ) : 0;
  };
  return { cpuNs: ns(fields[11], fields[12]), reapedNs: ns(fields[13], fields[14]) };
}

/** Clock ticks per second of the times in /proc/<pid>/stat: fixed at 100 on every Linux architecture. */
const USER_HZ = 100;

/**
 * The pids of the processes that `pid`'s main thread started and that have not exited, from
 * `/proc/<pid>/task/<pid>/children`; none where that file does not exist (a kernel built without
 * it). Only the main thread's: shells, Node (`child_process` runs on the thread of its JavaScript,
 * and a worker process's tasks run on the main one) and most programs start processes from it,
 * and reading every thread's list would double the cost of a reading for a Node worker.
 */
function readChildren(pid: number): number[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1');
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const field of text.split(' ')) {
    const child = Number(field);
    if (field !== '' && Number.isInteger(child) && child > 0) pids.push(child);
  }
  return pids;
}

/**
 * The schedstat of all of one process's threads, summed, or `undefined` when it has exited or cannot
 * be read. All threads, not just the main one: a worker's main thread may sit blocked while its
 * other threads work (a module loader such as tsx runs on its own thread; zlib and crypto run on
 * libuv's pool), and counting only the main thread would make that work look like waiting for I/O.
 *
 * Read synchronously: these files are generated from memory, and a pool of 16 Node workers (about
 * 110 threads) takes about 3 ms this way, several times less than through libuv's thread pool.
 */
function readSchedstat(pid: number): SchedStat | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let runNs = 0;
  let waitNs = 0;
  let read = 0;
  for (const tid of tids) {
    let thread: SchedStat | undefined;
    try {
      thread = parseSchedstat(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8'));
    } catch {
      continue; // the thread ended
    }
    if (!thread) continue;
    runNs += thread.runNs;
    waitNs += thread.waitNs;
    read += 1;
  }
  return read > 0 ? { runNs, waitNs } : undefined;
}

/**
 * Asks pidusage about all pids in one call, falling back to one call per pid when the batch fails
 * (on some platforms one exited pid fails the whole batch). Pids that cannot be measured are left out.
 */
async function processStats(pids: readonly number[], maxage: number): Promise<pidusage.Status[]> {
  try {
    // pidusage rewrites the array it is given, hence the copy.
    const byPid: Partial<Record<string, pidusage.Status>> = await pidusage([...pids], { maxage });
    return Object.values(byPid).filter((stat): stat is pidusage.Status => stat !== undefined && stat !== null);
  } catch {
    if (pids.length === 1) return [];
    const settled = await Promise.allSettled(pids.map((pid) => pidusage(pid, { maxage })));
    return settled.flatMap((result) => (result.status === 'fulfilled' && result.value ? [result.value] : []));
  }
}
