/// <reference types="node" preserve="true" />
/**
 * The API a task uses from inside its child process:
 * `import { reportProgress } from 'async-process-scheduler/child'`.
 *
 * @module async-process-scheduler/child
 */
import { TAG, workerHook } from '../runtime/protocol.js';

// A task module that reports progress: the worker tells each task's reports from those of code an
// earlier task left behind.
workerHook()?.trackTasks?.();

/**
 * Reports intermediate progress of the current task to the parent, where it arrives on the
 * run's `taskProgress$` as `{ index, value }`. Works in a module task (inside a worker) and in a
 * process task (a process you forked). Outside a child process it does nothing.
 *
 * A report counts for the task whose code made it. One made by a timer a task left behind, which
 * fires after that task has returned (while the worker runs another), is dropped rather than
 * credited to the task running then. One made by a timer the module's top level set counts for
 * the task running when it fires.
 *
 * `value` can be anything that can be cloned: a fraction, a `{ done, of }` object, a message.
 *
 * In a module task, reports are paced by the run's `progressInterval` (50 ms by default), so
 * calling this on every step of a tight loop is cheap: a task may send 8 reports at once (a few
 * phases arrive as they happen), and one more per `progressInterval`. A report made beyond that
 * is held, replacing any held before it, and sent as soon as the task may send again (during a
 * synchronous stretch, only at its next report), or just before its result, so the last report
 * arrives before the result. A report still held when the task's worker is killed (a timeout, a
 * cancel) is lost. A report sent at once is cloned at once: one that cannot be cloned throws here.
 * A held one is cloned when it is sent, as it is then; if it cannot be, its task fails with that
 * error. With `progressInterval: 0` every report is sent at once. In a process task every report
 * is sent at once.
 *
 * @example
 * ```ts
 * // work.ts, run with moduleTask(new URL('./work.js', import.meta.url), 'crunch', [1000])
 * import { reportProgress } from 'async-process-scheduler/child';
 *
 * export async function crunch(steps: number) {
 *   for (let i = 1; i <= steps; i++) {
 *     await new Promise((resolve) => setTimeout(resolve, 1)); // a step of the work
 *     if (i % 100 === 0) reportProgress({ done: i, of: steps });
 *   }
 *   return steps;
 * }
 * ```
 * @param value What to report.
 */
export function reportProgress(value: unknown): void {
  const hook = workerHook();
  if (hook) {
    hook.reportProgress(value);
  } else if (process.send && process.connected) {
    process.send({ [TAG]: 'progress', value });
  }
}

/**
 * True when this code runs inside a worker process of the scheduler.
 *
 * @example
 * ```ts
 * import { isWorker } from 'async-process-scheduler/child';
 * if (!isWorker()) console.log('called directly, not through the scheduler');
 * ```
 */
export function isWorker(): boolean {
  return workerHook() !== undefined;
}
