/**
 * Crash recovery: a worker that dies mid-task fails exactly that task, with a TaskError saying
 * how it died, and is replaced; a worker that cannot boot is not respawned in a loop.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { BehaviorSubject } from 'rxjs';
import {
  TaskError, commandTask, moduleTask, schedule$, taskModule, type ScheduledRun, type ScheduleOptions, type TaskFailure, type TaskOutcome,
} from '../../src/index.js';
import { leftovers } from '../fixtures/chaos-procs.js';
import { WorkerProcess } from '../../src/runtime/worker-process.js';
import { first, fixture, isAlive, preload, work } from '../helpers.js';

const chaosTasks = fixture('chaos-tasks.ts');
const chaos = taskModule<typeof import('../fixtures/chaos-tasks.js')>(chaosTasks);
/** For the short timeouts below: the module is loaded before the clock starts (see preload). */
const preloadChaos = preload(chaosTasks);
const bootFixture = fixture('chaos-boot.ts').href;

/** Every pid the run shows while it runs, so the test can check afterwards that all are gone. */
function watchPids(run: ScheduledRun<unknown, never>): Set<number> {
  const seen = new Set<number>();
  const look = () => {
    for (const pid of run.pids()) seen.add(pid);
  };
  run.progress$.subscribe({ next: look, error: () => {} });
  run.taskProgress$.subscribe((p) => {
    look();
    const pid = (p.value as { pid?: number }).pid;
    if (pid) seen.add(pid);
  });
  return seen;
}

async function settle(tasks: unknown[], options: ScheduleOptions = {}) {
  const run = schedule$(tasks as never, { concurrency: 1, settle: true, progressInterval: 0, output: 'ignore', ...options }) as unknown as ScheduledRun<
    unknown,
    'settle'
  >;
  const pids = watchPids(run as never);
  const outcomes = (await run.toOrderedArray()) as Array<TaskOutcome<unknown>>;
  return { run, outcomes, pids, errors: outcomes.map((o) => (o.status === 'rejected' ? (o as TaskFailure).reason : undefined)) };
}

function tempDir(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a worker that calls process.exit mid-task fails that task (exited, with the code) and is replaced', async (t) => {
  const { outcomes, errors, pids } = await settle([chaos.pid(), chaos.exitNow(7), chaos.pid(), chaos.square(3)]);
  const error = errors[1]!;
  t.true(error instanceof TaskError);
  t.is(error.kind, 'exited');
  t.is(error.exitCode, 7);
  t.is(error.index, 1);
  t.regex(error.message, /^task #1 \(chaos-tasks\.ts#exitNow\) exited with code 7: the worker process exited while running it$/);
  const [before, , after, nine] = outcomes.map((o) => (o.status === 'fulfilled' ? o.value : undefined));
  t.is(nine, 9);
  t.not(before, after, 'a new worker ran the tasks after the crash');
  t.deepEqual(leftovers(pids), []);
});

test('an uncaught exception in a timer fails the task that was running (threw, with the error) and the worker is replaced', async (t) => {
  const { errors, outcomes, pids } = await settle([chaos.throwInTimer('late failure'), chaos.square(4)]);
  const error = errors[0]!;
  t.is(error.kind, 'threw');
  t.is(error.remote?.name, 'RangeError');
  t.is(error.remote?.message, 'late failure');
  t.regex(error.message, /threw RangeError: late failure: uncaught in the worker, which exited/);
  t.regex(error.stderrTail ?? '', /late failure/);
  t.like(outcomes[1], { status: 'fulfilled', value: 16 });
  t.deepEqual(leftovers(pids), []);
});

