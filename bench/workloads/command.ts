// 500 runs of /bin/true, concurrency 2: the per-command overhead of a process runner.
import type { Workload } from '../harness.js';
import { runInLanes } from '../baselines/lanes.js';
import { spawnLoop } from '../baselines/spawn-loop.js';

/** Sizes of the command workload. */
export interface CommandSizes {
  tasks: number;
}

const perTask = async (tasks: number, run: () => Promise<void>) => {
  const start = performance.now();
  await run();
  return { metrics: { 'per task': (performance.now() - start) / tasks } };
};

export const command: Workload<CommandSizes> = {
  name: 'command',
  describe: ({ tasks }) => `${tasks} × /bin/true, concurrency 2`,
  sizes: { tasks: 500 },
  quickSizes: { tasks: 100 },
  metrics: { 'per task': { unit: 'ms/task', description: 'wall time of the batch divided by the number of runs' } },
  reference: 'spawn',
  contenders: [
    {
      name: 'ours',
      description: "this library, commandTask('/bin/true', []), concurrency 2",
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).command(sizes),
    },
    {
      name: 'spawn',
      description: 'baseline: child_process.spawn, stdout/stderr piped and collected, wait for close, 2 lanes',
      measure: ({ tasks }) => perTask(tasks, () => spawnLoop('/bin/true', tasks, 2, true)),
    },
    {
      name: 'spawn-ignore',
      description: "baseline: child_process.spawn with stdio 'ignore', wait for close, 2 lanes",
      measure: ({ tasks }) => perTask(tasks, () => spawnLoop('/bin/true', tasks, 2, false)),
    },
    {
      name: 'execa',
      description: "execa('/bin/true'), defaults, 2 lanes",
      async measure({ tasks }) {
        const { execa } = await import('execa');
        return perTask(tasks, () =>
          runInLanes(tasks, 2, async () => {
            await execa('/bin/true');
          }),
        );
      },
    },
  ],
  targets: [
    { contender: 'ours', metric: 'per task', vs: 'spawn', maxRatio: 1.3 },
    { contender: 'ours', metric: 'per task', vs: 'execa', maxRatio: 0.7 },
  ],
  timeoutMs: 120_000,
};
