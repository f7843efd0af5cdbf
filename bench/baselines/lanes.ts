/**
 * Runs `count` async jobs with at most `concurrency` at a time: the plainest possible limiter,
 * used by the baselines so they carry no scheduling cost of their own.
 *
 * @example
 * await runInLanes(10, 2, async (i) => console.log(i));
 * @param count - number of jobs; job `i` gets indices 0..count-1
 * @param concurrency - jobs running at once
 * @param job - starts job `i` and resolves when it is done
 * @returns resolves when every job is done; rejects with the first failure
 */
export async function runInLanes(
  count: number,
  concurrency: number,
  job: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) await job(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
}