test('a worker SIGKILLed from outside fails its task (signaled, SIGKILL) and later tasks succeed', async (t) => {
  const run = schedule$([chaos.reportPidAndHang(), chaos.pid(), chaos.square(5)], { concurrency: 1, settle: true, output: 'ignore' });
  const pids = watchPids(run as never);
  const done = run.toOrderedArray();
  const { value } = await first(run.taskProgress$, () => true);
  const victim = (value as { pid: number }).pid;
  process.kill(victim, 'SIGKILL');
  const outcomes = await done;
  const error = (outcomes[0] as TaskFailure).reason;
  t.is(error.kind, 'signaled');
  t.is(error.signal, 'SIGKILL');
  t.is(error.pid, victim);
  t.regex(error.message, /^task #0 \(chaos-tasks\.ts#reportPidAndHang\) was killed by SIGKILL: the worker process died while running it$/);
  t.like(outcomes[1], { status: 'fulfilled' });
  t.not((outcomes[1] as { value: number }).value, victim);
  t.like(outcomes[2], { status: 'fulfilled', value: 25 });
  t.false(isAlive(victim));
  t.deepEqual(leftovers(pids), []);
});

test('a worker that dies leaves none of the processes its task started', async (t) => {
  const run = schedule$([chaos.spawnGrandchildThenDie('exit'), chaos.spawnGrandchildThenDie('kill'), chaos.square(2)], {
    concurrency: 1,
    settle: true,
    output: 'ignore',
  });
  const reports: Array<{ pid: number; grandchild: number }> = [];
  run.taskProgress$.subscribe((p) => reports.push(p.value as { pid: number; grandchild: number }));
  const outcomes = await run.toOrderedArray();
  t.deepEqual(outcomes.map((o) => o.status === 'rejected' ? o.reason.kind : o.value), ['exited', 'signaled', 4]);
  t.is(reports.length, 2);
  t.deepEqual(reports.flatMap((r) => [r.pid, r.grandchild]).filter(isAlive), []);
  t.deepEqual(leftovers(reports.map((r) => r.pid)), []);
});

test("the stderr tail of a crash holds the worker's last words, however late the pipe is read", async (t) => {
  for (const kib of [1, 48, 200]) {
    const { errors } = await settle([chaos.lastWordsThenDie(kib)]);
    t.regex(errors[0]!.stderrTail ?? '', /last words before dying\n$/, `after ${kib} KiB`);
  }
});

test('a worker that runs out of memory fails its task with a message saying so, and is replaced', async (t) => {
  const { errors, outcomes, pids } = await settle([chaos.square(2), chaos.allocateUntilDead(), chaos.square(6)], {
    workerExecArgv: ['--max-old-space-size=48'],
  });
  const error = errors[1]!;
  t.true(error.kind === 'signaled' || error.kind === 'exited', error.message);
  t.regex(error.message, /ran out of memory/);
  t.regex(error.stderrTail ?? '', /heap out of memory/);
  t.like(outcomes[0], { status: 'fulfilled', value: 4 });
  t.like(outcomes[2], { status: 'fulfilled', value: 36 });
  t.deepEqual(leftovers(pids), []);
});

test('workers that die while booting are not respawned in a loop: tasks fail with kind spawn and the reason', async (t) => {
  const dir = tempDir(t, 'aps-boot-');
  const log = join(dir, 'boots');
  const tasks = Array.from({ length: 20 }, (_, i) => chaos.square(i));
  const concurrency = 2;
  const { errors, pids } = await settle(tasks, {
    concurrency,
    workerExecArgv: ['--import', bootFixture],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: 'fail', APS_CHAOS_BOOT_LOG: log },
  });
  t.true(errors.every((e) => e?.kind === 'spawn'), 'every task failed to start');
  t.is(
    errors[0]!.message,
    'task #0 (chaos-tasks.ts#square) could not start: worker processes die while starting (exit code 1, 3 times in a row): Error: chaos: this worker refuses to boot',
  );
  t.regex(errors[0]!.stderrTail ?? '', /chaos-boot\.ts/, 'the whole tail, stack included, is in stderrTail');
  const boots = readFileSync(log, 'utf8').trim().split('\n');
  t.true(boots.length <= 3 + concurrency, `${boots.length} workers were started`);
  t.deepEqual(leftovers([...pids, ...boots.map(Number)]), []);
});

