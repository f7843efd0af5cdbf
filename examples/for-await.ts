/**
 * `for await` over results. RxJS 7 has no built-in way to turn an Observable into an async
 * iterable (`eachValueFrom` is in the separate rxjs-for-await package, not in rxjs), so here is
 * the whole pattern: subscribe, buffer, hand values out one by one, unsubscribe when the loop ends.
 *
 * Two things to know:
 * - The scheduler does not wait for the loop body: results that arrive while the body runs are
 *   buffered here (at most one per task).
 * - Leaving the loop early (`break`, `return`, a throw) unsubscribes, and that terminates the
 *   run: tasks still running are killed, the rest never start.
 */
import type { Observable } from 'rxjs';
import { schedule$, taskModule, type Progress } from '../src/index.js';

async function* valuesOf<T>(source: Observable<T>): AsyncGenerator<T, void, undefined> {
  const buffer: T[] = [];
  let end: { error?: unknown } | undefined;
  let wake = () => {};
  const subscription = source.subscribe({
    next: (value) => (buffer.push(value), wake()),
    error: (error) => ((end = { error }), wake()),
    complete: () => ((end = {}), wake()),
  });
  try {
    for (;;) {
      if (buffer.length > 0) yield buffer.shift()!;
      else if (end) {
        if ('error' in end) throw end.error;
        return;
      } else await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    subscription.unsubscribe();
  }
}

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
const tasks = () => Array.from({ length: 8 }, (_, i) => work.longCalculation(i, i * i));

// Every value, in input order.
for await (const [x, y] of valuesOf(schedule$(tasks(), { concurrency: 4 }).ordered$)) {
  console.log(`${x}² = ${y}`);
}

// Leaving early terminates the run. (Two at a time: value 2 comes while tasks 3 to 7 still wait.)
const run = schedule$(tasks(), { concurrency: 2 });
let last: Progress | undefined;
run.progress$.subscribe((p) => (last = p));
for await (const [x] of valuesOf(run.ordered$)) {
  if (x === 2) break;
}
await run.terminate(); // waits until the processes the break terminated are gone
console.log(`left the loop at 2: the run ended ${last?.state} after ${last?.completed} of 8 tasks; processes left: ${JSON.stringify(run.pids())}`);
