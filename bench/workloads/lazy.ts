// 1,000,000 lazily generated tiny tasks: completes, and the parent's memory stays flat.
import type { Workload } from '../harness.js';
import { ForkPool } from '../baselines/fork-pool.js';
import { startRssSampler } from '../proc.js';

/** Sizes of the lazy workload. */
export interface LazySizes {
  tasks: number;
  /** RSS growth is measured from this many completions to the end. */
  from: number;
}

const MB = 2 ** 20;

export const lazy: Workload<LazySizes> = {
  name: 'lazy',
  describe: ({ tasks, from }) =>
    `${tasks.toLocaleString('en-US')} lazily generated tiny tasks, 2 workers; parent RSS sampled every 50 ms, ` +
    `growth = peak RSS at the end − peak RSS at completion ${from.toLocaleString('en-US')}`,
  sizes: { tasks: 1_000_000, from: 100_000 },
  // Same `from` as the full size: before ~100,000 completions the heap is still growing to its plateau.
  quickSizes: { tasks: 200_000, from: 100_000 },
  metrics: {
    'rss growth': { unit: 'MB', description: 'peak parent RSS at the end minus peak parent RSS at `from` completions' },
    'peak rss': { unit: 'MB', description: 'peak parent RSS over the whole run' },
    'per task': { unit: 'µs/task', description: 'wall time per task, start-up included' },
  },
  contenders: [
    {
      name: 'ours',
      description: 'this library, a generator of moduleTask objects through schedule$, default options',
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).lazy(sizes),
    },
    {
      name: 'fork-lazy',
      description: 'baseline (validates the sampler): bare fork pool, 32 in flight batched, pulling from a generator',
      async measure({ tasks, from }) {
        function* generate(): Generator<number> {
          for (let i = 0; i < tasks; i++) yield i;
        }
        const rss = startRssSampler(50);
        let completed = 0;
        let sum = 0;
        let peakAtFrom = Number.NaN;
        let elapsed = 0;
        const start = performance.now();
        const pool = new ForkPool({ size: 2, inFlight: 32, batch: true });
        try {
          await pool.drain(generate(), (result) => {
            sum += result;
            if (++completed === from) peakAtFrom = rss.peak();
          });
          elapsed = performance.now() - start;
        } finally {
          await pool.destroy();
        }
        const peakAtEnd = rss.peak();
        rss.stop();
        if (sum !== (tasks * (tasks + 1)) / 2) throw new Error(`wrong results: ${completed} completions summing to ${sum}`);
        return {
          metrics: {
            'rss growth': (peakAtEnd - peakAtFrom) / MB,
            'peak rss': peakAtEnd / MB,
            'per task': (elapsed * 1000) / tasks,
          },
        };
      },
    },
  ],
  targets: [{ contender: 'ours', metric: 'rss growth', max: 16 }],
  timeoutMs: 300_000,
};
