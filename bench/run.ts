// The benchmark suite: `npx tsx bench/run.ts [workload...] [--rounds N] [--quick] [--contenders a,b] [--peers-only] [--ours-src]`
// (`npm run bench -- ...`). Prints a table per workload with the targets of issue 4 as
// PASS/FAIL lines, and writes bench/results/<timestamp>.json and bench/results/latest.json.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import {
  PROBE_OURS,
  evaluateTargets,
  formatNumber,
  interleave,
  killActiveMeasurement,
  machineInfo,
  measureIsolated,
  median,
  renderTable,
  writeResults,
  type ContenderResult,
  type TargetResult,
  type Workload,
} from './harness.js';
import { buildOurs, type OursBuild } from './build-ours.js';
import { workloads } from './workloads/index.js';

const usage = `usage: npx tsx bench/run.ts [workload...] [--rounds N] [--quick] [--contenders a,b] [--peers-only] [--ours-src]
workloads: ${workloads.map((workload) => workload.name).join(', ')} (default: all)
  --rounds N        interleaved rounds per workload; the median is reported (default 5, --quick 2)
  --quick           smaller sizes and 2 rounds, for a check in under 2 minutes
  --contenders a,b  run only these contenders (by name, in every selected workload)
  --peers-only      skip this library's contenders
  --ours-src        load this library from src/ under tsx (its workers load tsx too) instead of
                    src/ compiled to plain JS in bench/.ours-build/ (the default, like a user's dist/)`;

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    contenders: { type: 'string' },
    'peers-only': { type: 'boolean', default: false },
    'ours-src': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  console.log(usage);
  process.exit(0);
}
const unknown = positionals.filter((name) => !workloads.some((workload) => workload.name === name));
if (unknown.length > 0) {
  console.error(`unknown workload(s): ${unknown.join(', ')}\n${usage}`);
  process.exit(2);
}
const rounds = flags.rounds === undefined ? (flags.quick ? 2 : 5) : Number(flags.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds must be a positive integer, got ${flags.rounds}`);
  process.exit(2);
}
const contenderFilter = flags.contenders?.split(',').map((name) => name.trim());
const selected = workloads.filter((workload) => positionals.length === 0 || positionals.includes(workload.name));

// Measurements run detached in their own process groups, so Ctrl-C must reach them from here.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killActiveMeasurement();
    process.exit(130);
  });
}

const peerVersion = (name: string): string => {
  try {
    const url = new URL(`../node_modules/${name}/package.json`, import.meta.url);
    return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
  } catch {
    return 'missing';
  }
};
const machine = machineInfo(
  Object.fromEntries(['piscina', 'tinypool', 'workerpool', 'poolifier', 'execa', 'tsx'].map((name) => [name, peerVersion(name)])),
);

console.log(`async-process-scheduler bench — ${machine.date}`);
console.log(`machine: ${machine.cpuCount} × ${machine.cpuModel}, ${machine.totalMemoryMB} MB, ${machine.platform}, load ${machine.loadAverageAtStart.join(' ')}`);
console.log(`node ${machine.node}; NODE_EXTRA_CA_CERTS is ${machine.nodeExtraCaCertsSet ? 'SET (adds ~30 ms to every Node start)' : 'not set'}`);
console.log(`peers: ${Object.entries(machine.peerVersions).map(([name, version]) => `${name} ${version}`).join(', ')}`);
if (machine.loadAverageAtStart[0]! > machine.cpuCount / 2) {
  console.log(`WARNING: the machine is busy (1-minute load ${machine.loadAverageAtStart[0]} on ${machine.cpuCount} CPUs); figures will be noisy`);
}
console.log(`${rounds} interleaved round(s)${flags.quick ? ', --quick sizes' : ''}; every measurement runs in a fresh process; peer and baseline children run plain node (no tsx)`);

const wantsContender = (name: string): boolean =>
  (!contenderFilter || contenderFilter.includes(name)) && !(flags['peers-only'] && name === 'ours');

// Build once and try the import once, in a measurement process like the real ones, so a core
// that does not build yet costs one line and not a failed round per workload.
let oursUnavailable: string | undefined;
let oursBuild: OursBuild | undefined;
if (selected.some((workload) => workload.contenders.some((contender) => contender.usesOurs && wantsContender(contender.name)))) {
  if (flags['ours-src']) {
    console.log('ours: loaded from src/ under tsx (--ours-src); its workers load tsx as well, the peers\' do not');
  } else {
    try {
      oursBuild = buildOurs();
      process.env.BENCH_OURS_MODULE = oursBuild.entry;
      const source = `${oursBuild.commit}${oursBuild.srcDirty ? ' + uncommitted changes in src/' : ''}`;
      console.log(`ours: src/ at ${source} compiled to plain JS (bench/.ours-build/, ${oursBuild.files} files); its workers run plain node, like the peers'`);
    } catch (error) {
      oursUnavailable = `cannot compile src/: ${(error as Error).message}`;
    }
  }
  if (!oursUnavailable) {
    const probe = await measureIsolated('', PROBE_OURS, {}, 60_000);
    if (probe.error) oursUnavailable = `cannot import bench/ours.ts (this library): ${probe.error}`;
  }
  if (oursUnavailable) console.log(`ours: SKIPPED — ${oursUnavailable}`);
}

