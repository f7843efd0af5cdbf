/**
 * The exit hook (signal-exit, see cleanup.ts) is there while the library has children, and a
 * moment longer: not for good, and not hooked and unhooked for every short command.
 */
import test from 'ava';
import { commandTask, liveChildPids, schedule$ } from '../../src/index.js';
import { first } from '../helpers.js';

test('the exit hook is installed while children are alive, kept a moment after the last, then removed', async (t) => {
  const before = process.listenerCount('SIGTERM');
  const run = schedule$([commandTask('sleep', ['0.3']), commandTask('sleep', ['0.3'])], { concurrency: 1 });
  const done = run.toOrderedArray();
  await first(run.progress$, (p) => p.running === 1);
  t.true(process.listenerCount('SIGTERM') > before, 'hooked while a child is alive');
  await done;
  t.deepEqual(liveChildPids(), []);
  t.true(process.listenerCount('SIGTERM') > before, 'kept a moment after the last child');
  const until = Date.now() + 5000;
  while (process.listenerCount('SIGTERM') > before && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(process.listenerCount('SIGTERM'), before, 'then removed');
});
