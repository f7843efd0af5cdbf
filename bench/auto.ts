// Benchmark of automatic concurrency (issue 3), not a test: is `concurrency: 'auto'` (with default
// options) faster than a fixed limit of optimalConcurrency() on I/O-bound tasks, and no slower on
// CPU-bound ones?
//
//   npx tsx bench/auto.ts                      # 5 interleaved rounds of both cases
//   npx tsx bench/auto.ts --rounds 3 --case io
//   npx tsx bench/auto.ts --rounds 7 --quiet 60     # each round waits for the host to be below 60% CPU
//   npx tsx bench/auto.ts --auto-options '{"maxConcurrency":8,"concurrencyStep":1,"sampleInterval":1000}'
//
// How it measures: src/ is compiled first (esbuild, into bench/auto/.lib/) so that every
// measurement runs in a fresh plain-Node process (bench/auto/measure.mjs) whose workers load plain
// JavaScript: a worker under tsx takes ~2 s to start on this machine, which would measure the
// loader instead of the policy. Each (case, mode, round) is one process; rounds alternate the order
// of auto and fixed, so slow drift in the machine's load hits both; medians over rounds are
// compared. Times include worker start-up (both modes pay it: that is what a user waits for).
// After each measurement, no process of its group or carrying its marker may remain.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spin } from './auto/tasks.mjs';
import { findSurvivors } from './proc.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const libDir = join(here, 'auto', '.lib');
const resultsDir = join(here, 'results');
const MEASURE_TIMEOUT_MS = 120_000;

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    /** Rounds of the CPU-bound case, when it should differ: its runs are short and its ratio is the finer one. */
    'cpu-rounds': { type: 'string' },
    case: { type: 'string', multiple: true },
    'io-tasks': { type: 'string', default: '64' },
    'io-ms': { type: 'string', default: '250' },
    'cpu-tasks': { type: 'string', default: '16' },
    'cpu-ms': { type: 'string', default: '200' },
    /** Iterations of each busy loop, instead of calibrating them: the same work across runs. */
    'cpu-iterations': { type: 'string' },
    'auto-options': { type: 'string', default: '{}' },
    out: { type: 'string', default: join(resultsDir, 'auto-latest.json') },
    /** Print every load reading of the auto runs (what the policy saw). */
    trace: { type: 'boolean', default: false },
    /**
     * Before each round, wait (up to 2 minutes) until the host's CPU use over one second is below
     * this percent: on a shared machine, a round measured during someone else's burst says little.
     */
    quiet: { type: 'string' },
  },
});

type Kind = 'io' | 'cpu';
type Mode = 'auto' | 'fixed';
interface Spec {
  kind: Kind;
  mode: Mode;
  tasks: number;
  /** Milliseconds to wait (io) or spin iterations (cpu). */
  param: number;
  autoOptions: Record<string, unknown>;
  trace?: boolean;
}
/** What bench/auto/measure.mjs prints. */
interface Sample {
  wallMs: number;
  /** CPU time of the measurement process itself (scheduler, and the load sampler in auto mode). */
  parentCpuMs: number;
  correct: boolean;
  fixed: number;
  maxLimit: number;
  finalLimit: number;
  peakRunning: number;
  /** [ms since start, limit, running, host cpu %, children demand %]. */
  limits: Array<[number, number, number, number | null, number | null]>;
  survivors?: string[];
  /** The host's CPU use over the second before the round, in percent (other programs, mostly). */
  hostCpuBefore?: number;
  /** With --trace: [ms since start, limit, running, host cpu %, children demand %, their wait %, children measured]. */
  readings?: Array<Array<number | null>>;
}

const rounds = positive('rounds', args.rounds);
const roundsOf: Record<Kind, number> = { io: rounds, cpu: args['cpu-rounds'] === undefined ? rounds : positive('cpu-rounds', args['cpu-rounds']) };
const cases = (args.case ?? ['io', 'cpu']) as Kind[];
const autoOptions = JSON.parse(args['auto-options']) as Record<string, unknown>;

