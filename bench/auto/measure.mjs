// One measurement of bench/auto.ts, in its own plain-Node process (no tsx, so neither this
// process nor the workers it starts pay for a TypeScript loader): runs one batch of tasks through
// the compiled library and prints one JSON line on stdout.
//
//   node bench/auto/measure.mjs <library index.js> <spec JSON>
//   spec: { kind: 'io' | 'cpu', mode: 'auto' | 'fixed', tasks, param, autoOptions }
import { pathToFileURL } from 'node:url';

const [libraryPath, specText] = process.argv.slice(2);
if (!libraryPath || !specText) {
  console.error('usage: node bench/auto/measure.mjs <library index.js> <spec JSON>');
  process.exit(2);
}
/** @type {{ kind: 'io' | 'cpu', mode: 'auto' | 'fixed', tasks: number, param: number, autoOptions?: object, trace?: boolean }} */
const spec = JSON.parse(specText);
const { schedule$, moduleTask, optimalConcurrency } = await import(pathToFileURL(libraryPath).href);

const taskModule = new URL('./tasks.mjs', import.meta.url);
const exportName = spec.kind === 'io' ? 'wait' : 'spin';
const tasks = Array.from({ length: spec.tasks }, () => moduleTask(taskModule, exportName, [spec.param]));
const fixed = optimalConcurrency();
const options = spec.mode === 'fixed' ? { concurrency: fixed } : { ...spec.autoOptions, concurrency: 'auto' };

const run = schedule$(tasks, options);
/** Every change of the limit: [ms since start, limit, running, host cpu %, children demand % of a core]. */
const limits = [];
let peakRunning = 0;
let lastProgress;
let start = performance.now();
const since = () => Math.round(performance.now() - start);
/** With `spec.trace`: every new load reading, [ms, limit, running, cpu, demand, wait, measured children]. */
const readings = [];
run.progress$.subscribe((p) => {
  peakRunning = Math.max(peakRunning, p.running);
  if (spec.trace && p.load && p.load !== lastProgress?.load) {
    readings.push([since(), p.concurrency, p.running, round(p.load.cpu), round(p.load.childrenDemand), round(p.load.childrenWait), p.load.childrenMeasured ?? null]);
  }
  lastProgress = p;
});
run.concurrency$.subscribe((limit) => {
  const load = lastProgress?.load ?? {};
  limits.push([since(), limit, lastProgress?.running ?? 0, round(load.cpu), round(load.childrenDemand)]);
});

start = performance.now();
const cpuBefore = process.cpuUsage();
const values = await run.toOrderedArray();
const wallMs = performance.now() - start;
// This process's own CPU time during the run: the scheduler, plus the load sampler in auto mode.
const { user, system } = process.cpuUsage(cpuBefore);
const parentCpuMs = (user + system) / 1000;

const expected = spec.kind === 'io' ? spec.param : undefined;
const correct = values.length === spec.tasks && values.every((v) => (expected === undefined ? v === values[0] : v === expected));
const maxLimit = Math.max(...limits.map(([, limit]) => limit));
process.stdout.write(
  `${JSON.stringify({ wallMs, parentCpuMs, correct, fixed, maxLimit, finalLimit: limits.at(-1)?.[1], peakRunning, limits, ...(spec.trace ? { readings } : {}) })}\n`,
);

function round(value) {
  return typeof value === 'number' ? Math.round(value) : null;
}
