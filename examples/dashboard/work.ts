/**
 * The dashboard's example tasks. They run inside worker processes: the server refers to this
 * module with `new URL('./work.js', import.meta.url)` and never imports it in the parent (tsx
 * resolves `work.js` to this `work.ts`).
 *
 * The tasks stand in for real work of varied length: two keep a core busy, so the load gauge
 * moves; one waits, like a task blocked on I/O. `stepped` reports its progress as it goes.
 */
import { reportProgress } from '../../src/child/index.js';

/** Keeps one core busy for about `ms` milliseconds. Returns a checksum, so the loop is not optimised away. */
function busy(ms: number): number {
  let checksum = 0;
  const until = performance.now() + ms;
  while (performance.now() < until) checksum = (checksum * 31 + 7) % 1_000_003;
  return checksum;
}

/** CPU-bound work of about `ms` milliseconds, in one piece. */
export function spin(ms: number): number {
  return busy(ms);
}

/**
 * CPU-bound work of about `ms` milliseconds in `steps` equal steps, reporting `{ done, of }`
 * after each: the parent receives the reports on the run's `taskProgress$`.
 */
export function stepped(ms: number, steps: number): number {
  let checksum = 0;
  for (let done = 1; done <= steps; done++) {
    checksum ^= busy(ms / steps);
    reportProgress({ done, of: steps });
  }
  return checksum;
}

/** Waits about `ms` milliseconds without using the CPU, like a task waiting on a network or disk. */
export async function wait(ms: number): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, ms));
  return ms;
}
