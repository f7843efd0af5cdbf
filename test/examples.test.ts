/**
 * Runs every example as a user would (`node --import tsx examples/<name>.ts`) and checks what it
 * prints and that it exits 0. Serial: the examples start real processes, and running them side by
 * side on a small CI machine only makes each slower.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { isRunning } from './fixtures/chaos-procs.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const examples = join(root, 'examples');

interface Ran {
  stdout: string;
  stderr: string;
}

/** Runs an example to its end; fails the test with its output when it exits non-zero. */
function runExample(t: ExecutionContext, name: string, args: string[] = []): Promise<Ran> {
  t.timeout(180_000);
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join('examples', name), ...args],
      { cwd: root, timeout: 150_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1' } },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${name} failed (${error.code ?? error.signal}):\n--- stdout\n${stdout}\n--- stderr\n${stderr}`, { cause: error }));
        else resolve({ stdout, stderr });
      },
    );
  });
}


const pairs = Array.from({ length: 16 }, (_, i) => [i, i + 1]);

test.serial('demo: plain progress lines without a terminal, then the ordered results', async (t) => {
  const { stdout, stderr } = await runExample(t, 'demo.ts');
  t.is(stdout.trim().split('\n').at(-1), JSON.stringify(pairs));
  t.regex(stderr, /^\[completed\] 16\/16 done, running 0, concurrency \d+/m);
  t.notRegex(stderr, /\x1b\[/, 'no terminal control codes when stderr is not a terminal');
});

test.serial('quick-start: is the README snippet, and prints the 16 results in input order', async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const main = blocks.find((b) => b.includes("from 'async-process-scheduler'") && b.includes("'longCalculation'"));
  const work = blocks.find((b) => b.startsWith('export async function longCalculation'));
  t.truthy(main, 'the README has the quick-start main.js');
  t.truthy(work, 'the README has the quick-start work.js');
  t.is(readFileSync(join(examples, 'quick-start.ts'), 'utf8'), main!.replace("'async-process-scheduler'", "'../src/index.js'"));
  // work.js is examples/work.ts's longCalculation without its type annotations.
  const workTs = readFileSync(join(examples, 'work.ts'), 'utf8').replace(
    'longCalculation(x: number, y: number): Promise<[number, number]> {',
    'longCalculation(x, y) {',
  );
  t.true(workTs.includes(work!), "the README's work.js is examples/work.ts's longCalculation");

  const { stdout } = await runExample(t, 'quick-start.ts');
  // Snapshots are coalesced (50 ms), so tasks ending together may share one: a count may be
  // skipped, but none is printed twice.
  const counts = stdout.split('\n').filter((line) => line.endsWith(' of 16 tasks are complete.')).map((line) => Number.parseInt(line, 10));
  t.is(counts[0], 0);
  t.is(counts.at(-1), 16);
  t.true(counts.every((n, i) => i === 0 || n > counts[i - 1]!), `each count once, rising: ${counts.join(' ')}`);
  t.true(stdout.endsWith(`${inspect(pairs)}\n`), stdout);
});

test.serial('commands: sha256 of every file of a directory, in directory order', async (t) => {
  const files = readdirSync(examples).filter((f) => statSync(join(examples, f)).isFile()).sort();
  const expected = files.map((f) => `${createHash('sha256').update(readFileSync(join(examples, f))).digest('hex')}  ${f}`);
  const { stdout } = await runExample(t, 'commands.ts', [examples]);
  t.deepEqual(stdout.trim().split('\n'), expected);
});

test.serial('task-progress: every task reports up to its last step, results in input order', async (t) => {
  const { stdout } = await runExample(t, 'task-progress.ts');
  const steps = [10, 25, 15, 20];
  steps.forEach((n, i) => t.true(stdout.includes(`task ${i}: ${n}/${n} steps\n`), `task ${i} reported ${n}/${n}`));
  const checksums = JSON.parse(/^checksums in input order: (.*)$/m.exec(stdout)![1]!) as unknown[];
  t.is(checksums.length, steps.length);
  t.true(checksums.every((c) => Number.isInteger(c)));
});

