/**
 * Pipelining depth: how many tasks a lane sends its worker ahead, learned from the durations of
 * the results. Tiny tasks go up to 128 ahead; long ones one at a time.
 */
import test from 'ava';
import { moduleTask, type Task } from '../../src/index.js';
import { LocalRuntime } from '../../src/runtime/local-runtime.js';
import { work } from '../helpers.js';

/** One lane; every depth it announces, in order. */
function oneLane(t: { teardown(fn: () => unknown): void }) {
  const runtime = new LocalRuntime({
    concurrency: 1, maxTasksPerWorker: Infinity, idleTimeout: 5000, killTimeout: 1000, maxWorkerRss: undefined,
    output: 'inherit', workerExecArgv: [], workerEnv: undefined,
  });
  t.teardown(() => runtime.shutdown(false));
  const depths: number[] = [];
  runtime.depth$.subscribe((depth) => depths.push(depth));
  let index = 0;
  const start = (task: Task) =>
    new Promise<unknown>((resolve, reject) => {
      runtime.start({ task, index: index++, attempt: 1, timeout: undefined }, { fulfilled: resolve, rejected: reject, progress: () => {} });
    });
  return { depths, start };
}

const tiny = (count: number) => Array.from({ length: count }, (_, i) => moduleTask(work, 'inc', [i]));

test('one slow task among tiny ones does not take the pipelining of the tiny ones down', async (t) => {
  const { depths, start } = oneLane(t);
  await Promise.all(tiny(600).map(start));
  const before = depths.length;
  t.true(depths.at(-1)! >= 64, `tiny tasks pipeline deeply (depths ${depths.join(' ')})`);
  // One task of 20 ms in the middle of tiny ones: on its own, its duration said "one at a time".
  await Promise.all([...tiny(300), moduleTask(work, 'spin', [20]), ...tiny(300)].map(start));
  const after = depths.slice(before);
  t.true(after.every((depth) => depth >= 32), `depths after the slow task: ${after.join(' ')}`);
});

test('tasks that have become long are sent one at a time', async (t) => {
  const { depths, start } = oneLane(t);
  await Promise.all(tiny(600).map(start));
  t.true(depths.at(-1)! >= 64, `tiny tasks pipeline deeply (depths ${depths.join(' ')})`);
  await Promise.all(Array.from({ length: 30 }, () => moduleTask(work, 'spin', [3])).map(start));
  t.is(depths.at(-1), 1, `depths: ${depths.join(' ')}`);
});