test('workers whose start never ends (a preload that never finishes) are killed after workerStartTimeout: tasks fail with kind spawn, saying so', async (t) => {
  const dir = tempDir(t, 'aps-boot-hang-');
  const log = join(dir, 'boots');
  // Long enough for a worker to reach the preload under tsx on a busy machine, most of the time
  // (one that does not is killed all the same, and counts as well).
  const { errors, pids } = await settle([chaos.square(1), chaos.square(2)], {
    concurrency: 1,
    workerStartTimeout: 4000,
    workerExecArgv: ['--import', bootFixture],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: 'hang', APS_CHAOS_BOOT_LOG: log },
  });
  t.deepEqual(errors.map((e) => e?.kind), ['spawn', 'spawn']);
  t.is(
    errors[0]!.message,
    'task #0 (chaos-tasks.ts#square) could not start: worker processes cannot be started (not started within workerStartTimeout, 4000 ms, 3 times in a row): ' +
      'a preload in workerExecArgv that never finishes? (a slow one needs a longer workerStartTimeout)',
  );
  const boots = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').map(Number) : [];
  t.true(boots.length <= 3, `${boots.length} workers reached the preload`);
  t.deepEqual(leftovers([...pids, ...boots]), []);
});

test('a worker killed for not starting within workerStartTimeout is not taken as ready, even when it says so after all', async (t) => {
  const dir = tempDir(t, 'aps-boot-late-');
  const log = join(dir, 'boots');
  // The worker ignores the SIGTERM it gets at 1.5 s, finishes its preload and says it is ready
  // before the SIGKILL that follows a second later. Taken as ready then, it would be handed tasks
  // to run in a process about to die (a worker whose 'ready' was still in the pipe when the timer
  // killed it is the same case, on a swamped machine).
  let readyCalls = 0;
  let exited!: () => void;
  const gone = new Promise<void>((resolve) => (exited = resolve));
  const worker = new WorkerProcess(
    {
      output: 'ignore',
      execArgv: ['--import', bootFixture],
      env: { ...process.env, APS_CHAOS_BOOT: 'deaf-slow:1500', APS_CHAOS_BOOT_LOG: log },
      killTimeout: 1000,
      startTimeout: 1500,
    },
    {
      results: () => {},
      progress: () => {},
      ready: () => readyCalls++,
      exited: () => exited(),
      output: () => {},
      unsendable: () => {},
      reclaimed: () => {},
    },
  );
  await gone;
  t.is(worker.startError, 'not started within workerStartTimeout, 1500 ms');
  t.false(worker.ready);
  t.is(readyCalls, 0, 'its owner was never told it was ready');
  const boots = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').map(Number) : [];
  // On a swamped machine the SIGTERM can come before the preload is reached: the worker dies then.
  t.true(boots.length <= 1);
  t.deepEqual(leftovers([worker.pid!, ...boots]), []);
});