test.serial('cancel: unsubscribe and abort leave no process, checked here too', async (t) => {
  const { stdout } = await runExample(t, 'cancel.ts');
  t.regex(stdout, /^unsubscribe: run\.pids\(\) = \[\], still alive: \[\]$/m);
  t.regex(stdout, /^abort: toOrderedArray\(\) rejected with RunTerminatedError: .*RunTerminatedError: true, cause: the user pressed Cancel\)$/m);
  t.regex(stdout, /^abort: run\.pids\(\) = \[\], still alive: \[\]$/m);
  t.regex(stdout, /^liveChildPids\(\) = \[\]$/m);
  // The pids the example saw running (workers, shells, their sleep grandchildren) are gone.
  const seen = [...stdout.matchAll(/(?:in processes|grandchildren:) ([\d, ]+)$/gm)].flatMap((m) => m[1]!.split(', ').map(Number));
  t.is(seen.length, 8);
  t.deepEqual(seen.filter(isRunning), []);
});

test.serial('for-await: every value in input order; leaving the loop early terminates the run', async (t) => {
  const { stdout } = await runExample(t, 'for-await.ts');
  const lines = stdout.trim().split('\n');
  t.deepEqual(lines.slice(0, 8), Array.from({ length: 8 }, (_, i) => `${i}² = ${i * i}`));
  t.regex(lines[8]!, /^left the loop at 2: the run ended terminated after \d of 8 tasks; processes left: \[\]$/);
});

test.serial('pool: the pooled batches all run on the two warmed workers, which close() stops', async (t) => {
  const { stdout } = await runExample(t, 'pool.ts');
  const squares = [[1, 4, 9, 16], [25, 36, 49, 64], [81, 100, 121, 144]].map((s) => JSON.stringify(s));
  const workersOf = (prefix: string) =>
    squares.map((s, i) => {
      const line = new RegExp(`^${prefix}, batch ${i + 1}: (\\S+) on workers ([\\d, ]+) in [\\d.]+ ms$`, 'm').exec(stdout);
      t.truthy(line, `${prefix} batch ${i + 1} printed: ${stdout}`);
      t.is(line![1], s);
      return line![2]!;
    });
  const unpooled = workersOf('no pool');
  t.is(new Set(unpooled).size, 3, 'without a pool, every batch starts new workers');
  const warmed = /^pool warmed: workers (\d+, \d+)$/m.exec(stdout)?.[1];
  t.deepEqual(workersOf('pool'), [warmed, warmed, warmed], 'with a pool, every batch runs on the warmed workers');
  t.regex(stdout, /^pool closed: pool\.pids\(\) = \[\], workers still alive: \[\], liveChildPids\(\) = \[\]$/m);
  const pids = [...stdout.matchAll(/on workers ([\d, ]+) in/g)].flatMap((m) => m[1]!.split(', ').map(Number));
  t.is(pids.length, 12);
  t.deepEqual(pids.filter(isRunning), []);
});

test.serial('dynamic: every task of both phases ends, with a line per change of the limit', async (t) => {
  const { stdout } = await runExample(t, 'dynamic.ts');
  const lines = stdout.trim().split('\n');
  t.regex(lines[0]!, /^\d+ CPUs; 64 tasks that wait 300 ms, then 64 that compute for ~300 ms$/);
  const changes = lines.filter((l) => /^\s+\d+\.\d\s+\d+\s/.test(l));
  t.true(changes.length >= 1, 'the first limit is printed');
  const limits = changes.map((l) => Number(l.trim().split(/\s+/)[1]));
  t.true(limits.every((l) => Number.isInteger(l) && l >= 1));
  const last = /^128 tasks in [\d.]+ s; the limit ended at (\d+)$/m.exec(stdout);
  t.truthy(last, stdout);
  t.is(Number(last![1]), limits[limits.length - 1]!, 'the last limit printed is the one in force at the end');
});
