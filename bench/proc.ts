// Linux /proc helpers: who is alive, who started whom, and how much memory the parent holds.
// The bench uses them to prove cleanup (no process outlives a measurement) and to sample RSS.
import { readdirSync, readFileSync } from 'node:fs';

/** One row of /proc/<pid>/stat, reduced to what the bench needs. */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  pgrp: number;
  state: string;
  command: string;
}

/**
 * Reads the state of one process, or `undefined` when it is gone or unreadable.
 *
 * @example
 * readProcess(process.pid)?.ppid; // the parent's pid
 * @param pid - process id
 * @returns state, parent, process group and command name
 */
export function readProcess(pid: number): ProcessInfo | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may itself contain spaces or ')'.
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  return {
    pid,
    command: stat.slice(open + 1, close),
    state: fields[0] ?? '?',
    ppid: Number(fields[1]),
    pgrp: Number(fields[2]),
  };
}

/**
 * Lists every live process on the host (zombies excluded: they hold no resources but a pid).
 *
 * @example
 * listProcesses().length > 0; // true
 * @returns one entry per live process
 */
export function listProcesses(): ProcessInfo[] {
  const result: ProcessInfo[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const info = readProcess(pid);
    if (info && info.state !== 'Z') result.push(info);
  }
  return result;
}

/**
 * Lists the live direct children of a process.
 *
 * @example
 * childPids(process.pid); // e.g. [] before any fork
 * @param ppid - the parent's pid
 * @returns pids of its live children
 */
export function childPids(ppid: number = process.pid): number[] {
  return listProcesses()
    .filter((info) => info.ppid === ppid)
    .map((info) => info.pid);
}

/**
 * Finds processes that belong to a finished measurement: those still in its process group,
 * and those whose environment carries its marker (which catches workers that called setsid
 * or were started detached, and so left the group).
 *
 * @example
 * findSurvivors(12345, 'BENCH_MEASUREMENT=abc'); // [] when cleanup worked
 * @param pgrp - process group the measurement was started in
 * @param envMarker - `NAME=value` string placed in the measurement's environment
 * @returns the surviving processes
 */
export function findSurvivors(pgrp: number, envMarker: string): ProcessInfo[] {
  const survivors: ProcessInfo[] = [];
  for (const info of listProcesses()) {
    if (info.pid === process.pid) continue;
    if (info.pgrp === pgrp || environmentHas(info.pid, envMarker)) survivors.push(info);
  }
  return survivors;
}

function environmentHas(pid: number, entry: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(entry);
  } catch {
    return false;
  }
}

/** A running RSS sampler; see {@link startRssSampler}. */
export interface RssSampler {
  /** Takes a sample now and returns the highest RSS seen so far, in bytes. */
  peak(): number;
  /** Takes a sample now and returns it, in bytes. */
  sample(): number;
  /** Stops the timer. */
  stop(): void;
}

/**
 * Samples this process's resident set size on a timer and keeps the peak.
 * The timer is unref'd so a forgotten sampler never keeps the process alive.
 *
 * @example
 * const rss = startRssSampler(50);
 * // ... work ...
 * const peakBytes = rss.peak();
 * rss.stop();
 * @param intervalMs - sampling period
 * @returns the sampler
 */
export function startRssSampler(intervalMs = 50): RssSampler {
  let peak = 0;
  const sample = (): number => {
    const rss = process.memoryUsage.rss();
    if (rss > peak) peak = rss;
    return rss;
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  timer.unref();
  return {
    peak: () => {
      sample();
      return peak;
    },
    sample,
    stop: () => clearInterval(timer),
  };
}
