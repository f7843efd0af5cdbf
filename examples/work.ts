/**
 * The example task module. Its functions run inside worker processes: the examples refer to it
 * with `new URL('./work.js', import.meta.url)` and never import it in the parent (tsx resolves
 * `work.js` to this `work.ts`).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { reportProgress } from '../src/child/index.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Stands in for a long calculation, like the Python library's `long_calculation`: waits about
 * 300 ms, then returns its arguments.
 */
export async function longCalculation(x: number, y: number): Promise<[number, number]> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  return [x, y];
}

/** The SHA-256 of a file, as hex, read as a stream so large files use little memory. */
export async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Busy work in `steps` steps of about 20 ms each, reporting `{ done, of }` after every step.
 * The parent receives the reports on the run's `taskProgress$`.
 */
export function crunch(steps: number): number {
  let checksum = 0;
  for (let done = 1; done <= steps; done++) {
    const until = performance.now() + 20;
    while (performance.now() < until) checksum = (checksum * 31 + done) % 1_000_003;
    reportProgress({ done, of: steps });
  }
  return checksum;
}

/** Sleeps for `ms`, far longer than any example waits: used to show cancellation. */
export async function sleepFor(ms: number): Promise<number> {
  await sleep(ms);
  return ms;
}

/** A tiny task: the square of `x`. */
export function square(x: number): number {
  return x * x;
}
