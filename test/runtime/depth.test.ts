/**
 * Pipelining depth: how many tasks a lane sends its worker ahead, learned from the durations of
 * the results and the size of the arguments. Tiny tasks go up to MAX_DEPTH (256) ahead; long ones
 * one at a time; those with large arguments no more than PIPELINE_BUDGET_BYTES allows.
 */
import test from 'ava';
import { moduleTask, type Task } from '../../src/index.js';
import { LocalRuntime, PIPELINE_BUDGET_BYTES } from '../../src/runtime/local-runtime.js';
import { runtimeOptions } from './runtime-options.js';
import { work } from '../helpers.js';

/** One lane; every depth it announces, in order. */
function oneLane(t: { teardown(fn: () => unknown): void }, workerExecArgv: string[] = []) {
  const runtime = new LocalRuntime(runtimeOptions({ workerExecArgv }));
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

test('a minority of long tasks among tiny ones brings the depth down to what their mean says', async (t) => {
  // One task in ten takes 10 ms: the mean is about 1 ms a task, so about one task should be sent
  // ahead, not the hundred that the tiny ones alone would allow (each result counts in full).
  const { depths, start } = oneLane(t);
  await Promise.all(tiny(600).map(start));
  t.true(depths.at(-1)! >= 64, `tiny tasks pipeline deeply (depths ${depths.join(' ')})`);
  await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 10 === 0 ? moduleTask(work, 'spin', [10]) : moduleTask(work, 'inc', [i]))).map(start));
  t.true(depths.at(-1)! <= 8, `depths: ${depths.join(' ')}`);
});

test('tasks that have become long are sent one at a time', async (t) => {
  const { depths, start } = oneLane(t);
  await Promise.all(tiny(600).map(start));
  t.true(depths.at(-1)! >= 64, `tiny tasks pipeline deeply (depths ${depths.join(' ')})`);
  await Promise.all(Array.from({ length: 30 }, () => moduleTask(work, 'spin', [3])).map(start));
  t.is(depths.at(-1), 1, `depths: ${depths.join(' ')}`);
});

test('tasks with large arguments are sent ahead only as far as the byte budget allows', async (t) => {
  // After tiny tasks the depth is high; 40 tasks of 8 MB each, started at once, would all go to
  // the worker in one message (320 MB it holds until it runs them) if only the depth counted.
  const { depths, start } = oneLane(t, ['--expose-gc']);
  await Promise.all(tiny(600).map(start));
  t.true(depths.at(-1)! >= 64, `tiny tasks pipeline deeply (depths ${depths.join(' ')})`);
  const size = 2 * PIPELINE_BUDGET_BYTES;
  const held = (await Promise.all(Array.from({ length: 40 }, () => start(moduleTask(work, 'heldBytes', [new Uint8Array(size)]))))) as number[];
  const most = Math.max(...held);
  // Two or three go out before the average size has caught up; then one at a time.
  t.true(most <= 4 * size, `the worker held ${(most / 2 ** 20).toFixed(0)} MB of arguments besides the running task's`);
  t.is(depths.at(-1), 1, `depths: ${depths.join(' ')}`);
  t.log(`held at most ${(most / 2 ** 20).toFixed(0)} MB besides the running task's`);
});

test('an argument shared by consecutive tasks counts once: they still pipeline deeply', async (t) => {
  // A lookup table passed to every task travels once per batch; weighed once per task, it would
  // send the tasks one at a time, each message with a copy.
  const { depths, start } = oneLane(t);
  const table = new Uint8Array(2 * PIPELINE_BUDGET_BYTES);
  const values = await Promise.all(Array.from({ length: 600 }, (_, i) => start(moduleTask(work, 'echo', [i, table]))));
  t.is(values.length, 600);
  t.true(depths.at(-1)! >= 64, `depths: ${depths.join(' ')}`);
});
