/**
 * Waiting for a process group to be gone: a zombie is gone. Its parent may never reap it (an
 * orphan's new parent can be a container's PID 1 that does not reap), and termination must not
 * wait for that forever.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import test, { type ExecutionContext } from 'ava';
import { commandTask, moduleTask, schedule$, type TaskFailure } from '../../src/index.js';
import { killTree, treeAlive } from '../../src/runtime/kill.js';
import { killAll, leftovers, readStat } from '../fixtures/chaos-procs.js';
import { runParent, work } from '../helpers.js';

function state(pid: number): string | undefined {
  return readStat(pid)?.state;
}

function firstLine(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    stream.on('data', (chunk: Buffer) => {
      text += chunk;
      if (text.includes('\n')) resolve(text.split('\n')[0]!);
    });
    stream.on('end', () => reject(new Error(`no line: ${JSON.stringify(text)}`)));
  });
}

test('a group whose only member is a zombie nobody reaps: treeAlive says it is gone, and killTree stops waiting for it', async (t) => {
  // In the background, setsid makes `sleep` the leader of a group of its own; the outer sh then
  // becomes `sleep` too, which never reaps a child. Once it has, the inner sleep is killed: a zombie,
  // alone in its group, until the test ends. (Letting the inner process exit by itself raced: dash
  // reaps children that end before its `exec`.)
  const parent = spawn('/bin/sh', ['-c', 'setsid sleep 30 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const zombie = Number(await firstLine(parent.stdout!));
  t.teardown(() => {
    parent.kill('SIGKILL');
    try {
      process.kill(zombie, 'SIGKILL');
    } catch {
      // Already a zombie, or reaped.
    }
  });
  t.true(zombie > 0);
  const settled = (): boolean => readStat(parent.pid!)?.comm === 'sleep' && readStat(zombie)?.pgrp === zombie && readStat(zombie)?.comm === 'sleep';
  for (let i = 0; i < 400 && !settled(); i++) await new Promise((r) => setTimeout(r, 25));
  t.true(settled(), 'the outer sh has become sleep, and the inner sleep leads its own group');
  process.kill(zombie, 'SIGKILL');
  for (let i = 0; i < 400 && state(zombie) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 25));
  t.is(state(zombie), 'Z', 'the process is a zombie');
  t.notThrows(() => process.kill(-zombie, 0), 'signal 0 still reaches its group');

  t.false(treeAlive(zombie));
  // As after a task whose process exited: only the group is left to wait for.
  const exited = { pid: zombie, exitCode: 0, signalCode: null, once: () => {}, off: () => {} } as unknown as ChildProcess;
  t.deepEqual(await killTree(exited, 1000), { forced: false });
  t.is(state(zombie), 'Z', 'still unreaped: killTree did not wait for that');
});

test('a living process in the group still counts', async (t) => {
  const child = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  t.true(treeAlive(child.pid!));
  const report = await killTree(child, 1000);
  t.false(report.forced, 'sleep ends on SIGTERM');
  t.false(treeAlive(child.pid!));
});

test('a program that froze Error after loading the library: commands still settle and are no longer tracked', async (t) => {
  // The probe of a command's group after it exits mutes error stacks where it can: a frozen Error
  // must not make that throw from the exit handler (an uncaught exception, and pids tracked forever).
  const { stdout, stderr, code } = await runParent(['frozen-error']);
  t.is(code, 0, stderr);
  t.regex(stdout, /^frozen \["fulfilled","rejected"\] tracked \[\]$/m, stderr);
});

/**
 * A directory for the pids of what a test's tasks leave running (`timeout` and its `sleep`), each
 * file written whole (`echo $$ $PPID` of the innermost shell). Whatever they name, and whatever
 * `keep` is given, is killed when the test ends, passed or not; then the directory goes.
 */
function strayPids(t: ExecutionContext, prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const kept: number[] = [];
  const pidsOf = (name: string) => readFileSync(join(dir, name), 'utf8').trim().split(' ').map(Number);
  t.teardown(() => {
    killAll(leftovers([...kept, ...readdirSync(dir).filter((name) => !name.endsWith('.tmp')).flatMap(pidsOf)]));
    rmSync(dir, { recursive: true, force: true });
  });
  /** A shell script that writes its pids to `name` in the directory, then becomes `sleep 300`. */
  const inner = (name: string, trap = '') => `${trap}echo $$ $PPID > ${join(dir, name)}.tmp; mv ${join(dir, name)}.tmp ${join(dir, name)}; exec sleep 300`;
  return { dir, pidsOf, inner, keep: (pids: number[]) => kept.push(...pids) };
}

/** Threads of `pid` that still run: neither zombies nor dead (its zombie leader is not one). */
function runningThreads(pid: number): number[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return tids.map(Number).filter((tid) => {
    try {
      return !/^\S+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1'));
    } catch {
      return false;
    }
  });
}

