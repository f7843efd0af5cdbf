/**
 * A task handed to a worker but not started yet, then cancelled, never starts: whether the cancel
 * comes before its batch has left for the worker, or while it waits in the worker's queue.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { moduleTask, type Task } from '../../src/index.js';
import { LocalRuntime } from '../../src/runtime/local-runtime.js';
import { runtimeOptions } from './runtime-options.js';
import type { JobHandle } from '../../src/runtime/runtime.js';
import { isAlive, waitGone, work } from '../helpers.js';

// In 'capture' mode a task travels with its index (four values per task in a batch, not three).
for (const [when, output] of [
  ['before its batch is sent', 'inherit'],
  ['while it waits in the worker', 'inherit'],
  ['before its batch is sent', 'capture'],
  ['while it waits in the worker', 'capture'],
] as const) {
  test(`a task cancelled ${when} never starts, and its worker serves the next task (output: ${output})`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aps-cancel-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const marker = join(dir, 'ran');
    // One lane: all three go to the same worker, the second and third queued behind the first.
    const runtime = new LocalRuntime(runtimeOptions({ output }));
    // Whatever fails below, the worker goes (shutdown is idempotent).
    t.teardown(() => runtime.shutdown(false));
    const start = (task: Task, index: number) => {
      let handle!: JobHandle;
      const settle = new Promise((resolve, reject) => {
        handle = runtime.start({ task, index, attempt: 1, timeout: undefined }, { fulfilled: resolve, rejected: reject, progress: () => {} });
      });
      return { handle, settle };
    };
    const first = start(moduleTask(work, 'sleepThen', [400, 1]), 0);
    const second = start(moduleTask('node:fs', 'writeFileSync', [marker, 'it ran']), 1);
    const third = start(moduleTask(work, 'pid'), 2);
    if (when === 'before its batch is sent') {
      // After the runtime has handed the tasks to the worker (a microtask after start()), and
      // before the batch leaves (a microtask later).
      queueMicrotask(() => second.handle.cancel());
    } else {
      await new Promise((resolve) => setTimeout(resolve, 150));
      second.handle.cancel();
    }
    t.is(await first.settle, 1);
    const pid = (await third.settle) as number;
    t.false(existsSync(marker), 'the cancelled task did not run');
    t.deepEqual(runtime.pids(), [pid], 'the same worker ran the tasks around it');
    await runtime.shutdown(true);
    t.deepEqual(await waitGone([pid]), []);
    t.false(isAlive(pid));
  });
}
