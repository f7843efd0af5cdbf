// Automatic concurrency and a user's slider, with real processes. Nothing here asserts a duration:
// the machine may be shared and slow, so only bounds and directions are checked.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import test from 'ava';
import { BehaviorSubject, firstValueFrom } from 'rxjs';
import { commandTask, moduleTask, optimalConcurrency, schedule$, type Progress, type ScheduledRun } from '../src/index.js';
import { first, isAlive } from './helpers.js';

const tasksModule = new URL('./load/auto-tasks.ts', import.meta.url);
const wait = (ms: number) => moduleTask<number>(tasksModule, 'wait', [ms]);
const spin = (ms: number) => moduleTask<number>(tasksModule, 'spin', [ms]);

/** Runs to the end, recording every limit, every progress snapshot and every pid seen. */
async function observe<T>(run: ScheduledRun<T>) {
  const limits: number[] = [];
  const snapshots: Progress[] = [];
  const pids = new Set<number>();
  run.concurrency$.subscribe((limit) => limits.push(limit));
  run.progress$.subscribe((p) => {
    snapshots.push(p);
    for (const pid of run.pids()) pids.add(pid);
  });
  const values = await run.toOrderedArray();
  return { values, limits, snapshots, pids: [...pids] };
}

test('auto: I/O-bound tasks raise the limit above its start, never above maxConcurrency', async (t) => {
  const initial = optimalConcurrency();
  const maxConcurrency = initial + 4;
  // Enough work at the initial limit (30 rounds of 200 ms) for the controller to see the tasks
  // wait, however slowly the workers start on a crowded machine.
  const run = schedule$(Array.from({ length: 30 * initial }, () => wait(200)), { sampleInterval: 50, maxConcurrency });
  const { values, limits, snapshots, pids } = await observe(run);

  t.is(values.length, 30 * initial);
  t.is(limits[0], initial, 'starts at optimalConcurrency()');
  t.true(Math.max(...limits) > initial, `the limit rose: ${limits.join(' → ')}`);
  t.true(limits.every((limit) => limit <= maxConcurrency), `never above ${maxConcurrency}: ${limits.join(' → ')}`);
  t.true(snapshots.every((p) => p.running <= maxConcurrency), 'never more tasks running than maxConcurrency');
  t.true(snapshots.some((p) => p.load?.cpu !== undefined), 'progress$ carries the load readings');
  t.deepEqual(pids.filter(isAlive), [], 'every worker is gone at the end');
});

test('auto: CPU-bound tasks never raise the limit above its start', async (t) => {
  const initial = optimalConcurrency();
  if (os.cpus().length > initial) {
    // With a CPU quota or affinity below the host's CPU count, the system-wide reading shows idle
    // CPUs this process may not use, and raising on it is what the policy is meant to do there.
    t.pass(`skipped: ${os.cpus().length} host CPUs, ${initial} usable`);
    return;
  }
  const run = schedule$(Array.from({ length: 4 * initial }, () => spin(300)), { sampleInterval: 50 });
  const { values, limits, pids } = await observe(run);

  t.is(values.length, 4 * initial);
  t.true(values.every((loops) => loops > 0));
  t.true(limits.every((limit) => limit <= initial), `never above ${initial}: ${limits.join(' → ')}`);
  t.deepEqual(pids.filter(isAlive), [], 'every worker is gone at the end');
});

test('auto: commands that do their work in a grandchild (sh -c) count as CPU-bound: the limit never rises', async (t) => {
  const initial = optimalConcurrency();
  if (os.cpus().length > initial) {
    t.pass(`skipped: ${os.cpus().length} host CPUs, ${initial} usable`);
    return;
  }
  // The shell only waits; the busy loop runs in the Node process it starts (`; exit $?` keeps the
  // shell from replacing itself with it). Measured alone, the shell would look I/O-bound.
  const busy = `${JSON.stringify(process.execPath)} -e 'const end = Date.now() + 300; while (Date.now() < end);'; exit $?`;
  const run = schedule$(Array.from({ length: 4 * initial }, () => commandTask('sh', ['-c', busy])), { sampleInterval: 50 });
  const grandchildren = new Set<number>();
  run.progress$.subscribe(() => {
    for (const pid of run.pids()) for (const child of childrenOf(pid)) grandchildren.add(child);
  });
  const { values, limits, snapshots, pids } = await observe(run);

  t.is(values.length, 4 * initial);
  t.true(values.every((result) => result.exitCode === 0));
  const loads = snapshots.flatMap((p) => (p.load ? [`${p.concurrency}:${p.load.cpu?.toFixed(0)}/${p.load.childrenDemand?.toFixed(0)}/${p.load.childrenMeasured}/r${p.running}`] : []));
  t.true(limits.every((limit) => limit <= initial), `never above ${initial}: ${limits.join(' → ')} ${loads.join(' ')}`);
  t.true(
    snapshots.some((p) => (p.load?.childrenRss ?? 0) > 10 * 2 ** 20),
    'the memory read includes the Node grandchildren, not only the shells',
  );
  t.true(grandchildren.size > 0, 'grandchildren were seen running');
  t.deepEqual([...pids, ...grandchildren].filter(isAlive), [], 'every shell and grandchild is gone at the end');
});