test('a process whose main thread has exited while another thread runs (/proc says Z) is found and killed with the task that left it', async (t) => {
  // Before, every look at /proc took state Z for a process that can do nothing more: this one,
  // in a group of its own in the worker's session, ran on after the run had ended.
  const dir = mkdtempSync(join(tmpdir(), 'aps-zleader-'));
  const program = join(dir, 'zombie-leader');
  execFileSync('gcc', ['-pthread', '-o', program, fileURLToPath(new URL('../fixtures/zombie-leader.c', import.meta.url))]);
  let pid: number | undefined;
  t.teardown(() => {
    // SIGKILL whatever is left of it (the tests' leftovers() takes a zombie for gone).
    if (pid !== undefined && runningThreads(pid).length > 0) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  [pid] = (await schedule$([moduleTask(work, 'startZombieLeader', [program])]).toOrderedArray()) as number[];
  t.deepEqual(runningThreads(pid!), [], 'its running thread is gone when the run ends');
});

test("a command's descendants in groups of their own but in its session (coreutils timeout) are killed with it", async (t) => {
  // `timeout` puts itself and its command in a process group of its own. Before, a command timed
  // out or terminated was killed by its group only, and those two went on running, orphaned.
  const { dir, pidsOf, inner } = strayPids(t, 'aps-session-');
  // Each writes the pids of the innermost shell and of `timeout`, its parent; the second one's
  // shell ignores SIGTERM, so that group takes a SIGKILL after killTimeout.
  const tasks = [
    commandTask('sh', ['-c', `timeout 100 sh -c '${inner('plain', '')}'; echo done`], { timeout: 1500 }),
    commandTask('sh', ['-c', `timeout 100 sh -c '${inner('deaf', 'trap "" TERM; ')}'; echo done`], { timeout: 1500 }),
  ];
  const outcomes = await schedule$(tasks, { settle: true, concurrency: 2, killTimeout: 500 }).toOrderedArray();
  t.deepEqual(outcomes.map((o) => (o as TaskFailure).reason?.kind), ['timeout', 'timeout']);
  t.true(existsSync(join(dir, 'plain')) && existsSync(join(dir, 'deaf')), 'both commands reached their inner shell');
  const strays = [...pidsOf('plain'), ...pidsOf('deaf')];
  // Killed when the run ended: not a moment later (a zombie, not yet reaped, is gone).
  t.deepEqual(leftovers(strays), [], 'timeout and its command are gone');
});

test("the exit hook kills a command's descendants in groups of their own in its session too", async (t) => {
  const { stdout, stderr, code } = await runParent(['session-exit']);
  t.is(code, 0, stderr);
  const strays = JSON.parse(/^strays (.*)$/m.exec(stdout)?.[1] ?? '[]') as number[];
  t.teardown(() => killAll(leftovers(strays)));
  t.is(strays.length, 2, stdout);
  // Killed synchronously as the parent exited; a zombie not yet reaped counts as gone.
  t.deepEqual(leftovers(strays), []);
});

test("what a task left running in another group of its session is killed when the task ends: a command, a worker's task (timed out, or at the run's end)", async (t) => {
  // A command that sent `timeout` to the background and exited: its own group was empty, and
  // `timeout` (in a group of its own) went on running once the run had ended.
  const { dir, pidsOf, inner, keep } = strayPids(t, 'aps-sweep-');
  const script = (name: string, redirect: string) =>
    `timeout 100 sh -c '${inner(name)}' ${redirect} & while [ ! -e ${join(dir, name)} ]; do sleep 0.01; done; echo done`;
  const results = await schedule$([commandTask('sh', ['-c', script('piped', '')]), commandTask('sh', ['-c', script('quiet', '>/dev/null 2>&1')])], {
    concurrency: 2,
  }).toOrderedArray();
  t.deepEqual(results.map((r) => r.stdout), ['done\n', 'done\n']);
  const strays = [...pidsOf('piped'), ...pidsOf('quiet')];
  t.is(strays.length, 4);
  t.deepEqual(leftovers(strays), [], 'gone when the run ended');

  // A module task that started one and timed out: it goes with its worker, killed for the timeout.
  const file = join(dir, 'worker');
  const [timedOut] = await schedule$([moduleTask(work, 'startTimeoutStrayThenHang', [file])], { settle: true, timeout: 1500, killTimeout: 500 }).toOrderedArray();
  t.is((timedOut as TaskFailure).reason?.kind, 'timeout');
  const fromWorker = pidsOf('worker');
  t.is(fromWorker.length, 2);
  t.deepEqual(leftovers(fromWorker), [], 'gone when the worker was killed');

  // A module task that started one and returned: it goes with its worker, when the run ends.
  const [started] = await schedule$([moduleTask(work, 'startTimeoutStray', [])]).toOrderedArray();
  keep(started as number[]);
  t.is((started as number[]).length, 2);
  t.deepEqual(leftovers(started as number[]), []);
});
