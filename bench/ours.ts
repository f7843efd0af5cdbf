// This library's contenders. Everything here goes through the public API only, with default
// options unless a workload says otherwise. The harness imports this file dynamically, so
// when the library cannot load the peers still run and the import error is printed instead.
//
// Types come from ../src/index.js; the code comes from BENCH_OURS_MODULE when the harness set
// it (src/ compiled to plain JS by build-ours.ts, so workers run plain Node like the peers'),
// else from ../src/index.js itself (`--ours-src`: workers then load tsx as well).
import { Observable, type Subscriber } from 'rxjs';
import { median, type Measurement } from './harness.js';
import { checkIncSum } from './peers.js';
import { childPids, startRssSampler } from './proc.js';

type Library = typeof import('../src/index.js');
const librarySpecifier = process.env.BENCH_OURS_MODULE ?? new URL('../src/index.js', import.meta.url).href;
const { commandTask, moduleTask, schedule$, WorkerPool } = (await import(librarySpecifier)) as Library;
type Pool = InstanceType<Library['WorkerPool']>;

const fixture = (name: string): URL => new URL(`./fixtures/${name}`, import.meta.url);
const incModule = fixture('inc.mjs');
const spinModule = fixture('spin.mjs');
const echoModule = fixture('echo.mjs');
const CONCURRENCY = 2;

function incTasks(count: number, offset: number) {
  return Array.from({ length: count }, (_, i) => moduleTask(incModule, 'inc', [offset + i]));
}

/**
 * Times a first run on a new {@link WorkerPool} (cold: worker start-up included), an untimed
 * warm-up run, then a timed run again on the same pool (and, with `steady`, one more), and reports
 * the later ones only if the same worker processes served them (a check that the pool kept them).
 */
async function coldAndWarm(
  run: (phase: 'cold' | 'warmup' | 'warm' | 'steady', pool: Pool) => Promise<void>,
  unitsOfWork: number,
  scale: number,
  options: { steady?: boolean } = {},
): Promise<Measurement> {
  let start = performance.now();
  const pool = new WorkerPool();
  try {
    await run('cold', pool);
    const cold = ((performance.now() - start) * scale) / unitsOfWork;
    await run('warmup', pool);
    const workersAfterWarmup = new Set(childPids());
    start = performance.now();
    await run('warm', pool);
    const warm = ((performance.now() - start) * scale) / unitsOfWork;
    let steady: number | undefined;
    if (options.steady) {
      start = performance.now();
      await run('steady', pool);
      steady = ((performance.now() - start) * scale) / unitsOfWork;
    }
    const workersAfterTimedRun = childPids();
    const sameWorkers =
      workersAfterTimedRun.length > 0 && workersAfterTimedRun.every((pid) => workersAfterWarmup.has(pid));
    if (sameWorkers) return { metrics: steady === undefined ? { cold, warm } : { cold, warm, steady } };
    return {
      metrics: { cold },
      notes: ['warm not reported: the workers of one run did not serve the next run on the same pool'],
    };
  } finally {
    await pool.close();
  }
}

/**
 * Tiny tasks, all submitted at once, default options and a WorkerPool: µs per task, cold and warm.
 *
 * @param sizes - tasks per timed run, tasks in the untimed warm-up run
 * @returns cold and (when the pool kept its workers) warm µs per task
 */
export async function tiny({ tasks, warmup }: { tasks: number; warmup: number }): Promise<Measurement> {
  return coldAndWarm(
    async (phase, pool) => {
      const count = phase === 'warmup' ? warmup : tasks;
      const offset = { cold: 0, warmup: tasks, warm: tasks + warmup, steady: 2 * tasks + warmup }[phase];
      const values = await schedule$(incTasks(count, offset), { concurrency: CONCURRENCY, pool }).toOrderedArray();
      checkIncSum(values, count, offset);
    },
    tasks,
    1000,
    { steady: true },
  );
}

/**
 * CPU-bound tasks: wall time of the batch, cold and warm.
 *
 * @param sizes - number of tasks, busy-loop iterations per task
 * @returns cold and (when workers are kept) warm wall time in ms
 */
export async function cpu({ tasks, iterations }: { tasks: number; iterations: number }): Promise<Measurement> {
  return coldAndWarm(
    async (phase, pool) => {
      const count = phase === 'warmup' ? 2 : tasks;
      const work = Array.from({ length: count }, () => moduleTask(spinModule, 'spin', [phase === 'warmup' ? 1000 : iterations]));
      const values = await schedule$(work, { concurrency: CONCURRENCY, pool }).toOrderedArray();
      if (values.length !== count) throw new Error(`expected ${count} results, got ${values.length}`);
    },
    1,
    1,
  ).then(({ metrics, notes }) => ({ metrics: rename(metrics, { cold: 'cold wall', warm: 'wall' }), notes }));
}

/**
 * A fresh process per task (`maxTasksPerWorker: 1`): ms per task.
 *
 * @param sizes - number of tasks
 * @returns ms per task
 */
export async function fresh({ tasks }: { tasks: number }): Promise<Measurement> {
  const start = performance.now();
  const values = await schedule$(incTasks(tasks, 0), { concurrency: CONCURRENCY, maxTasksPerWorker: 1 }).toOrderedArray();
  const perTask = (performance.now() - start) / tasks;
  checkIncSum(values, tasks, 0);
  return { metrics: { 'per task': perTask } };
}

