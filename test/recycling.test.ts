/**
 * Workers are replaced when they have served `maxTasksPerWorker` tasks, or when their resident
 * memory is above `maxWorkerRss`; every worker a run started is gone when it ends. Checked by pid.
 */
import test from 'ava';
import { schedule$, taskModule, type ScheduleOptions } from '../src/index.js';
import { isAlive, waitGone, work } from './helpers.js';

const w = taskModule<typeof import('./fixtures/work.js')>(work);

/** Runs four tasks one at a time, each 80 ms long; returns the pid that ran each. */
async function servingPids(options: ScheduleOptions): Promise<number[]> {
  const tasks = Array.from({ length: 4 }, () => w.pidAfter(80));
  return (await schedule$(tasks, { concurrency: 1, ...options }).toOrderedArray()) as number[];
}

test('maxWorkerRss: a worker above the limit after a task is replaced before the next one', async (t) => {
  // Every process is above one byte.
  const pids = await servingPids({ maxWorkerRss: 1 });
  t.is(new Set(pids).size, 4, `a new worker for every task: ${pids.join(', ')}`);
  t.deepEqual(await waitGone(pids), []);
});

test('maxWorkerRss: workers below the limit serve on', async (t) => {
  const pids = await servingPids({ maxWorkerRss: 64 * 2 ** 30 });
  t.is(new Set(pids).size, 1, `one worker for all: ${pids.join(', ')}`);
  t.false(isAlive(pids[0]!), 'gone when the run ends');
});

test('maxTasksPerWorker: 2 gives every two tasks a worker', async (t) => {
  const pids = await servingPids({ maxTasksPerWorker: 2 });
  t.is(pids[0], pids[1]);
  t.is(pids[2], pids[3]);
  t.not(pids[1], pids[2]);
  t.deepEqual(await waitGone(pids), []);
});
