/**
 * How a worker ends when its parent retires it, run on the library compiled to JavaScript (as
 * users run it: a worker under tsx may have esbuild running in its session, and rightly takes the
 * slower way out). A worker that finds no one in its session exits with WORKER_LEFT_ALONE_EXIT,
 * and its parent then does not look there again; nothing a task does may pass for that. Its
 * stdout and stderr are made only when used, unless code ran before the worker (a preload).
 */
import test from 'ava';
import { compiledLibrary, type CompiledLibrary } from '../fixtures/chaos-compiled.js';
import { killAll, leftovers } from '../fixtures/chaos-procs.js';
import { until } from '../fixtures/scheduler-helpers.js';
import { WORKER_LEFT_ALONE_EXIT } from '../../src/runtime/protocol.js';
import type { WorkerListener, WorkerProcess as WorkerProcessType } from '../../src/runtime/worker-process.js';

const tasks = new URL('../fixtures/worker-exit-tasks.mjs', import.meta.url);
const preload = new URL('../fixtures/preload-logs.mjs', import.meta.url).href;

let compiled: CompiledLibrary;
let WorkerProcess: typeof WorkerProcessType;
test.before(async () => {
  compiled = await compiledLibrary();
  ({ WorkerProcess } = await compiled.internal<typeof import('../../src/runtime/worker-process.js')>('runtime/worker-process'));
});
test.after.always(() => compiled?.remove());

/** Starts a compiled worker, runs `exportName` of the fixtures on it, retires it; resolves once it has exited. */
async function retiredAfter(exportName: string, args: unknown[] = []): Promise<WorkerProcessType> {
  let answered!: () => void;
  const result = new Promise<void>((resolve) => (answered = resolve));
  const listener: WorkerListener = {
    results: () => answered(),
    progress: () => {},
    ready: () => {},
    exited: () => {},
    output: () => {},
    unsendable: () => {},
    reclaimed: () => {},
  };
  const worker = new WorkerProcess({ output: 'ignore', execArgv: [], env: undefined, killTimeout: 1000, startTimeout: 30_000 }, listener);
  if (!(await worker.booted)) throw new Error('the worker did not start');
  if (exportName) {
    worker.send(1, tasks.href, exportName, args, 0);
    await result;
    worker.answered();
  }
  await worker.retire();
  await worker.exited;
  return worker;
}

test.serial('a worker retired with no one in its session exits with its own code; one that has a thread of a task left falls back to ending its group', async (t) => {
  const alone = await retiredAfter('');
  t.deepEqual([alone.exitCode, alone.exitSignal], [WORKER_LEFT_ALONE_EXIT, null]);
  t.deepEqual(leftovers([alone.pid!]), []);

  // A task's worker_thread, left running, could start a process after the worker's last look:
  // the worker does not claim then, and the parent looks for itself. Four idle threads are as
  // many as libuv's pool has; a task that started the pool is not told from them either.
  for (const [exportName, args] of [['idleThreadsLeft', [1]], ['idleThreadsLeft', [4]], ['usesThreadPool', []]] as const) {
    const threaded = await retiredAfter(exportName, [...args]);
    t.deepEqual([threaded.exitCode, threaded.exitSignal], [null, 'SIGKILL'], `${exportName}(${args.join()})`);
    t.deepEqual(leftovers([threaded.pid!]), []);
  }
});

for (const exportName of ['timeoutStrayThenEmptyLoop', 'timeoutStrayThenEmptyLoopStubbedExit']) {
  test.serial(`a worker whose task let go of the channel exits once idle; an exit code of 229 set late does not pass for a worker that left alone (${exportName})`, async (t) => {
    const { schedule$, moduleTask } = compiled.lib;
    const [pids] = (await schedule$([moduleTask(tasks, exportName, [])]).toOrderedArray()) as number[][];
    t.teardown(() => killAll(leftovers(pids!)));
    t.is(pids!.length, 3);
    await until(() => leftovers([pids![0]!]).length === 0, 'the worker exits');
    await until(() => leftovers(pids!).length === 0, 'timeout and its sleep are killed');
    t.pass();
  });
}

test.serial("a task that let go of the channel and finishes from its own 'beforeExit' listener is not cut short", async (t) => {
  const { schedule$, moduleTask } = compiled.lib;
  t.deepEqual(await schedule$([moduleTask(tasks, 'finishOnBeforeExit', [])]).toOrderedArray(), ['finished from beforeExit']);
});

