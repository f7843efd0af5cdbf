// Task functions of bench/auto.ts, in plain JavaScript so a worker loads them without tsx.
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * An I/O-bound task: waits, using almost no CPU.
 * @param {number} ms how long to wait
 * @returns {Promise<number>} `ms`
 */
export async function wait(ms) {
  await sleep(ms);
  return ms;
}

/**
 * A CPU-bound task sized by iterations, not by the clock: on a busy machine a clock-based loop
 * would end on time however little CPU it got, and hide oversubscription from the benchmark.
 * @param {number} iterations xorshift rounds (the benchmark calibrates them to ~200 ms on a free core)
 * @returns {number} the final state, the same for the same `iterations`
 */
export function spin(iterations) {
  let x = 0x9e3779b9 | 0;
  for (let i = 0; i < iterations; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
  }
  return x;
}
