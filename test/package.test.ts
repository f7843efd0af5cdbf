/**
 * The published package, as a user installs it: `npm pack` (which builds it), the tarball unpacked
 * into a project of its own, and a program there that imports the package by name and runs tasks.
 * Everything else in the suite runs `src/` under tsx or a transpiled copy; this is the one place
 * that sees `package.json`'s exports, `files` and the `build` script at work.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { waitGone } from './helpers.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

const program = `
import { readFileSync } from 'node:fs';
import { moduleTask, schedule$, WorkerPool } from 'async-process-scheduler';

const pool = new WorkerPool();
const task = new URL('./task.mjs', import.meta.url);
const run = schedule$(Array.from({ length: 40 }, (_, i) => moduleTask(task, 'square', [i])), { concurrency: 2, pool });
const progress = [];
run.taskProgress$.subscribe(({ index, value }) => progress.push([index, value]));
const values = await run.toOrderedArray();
// A TypeScript task module: the worker, started without tsx, registers it when it meets one.
const typed = await schedule$([moduleTask(new URL('./typed.ts', import.meta.url), 'half', [10])], { pool }).toOrderedArray();
const pids = pool.pids();
const cmdlines = pids.map((pid) => readFileSync('/proc/' + pid + '/cmdline', 'utf8').split('\\0').filter(Boolean));
await pool.close();
console.log(JSON.stringify({ values, typed, progress: progress.length, pids, cmdlines }));
`;

const taskModule = `
import { reportProgress } from 'async-process-scheduler/child';
export function square(n) {
  reportProgress(n);
  return n * n;
}
`;

// CommonJS code loads the package with require() (Node 20.19 and later load an ES module so),
// and so may a CommonJS task module the package's child entry.
const commonJsProgram = `
const path = require('node:path');
const { moduleTask, schedule$ } = require('async-process-scheduler');
// As the README shows: by its absolute path (there is no import.meta.url in CommonJS).
const task = path.join(__dirname, 'task.cjs');
const run = schedule$([1, 2, 3].map((n) => moduleTask(task, 'triple', [n])), { concurrency: 2 });
// The workers, seen while they run a task: the test checks that they are gone afterwards.
const pids = new Set();
run.taskProgress$.subscribe(() => run.pids().forEach((pid) => pids.add(pid)));
run.toOrderedArray().then((values) => console.log(JSON.stringify({ values, pids: [...pids] })));
`;

const commonJsTask = `
const { reportProgress } = require('async-process-scheduler/child');
exports.triple = (n) => {
  reportProgress(n);
  return 3 * n;
};
`;

// TypeScript in a CommonJS project: both entry points' types resolve under the classic
// resolution (\`node10\`, through typesVersions) and under \`nodenext\`.
const commonJsTypeScript = `
import { moduleTask, schedule$, type Progress } from 'async-process-scheduler';
import { isWorker, reportProgress } from 'async-process-scheduler/child';
export const run = schedule$([moduleTask('/abs/work.js', 'f', [1])], { concurrency: 2 });
export const last: Progress | undefined = undefined;
export const inWorker: boolean = isWorker();
export const report: (value: unknown) => void = reportProgress;
`;

const typedModule = `
export function half(n: number): number {
  return n / 2;
}
`;

test('the packed package installs and runs JavaScript and TypeScript task modules in workers started from its bundled entry', async (t) => {
  t.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'aps-package-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: root, maxBuffer: 16 * 1024 * 1024 });
  const { filename, files } = (JSON.parse(packed) as Array<{ filename: string; files: Array<{ path: string }> }>)[0]!;
  const paths = files.map((file) => file.path);
  for (const path of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/child/index.js', 'dist/child/worker-main.cjs']) {
    t.true(paths.includes(path), `${path} is in the package`);
  }
  // bench/ runs only from a checkout, with the devDependencies; its README, which the Performance
  // section links to, is the one file of it in the package.
  t.deepEqual(
    paths.filter((path) => /tsbuildinfo|^test\/|^bench\/(?!README\.md$)|^node_modules\//.test(path)),
    [],
    'nothing of the repository beyond the package',
  );
  // The README's links to files of the project lead to files in the package, so they work where
  // the package is read (node_modules, the registry's page).
  const linked = [...readFileSync(join(root, 'README.md'), 'utf8').matchAll(/\]\((?!https?:|#)([^)#\s]+)/g)].map((m) => m[1]!);
  t.true(linked.length > 5, 'the README links to files of the project');
  t.true(linked.includes('bench/README.md'), 'the README links to the benchmarks\' README');
  t.deepEqual(linked.filter((path) => !paths.includes(path)), [], 'every file the README links to is in the package');

  // The project: the package unpacked where npm would put it, its runtime dependencies linked
  // from this checkout (no network needed), and the program and its task module.
  const installed = join(dir, 'node_modules', 'async-process-scheduler');
  mkdirSync(installed, { recursive: true });
  await run('tar', ['-xzf', join(dir, filename), '-C', installed, '--strip-components=1']);
  const { dependencies } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  // tsx too, as a project with TypeScript task modules has it.
  for (const name of [...Object.keys(dependencies), 'tsx']) symlinkSync(join(root, 'node_modules', name), join(dir, 'node_modules', name), 'dir');
  writeFileSync(join(dir, 'package.json'), '{ "type": "module", "private": true }\n');
  writeFileSync(join(dir, 'main.mjs'), program);
  writeFileSync(join(dir, 'task.mjs'), taskModule);
  writeFileSync(join(dir, 'typed.ts'), typedModule);
  writeFileSync(join(dir, 'main.cjs'), commonJsProgram);
  writeFileSync(join(dir, 'task.cjs'), commonJsTask);
  writeFileSync(join(dir, 'check.cts'), commonJsTypeScript);

  // Plain node, no tsx: as a user of the package runs it.
  const { stdout } = await run(process.execPath, ['main.mjs'], { cwd: dir, timeout: 60_000 });
  const result = JSON.parse(stdout) as { values: number[]; typed: number[]; progress: number; pids: number[]; cmdlines: string[][] };
  t.deepEqual(result.values, Array.from({ length: 40 }, (_, i) => i * i));
  t.deepEqual(result.typed, [5], 'a TypeScript task module ran');
  t.is(result.progress, 40, 'reportProgress from the task module reached taskProgress$');
  t.true(result.pids.length >= 1);
  for (const cmdline of result.cmdlines) {
    t.true(cmdline.includes(join(installed, 'dist', 'child', 'worker-main.cjs')), `a worker runs the bundled entry: ${cmdline.join(' ')}`);
    t.false(cmdline.some((arg) => /tsx/.test(arg)), 'and no TypeScript loader');
  }
  t.deepEqual(await waitGone(result.pids), [], 'the workers are gone after pool.close()');

  // Where Node loads ES modules with require() (20.19+, 22.12+, 23+); elsewhere it says it cannot.
  const required = await run(process.execPath, ['main.cjs'], { cwd: dir, timeout: 60_000 }).catch((error: { stderr: string }) => ({ stdout: '', stderr: error.stderr }));
  if ((process.features as { require_module?: boolean }).require_module) {
    const { values, pids } = JSON.parse(required.stdout) as { values: number[]; pids: number[] };
    t.deepEqual(values, [3, 6, 9], 'CommonJS code require()s the package and its child entry');
    t.true(pids.length >= 1);
    t.deepEqual(await waitGone(pids), [], 'the CommonJS program left no worker behind');
    // Node 22.12 warned of an experimental feature; 20.19+ and 23+ do not.
    if (!process.version.startsWith('v22.')) t.is(required.stderr, '', 'with no warning');
  } else {
    t.regex(required.stderr, /ERR_REQUIRE_ESM/, 'Node says it cannot require() an ES module');
  }
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  for (const settings of [['--module', 'commonjs', '--moduleResolution', 'node10'], ['--module', 'nodenext']]) {
    // Without skipLibCheck or esModuleInterop: the package's own .d.ts files are checked as a
    // CommonJS project sees them (a default import of node:os in one of them broke this). The
    // oldest target the README names: the declarations have private fields, which ES5 lacks.
    const project = ['--target', 'es2015', '--typeRoots', join(root, 'node_modules', '@types'), '--types', 'node'];
    const checked = await run(process.execPath, [tsc, '--noEmit', '--strict', ...project, ...settings, 'check.cts'], { cwd: dir, timeout: 60_000 }).then(
      () => 'ok',
      (error: { stdout?: string }) => error.stdout ?? String(error),
    );
    t.is(checked, 'ok', `TypeScript (${settings.join(' ')}) finds the types of both entry points`);
  }
  // No "types" listed, as TypeScript 6 and later default to: the declarations load Node's types
  // themselves (a reference directive), where they would otherwise miss the NodeJS namespace.
  writeFileSync(join(dir, 'tsconfig.no-types.json'), JSON.stringify({
    files: ['check.cts'],
    compilerOptions: { noEmit: true, strict: true, target: 'es2022', module: 'nodenext', typeRoots: [join(root, 'node_modules', '@types')], types: [] },
  }));
  const withoutTypes = await run(process.execPath, [tsc, '-p', 'tsconfig.no-types.json'], { cwd: dir, timeout: 60_000 }).then(
    () => 'ok',
    (error: { stdout?: string }) => error.stdout ?? String(error),
  );
  t.is(withoutTypes, 'ok', 'TypeScript with "types": [] finds Node\'s types through the package');

  // npm unpacks a package without keeping the files' times, the bundle first: it may be a few
  // milliseconds older than the compiled entry in a fresh install, and is still used.
  const graph = join(installed, 'dist', 'child', 'worker-main.js');
  const bundle = join(installed, 'dist', 'child', 'worker-main.cjs');
  const unpacked = Date.now();
  utimesSync(bundle, new Date(), new Date(unpacked));
  utimesSync(graph, new Date(), new Date(unpacked + 40));
  const fresh = JSON.parse((await run(process.execPath, ['main.mjs'], { cwd: dir, timeout: 60_000 })).stdout) as typeof result;
  t.deepEqual(fresh.values, result.values);
  t.true(fresh.cmdlines.length >= 1);
  for (const cmdline of fresh.cmdlines) t.true(cmdline.includes(bundle), `a worker runs the bundle of a fresh install: ${cmdline.join(' ')}`);
  t.deepEqual(await waitGone(fresh.pids), []);

  // A bundle from an older build (dist/ compiled again, later, without build:worker) is not used.
  utimesSync(graph, new Date(), new Date(unpacked + 5 * 60_000));
  const again = JSON.parse((await run(process.execPath, ['main.mjs'], { cwd: dir, timeout: 60_000 })).stdout) as typeof result;
  t.deepEqual(again.values, result.values);
  t.true(again.cmdlines.length >= 1);
  for (const cmdline of again.cmdlines) t.true(cmdline.includes(graph), `a worker runs the newer entry: ${cmdline.join(' ')}`);
  t.deepEqual(await waitGone(again.pids), []);
});