test('a worker that starts ends a series of failed starts: three failures with a start among them do not stop the run', async (t) => {
  t.timeout(120_000);
  const dir = tempDir(t, 'aps-boot-script-');
  const log = join(dir, 'boots');
  const go = (n: number) => writeFileSync(join(dir, `go-${n}`), '');
  const fail = (n: number) => writeFileSync(join(dir, `fail-${n}`), '');
  const boots = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').length : 0);
  // A step that never comes fails the test, after a wait far longer than it takes (about a second
  // for the whole test): a run that gave up on starting workers starts no sixth one.
  const until = async (reached: () => boolean, what: string) => {
    const end = Date.now() + 60_000;
    while (!reached()) {
      if (Date.now() > end) throw new Error(`never came: ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const release = join(dir, 'release');
  const limit$ = new BehaviorSubject(1);
  const tasks = [0, 1, 2].map((i) => moduleTask(work, 'untilFile', [release, 60_000, i]));
  const run = schedule$(tasks, {
    concurrency: limit$,
    settle: true,
    workerExecArgv: ['--import', bootFixture],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: `script:${dir}`, APS_CHAOS_BOOT_LOG: log },
  });
  const pids = watchPids(run as never);
  const done = run.toOrderedArray();
  // Whatever happens, the tasks end and the run's processes go (boots waiting for a go file too).
  t.teardown(() => {
    writeFileSync(release, '');
    return run.terminate();
  });
  go(1); // lane 1's worker starts, and runs task 0 until the release
  await first(run.progress$, (p) => p.running === 1);
  fail(2);
  go(2);
  limit$.next(2); // lane 2: boot 2 fails (1 failed start)
  await until(() => boots() >= 3, 'boot 3'); // lane 2 tries again: boot 3 waits
  limit$.next(3); // lane 3: boot 4
  await until(() => boots() >= 4, 'boot 4');
  go(4); // boot 4 starts: a worker can be started after all
  await first(run.progress$, (p) => p.running === 2);
  fail(3);
  go(3); // lane 2: boot 3 fails (2 in a row, counting from before boot 4)
  await until(() => boots() >= 5, 'boot 5');
  fail(5);
  go(5); // and boot 5 (3 in a row, counting from before boot 4)
  await until(() => boots() >= 6, 'boot 6: the run went on starting workers');
  go(6); // lane 2's worker starts, and runs task 1
  await first(run.progress$, (p) => p.running === 3);
  writeFileSync(release, '');
  const outcomes = await done;
  t.deepEqual(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : o.reason.message)), [0, 1, 2]);
  t.is(boots(), 6);
  const bootPids = readFileSync(log, 'utf8').trim().split('\n').map(Number);
  t.deepEqual(leftovers([...pids, ...bootPids]), []);
});

test("a retry on 'spawn' starts a worker again: a task whose workers failed to start runs once one does", async (t) => {
  // Before, the run gave up on starting workers for good after three failures in a row: every
  // retry failed at once with the same reason, and no worker was started for it.
  const dir = tempDir(t, 'aps-boot-retry-');
  const log = join(dir, 'boots');
  for (let n = 1; n <= 8; n++) writeFileSync(join(dir, `go-${n}`), '');
  for (const n of [1, 2, 3]) writeFileSync(join(dir, `fail-${n}`), '');
  const boots = () => readFileSync(log, 'utf8').trim().split('\n').map(Number);
  const options = {
    workerExecArgv: ['--import', bootFixture],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: `script:${dir}`, APS_CHAOS_BOOT_LOG: log },
    retries: { retries: 2, delay: 10, jitter: false, on: ['spawn' as const] },
  };
  const { outcomes, pids } = await settle([chaos.square(3)], options);
  t.like(outcomes[0], { status: 'fulfilled', value: 9, stats: { attempt: 2 } });
  t.is(boots().length, 4, 'three starts failed, the retry started a fourth');
  t.deepEqual(leftovers([...pids, ...boots()]), []);

  // When every start fails, each retry tries once more, and the last error says which attempt it was.
  rmSync(log);
  const { errors, pids: pids2 } = await settle([chaos.square(3)], { ...options, workerEnv: { ...options.workerEnv, APS_CHAOS_BOOT: 'fail' } });
  t.like(errors[0], { kind: 'spawn', attempt: 3 });
  t.is(boots().length, 5);
  t.deepEqual(leftovers([...pids2, ...boots()]), []);
});

test("a preload that does not exist (--require /nonexistent.cjs): kind spawn, with Node's own message", async (t) => {
  const { errors } = await settle([chaos.square(1), chaos.square(2)], { concurrency: 2, workerExecArgv: ['--require', '/nonexistent.cjs'] });
  t.deepEqual(errors.map((e) => e?.kind), ['spawn', 'spawn']);
  t.is(
    errors[0]!.message,
    "task #0 (chaos-tasks.ts#square) could not start: worker processes die while starting (exit code 1, 3 times in a row): Error: Cannot find module '/nonexistent.cjs'",
  );
});

test('workers that cannot start within a workerStartTimeout too short for Node itself: the hint is not about preloads', async (t) => {
  // Slowed through the environment, not workerExecArgv: on a swamped machine a parent that sat
  // still for longer than a start could otherwise take the worker's 'ready' before its timer.
  const slow = `--require=${fileURLToPath(fixture('slow-start.cjs'))}`;
  const { errors } = await settle([chaos.square(1)], { workerStartTimeout: 1, workerEnv: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${slow}`.trim() } });
  t.is(
    errors[0]!.message,
    'task #0 (chaos-tasks.ts#square) could not start: worker processes cannot be started (not started within workerStartTimeout, 1 ms, 3 times in a row): ' +
      "a machine too busy to start Node in time, or a loader the workers take from this process's flags (tsx, say)? raise workerStartTimeout",
  );
});

