/**
 * The exit hook (signal-exit, see cleanup.ts) is there while the library has children, and a
 * moment longer: not for good, and not hooked and unhooked for every short command.
 */
import test from 'ava';
import { commandTask, liveChildPids, schedule$ } from '../../src/index.js';
import { first } from '../helpers.js';

test.serial('the exit hook is installed while children are alive, once for a run of short commands, and removed after the last', async (t) => {
  const before = process.listenerCount('SIGTERM');
  // Counts the SIGTERM listeners added: one per hooking.
  let hooked = 0;
  const on = process.on;
  process.on = function (this: NodeJS.Process, event: string | symbol, listener: (...args: unknown[]) => void) {
    if (event === 'SIGTERM') hooked++;
    return on.call(this, event, listener);
  } as typeof process.on;
  try {
    // Each lasts long enough for a progress snapshot (every 50 ms) to see it running: five
    // `true`s could all be done within one interval, and no snapshot would say running 1.
    const run = schedule$(Array.from({ length: 5 }, () => commandTask('sleep', ['0.1'])), { concurrency: 1 });
    const done = run.toOrderedArray();
    await first(run.progress$, (p) => p.running === 1);
    t.true(process.listenerCount('SIGTERM') > before, 'hooked while a child is alive');
    t.is((await done).length, 5);
  } finally {
    process.on = on;
  }
  t.deepEqual(liveChildPids(), []);
  t.is(hooked, 1, 'hooked once for five commands one after another, each the only child for a while');
  const until = Date.now() + 5000;
  while (process.listenerCount('SIGTERM') > before && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(process.listenerCount('SIGTERM'), before, 'then removed');
});