for (const code of [WORKER_LEFT_ALONE_EXIT, -27, 485, String(WORKER_LEFT_ALONE_EXIT), 'late']) {
  test.serial(`a task that exits with ${code === 'late' ? '229 set in a late exit listener' : JSON.stringify(code)} (229 to the system) as the channel closes does not pass for a worker that left alone: the timeout it left is killed`, async (t) => {
    const { schedule$, moduleTask } = compiled.lib;
    const [pids] = (await schedule$([moduleTask(tasks, 'timeoutStrayThenExit', [code])]).toOrderedArray()) as number[][];
    t.teardown(() => killAll(leftovers(pids!)));
    t.is(pids!.length, 3);
    t.deepEqual(leftovers(pids!), [], 'the worker, timeout and its sleep are gone when the run ends');
  });
}

const preloads: Record<string, { workerExecArgv?: string[]; workerEnv?: NodeJS.ProcessEnv }> = {
  none: {},
  'workerExecArgv --import': { workerExecArgv: ['--import', preload] },
  // Node takes a quoted argument in NODE_OPTIONS.
  'NODE_OPTIONS "--import=..."': { workerEnv: { ...process.env, NODE_OPTIONS: `"--import=${preload}"` } },
};
for (const [name, options] of Object.entries(preloads)) {
  test.serial(`capture: every line a task prints with console.log arrives, named by its task (a preload that logged first: ${name})`, async (t) => {
    // A preload that logged made the stream before the worker's code ran: the console keeps it.
    const { schedule$, moduleTask } = compiled.lib;
    const run = schedule$([0, 1, 2].map((i) => moduleTask(tasks, 'consoleLines', [`t${i}`, 1000, 1000])), {
      concurrency: 1,
      output: 'capture',
      ...options,
    });
    const counts = [0, 0, 0];
    const misnamed: string[] = [];
    run.output$.subscribe(({ index, line }) => {
      const tag = /^t(\d) /.exec(line);
      if (!tag) return;
      counts[Number(tag[1])]!++;
      if (Number(tag[1]) !== index) misnamed.push(`${index}: ${line.slice(0, 8)}`);
    });
    await run.toOrderedArray();
    t.deepEqual(counts, [1000, 1000, 1000]);
    t.deepEqual(misnamed.slice(0, 3), []);
  });
}

for (const flags of [['--experimental-loader', 'data:text/javascript,'], ['--experimental-default-type=module', '--experimental-permission', '--allow-fs-read=*']]) {
test.serial(`capture: stderr lines by console.error all arrive, named, when Node warned before the worker ran (${flags.join(' ')})`, async (t) => {
  const { schedule$, moduleTask } = compiled.lib;
  const run = schedule$([0, 1].map((i) => moduleTask(tasks, 'consoleErrorLines', [`e${i}`, 1500, 1000])), {
    concurrency: 1,
    output: 'capture',
    workerExecArgv: flags,
  });
  let count = 0;
  const misnamed: string[] = [];
  run.output$.subscribe(({ index, line }) => {
    const tag = /^e(\d) /.exec(line);
    if (!tag) return;
    count++;
    if (Number(tag[1]) !== index) misnamed.push(`${index}: ${line.slice(0, 8)}`);
  });
  await run.toOrderedArray();
  t.is(count, 3000);
  t.deepEqual(misnamed.slice(0, 3), []);
});
}

test.serial('output written only in an exit listener arrives, and a module that exits as it loads, having written nothing, is named', async (t) => {
  const { schedule$, moduleTask } = compiled.lib;
  const run = schedule$([moduleTask(tasks, 'printInExitThenExit', [])], { output: 'capture', settle: true });
  const lines: string[] = [];
  run.output$.subscribe(({ index, stream, line }) => lines.push(`${index} ${stream} ${line}`));
  await run.toOrderedArray();
  t.true(lines.includes('0 stdout said in exit') && lines.includes('0 stderr err in exit'), lines.join('\n'));

  const error = await t.throwsAsync(schedule$([moduleTask(new URL('../fixtures/exits-as-it-loads.mjs', import.meta.url), 'x', [])], { output: 'ignore' }).toOrderedArray());
  t.regex(error!.message, /ended the worker process as it loaded \(exit code 3\)/);
});
