/**
 * Tasks sent ahead to a worker that is busy with a long task move to a worker with nothing to do:
 * the busy worker gives back the ones it has not started, between two tasks.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { moduleTask, type Task } from '../../src/index.js';
import { LocalRuntime } from '../../src/runtime/local-runtime.js';
import { runtimeOptions } from './runtime-options.js';
import { WorkerProcess } from '../../src/runtime/worker-process.js';
import { fixture, isAlive, waitGone, work } from '../helpers.js';

const chaos = fixture('chaos-tasks.ts');

function runtimeFor(t: { teardown(fn: () => unknown): void }, options: { concurrency?: number; idleTimeout?: number; workerExecArgv?: string[] } = {}) {
  const runtime = new LocalRuntime(runtimeOptions({ concurrency: 2, ...options }));
  // Whatever fails below, the workers go (shutdown is idempotent).
  t.teardown(() => runtime.shutdown(false));
  // A job's handle (for a test that cancels it) and a promise of its value.
  const startJob = (task: Task, index: number) => {
    let handle!: { cancel(): void };
    const settled = new Promise<unknown>((resolve, reject) => {
      handle = runtime.start({ task, index, attempt: 1, timeout: undefined }, { fulfilled: resolve, rejected: reject, progress: () => {} });
    });
    return { settled, handle };
  };
  const start = (task: Task, index: number) => startJob(task, index).settled;
  return { runtime, start, startJob };
}

// Started in one tick, in index order, after a warm-up that left both lanes empty, the tasks
// alternate between the lanes (each goes to the first empty lane, else the first of the
// shortest): 2, 4 and 6 on one, 3 and 5 on the other. The long tasks keep the first lane's worker
// busy while the second has nothing to do, and the last task must move there.
for (const [name, long] of [
  // Given back after the parent has the long task's result, and so has marked it running.
  ['the next one in line', [1000]],
  // Given back while another task is still ahead of it.
  ['behind another long one', [300, 1000]],
] as const) {
  // Serial: it watches WorkerProcess.prototype.reclaim, which every runtime of this file shares.
  test.serial(`a task waiting behind a long synchronous one (${name}) runs once, on the idle worker`, async (t) => {
    const { runtime, start } = runtimeFor(t);
    // The last long task lasts until the parent has asked the busy worker for tasks back (the
    // request is then in the worker's channel), or until the waiting task has run elsewhere (it
    // had not been sent), and at least 100 ms: not a fixed time, which on a crowded host the
    // idle worker's results, the rebalance and the request could all outlast.
    const dir = mkdtempSync(join(tmpdir(), 'aps-rebalance-'));
    const release = join(dir, 'release');
    const letGo = () => writeFileSync(release, '');
    const reclaim = WorkerProcess.prototype.reclaim;
    t.teardown(() => {
      WorkerProcess.prototype.reclaim = reclaim;
      rmSync(dir, { recursive: true, force: true });
    });
    WorkerProcess.prototype.reclaim = function (this: WorkerProcess, count: number) {
      reclaim.call(this, count);
      letGo();
    };
    // Both workers up first: were the second one still booting when the first finished its long
    // task, nothing would have been idle to take the task behind it (seen on a loaded machine).
    const warm = (await Promise.all([start(moduleTask(work, 'pid'), 0), start(moduleTask(work, 'pid'), 1)])) as number[];
    const pids = runtime.pids();
    t.is(pids.length, 2);
    t.deepEqual([...warm].sort(), [...pids].sort());
    // The last long task blocks until released; any before it spins for its time (were they all
    // to block, two of them could hold both workers at once, with nothing left to release them).
    const busy: Array<Promise<unknown>> = [];
    const other: Array<Promise<unknown>> = [];
    long.forEach((ms, i) => {
      busy.push(start(i < long.length - 1 ? moduleTask(work, 'spin', [ms]) : moduleTask(work, 'blockUntilFile', [release, 100, 60_000]), 2 + 2 * i));
      other.push(start(moduleTask(work, 'pid'), 3 + 2 * i));
    });
    const waiting = start(moduleTask(work, 'pid'), 2 + 2 * long.length);
    void waiting.then(letGo, () => {});
    const [otherPid] = (await Promise.all(other)) as number[];
    t.is(await waiting, otherPid, 'it moved to the worker that had nothing to do');
    t.is((await Promise.all(busy)).at(-1), true, 'the blocking task was released, not timed out');
    await runtime.shutdown(true);
    t.deepEqual(await waitGone(pids), []);
    t.false(pids.some(isAlive));
  });
}

// A task that lies about the protocol, while the parent waits for its worker's answer to a
// reclaim: the forged answer must not stand in for the real one (the task given back would be
// lost, and the run would hang), nor move a task the worker still holds (it would run twice).
for (const [name, ids] of [['no tasks', []], ['every plausible task', Array.from({ length: 2000 }, (_, i) => i + 1)]] as const) {
  test(`a forged answer to a reclaim (${name}) is ignored: the task behind runs once`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aps-reclaim-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'ran');
    const { runtime, start } = runtimeFor(t);
    const busy = start(moduleTask(chaos, 'forgeReclaimed', [700, ids]), 0);
    const other = start(moduleTask(work, 'pid'), 1);
    const behind = start(moduleTask(chaos, 'appendLine', [log, 'ran']), 2);
    t.is(await busy, -1);
    await other;
    t.is(await behind, 'ran');
    t.deepEqual(readFileSync(log, 'utf8').split('\n').filter(Boolean), ['ran']);
    const pids = runtime.pids();
    await runtime.shutdown(true);
    t.deepEqual(await waitGone(pids), []);
  });
}

test('while a worker is starting and another is ready, tasks wait in the parent and the ready worker runs them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-starting-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const flag = join(dir, 'slow');
  // Workers started once the flag exists take 10 s to start; the first one does not.
  const slowOnceFlagged = `import { existsSync } from 'node:fs';
    if (existsSync(${JSON.stringify(flag)})) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10000);`;
  const { runtime, start } = runtimeFor(t, {
    concurrency: 1,
    workerExecArgv: ['--import', `data:text/javascript,${encodeURIComponent(slowOnceFlagged)}`],
  });
  const ready = await start(moduleTask(work, 'pid'), 0);
  writeFileSync(flag, '');
  // Half of these go to the new lane, whose worker is starting; sent there, they would wait 10 s.
  runtime.setConcurrency(2);
  const later = [1, 2, 3, 4].map((i) => start(moduleTask(work, 'pidAfter', [50]), i));
  await new Promise((resolve) => setImmediate(resolve));
  const pids = runtime.pids();
  t.is(pids.length, 2, 'a second worker is starting');
  t.deepEqual(await Promise.all(later), [ready, ready, ready, ready], 'every task ran on the worker that was ready');
  await runtime.shutdown(true);
  t.deepEqual(await waitGone(pids), []);
});

test('a lane trimmed away lets go of its worker: the lane that takes the worker next keeps it', async (t) => {
  const { runtime, start, startJob } = runtimeFor(t, { concurrency: 3, idleTimeout: 2000 });
  const warm = (await Promise.all([0, 1, 2].map((i) => start(moduleTask(work, 'pid'), i)))) as number[];
  const pids = runtime.pids();
  // One task per lane; the third lane's is cancelled at once, and the lane, empty, is trimmed
  // away before its own queued look at itself runs. That look once found the lane idle and, after
  // idleTimeout, retired the worker it still named: by then another lane's.
  const busy = [3, 4].map((i) => start(moduleTask(work, 'pidAfter', [300]), i));
  const cancelled = startJob(moduleTask(work, 'pid'), 5);
  cancelled.handle.cancel();
  runtime.setConcurrency(2);
  await new Promise((resolve) => setImmediate(resolve));
  runtime.setConcurrency(3);
  // Outlasts idleTimeout: its worker, the trimmed lane's, must not be retired under it.
  const later = start(moduleTask(work, 'pidAfter', [3000]), 6);
  let guard: NodeJS.Timeout | undefined;
  const hang = new Promise<string>((resolve) => (guard = setTimeout(resolve, 20_000, 'still waiting after 20 s')));
  const pid = await Promise.race([later, hang]).finally(() => clearTimeout(guard));
  t.true(warm.includes(pid as number), `ran on one of the run's workers: ${String(pid)}`);
  await Promise.all(busy);
  await runtime.shutdown(true);
  t.deepEqual(await waitGone(pids), []);
});
