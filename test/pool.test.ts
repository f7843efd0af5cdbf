/**
 * WorkerPool: warm workers kept between runs. Every test checks by pid which processes served,
 * which stayed in the pool, and that all of them are gone once the pool is closed.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import {
  OptionError, WorkerPool, moduleTask, schedule$, taskModule, type ScheduleOptions, type TaskError, type TaskResult,
} from '../src/index.js';
import { fixture, isAlive, waitGone, work } from './helpers.js';

const w = taskModule<typeof import('./fixtures/work.js')>(work);

/** Runs `count` tasks that report their worker's pid; returns the pids that served. */
async function pidsServing(pool: WorkerPool | undefined, count: number, options: ScheduleOptions = {}): Promise<number[]> {
  const tasks = Array.from({ length: count }, () => w.pid());
  const pids = (await schedule$(tasks, { pool, concurrency: 2, ...options }).toOrderedArray()) as number[];
  return [...new Set(pids)].sort();
}

/** A pool closed (and its workers checked gone) when the test ends, pass or fail. */
function newPool(t: { teardown(fn: () => Promise<void>): void }, options?: ConstructorParameters<typeof WorkerPool>[0]): WorkerPool {
  const pool = new WorkerPool(options);
  t.teardown(() => pool.close());
  return pool;
}

test('a second run starts on the workers the first one left in the pool', async (t) => {
  const pool = newPool(t);
  const first = await pidsServing(pool, 20);
  t.is(first.length, 2);
  t.deepEqual(pool.pids().sort(), first, 'both workers wait in the pool');
  t.true(first.every(isAlive));
  const second = await pidsServing(pool, 20);
  t.deepEqual(second, first, 'the same processes served again');
  await pool.close();
  t.deepEqual(pool.pids(), []);
  t.deepEqual(first.filter(isAlive), [], 'close() resolves once its workers are gone');
});

test('warm(n) boots workers before the first run, which then uses them', async (t) => {
  const pool = newPool(t);
  await pool.warm(2);
  const warmed = pool.pids().sort();
  t.is(warmed.length, 2);
  await pool.warm(2);
  t.deepEqual(pool.pids().sort(), warmed, 'warming to a count already there starts nothing');
  t.deepEqual(await pidsServing(pool, 10), warmed);
  await pool.close();
  t.deepEqual(warmed.filter(isAlive), []);
});

const preloaded = taskModule<typeof import('./fixtures/preloaded.js')>(fixture('preloaded.ts'));

test('warm(n, { modules }) loads them in every idle worker before it resolves, new or already there: their tasks find them loaded, evaluated once', async (t) => {
  const pool = newPool(t);
  await pool.warm(1);
  const [first] = pool.pids();
  await pool.warm(2, { modules: [fixture('preloaded.ts')] });
  const warmedAt = Date.now();
  const warmed = pool.pids().sort();
  t.is(warmed.length, 2);
  t.true(warmed.includes(first!), 'the worker already idle was kept');
  const infos = await schedule$(Array.from({ length: 10 }, () => preloaded.loadInfo()), { pool, concurrency: 2 }).toOrderedArray();
  t.deepEqual([...new Set(infos.map((info) => info.pid))].sort(), warmed, 'the warmed workers served');
  t.deepEqual(infos.filter((info) => info.loadedAt > warmedAt), [], 'every worker had loaded the module when warm() resolved');
  t.deepEqual([...new Set(infos.map((info) => info.evaluations))], [1], 'once per worker: its tasks used the module warm() loaded');
  await pool.close();
  t.deepEqual(warmed.filter(isAlive), []);
});

test('warm() rejects naming a module that cannot be loaded; its worker stays, and that module\'s tasks fail as invalid', async (t) => {
  const pool = newPool(t);
  const missing = new URL('./no-such-module.js', work);
  await t.throwsAsync(pool.warm(1, { modules: [missing] }), {
    instanceOf: Error,
    message: new RegExp(`^warm\\(\\): worker \\d+ cannot load module ${missing.href.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: Error: Cannot find module`),
  });
  const [worker] = pool.pids();
  t.truthy(worker, 'the worker stays in the pool');
  const outcomes = await schedule$([moduleTask(missing, 'f'), w.pid()], { pool, concurrency: 1, settle: true }).toOrderedArray();
  t.is(outcomes[0]!.status, 'rejected');
  t.like((outcomes[0] as { reason: TaskError }).reason, { kind: 'invalid' });
  t.regex((outcomes[0] as { reason: TaskError }).reason.message, /cannot load module .*no-such-module\.js/);
  t.deepEqual(outcomes[1], { ...outcomes[1]!, status: 'fulfilled', value: worker }, 'a task of another module runs on it');
  await pool.close();
  t.false(isAlive(worker!));
});

