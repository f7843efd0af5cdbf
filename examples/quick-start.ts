import { distinctUntilKeyChanged } from 'rxjs';
import { schedule$, moduleTask } from '../src/index.js';

// work.js runs in worker processes; the parent only names the function and its arguments.
const work = new URL('./work.js', import.meta.url);

// 16 calls of longCalculation(i, i + 1), like the Python library's example.
const tasks = Array.from({ length: 16 }, (_, i) => moduleTask(work, 'longCalculation', [i, i + 1]));

const run = schedule$(tasks, { concurrency: 4 });
// Snapshots come for other changes too (tasks starting): print when the completed count changes.
run.progress$
  .pipe(distinctUntilKeyChanged('completed'))
  .subscribe((p) => console.log(`${p.completed} of ${p.total} tasks are complete.`));

// All results, in input order (not completion order).
const results = await run.toOrderedArray();
console.log(results);
