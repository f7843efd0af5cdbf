// Task functions for test/auto-concurrency.test.ts: one that waits, one that keeps a core busy.

/** Waits `ms` milliseconds, using almost no CPU; returns `ms`. */
export async function wait(ms: number): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, ms));
  return ms;
}

/** Keeps one core busy for `ms` milliseconds of wall time; returns the loop count. */
export function spin(ms: number): number {
  const end = Date.now() + ms;
  let loops = 0;
  while (Date.now() < end) loops++;
  return loops;
}
