// Peer pools behind one small interface, each with 2 workers and otherwise its defaults.
// Children run plain Node (execArgv: []) even though the bench runs under tsx: loading tsx
// costs ~350 ms per Node start on this machine, and a peer user would not pay it.
// (workerpool strips execArgv on its own; the others inherit it unless told.)
import { ForkPool } from './baselines/fork-pool.js';

/** A started pool that increments numbers in its workers. */
export interface IncPool {
  run(x: number): Promise<number>;
  destroy(): Promise<void>;
}

/** Constructs a pool; its workers start in the background. */
export type IncPoolFactory = () => IncPool;

const fixture = (name: string): URL => new URL(`./fixtures/${name}`, import.meta.url);
const WORKERS = 2;

/**
 * Loaders for every tiny-task contender that is not ours. Loading imports the library, so that
 * a cold measurement times pool start-up and work, not module loading.
 */
export const incPoolLoaders: Record<string, () => Promise<IncPoolFactory>> = {
  async poolifier() {
    const { FixedClusterPool } = await import('poolifier');
    return () => {
      const pool = new FixedClusterPool<number, number>(WORKERS, fixture('poolifier-worker.cjs').pathname, {
        settings: { execArgv: [] },
        errorHandler: (error) => console.error('poolifier worker error', error),
      });
      return { run: (x) => pool.execute(x), destroy: () => pool.destroy() };
    };
  },

  async piscina() {
    const { Piscina } = await import('piscina');
    return () => {
      const pool = new Piscina<number, number>({
        filename: fixture('inc.mjs').href,
        minThreads: WORKERS,
        maxThreads: WORKERS,
        execArgv: [],
      });
      return { run: (x) => pool.run(x), destroy: () => pool.destroy() };
    };
  },

  async tinypool() {
    const { Tinypool } = await import('tinypool');
    return () => {
      const pool = new Tinypool({
        filename: fixture('inc.mjs').href,
        runtime: 'child_process',
        minThreads: WORKERS,
        maxThreads: WORKERS,
        execArgv: [],
      });
      return { run: (x) => pool.run(x) as Promise<number>, destroy: () => pool.destroy() };
    };
  },

  async workerpool() {
    const { default: workerpool } = await import('workerpool');
    return () => {
      const pool = workerpool.pool(fixture('workerpool-worker.mjs').pathname, {
        workerType: 'process',
        minWorkers: WORKERS,
        maxWorkers: WORKERS,
      });
      return {
        run: (x) => pool.exec('inc', [x]) as unknown as Promise<number>,
        destroy: async () => {
          await pool.terminate();
        },
      };
    };
  },

  async 'fork-1'() {
    return () => new ForkPool({ size: WORKERS, inFlight: 1, batch: false });
  },

  async 'fork-32'() {
    return () => new ForkPool({ size: WORKERS, inFlight: 32, batch: false });
  },

  async 'fork-32-batched'() {
    return () => new ForkPool({ size: WORKERS, inFlight: 32, batch: true });
  },
};

/**
 * Submits `count` tasks at once (x = offset .. offset+count-1) and checks every result arrived.
 *
 * @example
 * await submitAll(pool, 1000, 0);
 * @param pool - a started pool
 * @param count - number of tasks
 * @param offset - first argument, so separate batches are distinguishable
 * @returns resolves when all are done; rejects when the results' sum is wrong
 */
export async function submitAll(pool: IncPool, count: number, offset = 0): Promise<void> {
  const promises = new Array<Promise<number>>(count);
  for (let i = 0; i < count; i++) promises[i] = pool.run(offset + i);
  const results = await Promise.all(promises);
  checkIncSum(results, count, offset);
}

/**
 * Throws unless `results` are exactly `offset+1 .. offset+count` in some order (by their sum).
 *
 * @example
 * checkIncSum([1, 2, 3], 3, 0);
 * @param results - values returned by the tasks
 * @param count - tasks submitted
 * @param offset - first argument submitted
 */
export function checkIncSum(results: ArrayLike<unknown>, count: number, offset = 0): void {
  let sum = 0;
  for (let i = 0; i < results.length; i++) sum += results[i] as number;
  const expected = count * offset + (count * (count + 1)) / 2;
  if (results.length !== count || sum !== expected) {
    throw new Error(`wrong results: ${results.length} values summing to ${sum}, expected ${count} summing to ${expected}`);
  }
}

/**
 * Loads piscina and returns a factory for a 2-thread pool running the CPU-bound fixture.
 *
 * @example
 * const create = await loadPiscinaSpin();
 * const pool = create();
 * await pool.run(1e6);
 * await pool.destroy();
 * @returns a factory of pools whose `run(iterations)` spins that many iterations
 */
export async function loadPiscinaSpin(): Promise<() => IncPool> {
  const { Piscina } = await import('piscina');
  return () => {
    const pool = new Piscina<number, number>({
      filename: fixture('spin.mjs').href,
      minThreads: WORKERS,
      maxThreads: WORKERS,
      execArgv: [],
    });
    return { run: (iterations) => pool.run(iterations), destroy: () => pool.destroy() };
  };
}