test('close() while warm() is loading modules: warm() rejects saying so, and the workers are gone', async (t) => {
  const pool = new WorkerPool();
  const dir = mkdtempSync(join(tmpdir(), 'aps-preload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const mark = join(dir, 'loading');
  const warming = pool.warm(1, { modules: [fixture('preloaded.ts')], workerEnv: { ...process.env, SLOW_LOAD_MARK: mark, SLOW_LOAD_MS: '30000' } });
  const [worker] = pool.pids();
  for (let i = 0; i < 600 && !existsSync(mark); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(existsSync(mark), 'the worker started loading the module');
  await pool.close();
  await t.throwsAsync(warming, { message: 'the WorkerPool was closed while warm() was loading modules' });
  t.false(isAlive(worker!));
  t.deepEqual(pool.pids(), []);
});

test('a run while warm() loads modules takes no worker that is loading: it starts its own, and warm() resolves with the module loaded', async (t) => {
  const pool = newPool(t, { idleTimeout: 1000 });
  const dir = mkdtempSync(join(tmpdir(), 'aps-preload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The run has the same settings: without the loading, it would take the worker.
  const workerEnv = { ...process.env, SLOW_LOAD_MARK: join(dir, 'loading'), SLOW_LOAD_MS: '1500' };
  const warming = pool.warm(1, { modules: [fixture('preloaded.ts')], workerEnv });
  // Read as warm() resolves: from then on the worker's idle time runs, and the run below may take
  // longer than that on a loaded machine.
  const idleWhenWarm = warming.then(() => pool.pids());
  const [loading] = pool.pids();
  for (let i = 0; i < 600 && !existsSync(workerEnv.SLOW_LOAD_MARK); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(existsSync(workerEnv.SLOW_LOAD_MARK), 'the worker started loading the module');
  const served = await schedule$([w.pid()], { pool, workerEnv }).toOrderedArray();
  t.notDeepEqual(served, [loading], 'the run did not take the worker that was loading');
  // The load outlasts the pool's idleTimeout: loading is not being idle.
  t.true((await idleWhenWarm).includes(loading!), 'the worker that loaded is in the pool');
  const [info] = await schedule$([preloaded.loadInfo()], { pool, concurrency: 1, workerEnv }).toOrderedArray();
  t.is(info!.evaluations, 1);
  await pool.close();
  t.deepEqual([loading!, ...served].filter(isAlive), []);
});

for (const [mode, title] of [
  ['two-warms', 'two warm() at once, the second loading a module in the worker the first boots'],
  ['give-back', 'a run takes a worker warm() is booting and gives it back before it is ready'],
] as const) {
test(`${title}: an awaited warm() is not cut short`, async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture('warm-race.ts').pathname, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SLOW_LOAD_MS: '1500' },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearTimeout(timer);
  const lines = stdout.trim().split('\n');
  t.is(code, 0, stderr);
  t.deepEqual([lines[0], lines[1], lines[3]], ['a', 'b', 'closed'], `the program went on to its end: ${stdout}${stderr}`);
  const pids = JSON.parse(lines[2] ?? '[]') as number[];
  t.is(pids.length, mode === 'two-warms' ? 1 : 2, 'the workers warm() asked for');
  t.deepEqual(await waitGone(pids), []);
});
}

test('warm(2) with idleTimeout shorter than one worker\'s start: the one ready first waits for it, and warm() resolves with both', async (t) => {
  const pool = newPool(t, { idleTimeout: 300 });
  const warming = pool.warm(2);
  const [, late] = pool.pids();
  process.kill(late!, 'SIGSTOP');
  setTimeout(() => {
    try {
      process.kill(late!, 'SIGCONT');
    } catch {
      // gone already: the test failed, and its pool was closed
    }
  }, 1500);
  // Read when warm() resolves: from then on their idle time runs.
  const idle = await warming.then(() => pool.pids());
  t.is(idle.length, 2);
  t.true(idle.includes(late!));
});

test('a run takes a worker warm() is booting and is terminated: warm() does not reject for the worker the run stopped', async (t) => {
  const pool = newPool(t);
  const warming = pool.warm(1);
  const [booting] = pool.pids();
  const run = schedule$([w.sleepThen(10_000, 1)], { pool });
  run.toOrderedArray().catch(() => {});
  for (let i = 0; i < 100 && !run.pids().includes(booting!); i++) await new Promise((r) => setTimeout(r, 5));
  t.true(run.pids().includes(booting!), 'the run took the booting worker');
  await run.terminate();
  await t.notThrowsAsync(warming);
  t.false(isAlive(booting!));
});

test('a worker a run gives back while its start is stalled does not keep the program from ending', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture('warm-race.ts').pathname, 'stalled'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  t.deepEqual([code, signal], [0, null], `it ended by itself: ${stdout}${stderr}`);
  const pids = JSON.parse(stdout.trim().split('\n')[0] ?? '[]') as number[];
  t.true(pids.length >= 1);
  t.deepEqual(await waitGone(pids), [], 'its workers, the stopped one too, went with it');
});

test('warm() rejects when a worker does not start within workerStartTimeout (a preload that never finishes), and the worker is gone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-boothang-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, 'boots');
  const pool = newPool(t);
  const warming = pool.warm(1, {
    workerStartTimeout: 2000,
    workerExecArgv: ['--import', fixture('chaos-boot.ts').href],
    workerEnv: { ...process.env, APS_CHAOS_BOOT: 'hang', APS_CHAOS_BOOT_LOG: log },
  });
  await t.throwsAsync(warming, { message: 'a worker process could not be started (not started within workerStartTimeout, 2000 ms)' });
  t.deepEqual(pool.pids(), []);
  const booted = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').map(Number) : [];
  t.deepEqual(await waitGone(booted), []);
});

test('a second warm() counts the workers another is starting, and waits for them: when they cannot start, both reject', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aps-bootfail-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const crash = join(dir, 'crash.mjs');
  writeFileSync(crash, "throw new Error('boot hook failed');\n");
  const options = { workerExecArgv: ['--import', crash] };
  const pool = newPool(t);
  const warming = pool.warm(1, options);
  const counting = pool.warm(1, options);
  const [first, second] = await Promise.allSettled([warming, counting]);
  const message = /^a worker process exited while starting \(exit code 1\)/;
  t.is(first.status, 'rejected');
  t.regex((first as PromiseRejectedResult).reason.message, message);
  t.regex((second as PromiseRejectedResult).reason?.message ?? 'it resolved', message, 'the second waited for the worker the first started');
  t.deepEqual(pool.pids(), []);
});

test('a worker given back before it is ready is idle once it is: it exits after idleTimeout', async (t) => {
  const pool = newPool(t, { idleTimeout: 50 });
  await pool.warm(1);
  // The ready worker runs both tasks; the run's second lane forks a worker that it gives back
  // before that one is ready.
  const run = schedule$([w.square(2), w.square(3)], { pool, concurrency: 2 });
  await run.toOrderedArray();
  const all = [...pool.pids()];
  for (let i = 0; i < 200 && pool.pids().length > 0; i++) await new Promise((r) => setTimeout(r, 25));
  t.deepEqual(pool.pids(), [], 'every worker left the pool after its idle time');
  t.deepEqual(await waitGone(all), []);
});

test('maxIdleWorkers: a worker given back to a pool full of one warm() is loading does not push it out; it goes instead', async (t) => {
  const pool = newPool(t, { maxIdleWorkers: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'aps-preload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const release = join(dir, 'release');
  const workerEnv = { ...process.env, SLOW_LOAD_MARK: join(dir, 'loading'), LOAD_UNTIL_FILE: release };
  const warming = pool.warm(1, { modules: [fixture('preloaded.ts')], workerEnv });
  const [loading] = pool.pids();
  for (let i = 0; i < 600 && !existsSync(workerEnv.SLOW_LOAD_MARK); i++) await new Promise((r) => setTimeout(r, 50));
  const served = await schedule$([w.pid()], { pool, workerEnv }).toOrderedArray();
  t.notDeepEqual(served, [loading]);
  t.deepEqual(pool.pids(), [loading], 'the loading worker stayed; the run\'s did not take its place');
  writeFileSync(release, '');
  await warming;
  t.deepEqual(pool.pids(), [loading]);
  t.deepEqual(await waitGone(served as number[]), []);
});

test("output: 'capture': what a module prints while warm() loads it reaches no run", async (t) => {
  const pool = newPool(t);
  const workerEnv = { ...process.env, PRINT_LINES: '3000' };
  await pool.warm(1, { output: 'capture', modules: [fixture('preloaded.ts')], workerEnv });
  const run = schedule$([preloaded.loadInfo()], { pool, output: 'capture', workerEnv });
  const lines: string[] = [];
  run.output$.subscribe((line) => lines.push(line.line));
  await run.toOrderedArray();
  t.deepEqual(lines.filter((text) => text.includes('top level line')), []);
});

test('a module whose top level exits its worker: warm() rejects naming the module, with what the worker wrote to stderr', async (t) => {
  const pool = newPool(t);
  await t.throwsAsync(pool.warm(1, { modules: [fixture('preloaded.ts')], workerEnv: { ...process.env, EXIT_ON_LOAD: '3' } }), {
    message: new RegExp(`^warm\\(\\): worker \\d+ exited \\(exit code 3\\) while it was loading ${fixture('preloaded.ts').href.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: [^]*preloaded\\.ts: exiting as asked`),
  });
  t.deepEqual(pool.pids(), [], 'the pool forgets it');
});

test('a worker idle longer than idleTimeout exits, and the pool forgets it', async (t) => {
  const pool = newPool(t, { idleTimeout: 200 });
  const served = await pidsServing(pool, 4);
  t.deepEqual(pool.pids().sort(), served);
  t.deepEqual(await waitGone(served), [], 'gone after the idle timeout, without close()');
  t.deepEqual(pool.pids(), []);
  // The pool still works: the next run starts new workers.
  const next = await pidsServing(pool, 4);
  t.is(next.length, 2);
  t.false(next.some((pid) => served.includes(pid)));
});

test('maxIdleWorkers: workers beyond it exit when the run ends', async (t) => {
  const pool = newPool(t, { maxIdleWorkers: 1 });
  const served = await pidsServing(pool, 10);
  t.is(served.length, 2);
  const kept = pool.pids();
  t.is(kept.length, 1);
  t.deepEqual(await waitGone(served.filter((pid) => !kept.includes(pid))), []);
});

test('maxIdleWorkers: a worker given back to a full pool takes the place of the one idle the longest, so runs of two kinds both find theirs', async (t) => {
  const pool = newPool(t, { maxIdleWorkers: 2 });
  const plain = await pidsServing(pool, 1, { concurrency: 1 });
  const captured = await pidsServing(pool, 1, { concurrency: 1, output: 'capture' });
  t.deepEqual(pool.pids().sort(), [...plain, ...captured].sort());
  // Alternating kinds: each run finds the worker of its kind the last one of that kind left.
  for (let i = 0; i < 3; i++) {
    t.deepEqual(await pidsServing(pool, 1, { concurrency: 1 }), plain);
    t.deepEqual(await pidsServing(pool, 1, { concurrency: 1, output: 'capture' }), captured);
  }
  // A third kind: its worker goes in, and the one idle the longest (the plain one) goes.
  const withEnv = await pidsServing(pool, 1, { concurrency: 1, workerEnv: { ...process.env, POOL_THIRD: '1' } });
  t.deepEqual(pool.pids().sort(), [...captured, ...withEnv].sort());
  t.deepEqual(await waitGone(plain), []);
});

test('warm() never fills the pool past maxIdleWorkers, counting idle workers of every kind', async (t) => {
  const pool = newPool(t, { maxIdleWorkers: 2 });
  const captured = await pidsServing(pool, 1, { concurrency: 1, output: 'capture' });
  await pool.warm(3);
  const idle = pool.pids();
  t.is(idle.length, 2, 'one captured, one warmed: the pool is full');
  t.true(idle.includes(captured[0]!));
  await pool.close();
  t.deepEqual(await waitGone(idle), []);
});

test('terminating a pooled run kills its busy workers; the pool keeps only idle ones', async (t) => {
  const pool = newPool(t);
  await pool.warm(3);
  const warmed = pool.pids();
  // Two tasks hang on two of the three warm workers.
  const run = schedule$([w.hang(), w.hang()], { pool, concurrency: 2 });
  run.subscribe({ error: () => {} });
  await new Promise<void>((resolve) => run.progress$.subscribe((p) => p.running === 2 && resolve()));
  const busy = run.pids();
  t.is(busy.length, 2);
  t.true(busy.every((pid) => warmed.includes(pid)), 'the run took warm workers');
  await run.terminate();
  t.deepEqual(busy.filter(isAlive), [], 'busy workers die with their run');
  const idle = warmed.filter((pid) => !busy.includes(pid));
  t.deepEqual(pool.pids(), idle, 'the worker the run never used is still there');
  t.deepEqual(await pidsServing(pool, 1, { concurrency: 1 }), idle);
});

test('a run with other worker settings starts its own workers, and the pool keeps both kinds', async (t) => {
  const pool = newPool(t);
  await pool.warm(1);
  const [plain] = pool.pids();
  const captured = await pidsServing(pool, 1, { output: 'capture', concurrency: 1 });
  t.false(captured.includes(plain!), 'a worker whose output is not captured cannot serve a capturing run');
  t.deepEqual(pool.pids().sort(), [plain!, ...captured].sort());
  t.deepEqual(await pidsServing(pool, 1, { concurrency: 1 }), [plain!], 'a default run takes the default worker');
  t.deepEqual(await pidsServing(pool, 1, { output: 'capture', concurrency: 1 }), captured);
  const withEnv = await pidsServing(pool, 1, { workerEnv: { ...process.env, POOL_TEST: '1' }, concurrency: 1 });
  t.false([plain!, ...captured].includes(withEnv[0]!), 'a worker started with another environment cannot serve');
  // By value: the same environment written anew for the next run finds the worker.
  t.deepEqual(await pidsServing(pool, 1, { workerEnv: { ...process.env, POOL_TEST: '1' }, concurrency: 1 }), withEnv);
  const other = await pidsServing(pool, 1, { workerEnv: { ...process.env, POOL_TEST: '2' }, concurrency: 1 });
  t.false([plain!, ...captured, ...withEnv].includes(other[0]!), 'one value differs: another worker');
  const all = pool.pids();
  await pool.close();
  t.deepEqual(all.filter(isAlive), []);
});

// Serial: it changes process.env, which the workers of every other test would start with.
test.serial('a run without workerEnv takes only workers started with process.env as it is now', async (t) => {
  const pool = newPool(t);
  const one = async (options: ScheduleOptions = {}) =>
    (await schedule$([w.pidAndEnv('POOL_TEST_LIVE')], { pool, concurrency: 1, ...options }).toOrderedArray())[0] as [number, string | undefined];
  delete process.env.POOL_TEST_LIVE;
  try {
    const [before, unset] = await one();
    t.is(unset, undefined);
    t.deepEqual(await one({ workerEnv: { ...process.env } }), [before, undefined], 'the same environment, inherited or given: the same worker');
    process.env.POOL_TEST_LIVE = 'changed';
    const [after, seen] = await one();
    t.not(after, before, 'the idle worker has the old environment: a new one serves');
    t.is(seen, 'changed', "and sees the program's environment, as a run without a pool would");
    t.deepEqual(await one(), [after, 'changed'], 'which the next run reuses');
    t.deepEqual(pool.pids().sort(), [before, after].sort(), 'the pool keeps both');
  } finally {
    delete process.env.POOL_TEST_LIVE;
  }
  const all = pool.pids();
  await pool.close();
  t.deepEqual(await waitGone(all), []);
});

test('a worker that reached maxTasksPerWorker does not go back to the pool', async (t) => {
  const pool = newPool(t);
  const served = await pidsServing(pool, 4, { maxTasksPerWorker: 1, concurrency: 1 });
  t.is(served.length, 4, 'a fresh process per task');
  t.deepEqual(await waitGone(served), [], 'every used worker exited');
  t.false(pool.pids().some((pid) => served.includes(pid)));
});

test('a run with maxTasksPerWorker takes from the pool only workers below the limit', async (t) => {
  const pool = newPool(t);
  // One worker that has run 3 tasks stays in the pool.
  const used = await pidsServing(pool, 3, { concurrency: 1 });
  t.is(used.length, 1);
  t.deepEqual(pool.pids(), used);
  // A fresh process per task: not that one.
  const fresh = await pidsServing(pool, 2, { maxTasksPerWorker: 1, concurrency: 1 });
  t.is(fresh.length, 2, 'a fresh process per task');
  t.false(fresh.includes(used[0]!), 'no task ran on the used worker');
  t.deepEqual(await waitGone(fresh), []);
  // A limit of 5: it has room for 2 more, and is taken.
  t.deepEqual(await pidsServing(pool, 1, { maxTasksPerWorker: 5, concurrency: 1 }), used, 'a worker below the limit is taken');
  t.deepEqual(pool.pids(), used, 'and goes back, still below the limit');
});

test('an idle worker killed from outside is forgotten, and the next run does not wait for it', async (t) => {
  const pool = newPool(t);
  await pool.warm(1);
  const [victim] = pool.pids();
  process.kill(victim!, 'SIGKILL');
  t.deepEqual(await waitGone([victim!]), []);
  while (pool.pids().length) await new Promise((r) => setTimeout(r, 10));
  const served = await pidsServing(pool, 2, { concurrency: 1 });
  t.is(served.length, 1);
  t.not(served[0], victim);
});

test('an idle worker killed from outside just before a run, its exit not seen yet: not lent, and the task runs in a new worker', async (t) => {
  const pool = newPool(t);
  await pool.warm(1);
  const [victim] = pool.pids();
  process.kill(victim!, 'SIGKILL');
  // Until the kernel has it as a zombie, without giving the event loop a turn: the pool has not
  // seen the exit yet, as in the moment after an OOM kill.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && !/^\S+ \(.*\) [ZX]/.test(readFileSync(`/proc/${victim}/stat`, 'latin1'))) {
    /* spin */
  }
  t.deepEqual(pool.pids(), [victim], 'still in the pool as far as it knows');
  const [outcome] = await schedule$([w.pid()], { pool, concurrency: 1, settle: true }).toOrderedArray();
  t.is(outcome!.status, 'fulfilled', `the task did not pay for the dead worker: ${String((outcome as { reason?: unknown }).reason)}`);
  t.not((outcome as TaskResult<number>).value, victim);
  t.deepEqual(await waitGone([victim!]), []);
});

test('a closed pool keeps nothing: runs that use it stop their own workers', async (t) => {
  const pool = new WorkerPool();
  await pool.close();
  t.true(pool.closed);
  const run = schedule$([w.pid(), w.pid()], { pool, concurrency: 2 });
  const served = (await run.toOrderedArray()).sort();
  t.deepEqual(served.filter(isAlive), [], 'gone when the run ends');
  t.deepEqual(pool.pids(), []);
  await t.throwsAsync(pool.warm(1), { message: /closed/ });
});

test('close() while warm() is starting workers: warm() rejects saying so, and the workers are gone', async (t) => {
  const pool = new WorkerPool();
  const warming = pool.warm(2);
  const booting = pool.pids();
  t.is(booting.length, 2, 'the workers exist as soon as warm() is called');
  await pool.close();
  await t.throwsAsync(warming, { message: 'the WorkerPool was closed while warm() was starting its workers' });
  t.deepEqual(booting.filter(isAlive), []);
  t.deepEqual(pool.pids(), []);
});

test('a program that never closes its pool still ends by itself, and leaves no worker', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture('parent-run.ts').pathname, 'pool'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  // It has 20 s to end once its run is over (it prints the pool's pids then). Loading the library
  // through tsx comes first, and took over 30 s on a loaded machine: that is not what is tested.
  let timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
  let runOver = false;
  child.stdout.on('data', (c: Buffer) => {
    stdout += c;
    if (runOver || !/^pool /m.test(stdout)) return;
    runOver = true;
    clearTimeout(timer);
    timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  });
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  t.deepEqual([code, signal], [0, null], `it exited by itself: ${stderr}`);
  const pids = JSON.parse(/^pool (.*)$/m.exec(stdout)?.[1] ?? 'null') as number[];
  t.is(pids.length, 2, 'its two workers were idle in the pool when it ended');
  t.deepEqual(await waitGone(pids), []);
});

test('bad pool options and a bad pool are OptionErrors that name the option', async (t) => {
  t.throws(() => new WorkerPool({ idleTimeout: -1 }), { instanceOf: OptionError, message: /idleTimeout/ });
  t.throws(() => new WorkerPool({ maxIdleWorkers: 1.5 }), { instanceOf: OptionError, message: /maxIdleWorkers/ });
  t.throws(() => new WorkerPool({ idle: 5 } as never), { instanceOf: OptionError, message: /options\.idle is not a WorkerPool option/ });
  t.throws(() => schedule$([w.square(2)], { pool: {} as never }), { instanceOf: OptionError, message: /pool/ });
  const pool = newPool(t);
  await t.throwsAsync(pool.warm(-1), { instanceOf: OptionError, message: /count must be an integer from 0 to \d+ \(4 × CPUs, at least 16\), got -1/ });
  // A count past what the machine can run would fork every one of them at once.
  await t.throwsAsync(pool.warm(1e6), { instanceOf: OptionError, message: /count must be an integer from 0 to \d+ .*, got 1000000$/ });
  await t.throwsAsync(pool.warm(1, { output: 'loud' as never }), { instanceOf: OptionError, message: /options\.output must be/ });
  await t.throwsAsync(pool.warm(1, { concurrency: 2 } as never), {
    instanceOf: OptionError,
    message: 'warm(count, options): concurrency is not a warm() option; they are output, workerExecArgv, workerStartTimeout, workerEnv, modules',
  });
  await t.throwsAsync(pool.warm(1, { modules: work.href as never }), { instanceOf: OptionError, message: /^warm\(count, options\): options\.modules must be an array of module URLs, got / });
  await t.throwsAsync(pool.warm(1, { modules: [work, 42 as never] }), { instanceOf: OptionError, message: 'warm(count, options): options.modules[1]: a module must be a URL or a string, got number' });
  await t.throwsAsync(pool.warm(1, { modules: ['work.js'] }), { instanceOf: OptionError, message: /^warm\(count, options\): options\.modules\[0\]: a module must be a URL, a file: URL string or an absolute path, got "work\.js"; use new URL/ });
  t.deepEqual(pool.pids(), [], 'nothing was started for a bad warm()');
});

test('results and errors on pooled workers are those of any run', async (t) => {
  const pool = newPool(t);
  const outcomes = await schedule$([w.square(3), w.fail('no'), w.square(4)], { pool, settle: true, concurrency: 2 }).toOrderedArray();
  t.like(outcomes[0], { status: 'fulfilled', value: 9 });
  t.like(outcomes[1], { status: 'rejected' });
  t.like(outcomes[2], { status: 'fulfilled', value: 16 });
  const pids = (outcomes.filter((o) => o.status === 'fulfilled') as Array<TaskResult<number>>).map((o) => o.stats.pid);
  t.true(pids.every((pid) => pool.pids().includes(pid!)), 'a task that threw does not cost its worker');
});

test('two runs at once share a pool: each holds its own workers, and all of them end with close()', async (t) => {
  const pool = newPool(t);
  await pool.warm(2);
  const runs = [0, 1].map((r) => schedule$(Array.from({ length: 30 }, (_, i) => w.square(r * 100 + i)), { pool, concurrency: 2 }));
  const seen = new Set<number>();
  for (const run of runs) run.subscribe((result) => seen.add(result.stats.pid!));
  const [a, b] = await Promise.all(runs.map((run) => run.toOrderedArray()));
  t.deepEqual(a, Array.from({ length: 30 }, (_, i) => i * i));
  t.deepEqual(b, Array.from({ length: 30 }, (_, i) => (100 + i) ** 2));
  t.true(pool.pids().length >= 2 && pool.pids().length <= 4, `the pool keeps what the runs gave back: ${pool.pids().length}`);
  await pool.close();
  t.deepEqual([...seen].filter(isAlive), []);
});