interface WorkloadReport {
  description: string;
  sizes: unknown;
  rounds: number;
  reference?: string;
  metrics: Workload<unknown>['metrics'];
  contenders: Record<string, ContenderResult>;
  targets: TargetResult[];
  loadAverageAtEnd: number[];
}

const reports: Record<string, WorkloadReport> = {};
const started = performance.now();

for (const workload of selected as Array<Workload<unknown>>) {
  const baseSizes = flags.quick ? workload.quickSizes : workload.sizes;
  const sizes = workload.prepare ? await workload.prepare(baseSizes) : baseSizes;
  const description = workload.describe(sizes);
  console.log(`\n== ${workload.name}: ${description}`);

  const results: Record<string, ContenderResult> = {};
  const active = workload.contenders.filter((contender) => wantsContender(contender.name));
  for (const contender of active) {
    results[contender.name] = { description: contender.description, samples: {}, medians: {}, errors: [], notes: [], loadAverages: [] };
    if (contender.usesOurs && oursUnavailable) results[contender.name]!.skipped = oursUnavailable;
  }
  const runnable = active.filter((contender) => !results[contender.name]!.skipped);

  for (let round = 0; round < rounds; round++) {
    for (const contender of interleave(runnable, round)) {
      const result = results[contender.name]!;
      const outcome = await measureIsolated(workload.name, contender.name, sizes, workload.timeoutMs);
      for (const [metric, value] of Object.entries(outcome.metrics)) (result.samples[metric] ??= []).push(value);
      for (const note of outcome.notes) if (!result.notes.includes(note)) result.notes.push(note);
      if (outcome.error) result.errors.push(outcome.error);
      result.loadAverages.push(outcome.loadAverage);
      const shown = outcome.error
        ? `ERROR ${outcome.error}`
        : Object.entries(outcome.metrics)
            .map(([metric, value]) => `${metric} ${formatNumber(value)} ${workload.metrics[metric]?.unit ?? ''}`)
            .join(', ');
      const took = `${(outcome.elapsedMs / 1000).toFixed(1)} s, load ${outcome.loadAverage.toFixed(1)}`;
      console.log(`  round ${round + 1}/${rounds}  ${contender.name.padEnd(16)} ${shown}  (${took})`);
    }
  }

  for (const result of Object.values(results)) {
    for (const [metric, samples] of Object.entries(result.samples)) result.medians[metric] = median(samples);
  }
  console.log();
  console.log(renderTable(workload, results));
  for (const [name, result] of Object.entries(results)) {
    for (const note of result.notes) console.log(`  note, ${name}: ${note}`);
    for (const error of new Set(result.errors)) console.log(`  error, ${name}: ${error}`);
  }
  const targets = evaluateTargets(workload, results);
  if (targets.length > 0) {
    console.log(`targets (issue 4)${flags.quick ? ', at --quick sizes' : ''}:`);
    for (const target of targets) console.log(`  ${target.text}`);
  }
  reports[workload.name] = {
    description,
    sizes,
    rounds,
    reference: workload.reference,
    metrics: workload.metrics,
    contenders: results,
    targets,
    loadAverageAtEnd: os.loadavg().map((load) => Math.round(load * 100) / 100),
  };
}

const file = writeResults({
  machine,
  quick: flags.quick,
  rounds,
  ours: oursUnavailable
    ? { available: false, reason: oursUnavailable }
    : { available: true, from: flags['ours-src'] ? 'src under tsx' : 'src compiled to plain JS', ...oursBuild },
  workloads: reports,
});
console.log(`\n${((performance.now() - started) / 1000).toFixed(0)} s; NODE_EXTRA_CA_CERTS was ${machine.nodeExtraCaCertsSet ? 'set' : 'not set'}`);
console.log(`results: ${file} (also bench/results/latest.json)`);
