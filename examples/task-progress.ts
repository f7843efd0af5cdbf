/**
 * Intermediate progress from inside a task: `crunch` (in work.ts) calls `reportProgress` from
 * 'async-process-scheduler/child' after every step; the parent receives each report on the run's
 * `taskProgress$` as `{ index, value }`, next to the run-level `progress$`.
 */
import { schedule$, taskModule } from '../src/index.js';

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
const steps = [10, 25, 15, 20];
const run = schedule$(steps.map((n) => work.crunch(n)), { concurrency: 2 });

// The value is whatever the task reported; crunch reports { done, of }.
run.taskProgress$.subscribe(({ index, value }) => {
  const { done, of } = value as { done: number; of: number };
  // A line every 5 steps keeps the output short.
  if (done % 5 === 0 || done === of) console.log(`task ${index}: ${done}/${of} steps`);
});

const checksums = await run.toOrderedArray();
console.log('checksums in input order:', JSON.stringify(checksums));
