/**
 * The chaos suite. 2,000 tasks on 4 workers, where 5% throw, 3% exit abruptly, 2% SIGKILL their
 * worker and 1% hang past the timeout, each failure either on its first execution only or on
 * every one; with a retry and in settle mode. Then 100 runs unsubscribed at random moments.
 *
 * It runs the library compiled to JavaScript (test/fixtures/chaos-compiled.ts), as users do:
 * hundreds of workers start here, and under a TypeScript loader each start costs ten times more.
 * Serial: the process scans count every descendant of this test process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { fork } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { Progress, TaskFailure, TaskOutcome } from '../../src/index.js';
import type { ChaosPlan } from '../fixtures/chaos-tasks.js';
import { compiledLibrary, type CompiledLibrary } from '../fixtures/chaos-compiled.js';
import { descendants, killAll, waitNoLeftovers } from '../fixtures/chaos-procs.js';
import { prng } from '../helpers.js';

let compiled: CompiledLibrary;
/** Workers need no extra CA certificates, and loading them costs every start ~30 ms. */
const workerEnv = { ...process.env, NODE_EXTRA_CA_CERTS: undefined };
/** Processes that were children of this test process before (tsx's esbuild service, say). */
let before: Set<number>;

test.before(async () => {
  before = new Set(descendants().map((p) => p.pid));
  compiled = await compiledLibrary();
});

test.after.always(() => {
  compiled?.remove();
});

const TOTAL = 2000;

/** The plan of each task, from a seeded PRNG: 5% throw, 3% exit, 2% kill, 1% hang; half of each fail once. */
function plans(seed: number): ChaosPlan[] {
  const random = prng(seed);
  return Array.from({ length: TOTAL }, () => {
    const r = random();
    const when = random() < 0.5 ? 'once' : 'always';
    if (r < 0.05) return `throw-${when}` as const;
    if (r < 0.08) return `exit-${when}` as const;
    if (r < 0.1) return `kill-${when}` as const;
    if (r < 0.11) return `hang-${when}` as const;
    return 'ok';
  });
}

const KIND: Record<string, string> = { throw: 'threw', exit: 'exited', kill: 'signaled', hang: 'timeout' };

