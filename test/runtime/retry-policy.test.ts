/**
 * The retry policy without processes: `retryDelay` as a pure function, and `runWithRetries`
 * against a fake runtime on a fake clock (virtual time: nothing here waits for real).
 */
import test from 'ava';
import { BehaviorSubject, EMPTY } from 'rxjs';
import { OptionError, TaskError, moduleTask, type TaskFailureKind } from '../../src/index.js';
import { resolveOptions, resolveRetry } from '../../src/options.js';
import { DEFAULT_RETRY_ON, retryDelay, runWithRetries } from '../../src/retry.js';
import type { ExecutingJob, JobEvents, JobSpec, TaskRuntime, TaskStats } from '../../src/runtime/runtime.js';
import { work } from '../helpers.js';

test('fixed backoff waits the same delay before every retry', (t) => {
  const policy = resolveRetry('retries', { retries: 5, delay: 250, backoff: 'fixed', jitter: false });
  t.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelay(policy, n)), [250, 250, 250, 250, 250]);
});

test('exponential backoff doubles the delay after each failed attempt, up to maxDelay', (t) => {
  const policy = resolveRetry('retries', { retries: 8, delay: 100, backoff: 'exponential', maxDelay: 1000, jitter: false });
  t.deepEqual([1, 2, 3, 4, 5, 6].map((n) => retryDelay(policy, n)), [100, 200, 400, 800, 1000, 1000]);
});

test('jitter spreads each delay between half and all of it', (t) => {
  const policy = resolveRetry('retries', { retries: 3, delay: 100, backoff: 'exponential', jitter: true });
  t.is(retryDelay(policy, 1, () => 0), 50);
  t.is(retryDelay(policy, 1, () => 0.5), 75);
  t.is(retryDelay(policy, 1, () => 0.999999), 100);
  t.is(retryDelay(policy, 3, () => 0), 200);
  t.is(retryDelay(policy, 3, () => 0.999999), 400);
  for (let i = 0; i < 100; i++) {
    const d = retryDelay(policy, 2);
    t.true(d >= 100 && d <= 200, `${d}`);
  }
});

test('defaults: 100 ms, exponential, jitter on, capped at 30 s, retrying threw, exited, signaled and timeout', (t) => {
  const policy = resolveRetry('retries', 3);
  t.like(policy, { retries: 3, delay: 100, backoff: 'exponential', maxDelay: 30_000, jitter: true });
  t.deepEqual([...policy.on], ['threw', 'exited', 'signaled', 'timeout']);
  t.deepEqual([...DEFAULT_RETRY_ON], ['threw', 'exited', 'signaled', 'timeout']);
});

test('invalid and cancelled are never retried: listing them is an OptionError, not a policy that says more than it does', (t) => {
  for (const kind of ['invalid', 'cancelled'] as const) {
    t.throws(() => resolveRetry('retries', { retries: 2, on: ['threw', kind, 'spawn'] }), { instanceOf: OptionError, message: new RegExp(`on\\[1\\] .*never retried\\)$`) });
  }
  t.deepEqual([...resolveRetry('retries', { retries: 2, on: ['threw', 'spawn'] }).on], ['threw', 'spawn']);
});

// ---- runWithRetries on a fake clock ---------------------------------------------------------

/** A runtime whose jobs fail or succeed as the test says, recording each start. */
class FakeRuntime implements TaskRuntime {
  readonly starts: Array<{ spec: JobSpec; at: number; events: JobEvents }> = [];
  readonly depth$ = new BehaviorSubject(1);
  readonly output$ = EMPTY;
  executing = 0;
  constructor(private readonly clock: FakeClock) {}
  start(spec: JobSpec, events: JobEvents) {
    this.starts.push({ spec, at: this.clock.now, events });
    return { cancel: () => {} };
  }
  setConcurrency(): void {}
  endOfInput(): void {}
  pids(): number[] {
    return [];
  }
  executingJobs(): ExecutingJob[] {
    return [];
  }
  async shutdown(): Promise<void> {}
  fail(kind: TaskFailureKind): void {
    const { spec, events } = this.starts.at(-1)!;
    events.rejected(new TaskError({ kind, index: spec.index, attempt: spec.attempt }));
  }
  succeed(value: unknown): void {
    const { spec, events } = this.starts.at(-1)!;
    events.fulfilled(value, { durationMs: 0, cpuMs: 0, pid: 1, attempt: spec.attempt } satisfies TaskStats);
  }
}

