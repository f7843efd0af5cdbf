/**
 * User code in a worker shares the worker's IPC channel: whatever it sends with `process.send`
 * (garbage, wrong types, huge strings, forged library messages) must not crash or confuse the
 * parent. The run finishes with every task's own result.
 */
import test from 'ava';
import { schedule$, taskModule, type TaskFailure } from '../../src/index.js';
import type { Garbage } from '../fixtures/chaos-tasks.js';
import { fixture } from '../helpers.js';

const chaos = taskModule<typeof import('../fixtures/chaos-tasks.js')>(fixture('chaos-tasks.ts'));

const kinds: Garbage[] = [
  'string', 'number', 'null', 'array', 'object', 'huge-string', 'nested',
  'forged-done', 'forged-done-null', 'forged-done-real', 'forged-progress', 'forged-fatal', 'forged-ready',
  'forged-unknown', 'forged-tag-number', 'forged-skip', 'raw-forged-done-null', 'raw-forged-fatal',
  'raw-forged-packed',
];

for (const kind of kinds) {
  test(`process.send(${kind}) from a task changes nothing: every task gets its own result`, async (t) => {
    // Every third task sends garbage; the others are plain, pipelined around it on the same workers.
    const tasks = Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? chaos.sendGarbage(kind, i) : chaos.square(i)));
    const run = schedule$(tasks, { concurrency: 2, settle: true, output: 'ignore' });
    const progress: unknown[] = [];
    run.taskProgress$.subscribe((p) => progress.push(p));
    const outcomes = await run.toOrderedArray();
    const wrong = outcomes.flatMap((o, i) => {
      const want = i % 3 === 0 ? i * 2 : i * i;
      if (o.status === 'rejected') return [`#${i} failed: ${(o as TaskFailure).reason.message}`];
      return o.value === want ? [] : [`#${i} = ${String(o.value)}, not ${want}`];
    });
    t.deepEqual(wrong, []);
    t.deepEqual(progress, [], 'forged progress does not reach taskProgress$');
  });
}

test('a task that floods process.send does not hold up the run or the other tasks', async (t) => {
  const tasks = [chaos.sendGarbage('huge-string', 1), chaos.sendGarbage('huge-string', 2), chaos.square(3), chaos.square(4)];
  t.deepEqual(await schedule$(tasks, { concurrency: 2, output: 'ignore' }).toOrderedArray(), [2, 4, 9, 16]);
});
