/**
 * Whole process trees: every task's processes live in a process group of their own, and
 * termination (unsubscribe, timeout) kills the group: SIGTERM, then SIGKILL after killTimeout.
 */
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import test from 'ava';
import { commandTask, processTask, schedule$, taskModule } from '../../src/index.js';
import { isRunning, leftovers, readProcs, readStat } from '../fixtures/chaos-procs.js';
import { first, fixture, isAlive, preload } from '../helpers.js';

const chaosTasks = fixture('chaos-tasks.ts');
const chaos = taskModule<typeof import('../fixtures/chaos-tasks.js')>(chaosTasks);

test("the tests' /proc reader: a child's parent, name, group and start, running until it exits", async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore', detached: true });
  try {
    const stat = readStat(child.pid!);
    t.is(stat?.pid, child.pid);
    t.is(stat?.ppid, process.pid);
    t.is(stat?.comm, 'sleep');
    t.is(stat?.pgrp, child.pid); // detached: a group of its own
    t.true(stat!.startTicks >= readStat('self')!.startTicks);
    t.true(isRunning(child.pid!));
    t.true(readProcs().has(child.pid!));
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
  t.false(isRunning(child.pid!));
  t.is(readStat(child.pid!), undefined);
});

/** Pids of the live processes in the process group `pgrp`. */
function group(pgrp: number): number[] {
  return [...readProcs().values()].filter((p) => p.pgrp === pgrp && p.state !== 'Z').map((p) => p.pid);
}

/** Waits until the run's first process leads a group of at least `size` processes; returns them. */
async function groupOf(run: { pids(): number[] }, size: number): Promise<{ leader: number; members: number[] }> {
  for (;;) {
    const [leader] = run.pids();
    if (leader !== undefined) {
      const members = group(leader);
      if (members.length >= size) return { leader, members };
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('terminating a command kills its whole process group, background children included', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', 'sleep 300 & sleep 300'])], { killTimeout: 1000 });
  const sub = run.subscribe({ error: () => {} });
  // sh and its two sleeps (a shell may exec its last command: then two).
  const { leader, members } = await groupOf(run, 2);
  t.true(members.includes(leader));
  sub.unsubscribe();
  await run.terminate();
  t.deepEqual(members.filter(isAlive), []);
  t.deepEqual(group(leader), []);
  t.deepEqual(leftovers(members), []);
});

test('terminating a command that ignores SIGTERM SIGKILLs its group after killTimeout', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', 'trap "" TERM; sleep 300 & sleep 300'])], { killTimeout: 300 });
  const sub = run.subscribe({ error: () => {} });
  const { leader, members } = await groupOf(run, 2);
  sub.unsubscribe();
  await run.terminate();
  t.deepEqual(members.filter(isAlive), []);
  t.deepEqual(group(leader), []);
});

test("a module task's grandchildren are killed with its worker when it times out", async (t) => {
  const run = schedule$([chaos.spawnGrandchildAndHang()], { settle: true, timeout: 1000, output: 'ignore', workerExecArgv: preload(chaosTasks) });
  const reported = first(run.taskProgress$, () => true);
  const done = run.toOrderedArray();
  const { pid, grandchild } = (await reported).value as { pid: number; grandchild: number };
  const [outcome] = await done;
  t.like(outcome, { status: 'rejected', reason: { kind: 'timeout' } });
  t.false(isAlive(pid));
  t.false(isAlive(grandchild));
  t.deepEqual(leftovers([pid]), []);
});

test("terminating a process task (forked detached) kills the processes it started", async (t) => {
  const script = fixture('chaos-process.ts');
  const run = schedule$([processTask(() => fork(script, [], { detached: true, stdio: 'ignore' }))], { killTimeout: 500 });
  const sub = run.subscribe({ error: () => {} });
  const { pid, grandchild } = (await first(run.taskProgress$, () => true)).value as { pid: number; grandchild: number };
  t.true(isAlive(pid) && isAlive(grandchild));
  sub.unsubscribe();
  await run.terminate();
  t.false(isAlive(pid));
  t.false(isAlive(grandchild));
  t.deepEqual(leftovers([pid]), []);
});

test('a command that exits leaving background children in its group: they are killed when it ends', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', 'sleep 300 & echo $!'])], { killTimeout: 500 });
  const [result] = await run.toOrderedArray();
  const background = Number(result!.stdout.trim());
  t.true(background > 0);
  t.false(isAlive(background), 'the background sleep outlived its command');
});

test('a process task that exits leaving children in its group: they are killed when it ends', async (t) => {
  const script = fixture('chaos-process.ts');
  const run = schedule$([processTask(() => fork(script, ['exit'], { detached: true, stdio: 'ignore' }))], { settle: true, killTimeout: 500 });
  const reported = first(run.taskProgress$, () => true);
  const [outcome] = await run.toOrderedArray();
  const { pid, grandchild } = (await reported).value as { pid: number; grandchild: number };
  t.like(outcome, { status: 'rejected', reason: { kind: 'exited' } });
  t.false(isAlive(pid));
  t.false(isAlive(grandchild), 'the grandchild outlived its process task');
});