/** Replaces setTimeout/clearTimeout with a virtual clock for the duration of one serial test. */
class FakeClock {
  now = 0;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;
  #saved = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
  install(): void {
    globalThis.setTimeout = ((fn: () => void, ms = 0) => {
      const id = this.#next++;
      this.#timers.set(id, { at: this.now + ms, fn });
      return id;
    }) as unknown as typeof setTimeout;
    globalThis.clearTimeout = ((id: number) => this.#timers.delete(id)) as unknown as typeof clearTimeout;
  }
  uninstall(): void {
    Object.assign(globalThis, this.#saved);
  }
  tick(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.#timers].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }
}

function harness(t: { teardown(fn: () => void): void }, retries: unknown) {
  const clock = new FakeClock();
  clock.install();
  t.teardown(() => clock.uninstall());
  const runtime = new FakeRuntime(clock);
  const outcome: { value?: unknown; error?: TaskError; stats?: TaskStats } = {};
  const options = resolveOptions({ retries: retries as never });
  const handle = runWithRetries(runtime, moduleTask(work, 'square', [1]), 7, options, {
    fulfilled: (value, stats) => Object.assign(outcome, { value, stats }),
    rejected: (error) => (outcome.error = error),
    progress: () => {},
  });
  return { clock, runtime, outcome, handle };
}

test.serial('each retry starts after its backoff, with the next attempt number', (t) => {
  const { clock, runtime, outcome } = harness(t, { retries: 3, delay: 100, backoff: 'exponential', jitter: false });
  t.deepEqual(runtime.starts.map((s) => [s.spec.attempt, s.at]), [[1, 0]]);
  runtime.fail('threw');
  clock.tick(99);
  t.is(runtime.starts.length, 1, 'not before the delay');
  clock.tick(1);
  runtime.fail('exited');
  clock.tick(200);
  runtime.fail('signaled');
  clock.tick(400);
  runtime.succeed(49);
  t.deepEqual(runtime.starts.map((s) => [s.spec.attempt, s.at]), [[1, 0], [2, 100], [3, 300], [4, 700]]);
  t.true(runtime.starts.every((s) => s.spec.index === 7));
  t.is(outcome.value, 49);
  t.is(outcome.stats?.attempt, 4);
  t.is(outcome.error, undefined);
});

test.serial('after the last retry the failure is reported with its attempt number', (t) => {
  const { clock, runtime, outcome } = harness(t, { retries: 2, delay: 10, backoff: 'fixed', jitter: false });
  runtime.fail('timeout');
  clock.tick(10);
  runtime.fail('timeout');
  clock.tick(10);
  runtime.fail('timeout');
  clock.tick(10_000);
  t.is(runtime.starts.length, 3);
  t.is(outcome.error?.kind, 'timeout');
  t.is(outcome.error?.attempt, 3);
  t.regex(outcome.error?.message ?? '', /timed out on attempt 3/);
});

test.serial('failures not listed in `on` are reported at once, without a retry', (t) => {
  const { clock, runtime, outcome } = harness(t, { retries: 5, delay: 10, on: ['signaled'] });
  runtime.fail('threw');
  clock.tick(10_000);
  t.is(runtime.starts.length, 1);
  t.is(outcome.error?.kind, 'threw');
  t.is(outcome.error?.attempt, 1);
});

test.serial('an invalid task is never retried', (t) => {
  const { clock, runtime, outcome } = harness(t, 5);
  runtime.fail('invalid');
  clock.tick(60_000);
  t.is(runtime.starts.length, 1);
  t.is(outcome.error?.kind, 'invalid');
});

test.serial('cancelling while a retry waits means it never starts', (t) => {
  const { clock, runtime, outcome, handle } = harness(t, { retries: 3, delay: 100, jitter: false });
  runtime.fail('threw');
  handle.cancel();
  clock.tick(10_000);
  t.is(runtime.starts.length, 1);
  t.deepEqual(outcome, {});
});

test.serial('a retry whose start throws fails the task as invalid, with the throw as its cause: nothing escapes the timer', (t) => {
  const { clock, runtime, outcome } = harness(t, { retries: 2, delay: 100, jitter: false });
  const boom = new Error('start threw');
  runtime.start = function start(spec: JobSpec, events: JobEvents) {
    if (spec.attempt > 1) throw boom;
    return FakeRuntime.prototype.start.call(this, spec, events);
  };
  runtime.fail('threw');
  // Before, the throw came out of the retry's timer: an uncaught exception.
  t.notThrows(() => clock.tick(100));
  t.is(outcome.error?.kind, 'invalid');
  t.is(outcome.error?.attempt, 2);
  t.is(outcome.error?.cause, boom);
  t.regex(outcome.error!.message, /task #7 \(work\.ts#square\) is invalid: it could not be started again: start threw$/);
});
