// Baseline for "a fresh Node process per task": fork, wait for the one result message and
// the exit, repeat. No reuse and no overlap of start-up with work.
import { fork } from 'node:child_process';
import { runInLanes } from './lanes.js';

const freshChildScript = new URL('../fixtures/fresh-child.mjs', import.meta.url);

/**
 * Forks one plain Node process per task, `concurrency` at a time, each computing `i + 1`.
 *
 * @example
 * await forkAndWaitLoop(10, 2); // 55 = sum of 1..10
 * @param count - number of tasks (and processes)
 * @param concurrency - processes alive at once
 * @returns the sum of the results, for a correctness check
 */
export async function forkAndWaitLoop(count: number, concurrency: number): Promise<number> {
  let sum = 0;
  await runInLanes(count, concurrency, (i) => {
    return new Promise<void>((resolve, reject) => {
      const child = fork(freshChildScript, [String(i)], { execArgv: [] });
      let result: number | undefined;
      child.once('message', (message) => {
        result = message as number;
      });
      child.once('error', reject);
      child.once('exit', (code) => {
        if (result === undefined) reject(new Error(`fresh child ${i} exited (${code}) without a result`));
        else {
          sum += result;
          resolve();
        }
      });
    });
  });
  return sum;
}