test('when workers cannot be started, only module tasks fail: a command in the same slot still runs', async (t) => {
  // Before, the command behind the module task failed with the workers' error.
  const { outcomes, errors } = await settle([chaos.square(1), commandTask('echo', ['hi']), chaos.square(2), commandTask('echo', ['there'])], {
    concurrency: 1,
    workerExecArgv: ['--require', '/nonexistent.cjs'],
  });
  t.deepEqual(errors.map((e) => e?.kind), ['spawn', undefined, 'spawn', undefined]);
  t.deepEqual(outcomes.map((o) => o.status === 'fulfilled' && (o.value as { stdout: string }).stdout), [false, 'hi\n', false, 'there\n']);
});

test('a worker that fails to boot once is replaced, and its tasks run', async (t) => {
  const dir = tempDir(t, 'aps-boot1-');
  const { outcomes } = await settle([chaos.square(7), chaos.square(8)], {
    workerExecArgv: ['--import', bootFixture],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: `fail-first:${join(dir, 'failed-once')}` },
  });
  t.deepEqual(outcomes.map((o) => o.status === 'fulfilled' && o.value), [49, 64]);
});

test("a worker's start-up does not count against the timeout of the task sent to it", async (t) => {
  // The worker takes 6 s to boot; the task itself takes microseconds (plus loading its module,
  // which a loaded machine can stretch to a second or two).
  const { outcomes, errors } = await settle([chaos.square(9), chaos.sleepThen(1, 'x')], {
    timeout: 4000,
    workerExecArgv: ['--import', bootFixture, ...preloadChaos],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: 'slow:6000' },
  });
  t.deepEqual(errors, [undefined, undefined], errors.map((e) => e?.message).join('; '));
  t.deepEqual(outcomes.map((o) => o.status === 'fulfilled' && o.value), [81, 'x']);
});

test('a worker SIGKILLed with many tiny tasks in flight fails exactly the task that killed it', async (t) => {
  // Tiny tasks are pipelined and their results batched: when the worker dies, results of tasks
  // that already ran may still be in its outbox. Only the killer may fail, never a neighbour.
  const killers = new Set([150, 151, 290, 420, 421, 422, 599]);
  const tasks = Array.from({ length: 600 }, (_, i) => (killers.has(i) ? chaos.killSelf('SIGKILL') : chaos.square(i)));
  const { outcomes, pids } = await settle(tasks, { concurrency: 2 });
  const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [i] : []));
  t.deepEqual(failed, [...killers]);
  t.true(outcomes.every((o, i) => o.status === 'rejected' ? (o as TaskFailure).reason.signal === 'SIGKILL' : o.value === i * i));
  t.deepEqual(leftovers(pids), []);
});

test('a task that hangs synchronously among pipelined tiny tasks: only it times out', async (t) => {
  const hangers = new Set([200, 330]);
  const tasks = Array.from({ length: 400 }, (_, i) => (hangers.has(i) ? chaos.spinForever() : chaos.square(i)));
  // 3 s: every tiny task runs under the same timeout, and a worker stalled for a second by a
  // crowded host must not make one of them look hung.
  const { outcomes, pids } = await settle(tasks, { concurrency: 2, timeout: 3000, killTimeout: 100, workerExecArgv: preloadChaos });
  const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`${i}:${(o as TaskFailure).reason.kind}`] : []));
  t.deepEqual(failed, ['200:timeout', '330:timeout']);
  t.deepEqual(leftovers(pids), []);
});

test('a hanging task with its own timeout, among tiny tasks without one: it times out, the run ends', async (t) => {
  // The tiny tasks have no timeout. Had the hanger been sent behind one of them, that task's
  // result would wait in the stalled worker's outbox, the hanger would never become the task
  // the parent times, and the run would never end.
  const hangers = new Set([150, 290]);
  const tasks = Array.from({ length: 400 }, (_, i) => (hangers.has(i) ? chaos.task('spinForever', [], { timeout: 1000 }) : chaos.square(i)));
  const { outcomes, pids } = await settle(tasks, { concurrency: 2, killTimeout: 100, workerExecArgv: preloadChaos });
  const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`${i}:${(o as TaskFailure).reason.kind}`] : []));
  t.deepEqual(failed, ['150:timeout', '290:timeout']);
  t.true(outcomes.every((o, i) => o.status === 'rejected' || o.value === i * i));
  t.deepEqual(leftovers(pids), []);
});
