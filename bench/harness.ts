// The benchmark harness: workload and contender types, isolated measurements, interleaved
// rounds, medians, tables, targets and machine info. Workloads live in bench/workloads/.
//
// Every (contender, round) runs in its own Node process, started in its own process group:
// a cold start is really cold, one library's global state (cluster settings, heap, JIT)
// cannot leak into the next, a parent-RSS figure belongs to one contender only, and after
// each measurement the harness can prove that no process outlived it.
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { findSurvivors } from './proc.js';

/** How a metric is printed. Every metric is "lower is better". */
export interface MetricSpec {
  unit: string;
  /** What the number means, for the JSON file. */
  description: string;
}

/** What one contender reports for one round. */
export interface Measurement {
  /** Metric name to value; a metric may be missing (e.g. warm when there is no warm pool). */
  metrics: Record<string, number>;
  /** Facts worth printing under the table, e.g. why a metric is missing. */
  notes?: string[];
}

/** One way of doing a workload's work. */
export interface Contender<S> {
  name: string;
  description: string;
  /** Needs this library (bench/ours.ts); skipped, with the reason printed, when it cannot load. */
  usesOurs?: boolean;
  /** Runs in a fresh measurement process; must clean up every process it starts. */
  measure(sizes: S): Promise<Measurement>;
}

/** A pass/fail line printed after a workload's table. */
export interface Target {
  contender: string;
  metric: string;
  /** Compare with this contender's median of the same metric... */
  vs?: string;
  /** ...and pass when the ratio is at most this. */
  maxRatio?: number;
  /** Or pass when the median itself is at most this (in the metric's unit). */
  max?: number;
}

/** A kind of work, the contenders that do it, and the targets they are held to. */
export interface Workload<S> {
  name: string;
  describe(sizes: S): string;
  sizes: S;
  quickSizes: S;
  /** Runs once in the orchestrator before the rounds (e.g. calibrating a busy loop). */
  prepare?(sizes: S): Promise<S>;
  metrics: Record<string, MetricSpec>;
  /** Contender whose medians the ratio column divides by. */
  reference?: string;
  contenders: Array<Contender<S>>;
  targets: Target[];
  /** Upper bound for one measurement process; it is killed (and the round lost) beyond it. */
  timeoutMs: number;
}

/** What the orchestrator learned from one measurement process. */
export interface Outcome {
  metrics: Record<string, number>;
  notes: string[];
  error?: string;
  /** Wall time of the whole measurement process, start-up included. */
  elapsedMs: number;
  /** Host 1-minute load average when the measurement started: how noisy the round was. */
  loadAverage: number;
}

/** Message a measurement process sends back before exiting. */
export type MeasurementReply =
  | { ok: true; measurement: Measurement }
  | { ok: false; error: string; stack?: string };

const measureScript = new URL('./measure.ts', import.meta.url);
/** Contender name that makes a measurement process only try to import bench/ours.ts. */
export const PROBE_OURS = '__probe_ours__';
/** How long a measurement process may stay alive after reporting before it counts as stuck. */
const EXIT_GRACE_MS = 5000;
/** How long processes it started may take to go away after it exits. */
const SURVIVOR_GRACE_MS = 2000;

let activeChild: ChildProcess | undefined;

/**
 * Kills the running measurement's whole process group (used on SIGINT).
 *
 * @example
 * process.on('SIGINT', () => { killActiveMeasurement(); process.exit(130); });
 */
