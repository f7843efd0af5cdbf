/** Shared test helpers: fixture URLs and process-liveness checks by PID. */
import { spawn } from 'node:child_process';
import { firstValueFrom, filter, type Observable } from 'rxjs';

export const fixture = (name: string): URL => new URL(`./fixtures/${name}`, import.meta.url);
export const work = fixture('work.ts');

/**
 * Worker flags that load the task module `url` before the worker reports ready. A task's timeout
 * starts when its worker is ready, and the first task of a module on a worker pays for loading it
 * (through tsx, in the tests), which a loaded machine can stretch past a short timeout. Tests of
 * short timeouts preload the module so that the clock covers the task alone.
 */
export function preload(...urls: URL[]): string[] {
  return urls.flatMap((url) => ['--import', url.href]);
}

/** True while a process with this pid exists (zombies included, which our children never stay). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until every pid is gone, for at most `ms`; returns the pids still alive. */
export async function waitGone(pids: readonly number[], ms = 5000): Promise<number[]> {
  const until = Date.now() + ms;
  let alive = pids.filter(isAlive);
  while (alive.length && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 20));
    alive = alive.filter(isAlive);
  }
  return alive;
}

/** The first value of `source` that passes `predicate`. */
export function first<T>(source: Observable<T>, predicate: (value: T) => boolean): Promise<T> {
  return firstValueFrom(source.pipe(filter(predicate)));
}

/** A seeded PRNG (mulberry32), so "random" tests are reproducible. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Resolves with the next process warning of this library's whose message matches `pattern`. */
export function nextWarning(pattern: RegExp): Promise<Error> {
  return new Promise((resolve) => {
    const onWarning = (warning: Error) => {
      if (warning.name !== 'AsyncProcessSchedulerWarning' || !pattern.test(warning.message)) return;
      process.off('warning', onWarning);
      resolve(warning);
    };
    process.on('warning', onWarning);
  });
}

/** Runs a parent program (test/fixtures/parent-run.ts, with `args`) to its end; returns what it printed. */
export function runParent(args: string[]): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture('parent-run.ts').pathname, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code }));
  });
}
