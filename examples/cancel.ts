/**
 * Cancellation, two ways, and proof that no process is left:
 *
 * 1. by unsubscribing: every subscriber of the run's results leaves, so the run is terminated;
 * 2. by an AbortSignal passed in the options.
 *
 * Either way each running process gets SIGTERM (sent to its whole process group, so what it
 * spawned goes too), then SIGKILL after `killTimeout`; tasks that had not started never start.
 * The second part runs shell commands that start a grandchild (`sleep`), to show that it dies too.
 */
import { readFileSync } from 'node:fs';
import { bufferCount, filter, firstValueFrom, map } from 'rxjs';
import { schedule$, taskModule, commandTask, liveChildPids, RunTerminatedError } from '../src/index.js';

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));

/** True while `pid` is a live process. A zombie (exited, not yet reaped by its parent) counts as gone. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return true; // no /proc (macOS): kill(pid, 0) succeeded
  }
}

// 1. Unsubscribe.
{
  const run = schedule$(Array.from({ length: 8 }, () => work.sleepFor(60_000)), { concurrency: 4 });
  const subscription = run.subscribe({ error: (error) => console.error('unexpected:', error) });
  await firstValueFrom(run.progress$.pipe(filter((p) => p.running === 4)));
  const pids = run.pids();
  console.log(`unsubscribe: 4 of 8 tasks running, in processes ${pids.join(', ')}`);

  subscription.unsubscribe(); // the last subscriber left: the run is terminated
  await run.terminate(); // already terminating; this only waits until every process is gone
  console.log(`unsubscribe: run.pids() = ${JSON.stringify(run.pids())}, still alive: ${JSON.stringify(pids.filter(isAlive))}`);
}

// 2. AbortSignal. Each command starts a grandchild and prints its pid (captured on output$).
{
  const controller = new AbortController();
  const script = 'sleep 60 & echo "$!"; wait';
  const run = schedule$(Array.from({ length: 4 }, () => commandTask('sh', ['-c', script])), {
    concurrency: 2,
    signal: controller.signal,
    output: 'capture',
  });
  const result = run.toOrderedArray();
  const grandchildren = await firstValueFrom(run.output$.pipe(map((line) => Number(line.line)), bufferCount(2)));
  const pids = [...run.pids(), ...grandchildren];
  console.log(`abort: 2 of 4 commands running; shells and their sleep grandchildren: ${pids.join(', ')}`);

  controller.abort(new Error('the user pressed Cancel'));
  try {
    await result;
  } catch (error) {
    // The run's streams end only once every process is gone.
    const cause = (error as Error).cause as Error;
    console.log(`abort: toOrderedArray() rejected with ${String(error)} (RunTerminatedError: ${error instanceof RunTerminatedError}, cause: ${cause.message})`);
  }
  console.log(`abort: run.pids() = ${JSON.stringify(run.pids())}, still alive: ${JSON.stringify(pids.filter(isAlive))}`);
}

console.log(`liveChildPids() = ${JSON.stringify(liveChildPids())}`);
