/**
 * No child outlives its parent: a parent program (test/fixtures/parent-run.ts) starts a run of
 * every kind of task, prints the pids of every process involved, and then dies in one way or
 * another. The test checks by pid what is left.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import test, { type ExecutionContext } from 'ava';
import { commandTask, schedule$ } from '../../src/index.js';
import { guardianPid } from '../../src/runtime/cleanup.js';
import { killAll, leftovers, waitNoLeftovers } from '../fixtures/chaos-procs.js';
import { fixture, isAlive } from '../helpers.js';

interface Started {
  parent: ReturnType<typeof spawn>;
  /** Every process of the run: workers, their grandchildren, the command and its child, the process task and its child. */
  pids: number[];
  /** The process groups the run's processes lead. */
  groups: number[];
  /** [pid, grandchild pid] of each worker. */
  workers: Array<[number, number]>;
  /** [pid, grandchild pid] of the process task. */
  processTask: [number, number];
  /** The command's pid, which leads its process group. */
  command: number;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** Starts the parent program and waits for the pids it prints once every task runs. */
async function startParent(mode: string): Promise<Started> {
  const parent = spawn(process.execPath, ['--import', 'tsx', fixture('parent-run.ts').pathname, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  parent.stderr!.on('data', (c: Buffer) => (stderr += c));
  // 'close', not 'exit': what it wrote just before it exited may still be in the pipe at 'exit'.
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    parent.on('close', (code, signal) => resolve({ code, signal, stderr })),
  );
  const lines = createInterface({ input: parent.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    void exit.then(({ code, signal }) => reject(new Error(`the parent ended (${code ?? signal}) before it printed its pids: ${stderr}`)));
  });
  return { parent, exit, ...(JSON.parse(first) as Omit<Started, 'parent' | 'exit'>) };
}

/** Kills whatever the scenario left, so that no test leaves a process behind. */
function cleanUp(started: Started): void {
  killAll(leftovers([...started.pids, ...started.groups]));
}

const endings: Array<[string, string, (s: Started) => void, { code?: number; signal?: NodeJS.Signals }]> = [
  ['exits normally (process.exit) mid-run', 'exit', () => {}, { code: 0 }],
  ['throws an uncaught exception', 'throw', () => {}, { code: 1 }],
  ['leaves a promise rejection unhandled', 'reject', () => {}, { code: 1 }],
  ['gets SIGINT', 'wait', (s) => s.parent.kill('SIGINT'), { signal: 'SIGINT' }],
  ['gets SIGTERM', 'wait', (s) => s.parent.kill('SIGTERM'), { signal: 'SIGTERM' }],
  ['gets SIGHUP', 'wait', (s) => s.parent.kill('SIGHUP'), { signal: 'SIGHUP' }],
  ['gets SIGTERM with a signal-exit hook of its own (as execa loads)', 'signal-exit', (s) => s.parent.kill('SIGTERM'), { signal: 'SIGTERM' }],
  ['gets SIGQUIT', 'wait', (s) => s.parent.kill('SIGQUIT'), { signal: 'SIGQUIT' }],
];

for (const [what, mode, kill, expected] of endings) {
  test(`a parent that ${what} takes every child with it, grandchildren and commands included`, async (t) => {
    const started = await startParent(mode);
    t.teardown(() => cleanUp(started));
    t.true(started.pids.length >= 9, `the run shows ${started.pids.length} processes`);
    // A parent that ends by itself may already be taking them down; only check those we end.
    if (mode === 'wait') t.true(started.pids.every(isAlive));
    kill(started);
    const { code, signal, stderr } = await started.exit;
    t.like({ code, signal }, expected, stderr);
    // The parent killed them on its way out: by the time it is gone, so are they (the wait
    // only covers the kernel reaping them).
    t.deepEqual(await waitNoLeftovers([...started.pids, ...started.groups], {}, 2000), []);
  });
}

test('a parent that handles SIGTERM itself decides: its children go on meanwhile, and go with it when it exits', async (t) => {
  const started = await startParent('drain');
  t.teardown(() => cleanUp(started));
  started.parent.kill('SIGTERM');
  const { code, stderr } = await started.exit;
  t.is(code, 0, stderr);
  const alive = JSON.parse(/^alive (.*)$/m.exec(stderr)?.[1] ?? 'null') as number[] | null;
  t.deepEqual(alive?.sort(), [...started.groups].sort(), 'every task still ran 300 ms after the signal');
  t.deepEqual(await waitNoLeftovers([...started.pids, ...started.groups], {}, 2000), []);
});

/**
 * Starts the parent program in `mode`, runs `before` on what it printed, SIGKILLs it, and checks
 * by pid that nothing it started is left 2 s later (zombies waiting for init do not count).
 */
async function sigkilledLeavesNothing(t: ExecutionContext, mode: string, before: (started: Started) => void = () => {}): Promise<void> {
  const started = await startParent(mode);
  t.teardown(() => {
    started.parent.kill('SIGKILL');
    cleanUp(started);
  });
  before(started);
  started.parent.kill('SIGKILL');
  t.is((await started.exit).signal, 'SIGKILL');
  const left = await waitNoLeftovers([...started.pids, ...started.groups], {}, 2000);
  t.deepEqual(left.map((p) => `${p.comm} ${p.pid}`), []);
}

test('a parent SIGKILLed: within 2 s nothing it started is left, commands and process tasks included', async (t) => {
  // Workers notice their lost IPC channel and take their process group with them; the command
  // and the process task, which would not notice, are killed by the guardian, which notices its
  // pipe from the parent close.
  await sigkilledLeavesNothing(t, 'wait');
});

test("a parent SIGKILLed: the guardian also kills a command's descendants in groups of their own in its session (coreutils timeout)", async (t) => {
  await sigkilledLeavesNothing(t, 'session-wait', (started) => {
    t.is(started.pids.length, 3);
    t.true(started.pids.every(isAlive), 'timeout, its sleep and the command run');
  });
});

test('a parent SIGKILLed before its worker is guarded: the worker kills what its task left in another group of its session', async (t) => {
  await sigkilledLeavesNothing(t, 'young-session', (started) => t.is(started.pids.length, 3, 'timeout, its sleep and the worker'));
});

test('a parent SIGKILLed while its worker is in a synchronous task: the guardian ends the worker and its group', async (t) => {
  // The worker cannot notice its lost channel: its task never returns.
  await sigkilledLeavesNothing(t, 'busy', (started) => t.true(started.pids.every(isAlive), 'the worker and its grandchild run'));
});

test('a parent that exits as a command settles, while what the command left in its group is being stopped: that goes too', async (t) => {
  const parent = spawn(process.execPath, ['--import', 'tsx', fixture('parent-run.ts').pathname, 'leftover'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  parent.stdout!.on('data', (c: Buffer) => (stdout += c));
  const code = await new Promise((resolve) => parent.on('exit', resolve));
  const left = Number(/^left (\d+)$/m.exec(stdout)?.[1]);
  t.teardown(() => killAll(leftovers([left])));
  t.is(code, 0);
  t.true(left > 0, stdout);
  t.deepEqual(await waitNoLeftovers([left], {}, 2000), [], 'the child the command left, deaf to SIGTERM, is gone with the parent');
});

test('a daemon a task started, holding its output pipes, does not keep the parent program running', async (t) => {
  // The daemons sleep 20 s, in sessions of their own: the library leaves them alone, and the
  // parent must end long before they do.
  const parent = spawn(process.execPath, ['--import', 'tsx', fixture('parent-run.ts').pathname, 'daemon'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  let daemons: number[] = [];
  parent.stdout!.on('data', (c: Buffer) => {
    stdout += c;
    const line = /^daemons (\[.*\])$/m.exec(stdout);
    if (line) daemons = JSON.parse(line[1]!) as number[];
  });
  t.teardown(() => killAll(leftovers(daemons)));
  const code = await new Promise((resolve) => parent.on('close', resolve));
  // Running, not exited and waiting to be reaped (a zombie answers kill(pid, 0) too).
  const running = new Set(leftovers(daemons).map((p) => p.pid));
  const aliveAtExit = daemons.map((pid) => running.has(pid));
  t.is(code, 0, 'the parent ended by itself');
  t.is(daemons.length, 2, stdout);
  t.deepEqual(aliveAtExit, [true, true], 'both daemons were still running when the parent ended');
  killAll(leftovers(daemons));
  t.deepEqual(await waitNoLeftovers(daemons, {}, 2000), []);
});

test('the guardian neither keeps its parent alive nor outlives it', async (t) => {
  const parent = spawn(process.execPath, ['--import', 'tsx', fixture('parent-run.ts').pathname, 'command'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  parent.stdout!.on('data', (c: Buffer) => (stdout += c));
  const code = await new Promise((resolve) => parent.on('exit', resolve));
  t.is(code, 0, 'the parent ended by itself');
  const guardian = Number(/^guardian (\d+)$/m.exec(stdout)?.[1]);
  t.true(guardian > 0, stdout);
  t.deepEqual(await waitNoLeftovers([guardian], {}, 2000), []);
});

test('the guardian leaves soon after the last command is gone', async (t) => {
  t.is(guardianPid(), undefined);
  await schedule$([commandTask('true')]).toOrderedArray();
  const guardian = guardianPid();
  t.truthy(guardian);
  const until = Date.now() + 5000;
  while (guardianPid() !== undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.is(guardianPid(), undefined);
  t.deepEqual(await waitNoLeftovers([guardian!], {}, 2000), []);
});