const machine = {
  date: new Date().toISOString(),
  node: process.version,
  cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
  cpuCount: os.cpus().length,
  totalMemoryMB: Math.round(os.totalmem() / 2 ** 20),
  loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
  nodeExtraCaCertsSet: Boolean(process.env.NODE_EXTRA_CA_CERTS),
};
console.log(
  `auto-concurrency benchmark: ${machine.cpuCount} CPUs (${machine.cpuModel}), Node ${machine.node}, ` +
    `load average ${machine.loadAverageAtStart.join(' ')}, NODE_EXTRA_CA_CERTS ${machine.nodeExtraCaCertsSet ? 'set' : 'not set'}`,
);

await buildLibrary();
const iterations =
  args['cpu-iterations'] === undefined ? calibrate(positive('cpu-ms', args['cpu-ms'])) : positive('cpu-iterations', args['cpu-iterations']);
const specs: Record<Kind, Omit<Spec, 'mode'>> = {
  io: { kind: 'io', tasks: positive('io-tasks', args['io-tasks']), param: positive('io-ms', args['io-ms']), autoOptions, trace: args.trace },
  cpu: { kind: 'cpu', tasks: positive('cpu-tasks', args['cpu-tasks']), param: iterations, autoOptions, trace: args.trace },
};
console.log(
  `cases: ${cases.map((k) => `${k} = ${specs[k].tasks} tasks × ${k === 'io' ? `${specs.io.param} ms wait` : `~${args['cpu-ms']} ms busy loop (${iterations} iterations)`}`).join('; ')}; ` +
    `${cases.map((k) => `${roundsOf[k]} ${k} rounds`).join(', ')}; auto options ${JSON.stringify(autoOptions)}`,
);

const samples: Record<string, Sample[]> = {};
const errors: string[] = [];
const quiet = args.quiet === undefined ? undefined : Number(args.quiet);
for (let round = 0; round < Math.max(...cases.map((kind) => roundsOf[kind])); round++) {
  // Alternate which mode goes first, so drift in the machine's load does not favour one.
  const modes: Mode[] = round % 2 === 0 ? ['auto', 'fixed'] : ['fixed', 'auto'];
  for (const kind of cases) {
    if (round >= roundsOf[kind]) continue;
    const hostCpuBefore = await waitForQuiet(quiet);
    for (const mode of modes) {
      const key = `${kind}/${mode}`;
      try {
        const sample = await measure({ ...specs[kind], mode });
        sample.hostCpuBefore = hostCpuBefore;
        (samples[key] ??= []).push(sample);
        const note = sample.correct ? '' : ' WRONG RESULTS';
        console.log(
          `  round ${round + 1} ${key.padEnd(9)} ${(sample.wallMs / 1000).toFixed(2).padStart(6)} s  max limit ${sample.maxLimit}` +
            `  peak running ${sample.peakRunning}  host cpu before ${hostCpuBefore}%  load avg ${os.loadavg()[0]!.toFixed(1)}${note}`,
        );
        if (sample.readings && mode === 'auto') {
          console.log('      ms\tlimit\trunning\tcpu%\tdemand%\twait%\tmeasured');
          for (const reading of sample.readings) console.log(`      ${reading.join('\t')}`);
        }
        if (!sample.correct) errors.push(`${key} round ${round + 1}: wrong results`);
        if (sample.survivors?.length) errors.push(`${key} round ${round + 1}: survivors killed: ${sample.survivors.join(', ')}`);
      } catch (error) {
        errors.push(`${key} round ${round + 1}: ${(error as Error).message}`);
        console.log(`  round ${round + 1} ${key} FAILED: ${(error as Error).message}`);
      }
    }
  }
}

