// How many worker processes a run starts at once: a limit far above the CPUs starts them in turns.
import test from 'ava';
import { moduleTask } from '../../src/index.js';
import { LocalRuntime, maxStartingWorkers } from '../../src/runtime/local-runtime.js';
import { runtimeOptions } from './runtime-options.js';
import { waitGone, work } from '../helpers.js';

test('a run with a limit above maxStartingWorkers() starts no more workers at once than that, and every task runs', async (t) => {
  const cap = maxStartingWorkers();
  const concurrency = cap + 6;
  const runtime = new LocalRuntime(runtimeOptions({ concurrency }));
  t.teardown(() => runtime.shutdown(false));
  let most = 0;
  const pids = new Set<number>();
  const watch = (): void => {
    most = Math.max(most, runtime.startingWorkers);
    for (const pid of runtime.pids()) pids.add(pid);
  };
  const sampler = setInterval(watch, 1);
  t.teardown(() => clearInterval(sampler));
  // Each lane gets a task of 300 ms: every lane wants a worker at once.
  const values = await Promise.all(
    Array.from({ length: 2 * concurrency }, (_, index) => {
      const result = new Promise((resolve, reject) =>
        runtime.start(
          { task: moduleTask(work, 'sleepThen', [300, index]), index, attempt: 1, timeout: undefined },
          { fulfilled: resolve, rejected: reject, progress: () => {} },
        ),
      );
      watch();
      return result;
    }),
  );
  watch();
  t.deepEqual(values, Array.from({ length: 2 * concurrency }, (_, i) => i));
  t.true(most >= 1, 'workers were seen starting');
  t.true(most <= cap, `at most ${cap} starting at once, saw ${most}`);
  t.true(pids.size > cap, `more workers than that in all: ${pids.size}`);
  await runtime.shutdown(true);
  t.deepEqual(await waitGone([...pids]), [], 'every worker is gone');
});

test('a limit raised and lowered at once starts no worker for the lanes past it: their first tasks move back', async (t) => {
  const cap = maxStartingWorkers();
  const runtime = new LocalRuntime(runtimeOptions({ concurrency: 2 }));
  t.teardown(() => runtime.shutdown(false));
  const pids = new Set<number>();
  const watch = (): void => {
    for (const pid of runtime.pids()) pids.add(pid);
  };
  const sampler = setInterval(watch, 1);
  t.teardown(() => clearInterval(sampler));
  // A slider pushed to cap + 20 and back to 2: every task gets a lane of its own, the first cap
  // lanes start their workers, the others wait for a start to end; then the limit is 2 again.
  runtime.setConcurrency(cap + 20);
  const count = cap + 20;
  const results = Array.from({ length: count }, (_, index) =>
    new Promise((resolve, reject) =>
      runtime.start(
        { task: moduleTask(work, 'sleepThen', [50, index]), index, attempt: 1, timeout: undefined },
        { fulfilled: resolve, rejected: reject, progress: () => {} },
      ),
    ),
  );
  runtime.setConcurrency(2);
  t.deepEqual(await Promise.all(results), Array.from({ length: count }, (_, i) => i));
  watch();
  t.true(pids.size <= cap, `no more workers than were starting when the limit came down (${cap}): saw ${pids.size}`);
  await runtime.shutdown(true);
  t.deepEqual(await waitGone([...pids]), [], 'every worker is gone');
});

test('a limit of 0 pauses: tasks handed over wait, workers or not, until it rises', async (t) => {
  const runtime = new LocalRuntime(runtimeOptions({ concurrency: 2 }));
  t.teardown(() => runtime.shutdown(false));
  // A slider pushed up, which hands tasks over, then to 0 before any worker is ready.
  runtime.setConcurrency(12);
  let done = 0;
  const results = Array.from({ length: 12 }, (_, index) =>
    new Promise((resolve, reject) =>
      runtime.start(
        { task: moduleTask(work, 'sleepThen', [50, index]), index, attempt: 1, timeout: undefined },
        {
          fulfilled: (value) => {
            done++;
            resolve(value);
          },
          rejected: reject,
          progress: () => {},
        },
      ),
    ),
  );
  runtime.setConcurrency(0);
  // Long enough for workers to start (under tsx, about half a second) and run several tasks.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  t.is(done, 0, 'nothing ran while paused');
  t.is(runtime.executing, 0);
  runtime.setConcurrency(2);
  t.deepEqual(await Promise.all(results), Array.from({ length: 12 }, (_, i) => i));
  const pids = runtime.pids();
  await runtime.shutdown(true);
  t.deepEqual(await waitGone(pids), [], 'every worker is gone');
});