/**
 * `/bin/true` as a command task: ms per task.
 *
 * @param sizes - number of runs
 * @returns ms per task
 */
export async function command({ tasks }: { tasks: number }): Promise<Measurement> {
  const start = performance.now();
  const work = Array.from({ length: tasks }, () => commandTask('/bin/true', []));
  const values = await schedule$(work, { concurrency: CONCURRENCY }).toOrderedArray();
  const perTask = (performance.now() - start) / tasks;
  if (values.length !== tasks) throw new Error(`expected ${tasks} results, got ${values.length}`);
  return { metrics: { 'per task': perTask } };
}

/**
 * A large Buffer as argument and result, concurrency 1, worker start-up excluded.
 *
 * Round trip (latency): tasks are fed through an Observable, each only after the previous result
 * arrived, so nothing overlaps; the first (which waits for the worker to start) is dropped.
 * Pipelined (throughput): a run may pipeline and batch queued tasks, so completions can arrive
 * in a burst; measured as the extra time a run of 1 + `trips` tasks takes over a run of 1 task,
 * divided by `trips`, which cancels start-up out.
 *
 * @param sizes - payload size in MB, round trips per sample
 * @returns median ms per round trip, and ms per Buffer when pipelined (median of 3 pairs of runs)
 */
export async function ipc({ megabytes, trips }: { megabytes: number; trips: number }): Promise<Measurement> {
  const payload = Buffer.alloc(megabytes * 2 ** 20, 7);
  const echoTask = () => moduleTask(echoModule, 'echo', [payload]);
  const checkEcho = (value: unknown): void => {
    if ((value as Uint8Array | undefined)?.byteLength !== payload.byteLength) throw new Error('echo came back with a different length');
  };

  const latencies: number[] = [];
  await new Promise<void>((resolve, reject) => {
    // The first task is emitted when the run subscribes to the source (a Subject fed before
    // that would lose it); each next one when the previous result has arrived.
    let feed: Subscriber<ReturnType<typeof echoTask>> | undefined;
    let sentAt = 0;
    const sendNext = (): void => {
      sentAt = performance.now();
      feed?.next(echoTask());
    };
    const source = new Observable<ReturnType<typeof echoTask>>((subscriber) => {
      feed = subscriber;
      sendNext();
    });
    schedule$(source, { concurrency: 1 }).subscribe({
      next: (completion) => {
        latencies.push(performance.now() - sentAt);
        try {
          checkEcho((completion as { value?: unknown }).value);
        } catch (error) {
          reject(error);
        }
        if (latencies.length < trips + 1) sendNext();
        else feed?.complete();
      },
      error: reject,
      complete: resolve,
    });
  });

  const timeRun = async (count: number): Promise<number> => {
    // A Buffer of its own for each task: one Buffer shared by tasks that travel in one message
    // would be written once, the others as references to it, and measure nothing.
    const work = Array.from({ length: count }, (_, i) => moduleTask(echoModule, 'echo', [Buffer.alloc(payload.byteLength, i)]));
    const start = performance.now();
    const values = await schedule$(work, { concurrency: 1 }).toOrderedArray();
    const elapsed = performance.now() - start;
    if (values.length !== count) throw new Error(`expected ${count} results, got ${values.length}`);
    values.forEach(checkEcho);
    return elapsed;
  };
  const perBuffer: number[] = [];
  for (let pair = 0; pair < 3; pair++) {
    const single = await timeRun(1);
    const many = await timeRun(1 + trips);
    perBuffer.push((many - single) / trips);
  }
  return { metrics: { 'round trip': median(latencies.slice(1)), pipelined: median(perBuffer) } };
}

/**
 * A lazily generated stream of tiny tasks: the parent's peak RSS must stay flat.
 *
 * @param sizes - total tasks, and the completion count from which growth is measured
 * @returns RSS growth (MB) from `from` completions to the end, peak RSS (MB), µs per task
 */
export async function lazy({ tasks, from }: { tasks: number; from: number }): Promise<Measurement> {
  function* generate() {
    for (let i = 0; i < tasks; i++) yield moduleTask(incModule, 'inc', [i]);
  }
  const rss = startRssSampler(50);
  let completed = 0;
  let sum = 0;
  let peakAtFrom = Number.NaN;
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    schedule$(generate(), { concurrency: CONCURRENCY }).subscribe({
      next: (completion) => {
        sum += (completion as { value: number }).value;
        if (++completed === from) peakAtFrom = rss.peak();
      },
      error: reject,
      complete: resolve,
    });
  });
  const elapsed = performance.now() - start;
  const peakAtEnd = rss.peak();
  rss.stop();
  if (completed !== tasks || sum !== (tasks * (tasks + 1)) / 2) {
    throw new Error(`wrong results: ${completed} completions summing to ${sum}`);
  }
  return {
    metrics: {
      'rss growth': (peakAtEnd - peakAtFrom) / 2 ** 20,
      'peak rss': peakAtEnd / 2 ** 20,
      'per task': (elapsed * 1000) / tasks,
    },
  };
}

function rename(metrics: Record<string, number>, names: Record<string, string>): Record<string, number> {
  return Object.fromEntries(Object.entries(metrics).map(([key, value]) => [names[key] ?? key, value]));
}
