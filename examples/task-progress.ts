/**
 * Intermediate progress from inside a task: `crunch` (in work.ts) calls `reportProgress` from
 * 'async-process-scheduler/child' after every step of about 20 ms; the parent receives reports on
 * the run's `taskProgress$` as `{ index, value }`, next to the run-level `progress$`. A worker lets
 * a task send 8 reports at once and one more per `progressInterval` (50 ms by default), the
 * newest: here every step of the first dozen or so arrives, then about two in five; the last
 * always does.
 */
import { schedule$, taskModule } from '../src/index.js';

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
const steps = [10, 25, 15, 20];
const run = schedule$(steps.map((n) => work.crunch(n)), { concurrency: 2 });

// The value is whatever the task reported; crunch reports { done, of }.
run.taskProgress$.subscribe(({ index, value }) => {
  const { done, of } = value as { done: number; of: number };
  console.log(`task ${index}: ${done}/${of} steps`);
});

const checksums = await run.toOrderedArray();
console.log('checksums in input order:', JSON.stringify(checksums));
