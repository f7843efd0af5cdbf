// 20,000 tiny tasks (x => x + 1) submitted at once, 2 workers: per-task overhead of each pool.
import type { Contender, Workload } from '../harness.js';
import { incPoolLoaders, submitAll } from '../peers.js';

/** Sizes of the tiny workload. */
export interface TinySizes {
  /** Tasks in each timed run. */
  tasks: number;
  /** Tasks in the untimed run between the cold and the warm one. */
  warmup: number;
}

const descriptions: Record<string, string> = {
  poolifier: 'poolifier FixedClusterPool (cluster processes), defaults',
  piscina: 'piscina (worker threads), defaults',
  tinypool: "tinypool, runtime 'child_process', defaults",
  workerpool: "workerpool, workerType 'process', defaults",
  'fork-1': 'bare fork pool baseline, 1 task in flight per child',
  'fork-32': 'bare fork pool baseline, 32 tasks in flight per child, one message each',
  'fork-32-batched': "bare fork pool baseline, 32 in flight per child, a tick's tasks sent as one message",
};

/**
 * One measurement: start the pool and run `tasks` (cold, start-up included), run `warmup`
 * untimed, then run `tasks` again (warm) and once more (steady); destroy the pool.
 */
function peer(name: string): Contender<TinySizes> {
  return {
    name,
    description: descriptions[name]!,
    async measure({ tasks, warmup }) {
      const create = await incPoolLoaders[name]!();
      let start = performance.now();
      const pool = create();
      try {
        await submitAll(pool, tasks, 0);
        const cold = ((performance.now() - start) * 1000) / tasks;
        await submitAll(pool, warmup, tasks);
        start = performance.now();
        await submitAll(pool, tasks, tasks + warmup);
        const warm = ((performance.now() - start) * 1000) / tasks;
        start = performance.now();
        await submitAll(pool, tasks, 2 * tasks + warmup);
        const steady = ((performance.now() - start) * 1000) / tasks;
        return { metrics: { cold, warm, steady } };
      } finally {
        await pool.destroy();
      }
    },
  };
}

export const tiny: Workload<TinySizes> = {
  name: 'tiny',
  describe: ({ tasks, warmup }) =>
    `${tasks.toLocaleString('en-US')} tiny tasks (x => x + 1) submitted at once, 2 workers. ` +
    `cold = first run, pool start included; warm = a later run after ${warmup.toLocaleString('en-US')} untimed tasks; ` +
    'steady = the run right after the warm one',
  sizes: { tasks: 20_000, warmup: 2_000 },
  quickSizes: { tasks: 5_000, warmup: 1_000 },
  metrics: {
    cold: { unit: 'µs/task', description: 'wall time of the first run, pool start-up included, per task' },
    warm: { unit: 'µs/task', description: 'wall time of a run on a started, warmed pool, per task' },
    steady: {
      unit: 'µs/task',
      description: "the next run after the warm one, per task: by then the parent's code is fully optimized by V8",
    },
  },
  reference: 'poolifier',
  contenders: [
    {
      name: 'ours',
      description: 'this library, schedule$ of moduleTask on a WorkerPool, default options, concurrency 2',
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).tiny(sizes),
    },
    ...Object.keys(descriptions).map(peer),
  ],
  targets: [
    { contender: 'ours', metric: 'warm', vs: 'poolifier', maxRatio: 0.33 },
    { contender: 'ours', metric: 'warm', vs: 'piscina', maxRatio: 0.33 },
    { contender: 'ours', metric: 'cold', vs: 'poolifier', maxRatio: 0.33 },
    { contender: 'ours', metric: 'cold', vs: 'piscina', maxRatio: 0.33 },
  ],
  timeoutMs: 120_000,
};
