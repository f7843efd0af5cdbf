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