/** The pids a process's main thread started, from /proc (none elsewhere, or once it is gone). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

test('a slider drives concurrency$ and progress$ as auto mode does, without sampling anything', async (t) => {
  const slider = new BehaviorSubject(1);
  const run = schedule$(Array.from({ length: 12 }, () => wait(50)), { concurrency: slider });
  let completed = 0;
  run.subscribe(() => {
    completed += 1;
    if (completed === 1) slider.next(4);
    if (completed === 6) {
      slider.next(4); // the same value again is no change
      slider.next(2);
      slider.complete(); // the slider goes away: its last value stays in force
    }
  });
  const { values, limits, snapshots, pids } = await observe(run);

  t.is(values.length, 12, 'every task ran, after the slider completed too');
  t.deepEqual(limits, [1, 4, 2]);
  // Before it starts, a run with an Observable limit shows 0: the limit is unknown until it emits.
  const running = snapshots.filter((p) => p.state !== 'idle');
  t.deepEqual([...new Set(running.map((p) => p.concurrency))], [1, 4, 2], 'progress$ carries the limit in force');
  t.true(snapshots.every((p) => p.running <= 4));
  t.true(snapshots.every((p) => p.load === undefined && !p.memoryHeld), 'no load is sampled for a slider');
  t.deepEqual(pids.filter(isAlive), [], 'every worker is gone at the end');
});

test("a slider can hand the limit to automatic concurrency with 'auto', and take it back with a number", async (t) => {
  const limit$ = new BehaviorSubject<number | 'auto'>(3);
  // I/O-bound tasks, so automatic concurrency raises the limit: 100 rounds of 100 ms at 3.
  const run = schedule$(Array.from({ length: 300 }, () => wait(100)), { concurrency: limit$, sampleInterval: 50, maxConcurrency: 6 });
  t.teardown(() => run.terminate()); // a step that never comes leaves no worker behind
  const limits: number[] = [];
  run.concurrency$.subscribe((limit) => limits.push(limit));
  const snapshots: Progress[] = [];
  run.progress$.subscribe((p) => snapshots.push(p));
  const pids = new Set<number>();
  const done = run.toOrderedArray();

  await first(run.progress$, (p) => p.running === 3);
  const manual = snapshots.length;
  limit$.next('auto');
  // The controller reads the load and raises the limit from the one in force.
  await first(run.concurrency$, (limit) => limit > 3);
  await first(run.progress$, (p) => p.load?.cpu !== undefined);
  for (const pid of run.pids()) pids.add(pid);
  limit$.next(2);
  await first(run.progress$, (p) => p.concurrency === 2);
  const back = snapshots.length;
  limit$.next(16); // the rest, sooner
  t.is((await done).length, 300);

  t.is(limits[0], 3);
  t.true(limits.slice(1, limits.indexOf(2)).every((limit) => limit > 3 && limit <= 6), `auto from 3, within maxConcurrency 6: ${limits.join(' → ')}`);
  t.deepEqual(limits.slice(limits.indexOf(2)), [2, 16], 'the slider has the limit again');
  t.true(snapshots.slice(0, manual).every((p) => p.load === undefined), 'nothing sampled before the hand-over');
  t.true(snapshots.slice(manual, back).some((p) => p.load?.cpu !== undefined), 'load readings while automatic');
  t.true(snapshots.slice(back).every((p) => p.load === undefined && !p.memoryHeld), 'none once the slider has it back');
  t.deepEqual([...pids].filter(isAlive), [], 'every worker is gone at the end');

  // A BehaviorSubject that starts at 'auto' starts where automatic concurrency would.
  const auto = schedule$([wait(10)], { concurrency: new BehaviorSubject<number | 'auto'>('auto'), maxConcurrency: 1 });
  t.is(await firstValueFrom(auto.concurrency$), 1);
  t.deepEqual(await auto.toOrderedArray(), [10]);
});