export function killActiveMeasurement(): void {
  if (activeChild?.pid) killGroup(activeChild.pid);
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/**
 * Runs one contender once, in a fresh Node process (under the same tsx loader as this one),
 * in its own process group; then checks that it exited on its own and left no process behind.
 *
 * @example
 * const outcome = await measureIsolated('tiny', 'piscina', { tasks: 1000, warmup: 100 }, 60_000);
 * @param workload - workload name (bench/workloads/index.ts)
 * @param contender - contender name within it, or {@link PROBE_OURS}
 * @param sizes - the workload's sizes, passed as JSON
 * @param timeoutMs - kill the measurement beyond this
 * @returns metrics and notes, or an error
 */
export async function measureIsolated(
  workload: string,
  contender: string,
  sizes: unknown,
  timeoutMs: number,
): Promise<Outcome> {
  const id = randomUUID();
  const marker = `BENCH_MEASUREMENT=${id}`;
  const started = performance.now();
  const loadAverage = Math.round(os.loadavg()[0]! * 100) / 100;
  const notes: string[] = [];
  const child = fork(measureScript, [workload, contender, JSON.stringify(sizes)], {
    execArgv: process.execArgv,
    detached: true,
    env: { ...process.env, BENCH_MEASUREMENT: id },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  activeChild = child;
  const pgid = child.pid!;
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

  let reply: MeasurementReply | undefined;
  let stuck = false;
  let timedOut = false;
  let graceTimer: NodeJS.Timeout | undefined;
  child.on('message', (message: MeasurementReply) => {
    reply = message;
    graceTimer = setTimeout(() => {
      stuck = true;
      killGroup(pgid);
    }, EXIT_GRACE_MS);
  });
  const timeoutTimer = setTimeout(() => {
    timedOut = true;
    killGroup(pgid);
  }, timeoutMs);

  const [code, signal] = await exited;
  clearTimeout(timeoutTimer);
  clearTimeout(graceTimer);
  activeChild = undefined;
  const elapsedMs = performance.now() - started;

  if (stuck) notes.push(`did not exit on its own within ${EXIT_GRACE_MS / 1000} s after reporting (open handles or live children); killed`);
  const survivors = await waitForSurvivors(pgid, marker);
  if (survivors.length > 0) {
    notes.push(`${survivors.length} process(es) outlived the measurement (${survivors.map((s) => `${s.pid} ${s.command}`).join(', ')}); killed`);
    for (const survivor of survivors) {
      try {
        process.kill(survivor.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  }

  const failed = (error: string): Outcome => ({ metrics: {}, notes, error, elapsedMs, loadAverage });
  if (timedOut) return failed(`timed out after ${timeoutMs / 1000} s`);
  if (!reply) return failed(`measurement process exited (code ${code}, signal ${signal}) without a result`);
  if (!reply.ok) return failed(reply.error);
  return { metrics: reply.measurement.metrics, notes: [...(reply.measurement.notes ?? []), ...notes], elapsedMs, loadAverage };
}

async function waitForSurvivors(pgid: number, marker: string): Promise<ReturnType<typeof findSurvivors>> {
  const deadline = Date.now() + SURVIVOR_GRACE_MS;
  for (;;) {
    const survivors = findSurvivors(pgid, marker);
    if (survivors.length === 0 || Date.now() >= deadline) return survivors;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Orders contenders for round `round` (0-based) by rotating the list, so each contender
 * takes every position in turn and slow drift on a noisy machine hits all of them alike.
 *
 * @example
 * interleave(['A', 'B', 'C'], 1); // ['B', 'C', 'A']
 * @param items - contenders in declared order
 * @param round - round number, from 0
 * @returns the rotated list
 */
export function interleave<T>(items: readonly T[], round: number): T[] {
  const shift = items.length === 0 ? 0 : round % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

/**
 * Median of a list (mean of the middle two when even).
 *
 * @example
 * median([3, 1, 2]); // 2
 * @param values - samples
 * @returns the median, or NaN for an empty list
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The machine and conditions a run was measured under. */
export interface MachineInfo {
  date: string;
  node: string;
  platform: string;
  cpuModel: string;
  cpuCount: number;
  totalMemoryMB: number;
  loadAverageAtStart: number[];
  /** Set on this machine; it adds ~30 ms to every Node start, so fork-heavy figures depend on it. */
  nodeExtraCaCertsSet: boolean;
  /** The bench's own Node flags (tsx's loader); peer and baseline children run without them. */
  execArgv: string[];
  peerVersions: Record<string, string>;
}

/**
 * Describes this machine and this run's conditions.
 *
 * @example
 * machineInfo().cpuCount; // 2
 * @param peerVersions - versions of the peer libraries, by package name
 * @returns the description recorded in the JSON and printed at the top
 */
export function machineInfo(peerVersions: Record<string, string>): MachineInfo {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuCount: cpus.length,
    totalMemoryMB: Math.round(os.totalmem() / 2 ** 20),
    loadAverageAtStart: os.loadavg().map((load) => Math.round(load * 100) / 100),
    nodeExtraCaCertsSet: Boolean(process.env.NODE_EXTRA_CA_CERTS),
    execArgv: process.execArgv,
    peerVersions,
  };
}

/** Per-contender results of a workload, as stored in the JSON file. */
export interface ContenderResult {
  description: string;
  /** Metric name to the value of each successful round. */
  samples: Record<string, number[]>;
  medians: Record<string, number>;
  errors: string[];
  notes: string[];
  /** Host 1-minute load average at the start of each round's measurement. */
  loadAverages: number[];
  skipped?: string;
}

/** A target's verdict. */
export interface TargetResult extends Target {
  text: string;
  status: 'PASS' | 'FAIL' | 'n/a';
  value?: number;
}

/**
 * Formats a number with about three significant digits.
 *
 * @example
 * formatNumber(12.345); // '12.3'
 * @param value - the number
 * @returns its short form; '-' for NaN
 */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return '-';
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return Math.round(value).toLocaleString('en-US');
  if (magnitude >= 10) return value.toFixed(1);
  if (magnitude >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

/**
 * Renders a workload's results as a text table: one row per contender and metric, with the
 * median, the spread over rounds and the ratio to the reference contender's median.
 *
 * @example
 * console.log(renderTable(workload, results));
 * @param workload - its metrics and reference
 * @param results - per-contender results
 * @returns the table, lines joined by newlines
 */
export function renderTable(workload: Workload<unknown>, results: Record<string, ContenderResult>): string {
  const reference = workload.reference ? results[workload.reference] : undefined;
  const rows: string[][] = [['contender', 'metric', 'median', 'unit', `× ${workload.reference ?? 'ref'}`, 'min–max', 'rounds']];
  for (const [name, result] of Object.entries(results)) {
    if (result.skipped) {
      rows.push([name, '', 'skipped', '', '', '', '']);
      continue;
    }
    const metricNames = Object.keys(workload.metrics).filter((metric) => result.samples[metric]?.length);
    if (metricNames.length === 0) rows.push([name, '', 'no result', '', '', '', `0 (${result.errors.length} failed)`]);
    for (const metric of metricNames) {
      const samples = result.samples[metric]!;
      const value = result.medians[metric]!;
      const referenceValue = reference?.medians[metric];
      const ratio = referenceValue ? `${(value / referenceValue).toFixed(2)}×` : '';
      const failed = result.errors.length ? ` (${result.errors.length} failed)` : '';
      rows.push([
        name,
        metric,
        formatNumber(value),
        workload.metrics[metric]!.unit,
        ratio,
        `${formatNumber(Math.min(...samples))}–${formatNumber(Math.max(...samples))}`,
        `${samples.length}${failed}`,
      ]);
    }
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const numeric = new Set([2, 4, 5]);
  const line = (row: string[]): string =>
    row.map((cell, column) => (numeric.has(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!))).join('  ');
  return [line(rows[0]!), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

/**
 * Judges each target against the medians.
 *
 * @example
 * evaluateTargets(workload, results).map((t) => t.text);
 * @param workload - its targets and metric units
 * @param results - per-contender results
 * @returns one verdict per target, with a printable line
 */
export function evaluateTargets(workload: Workload<unknown>, results: Record<string, ContenderResult>): TargetResult[] {
  return workload.targets.map((target) => {
    const unit = workload.metrics[target.metric]?.unit ?? '';
    const subject = results[target.contender];
    const value = subject?.medians[target.metric];
    const bound = target.vs ? `≤ ${target.maxRatio}× ${target.vs}` : `≤ ${target.max} ${unit}`;
    const label = `${target.contender} ${target.metric} ${bound}`;
    const missing = (why: string): TargetResult => ({ ...target, status: 'n/a', text: `${label}: n/a (${why})` });
    if (!subject || subject.skipped) return missing(subject?.skipped ?? `${target.contender} did not run`);
    if (value === undefined) return missing(`${target.contender} has no ${target.metric} result`);
    if (target.vs) {
      const other = results[target.vs]?.medians[target.metric];
      if (other === undefined) return missing(`${target.vs} has no ${target.metric} result`);
      const ratio = value / other;
      const status = ratio <= target.maxRatio! ? 'PASS' : 'FAIL';
      return { ...target, status, value: ratio, text: `${label}: ${ratio.toFixed(2)}× (${formatNumber(value)} vs ${formatNumber(other)} ${unit}) ${status}` };
    }
    const status = value <= target.max! ? 'PASS' : 'FAIL';
    return { ...target, status, value, text: `${label}: ${formatNumber(value)} ${unit} ${status}` };
  });
}

/**
 * Writes the run's JSON to bench/results/<timestamp>.json and bench/results/latest.json.
 *
 * @example
 * const file = writeResults({ machine, workloads });
 * @param report - everything measured
 * @returns the timestamped file's path
 */
export function writeResults(report: { machine: MachineInfo; [key: string]: unknown }): string {
  const directory = new URL('./results/', import.meta.url);
  mkdirSync(directory, { recursive: true });
  const stamp = report.machine.date.replace(/[:.]/g, '-');
  const file = new URL(`${stamp}.json`, directory);
  const text = `${JSON.stringify(report, null, 2)}\n`;
  writeFileSync(file, text);
  writeFileSync(new URL('latest.json', directory), text);
  return file.pathname;
}
