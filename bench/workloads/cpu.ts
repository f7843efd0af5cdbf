// 8 CPU-bound tasks of ~400 ms on 2 workers: does a pool keep both cores busy to the end?
import type { Workload } from '../harness.js';
import { loadPiscinaSpin } from '../peers.js';

/** Sizes of the cpu workload. */
export interface CpuSizes {
  tasks: number;
  /** Intended duration of one task on an idle core. */
  taskMs: number;
  /** Busy-loop iterations that take `taskMs`; calibrated by `prepare` when 0. */
  iterations: number;
}

type Spin = (iterations: number) => number;
const loadSpin = async (): Promise<Spin> =>
  ((await import(new URL('../fixtures/spin.mjs', import.meta.url).href)) as { spin: Spin }).spin;

/**
 * Finds how many busy-loop iterations take `taskMs` of CPU here. It divides by CPU time
 * (process.cpuUsage), not wall time, so a busy machine does not shrink every task; best of
 * five samples.
 */
async function calibrate(sizes: CpuSizes): Promise<CpuSizes> {
  const spin = await loadSpin();
  spin(5_000_000);
  let bestPerMs = 0;
  for (let sample = 0; sample < 5; sample++) {
    const iterations = 20_000_000;
    const before = process.cpuUsage();
    spin(iterations);
    const { user, system } = process.cpuUsage(before);
    bestPerMs = Math.max(bestPerMs, iterations / ((user + system) / 1000));
  }
  return { ...sizes, iterations: Math.round(bestPerMs * sizes.taskMs) };
}

export const cpu: Workload<CpuSizes> = {
  name: 'cpu',
  describe: ({ tasks, taskMs, iterations }) =>
    `${tasks} CPU-bound tasks of ~${taskMs} ms (${iterations.toLocaleString('en-US')} iterations), 2 workers. ` +
    'wall = a run on a started pool; cold wall = first run, pool start included; serial = same work in one thread',
  sizes: { tasks: 8, taskMs: 400, iterations: 0 },
  quickSizes: { tasks: 4, taskMs: 200, iterations: 0 },
  prepare: calibrate,
  metrics: {
    wall: { unit: 'ms', description: 'wall time of the batch on a started pool' },
    'cold wall': { unit: 'ms', description: 'wall time of the first batch, pool start-up included' },
  },
  reference: 'piscina',
  contenders: [
    {
      name: 'ours',
      description: 'this library, schedule$ of moduleTask on a WorkerPool, default options, concurrency 2',
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).cpu(sizes),
    },
    {
      name: 'piscina',
      description: 'piscina (worker threads), 2 threads, defaults',
      async measure({ tasks, iterations }) {
        const create = await loadPiscinaSpin();
        const batch = async (): Promise<void> => {
          await Promise.all(Array.from({ length: tasks }, () => pool.run(iterations)));
        };
        let start = performance.now();
        const pool = create();
        try {
          await batch();
          const coldWall = performance.now() - start;
          start = performance.now();
          await batch();
          return { metrics: { wall: performance.now() - start, 'cold wall': coldWall } };
        } finally {
          await pool.destroy();
        }
      },
    },
    {
      name: 'serial',
      description: 'reference: the same tasks one after another in the main thread',
      async measure({ tasks, iterations }) {
        const spin = await loadSpin();
        spin(1000);
        const start = performance.now();
        for (let i = 0; i < tasks; i++) spin(iterations);
        return { metrics: { wall: performance.now() - start } };
      },
    },
  ],
  targets: [
    { contender: 'ours', metric: 'wall', vs: 'piscina', maxRatio: 1.03 },
    { contender: 'ours', metric: 'cold wall', vs: 'piscina', maxRatio: 1.03 },
  ],
  timeoutMs: 120_000,
};
