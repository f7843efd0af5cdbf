import { schedule$, taskModule } from '../src/index.js';

// The functions of work.ts run in worker processes; the parent only names them.
const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));

// 16 calls of longCalculation(i, i + 1), like the Python library's example.
const tasks = Array.from({ length: 16 }, (_, i) => work.longCalculation(i, i + 1));

const run = schedule$(tasks, { concurrency: 4 });
run.progress$.subscribe((p) => console.log(`${p.completed} of ${p.total} tasks are complete.`));

// All results, in input order (not completion order).
const results = await run.toOrderedArray();
console.log(results);
