/**
 * Warm workers kept between runs with a `WorkerPool`: a program that runs many small batches
 * (a server answering requests, a GUI recomputing on each edit) pays for worker start-up once
 * instead of once per run.
 *
 * Three batches run without a pool (each starts and stops its own workers), then three on a pool
 * warmed beforehand, its task module loaded in both workers: the pooled batches all run on the
 * same two processes. `close()` stops them.
 */
import { WorkerPool, liveChildPids, schedule$, taskModule } from '../src/index.js';

const workUrl = new URL('./work.js', import.meta.url);
const work = taskModule<typeof import('./work.js')>(workUrl);

async function batch(name: string, numbers: number[], pool?: WorkerPool): Promise<number[]> {
  const started = performance.now();
  const pids = new Set<number>();
  const run = schedule$(numbers.map((x) => work.square(x)), { concurrency: 2, pool });
  run.subscribe((result) => pids.add(result.stats.pid!));
  const squares = await run.toOrderedArray();
  const ms = (performance.now() - started).toFixed(1);
  console.log(`${name}: ${JSON.stringify(squares)} on workers ${[...pids].sort().join(', ')} in ${ms} ms`);
  return [...pids];
}

const requests = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];
for (const [i, numbers] of requests.entries()) await batch(`no pool, batch ${i + 1}`, numbers);

const pool = new WorkerPool({ idleTimeout: 60_000 });
await pool.warm(2, { modules: [workUrl] }); // both workers boot and load work.js now, before the first request
console.log(`pool warmed: workers ${pool.pids().sort().join(', ')}`);
const served = new Set<number>();
for (const [i, numbers] of requests.entries()) for (const pid of await batch(`pool, batch ${i + 1}`, numbers, pool)) served.add(pid);

await pool.close();
const left = [...served].filter((pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
});
console.log(`pool closed: pool.pids() = ${JSON.stringify(pool.pids())}, workers still alive: ${JSON.stringify(left)}, liveChildPids() = ${JSON.stringify(liveChildPids())}`);
