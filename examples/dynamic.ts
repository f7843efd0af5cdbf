/**
 * `npx tsx examples/dynamic.ts`: automatic concurrency following the work, live.
 *
 * 64 tasks that mostly wait (like network calls), then 64 that keep a core busy, through one run
 * with the default `concurrency: 'auto'`. While the tasks wait, the limit rises: they use almost no
 * CPU, so more of them fit. When the tasks turn CPU-bound, the CPU fills up and the limit comes
 * back down towards the number of CPUs; running tasks are never killed, they finish first.
 *
 * One line per change of the limit: seconds since the start, the limit, the host's CPU use, the
 * tasks running, and the CPU demand per measured task (its run time plus its time waiting for a
 * CPU, as a share of one core: over 100% when the tasks queue for the CPUs; empty until the
 * workers have started). Finishes in well under 30 s.
 */
import { combineLatest, distinctUntilChanged, map } from 'rxjs';
import { optimalConcurrency, schedule$, taskModule } from '../src/index.js';

const WAITING_TASKS = 64;
const BUSY_TASKS = 64;
/** Busy work of ~20 ms per step: 15 steps is ~300 ms, as long as a waiting task waits. */
const BUSY_STEPS = 15;

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));

// A lazy source: tasks are pulled only as slots free up, so the run cannot know in advance that
// the work will change; it finds out from the load.
function* tasks() {
  for (let i = 0; i < WAITING_TASKS; i++) yield work.longCalculation(i, 0);
  for (let i = 0; i < BUSY_TASKS; i++) yield work.crunch(BUSY_STEPS);
}

const run = schedule$(tasks());
const started = performance.now();
const seconds = () => ((performance.now() - started) / 1000).toFixed(1).padStart(5);
const percent = (value: number | undefined) => (value === undefined ? '' : `${Math.round(value)}%`);

console.log(`${optimalConcurrency()} CPUs; ${WAITING_TASKS} tasks that wait 300 ms, then ${BUSY_TASKS} that compute for ~300 ms\n`);
console.log('    s  limit   cpu  running  demand/task  done  tasks now');

let done = 0;
// The furthest task in the input that has finished: it tells which part of the work the run is in.
let furthest = -1;
run.subscribe((result) => {
  done += 1;
  furthest = Math.max(furthest, result.index);
});

// The limit, with the latest snapshot of progress for the load and the running count.
combineLatest([run.concurrency$, run.progress$])
  .pipe(
    distinctUntilChanged(([a], [b]) => a === b),
    map(([limit, p]) => {
      const measured = p.load?.childrenMeasured;
      const demand = measured ? (p.load?.childrenDemand ?? 0) / Math.min(measured, Math.max(p.running, 1)) : undefined;
      const phase = furthest < 0 ? '' : furthest < WAITING_TASKS ? 'waiting (I/O-bound)' : 'computing (CPU-bound)';
      return `${seconds()}  ${String(limit).padStart(5)}  ${percent(p.load?.cpu).padStart(4)}  ${String(p.running).padStart(7)}  ${percent(demand).padStart(11)}  ${String(done).padStart(4)}  ${phase}`;
    }),
  )
  .subscribe(console.log);

const values = await run.toOrderedArray();
const last = await new Promise<number>((resolve) => run.concurrency$.subscribe(resolve));
console.log(`\n${values.length} tasks in ${seconds().trim()} s; the limit ended at ${last}`);
