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

// The CPU-bound task, shared with the other workloads: a busy loop sized in iterations, not by
// the clock (the benchmark calibrates them to ~200 ms on a free core).
export { spin } from '../fixtures/spin.mjs';
