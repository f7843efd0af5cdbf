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
  // Every Node process is above the smallest limit allowed, 16 MiB.
  const pids = await servingPids({ maxWorkerRss: 16 * 2 ** 20 });
  t.is(new Set(pids).size, 4, `a new worker for every task: ${pids.join(', ')}`);
  t.deepEqual(await waitGone(pids), []);
});

test('maxWorkerRss: workers below the limit serve on', async (t) => {
  const pids = await servingPids({ maxWorkerRss: 64 * 2 ** 30 });
  t.is(new Set(pids).size, 1, `one worker for all: ${pids.join(', ')}`);
  t.false(isAlive(pids[0]!), 'gone when the run ends');
});

test('maxTasksPerWorker: 1 starts the next worker while the task runs, once the current worker is ready', async (t) => {
  // Workers that take at least 600 ms to start: a successor started at once would start within
  // the same moment as its predecessor; one started once the predecessor is ready comes later.
  const slowStart = ['--import', 'data:text/javascript,Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600)'];
  const tasks = Array.from({ length: 3 }, () => w.lifeTimes(1500));
  const run = schedule$(tasks, { concurrency: 1, maxTasksPerWorker: 1, workerExecArgv: slowStart });
  // Every process the run has, at each completion: a successor started after the last task would be among them.
  const started = new Set<number>();
  run.subscribe(() => run.pids().forEach((pid) => started.add(pid)));
  const lives = await run.toOrderedArray();
  t.is(new Set(lives.map((l) => l.pid)).size, 3);
  t.deepEqual([...started].filter((pid) => !lives.some((l) => l.pid === pid)), [], 'no successor is started after the last task');
  for (let i = 1; i < lives.length; i++) {
    const [before, after] = [lives[i - 1]!, lives[i]!];
    // Clock ticks and /proc/uptime have a 10 ms grain.
    t.true(after.processStart < before.taskEnd, `worker ${i + 1} started while task ${i} ran: ${JSON.stringify([before, after])}`);
    t.true(after.processStart >= before.processStart + 0.5, `worker ${i + 1} waited for worker ${i} to be ready: ${JSON.stringify([before, after])}`);
  }
  t.deepEqual(await waitGone([...started, ...lives.map((l) => l.pid)]), [], 'every worker is gone');
});

test('maxTasksPerWorker: 1 starts no successor for a lane that has no task left', async (t) => {
  // As many lanes as tasks: the run has taken in every task before any worker is ready, so it
  // knows that no lane has another one to come. Before, each lane started a successor as soon
  // as its worker was ready, only to stop it at the end: eight processes for four tasks.
  const run = schedule$(Array.from({ length: 4 }, () => w.pidAfter(300)), { concurrency: 4, maxTasksPerWorker: 1 });
  const seen = new Set<number>();
  const look = () => run.pids().forEach((pid) => seen.add(pid));
  const timer = setInterval(look, 2);
  // Stopped even if the run fails: a live interval would keep this test process from ending.
  t.teardown(() => clearInterval(timer));
  run.subscribe(look);
  const served = (await run.toOrderedArray()) as number[];
  clearInterval(timer);
  t.is(new Set(served).size, 4, `a process per task: ${served.join(', ')}`);
  t.deepEqual([...seen].filter((pid) => !served.includes(pid)), [], `processes seen: ${[...seen].join(', ')}`);
  t.deepEqual(await waitGone([...seen, ...served]), []);
});

test('maxTasksPerWorker: 2 gives every two tasks a worker', async (t) => {
  const pids = await servingPids({ maxTasksPerWorker: 2 });
  t.is(pids[0], pids[1]);
  t.is(pids[2], pids[3]);
  t.not(pids[1], pids[2]);
  t.deepEqual(await waitGone(pids), []);
});