test.serial('chaos: 2,000 tasks, 11% misbehaving: every task ends exactly once, as its plan says, and no process is left', async (t) => {
  t.timeout(600_000); // about 105 s at a load of 19 on 2 CPUs, near ava's 2 min
  const { lib, fixture } = compiled;
  const dir = mkdtempSync(join(tmpdir(), 'aps-chaos-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const plan = plans(20261125);
  const counts = new Map<string, number>();
  for (const p of plan) counts.set(p, (counts.get(p) ?? 0) + 1);
  t.log(`plans: ${[...counts].map(([p, n]) => `${p} ${n}`).join(', ')}`);

  const tasksUrl = fixture('chaos-tasks');
  // Only the hanging plans have a timeout: a task that does end must never be failed by how long
  // it took, which on a crowded host (a fresh worker loading the module) can be over a second.
  const run = lib.schedule$(
    plan.map((p, i) => lib.moduleTask<number>(tasksUrl, 'chaos', [i, p, dir], p.startsWith('hang') ? { timeout: 1000 } : undefined)),
    { concurrency: 4, settle: true, killTimeout: 200, retries: { retries: 1, delay: 10 }, output: 'ignore', progressInterval: 20, workerEnv },
  );
  const pids = new Set<number>();
  let last: Progress | undefined;
  run.progress$.subscribe((p) => {
    last = p;
    for (const pid of run.pids()) pids.add(pid);
  });
  const seen = new Array<number>(TOTAL).fill(0);
  run.subscribe((outcome) => {
    seen[outcome.index]!++;
    if (outcome.status === 'fulfilled' && outcome.stats.pid) pids.add(outcome.stats.pid);
  });
  const started = performance.now();
  const outcomes = (await run.toOrderedArray()) as Array<TaskOutcome<number>>;
  t.log(`ran in ${Math.round(performance.now() - started)} ms; ${pids.size} worker processes`);

  // Every task ends exactly once.
  t.is(outcomes.length, TOTAL);
  t.deepEqual(seen.flatMap((n, i) => (n === 1 ? [] : [`#${i} ended ${n} times`])), []);
  t.deepEqual(outcomes.flatMap((o, i) => (o.index === i ? [] : [`ordered #${i} is #${o.index}`])), []);

  // Each as its plan says, with correct values; no task is blamed for another's failure.
  const wrong: string[] = [];
  outcomes.forEach((o, i) => {
    const p = plan[i]!;
    const [failure, when] = p.split('-');
    if (o.status === 'fulfilled') {
      if (when === 'always') wrong.push(`#${i} (${p}) succeeded`);
      else if (o.value !== i * 3 + 1) wrong.push(`#${i} (${p}) = ${o.value}`);
      else if (p === 'ok' && o.stats.attempt !== 1) wrong.push(`#${i} (ok) needed attempt ${o.stats.attempt}: it was blamed for another's failure`);
    } else {
      const reason = (o as TaskFailure).reason;
      if (when !== 'always') wrong.push(`#${i} (${p}) failed: ${reason.message}`);
      else if (reason.kind !== KIND[failure!]) wrong.push(`#${i} (${p}) failed as ${reason.kind}: ${reason.message}`);
      else if (reason.attempt !== 2) wrong.push(`#${i} (${p}) failed on attempt ${reason.attempt}`);
    }
  });
  t.deepEqual(wrong, []);

  // Progress adds up.
  const fulfilled = outcomes.filter((o) => o.status === 'fulfilled').length;
  t.like(last, { state: 'completed', total: TOTAL, completed: fulfilled, failed: TOTAL - fulfilled, running: 0, queued: 0 });
  t.is(last!.completed + last!.failed, last!.total!);

  // Nothing is left: not a worker, not a grandchild, nothing in their groups or sessions.
  // (The library's guardian process, if one started, leaves 1 s after its last command; the wait
  // allows 5 s, for a loaded machine, and ends as soon as nothing is left.)
  const left = await waitNoLeftovers(pids, { descendantsOf: process.pid, except: before }, 5000);
  killAll(left);
  t.deepEqual(left.map((p) => `${p.comm} ${p.pid}`), []);
});

test.serial('terminate stress: 100 runs unsubscribed at random moments leave no process, grandchildren included', async (t) => {
  t.timeout(600_000);
  const { lib, fixture } = compiled;
  const random = prng(7);
  const tasksUrl = fixture('chaos-tasks');
  const processScript = fixture('chaos-process');
  const pids = new Set<number>();
  const stops = { beforeStart: 0, running: 0 };

  const oneRun = async (n: number) => {
    const tasks = [
      lib.moduleTask(tasksUrl, 'spawnGrandchildAndHang', []),
      lib.moduleTask(tasksUrl, 'sleepThen', [Math.floor(random() * 300), 'slept']),
      lib.moduleTask(tasksUrl, 'square', [n]),
      lib.commandTask('sh', ['-c', 'sleep 300 & sleep 300']),
      ...(n % 4 === 0 ? [lib.processTask(() => fork(processScript, [], { detached: true, stdio: 'ignore', execArgv: [] }))] : []),
      lib.moduleTask(tasksUrl, 'reportPidAndHang', []),
    ];
    const run = lib.schedule$(tasks, { concurrency: 1 + Math.floor(random() * 3), killTimeout: 300, output: 'ignore', progressInterval: 0, workerEnv });
    run.progress$.subscribe(() => run.pids().forEach((pid) => pids.add(pid)));
    run.taskProgress$.subscribe(({ value }) => {
      const { pid, grandchild } = value as { pid?: number; grandchild?: number };
      if (pid) pids.add(pid);
      if (grandchild) pids.add(grandchild);
    });
    const subscription = run.subscribe({ error: () => {} });
    // One run in ten is left before it starts (a run starts at the end of the microtask); the
    // others at a random moment of their first 600 ms: workers booting, tasks running or done.
    if (random() >= 0.1) await new Promise((r) => setTimeout(r, Math.floor(random() * 600)));
    run.pids().forEach((pid) => pids.add(pid));
    if (run.pids().length === 0) stops.beforeStart++;
    else stops.running++;
    subscription.unsubscribe();
    await run.terminate();
    t.deepEqual(run.pids(), []);
  };

  // Ten at a time.
  for (let batch = 0; batch < 10; batch++) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => oneRun(batch * 10 + i)));
  }
  // (The library's guardian process leaves 1 s after the last command: the wait, up to 5 s, covers it.)
  t.log(`${stops.running} runs stopped with processes running, ${stops.beforeStart} before any; ${pids.size} processes seen`);
  const left = await waitNoLeftovers(pids, { descendantsOf: process.pid, except: before }, 5000);
  killAll(left);
  t.deepEqual(left.map((p) => `${p.comm} ${p.pid} (ppid ${p.ppid}, group ${p.pgrp})`), []);
});