interface CaseResult {
  autoMs: number[];
  fixedMs: number[];
  medianAutoMs: number;
  medianFixedMs: number;
  /** io: fixed / auto (speed-up); cpu: auto / fixed (slow-down). */
  ratio: number;
  /** The same ratio per round (auto and fixed of one round ran back to back), then its median. */
  pairedRatios: number[];
  medianPairedRatio: number;
  target: string;
  pass: boolean;
  maxLimits: number[];
  fixedConcurrency: number | undefined;
  /** The limit's trajectory in the auto run whose time was the median. */
  medianAutoTrace: Sample['limits'] | undefined;
  /** Host CPU use (%) in the second before each round. */
  hostCpuBefore: Array<number | undefined>;
  /** Median CPU time of the measurement process itself, auto and fixed. */
  medianParentCpuMs: { auto: number; fixed: number };
}
const results: Partial<Record<Kind, CaseResult>> = {};
const rows: string[][] = [['case', 'mode', 'median s', 'min–max s', 'max limit', 'parent cpu ms', 'rounds']];
for (const kind of cases) {
  const auto = samples[`${kind}/auto`] ?? [];
  const fixed = samples[`${kind}/fixed`] ?? [];
  if (auto.length === 0 || fixed.length === 0) continue;
  const autoMs = auto.map((s) => s.wallMs);
  const fixedMs = fixed.map((s) => s.wallMs);
  const medianAutoMs = median(autoMs);
  const medianFixedMs = median(fixedMs);
  const pairs = Math.min(autoMs.length, fixedMs.length);
  const pairedRatios = Array.from({ length: pairs }, (_, i) => (kind === 'io' ? fixedMs[i]! / autoMs[i]! : autoMs[i]! / fixedMs[i]!));
  const ratio = kind === 'io' ? medianFixedMs / medianAutoMs : medianAutoMs / medianFixedMs;
  const pass = kind === 'io' ? ratio >= 3 : ratio <= 1.05;
  const medianAuto = auto.reduce((best, s) => (Math.abs(s.wallMs - medianAutoMs) < Math.abs(best.wallMs - medianAutoMs) ? s : best));
  results[kind] = {
    autoMs: autoMs.map(round1),
    fixedMs: fixedMs.map(round1),
    medianAutoMs: round1(medianAutoMs),
    medianFixedMs: round1(medianFixedMs),
    ratio: round3(ratio),
    pairedRatios: pairedRatios.map(round3),
    medianPairedRatio: round3(median(pairedRatios)),
    target: kind === 'io' ? 'fixed / auto >= 3' : 'auto / fixed <= 1.05',
    pass,
    maxLimits: auto.map((s) => s.maxLimit),
    fixedConcurrency: fixed[0]?.fixed,
    medianAutoTrace: medianAuto.limits,
    hostCpuBefore: auto.map((s) => s.hostCpuBefore),
    medianParentCpuMs: { auto: round1(median(auto.map((s) => s.parentCpuMs))), fixed: round1(median(fixed.map((s) => s.parentCpuMs))) },
  };
  for (const [mode, list, ms] of [['auto', auto, autoMs], ['fixed', fixed, fixedMs]] as const) {
    rows.push([
      kind,
      mode === 'fixed' ? `fixed = ${list[0]!.fixed}` : 'auto',
      (median(ms) / 1000).toFixed(2),
      `${(Math.min(...ms) / 1000).toFixed(2)}–${(Math.max(...ms) / 1000).toFixed(2)}`,
      `${Math.min(...list.map((s) => s.maxLimit))}–${Math.max(...list.map((s) => s.maxLimit))}`,
      String(Math.round(median(list.map((s) => s.parentCpuMs)))),
      String(list.length),
    ]);
  }
}

console.log();
printTable(rows);
console.log();
for (const [kind, r] of Object.entries(results)) {
  const name = kind === 'io' ? 'I/O-bound speed-up (fixed / auto)' : 'CPU-bound slow-down (auto / fixed)';
  console.log(
    `${r.pass ? 'PASS' : 'FAIL'}  ${name}: ${r.ratio.toFixed(2)}× (ratio of medians; target ${r.target}); ` +
      `per round ${r.pairedRatios.map((x) => x.toFixed(2)).join(', ')}, median ${r.medianPairedRatio.toFixed(2)}; ` +
      `host cpu before each round ${r.hostCpuBefore.map((c) => `${c}%`).join(', ')}`,
  );
  if (r.medianAutoTrace) {
    const trace = r.medianAutoTrace.map(([ms, limit]) => `${(ms / 1000).toFixed(2)}s→${limit}`).join(' ');
    console.log(`      limit in the median auto run: ${trace}`);
  }
}
for (const error of errors) console.log(`ERROR ${error}`);

mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(
  args.out,
  `${JSON.stringify({ benchmark: 'auto-concurrency', machine, quietThreshold: quiet, loadAverageAtEnd: os.loadavg().map((l) => Math.round(l * 100) / 100), rounds: roundsOf, cases: specs, results, errors }, null, 2)}\n`,
);
console.log(`\nwritten to ${args.out}`);

/** Compiles src/ to plain JavaScript in bench/auto/.lib/ (types are not checked: tsc does that). */
async function buildLibrary(): Promise<void> {
  let esbuild: typeof import('esbuild');
  try {
    esbuild = await import('esbuild');
  } catch (error) {
    throw new Error(`bench/auto.ts compiles src/ with esbuild (installed with tsx) and could not load it: ${(error as Error).message}`);
  }
  const entryPoints = listTs(join(root, 'src'));
  rmSync(libDir, { recursive: true, force: true });
  const started = performance.now();
  await esbuild.build({ entryPoints, outdir: libDir, outbase: join(root, 'src'), format: 'esm', platform: 'node', target: 'node20', logLevel: 'error' });
  console.log(`compiled ${entryPoints.length} files of src/ to ${libDir} in ${Math.round(performance.now() - started)} ms`);
}

function listTs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return listTs(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/**
 * Iterations of the busy loop that take `ms` on a free core: the best of many short timings, since
 * on a shared machine a timing can only be slowed down by others, never sped up, and a short one
 * has a fair chance of running undisturbed. Pass --cpu-iterations to compare runs exactly.
 */
function calibrate(ms: number): number {
  const probe = 500_000; // about 1 ms on this machine's cores
  spin(probe * 20); // warm up the JIT
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 200; i++) {
    const started = performance.now();
    spin(probe);
    best = Math.min(best, performance.now() - started);
  }
  return Math.round((probe * ms) / best);
}

/**
 * Measures the host's CPU use over one second; with a threshold, repeats (for at most 2 minutes)
 * until it is below it.
 */
async function waitForQuiet(threshold: number | undefined): Promise<number> {
  const until = Date.now() + 120_000;
  for (;;) {
    const before = cpuTimes();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const after = cpuTimes();
    const busy = Math.round((100 * (after.total - after.idle - (before.total - before.idle))) / Math.max(1, after.total - before.total));
    if (threshold === undefined || busy < threshold || Date.now() > until) return busy;
  }
}

function cpuTimes(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const { times } of os.cpus()) {
    idle += times.idle;
    total += times.user + times.nice + times.sys + times.idle + times.irq;
  }
  return { idle, total };
}

/** Runs one measurement in its own process and checks that nothing it started survives it. */
function measure(spec: Spec): Promise<Sample> {
  const marker = `BENCH_AUTO_MEASUREMENT=${randomUUID()}`;
  const [markerName, markerValue] = marker.split('=') as [string, string];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'auto', 'measure.mjs'), join(libDir, 'index.js'), JSON.stringify(spec)], {
      cwd: root,
      detached: true, // its own process group, so survivors can be found and killed
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, [markerName]: markerValue },
    });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const timer = setTimeout(() => killGroup(child.pid!), MEASURE_TIMEOUT_MS);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const survivors = findSurvivors(child.pid!, marker);
      for (const survivor of survivors) killQuietly(survivor.pid);
      const line = stdout.trim().split('\n').at(-1);
      if (code !== 0 || !line) {
        reject(new Error(`measurement exited with ${signal ?? `code ${code}`}${line ? '' : ', no result'}`));
        return;
      }
      const sample = JSON.parse(line) as Sample;
      if (survivors.length) sample.survivors = survivors.map((s) => `${s.pid} ${s.command}`);
      resolve(sample);
    });
  });
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function positive(name: string, text: string): number {
  const value = Number(text);
  if (!(Number.isInteger(value) && value > 0)) throw new Error(`--${name} must be a positive integer, got ${text}`);
  return value;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function printTable(table: string[][]): void {
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  for (const [i, row] of table.entries()) {
    console.log(row.map((cell, c) => (c >= 2 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}
