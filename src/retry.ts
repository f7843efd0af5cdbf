/**
 * Retries: a task that failed in a retryable way runs again, after a backoff, up to a limit.
 *
 * @module
 */
import { TaskError, toRemoteErrorInfo, type TaskFailureKind } from './errors.js';
import { resolveRetry, type ResolvedOptions, type ResolvedRetry } from './options.js';
import type { JobEvents, JobHandle, TaskRuntime } from './runtime/runtime.js';
import { taskLabel, type Task } from './task.js';

/** Runs a task through `runtime`, starting it again while its retry policy allows. */
export function runWithRetries(runtime: TaskRuntime, task: Task, index: number, options: ResolvedOptions, events: JobEvents): JobHandle {
  const policy = task.options.retries === undefined ? options.retries : resolveRetry('retries', task.options.retries);
  const timeout = task.options.timeout ?? options.timeout;
  // Most tasks are never retried: they need no wrapper around their events.
  if (policy.retries === 0) return runtime.start({ task, index, attempt: 1, timeout }, events);
  return runRetrying(runtime, task, index, timeout, policy, events);
}

/**
 * The retrying half of runWithRetries, a function of its own: its closures capture its
 * parameters, and V8 would otherwise allocate a context for them on every call, retried or not.
 */
function runRetrying(
  runtime: TaskRuntime,
  task: Task,
  index: number,
  timeout: number | undefined,
  policy: ResolvedRetry,
  events: JobEvents,
): JobHandle {
  let current: JobHandle | undefined;
  let timer: NodeJS.Timeout | undefined;
  let cancelled = false;
  const attempt = (n: number) => {
    current = runtime.start(
      { task, index, attempt: n, timeout },
      {
        fulfilled: (value, stats) => events.fulfilled(value, stats),
        progress: (value) => events.progress(value),
        started: () => events.started?.(),
        rejected: (error: TaskError) => {
          if (cancelled) return;
          if (n > policy.retries || !policy.on.includes(error.kind)) {
            events.rejected(error);
            return;
          }
          current = undefined;
          timer = setTimeout(() => {
            try {
              attempt(n + 1);
            } catch (thrown) {
              // Nothing here is meant to throw (the runtime refuses a task it cannot start); but a
              // throw in a timer would end the program, so the task fails with it instead.
              const detail = `it could not be started again: ${toRemoteErrorInfo(thrown).message}`;
              events.rejected(new TaskError({ kind: 'invalid', index, label: taskLabel(task), attempt: n + 1, cause: thrown, detail }));
            }
          }, retryDelay(policy, n));
          events.retrying?.();
        },
      },
    );
  };
  attempt(1);
  return {
    cancel() {
      cancelled = true;
      clearTimeout(timer);
      current?.cancel();
    },
  };
}

/** Milliseconds to wait before attempt `failed + 1`. */
export function retryDelay(policy: ResolvedRetry, failed: number, random: () => number = Math.random): number {
  const base = policy.backoff === 'exponential' ? policy.delay * 2 ** (failed - 1) : policy.delay;
  const capped = Math.min(policy.maxDelay, base);
  // "Equal jitter" (half the delay, plus up to half at random) spreads the retries of tasks that
  // failed together, so they do not fail together again, and still waits at least half the delay.
  return policy.jitter ? Math.round(capped / 2 + random() * (capped / 2)) : capped;
}

/** The failures retried unless `retry.on` says otherwise. Invalid tasks and cancellations never are. */
export const DEFAULT_RETRY_ON: readonly TaskFailureKind[] = ['threw', 'exited', 'signaled', 'timeout'];
