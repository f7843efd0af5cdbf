// One fresh Node process per task, concurrency 2: what process start-up costs a task.
import type { Workload } from '../harness.js';
import { forkAndWaitLoop } from '../baselines/fresh-fork.js';

/** Sizes of the fresh workload. */
export interface FreshSizes {
  tasks: number;
}

export const fresh: Workload<FreshSizes> = {
  name: 'fresh',
  describe: ({ tasks }) => `${tasks} tiny tasks, each in a fresh Node process, concurrency 2`,
  sizes: { tasks: 200 },
  quickSizes: { tasks: 20 },
  metrics: { 'per task': { unit: 'ms/task', description: 'wall time of the batch divided by the number of tasks' } },
  reference: 'fork-and-wait',
  contenders: [
    {
      name: 'ours',
      description: 'this library, moduleTask with maxTasksPerWorker: 1, concurrency 2',
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).fresh(sizes),
    },
    {
      name: 'fork-and-wait',
      description: 'baseline: fork a plain-Node script, await its one IPC result and its exit, 2 lanes',
      async measure({ tasks }) {
        const start = performance.now();
        const sum = await forkAndWaitLoop(tasks, 2);
        const perTask = (performance.now() - start) / tasks;
        if (sum !== (tasks * (tasks + 1)) / 2) throw new Error(`wrong results: sum ${sum}`);
        return { metrics: { 'per task': perTask } };
      },
    },
  ],
  targets: [{ contender: 'ours', metric: 'per task', vs: 'fork-and-wait', maxRatio: 1.1 }],
  timeoutMs: 300_000,
};
