// Task modules of every JavaScript format load in a worker, each evaluated once per worker, with
// the results and errors import() gives. Each test runs twice: on the library from source (its
// workers run under tsx) and on a compiled copy (plain workers, as users run them).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import * as source from '../../src/index.js';
import type { TaskFailure, TaskOutcome, TaskResult } from '../../src/index.js';
import { compiledLibrary, type CompiledLibrary } from '../fixtures/chaos-compiled.js';
import { descendants } from '../fixtures/chaos-procs.js';
import { waitGone } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'aps-formats-'));
let compiled: Promise<CompiledLibrary> | undefined;
test.after.always(async () => {
  rmSync(dir, { recursive: true, force: true });
  (await compiled)?.remove();
});

/** The compiled copy, built on first use by any test here. */
const compiledCopy = () => (compiled ??= compiledLibrary());

const libraries = {
  source: async () => source,
  compiled: async () => (await compiledCopy()).lib,
};

/** Where a task module imports the library from, for each of `libraries`. */
const libraryUrls = {
  source: async () => new URL('../../src/index.ts', import.meta.url),
  compiled: async () => new URL('../../src/index.js', (await compiledCopy()).fixture('chaos-tasks')),
};

/** Writes a module file and returns its URL. */
function module(name: string, text: string): URL {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return pathToFileURL(path);
}

/** Checks that a task failed as a module that could not be loaded, with the error's class and message. */
function assertLoadFailure(t: ExecutionContext, outcome: TaskOutcome<unknown> | undefined, name: string, message: string | RegExp): TaskFailure {
  const failure = outcome as TaskFailure;
  t.is(failure.reason.kind, 'invalid');
  t.is(failure.reason.remote?.name, name);
  if (typeof message === 'string') t.is(failure.reason.remote?.message, message);
  else t.regex(failure.reason.remote?.message ?? '', message);
  return failure;
}

// Each module counts its evaluations in the worker, and says so through `runs`.
const counted = (exports: string) => `globalThis.evaluations = (globalThis.evaluations ?? 0) + 1;\n${exports}`;
const esmBody = counted(`export function runs() { return globalThis.evaluations; }\nexport function triple(x) { return 3 * x; }\nexport default function half(x) { return x / 2; }\n`);
const cjsBody = counted(`module.exports = function half(x) { return x / 2; };\nmodule.exports.runs = () => globalThis.evaluations;\nmodule.exports.triple = (x) => 3 * x;\n`);

const formats: Record<string, (prefix: string) => URL> = {
  'ES module (.mjs)': (prefix) => module(`${prefix}/esm/a.mjs`, esmBody),
  'ES module (.js in a "type": "module" package)': (prefix) => (module(`${prefix}/typed/package.json`, '{ "type": "module" }'), module(`${prefix}/typed/a.js`, esmBody)),
  'CommonJS (.cjs)': (prefix) => module(`${prefix}/cjs/a.cjs`, cjsBody),
  'CommonJS (.js, no "type")': (prefix) => (module(`${prefix}/plain/package.json`, '{}'), module(`${prefix}/plain/a.js`, cjsBody)),
  'ES module with top-level await (.mjs)': (prefix) => module(`${prefix}/tla/a.mjs`, `await new Promise((resolve) => setTimeout(resolve, 5));\n${esmBody}`),
};

for (const [which, library] of Object.entries(libraries)) {
  for (const [name, make] of Object.entries(formats)) {
    test(`${which}: ${name}: named and default exports run, and the module is evaluated once per worker`, async (t) => {
      const { moduleTask, schedule$ } = await library();
      const url = make(which);
      const tasks = [
        ...Array.from({ length: 20 }, (_, i) => moduleTask<number>(url, 'triple', [i])),
        moduleTask<number>(url, 'default', [10]),
        moduleTask<number>(url, 'runs', []),
      ];
      const values = await schedule$(tasks, { concurrency: 1 }).toOrderedArray();
      t.deepEqual(values.slice(0, 20), Array.from({ length: 20 }, (_, i) => 3 * i));
      t.is(values[20], 5);
      t.is(values[21], 1, 'the module was evaluated once');
    });
  }

  test(`${which}: an ES module whose top level throws: every task of it fails with that error, and its top level ran once`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const url = module(`${which}/throws/a.mjs`, counted(`export function f() { return 1; }\nexport function g() { return 2; }\nthrow new RangeError('no config');\n`));
    const probe = module(`${which}/throws/probe.mjs`, `export function evaluations() { return globalThis.evaluations; }\n`);
    const outcomes: Array<TaskOutcome<number>> = await schedule$([moduleTask<number>(url, 'f', []), moduleTask<number>(url, 'g', []), moduleTask<number>(probe, 'evaluations', [])], {
      concurrency: 1,
      settle: true,
    }).toOrderedArray();
    for (const outcome of outcomes.slice(0, 2)) assertLoadFailure(t, outcome, 'RangeError', `cannot load module ${url.href}: no config`);
    t.is((outcomes[2] as TaskResult<number>).value, 1);
  });

  test(`${which}: an ES module with a syntax error is an invalid task naming the module`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const url = module(`${which}/syntax/a.mjs`, 'export const x = ;\n');
    const [outcome] = await schedule$([moduleTask(url, 'x', [])], { settle: true }).toOrderedArray();
    assertLoadFailure(t, outcome, 'SyntaxError', new RegExp(`^cannot load module ${url.href.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: Unexpected token`));
  });

  // Serial: it counts the processes below this one, which the other tests here would add to.
  test.serial(`${which}: a task module that starts a run at its top level is an invalid task, and starts no process`, async (t) => {
    // Each worker loading it would start the run again, and each of their workers again.
    const { moduleTask, schedule$ } = await library();
    const lib = await libraryUrls[which as keyof typeof libraryUrls]();
    const url = module(
      `${which}/bomb/a.mjs`,
      `import { moduleTask, schedule$ } from ${JSON.stringify(lib.href)};\n` +
        'export function double(x) { return 2 * x; }\n' +
        'export const inner = await schedule$([moduleTask(import.meta.url, "double", [21])], { concurrency: 1 }).toOrderedArray();\n',
    );
    const before = new Set(descendants().map((p) => p.pid));
    const run = schedule$([moduleTask<number>(url, 'double', [1])], { concurrency: 1, settle: true });
    // Every Node process below this one while the run lasts: its worker, and any worker that one
    // started. (Under tsx a worker also starts esbuild, which is not a worker.)
    const seen = new Set<number>();
    const watch = setInterval(() => descendants().forEach((p) => before.has(p.pid) || p.comm !== 'node' || seen.add(p.pid)), 5);
    const [outcome] = await run.toOrderedArray().finally(() => clearInterval(watch));
    const { reason } = outcome as TaskFailure;
    t.is(reason.kind, 'invalid');
    t.regex(reason.remote?.message ?? '', /schedule\$ was called while a worker was loading the task module .*bomb\/a\.mjs: a run started at the top level/);
    t.deepEqual(run.pids(), []);
    t.true(seen.size <= 1, `the worker started no worker of its own: ${[...seen].join(', ')}`);
    t.deepEqual(await waitGone([...seen]), []);
  });

  test(`${which}: a file URL no path matches, and a directory named like a module, are invalid tasks, and the worker lives on`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const fine = module(`${which}/odd/fine.mjs`, 'export function pid() { return process.pid; }\n');
    mkdirSync(join(dir, which, 'odd', 'dir.mjs'), { recursive: true });
    writeFileSync(join(dir, which, 'odd', 'dir.mjs', 'index.js'), 'globalThis.ranIndex = true;\n');
    const encodedSlash = new URL(`${pathToFileURL(join(dir, which, 'odd')).href}/a%2Fb.mjs`);
    const outcomes = await schedule$(
      [moduleTask<number>(fine, 'pid', []), moduleTask(encodedSlash, 'f', []), moduleTask(pathToFileURL(join(dir, which, 'odd', 'dir.mjs')), 'f', []), moduleTask<number>(fine, 'pid', [])],
      { concurrency: 1, settle: true },
    ).toOrderedArray();
    t.deepEqual(outcomes.map((o) => (o.status === 'rejected' ? o.reason.kind : o.status)), ['fulfilled', 'invalid', 'invalid', 'fulfilled']);
    t.regex((outcomes[1] as TaskFailure).reason.remote?.message ?? '', /^cannot load module .*a%2Fb\.mjs: File URL path must not include encoded \/ characters/);
    // Node refuses a directory import; under tsx, the directory's index.js loads, without the export.
    t.regex((outcomes[2] as TaskFailure).reason.remote?.message ?? '', which === 'compiled' ? /^cannot load module .*dir\.mjs: Directory import .* is not supported/ : /dir\.mjs has no export named 'f'/);
    t.is((outcomes[0] as TaskResult<number>).value, (outcomes[3] as TaskResult<number>).value, 'one worker ran them all');
  });

  test(`${which}: a module that exports \`then\` loads (import() alone would take it for a promise and wait forever); its exports run, \`then\` too`, async (t) => {
    const { moduleTask, schedule$, taskModule } = await library();
    const esm = module(`${which}/then/a.mjs`, 'export function then(resolve) { return `then ran, not awaited: ${typeof resolve}`; }\nexport function twice(x) { return 2 * x; }\n');
    const cjs = module(`${which}/then/b.cjs`, 'exports.then = () => "cjs then ran";\nexports.twice = (x) => 2 * x;\n');
    const handle = taskModule<{ then(x?: unknown): string; twice(x: number): number }>(esm);
    const values = await schedule$([handle.twice(4), handle.task('then', [undefined]), moduleTask(cjs, 'twice', [5]), moduleTask(cjs, 'then', [])], {
      concurrency: 1,
      timeout: 20_000,
    }).toOrderedArray();
    t.deepEqual(values, [8, 'then ran, not awaited: undefined', 10, 'cjs then ran']);
    // The handle itself is not a thenable either: awaiting it gives the handle.
    t.is(await handle, handle);
    // @ts-expect-error: an export named `then` is reached through task('then', ...), as the type says
    t.is(handle.then, undefined);
  });

  test(`${which}: a module that does not exist is an invalid task whose message names it, and only it`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const missing = new URL('missing/nowhere.mjs', pathToFileURL(join(dir, which, '/')));
    const [outcome] = await schedule$([moduleTask(missing, 'f', [])], { settle: true }).toOrderedArray();
    const { reason } = outcome as TaskFailure;
    t.is(reason.kind, 'invalid');
    t.regex(reason.remote?.message ?? '', /^cannot load module file:.*missing\/nowhere\.mjs: Cannot find module '.*missing\/nowhere\.mjs'$/);
  });

  test(`${which}: a module loaded by a task and imported by another module is one module: they share its state`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const state = module(`${which}/shared/state.mjs`, `let n = 0;\nexport function bump() { return ++n; }\n`);
    const user = module(`${which}/shared/user.mjs`, `export async function bumpThere() { return (await import(${JSON.stringify(state.href)})).bump(); }\n`);
    const values = await schedule$([moduleTask<number>(state, 'bump', []), moduleTask<number>(user, 'bumpThere', []), moduleTask<number>(state, 'bump', [])], {
      concurrency: 1,
    }).toOrderedArray();
    t.deepEqual(values, [1, 2, 3]);
  });
}

for (const [which, library] of Object.entries(libraries)) {
  // The failing module comes first, so that the compiled worker loads it with require().
  test(`${which}: an ES module importing a name its dependency lacks is an invalid task with Node's message; the worker lives on`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const dep = module(`${which}/link/dep.mjs`, 'export const there = 1;\n');
    const url = module(`${which}/link/a.mjs`, `import { missing } from ${JSON.stringify(dep.href)};\nexport function f() { return missing; }\n`);
    const fine = module(`${which}/link/fine.mjs`, 'export function pid() { return process.pid; }\n');
    const outcomes = await schedule$([moduleTask(url, 'f', []), moduleTask(url, 'f', []), moduleTask<number>(fine, 'pid', [])], {
      concurrency: 1,
      settle: true,
    }).toOrderedArray();
    const message = /^cannot load module .*link\/a\.mjs: The requested module '.*dep\.mjs' does not provide an export named 'missing'$/;
    const failures = outcomes.slice(0, 2).map((outcome) => assertLoadFailure(t, outcome, 'SyntaxError', message));
    t.is(failures[0]!.reason.pid, (outcomes[2] as TaskResult<number>).value, 'the worker that failed to load the module ran the next task');
  });
}

// The compiled worker loads an ES module with require() where Node allows it (see requirablePath in
// src/child/worker-main.ts), sparing each worker the start of Node's asynchronous loader. Each
// module here records the stack its top level ran under, which names the path it took.
test('compiled: ES modules load through require() where that loads them as import() would, and through import() elsewhere', async (t) => {
  const { moduleTask, schedule$ } = (await compiledCopy()).lib;
  const recorder = 'const limit = Error.stackTraceLimit;\nError.stackTraceLimit = 100;\nconst stack = new Error().stack;\nError.stackTraceLimit = limit;\n';
  const esm = `${recorder}export function stack_() { return stack; }\n`;
  const cjs = `${recorder}exports.stack_ = () => stack;\n`;
  const cases: Array<[string, URL, boolean]> = [
    ['.mjs', module('route/a.mjs', esm), true],
    ['.js under "type": "module"', (module('route/typed/package.json', '{ "type": "module" }'), module('route/typed/a.js', esm)), true],
    ['.cjs', module('route/b.cjs', cjs), false],
    ['.js under no "type"', (module('route/plain/package.json', '{}'), module('route/plain/a.js', cjs)), false],
    ['top-level await', module('route/tla.mjs', `await null;\n${esm}`), false],
    ['a URL with a query (a fresh instance each)', new URL('?v=2', module('route/q.mjs', esm)), false],
    ['a byte-order mark and a #! line (which require() refuses)', module('route/bom.mjs', `\uFEFF#!/usr/bin/env node\n${esm}`), false],
  ];
  // A fresh worker for each: only a worker's first module may take the require() path.
  const stacks = await schedule$(cases.map(([, url]) => moduleTask<string>(url, 'stack_', [])), { concurrency: 1, maxTasksPerWorker: 1 }).toOrderedArray();
  const requireModule = (process.features as { require_module?: boolean }).require_module === true;
  cases.forEach(([name, , sync], i) => {
    t.is(/\brequireSettled\b/.test(stacks[i]!), sync && requireModule, `${name}: ${stacks[i]!.split('\n').slice(1, 4).join(' | ')}`);
  });
});

// What task code does once it runs can make require() load differently from import(): only a
// worker's first module is loaded by require(); these check the later ones.
for (const [which, library] of Object.entries(libraries)) {
  test(`${which}: a module left loading by an import() that a module's top level did not await loads for a later task, once`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const slow = module(`${which}/race/slow.mjs`, counted('export const s = "slow";\nexport function runs() { return globalThis.evaluations; }\n'));
    const first = module(`${which}/race/first.mjs`, `const lazy = import(${JSON.stringify(slow.href)});\nexport function f() { return 'first'; }\n`);
    const second = module(`${which}/race/second.mjs`, `import { s, runs } from ${JSON.stringify(slow.href)};\nexport function f() { return s + ' ' + runs(); }\n`);
    const values = await schedule$([moduleTask<string>(first, 'f', []), moduleTask<string>(second, 'f', [])], { concurrency: 1 }).toOrderedArray();
    t.deepEqual(values, ['first', 'slow 1']);
  });

  test(`${which}: loader hooks a task module registers at run time apply to the modules loaded after it`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const hooks = module(
      `${which}/hooks/hooks.mjs`,
      'export async function load(url, context, next) {\n  const result = await next(url, context);\n' +
        '  if (url.endsWith("target.mjs")) result.source = String(result.source).replace("ORIGINAL", "HOOKED");\n  return result;\n}\n',
    );
    const registers = module(`${which}/hooks/register.mjs`, `import { register } from 'node:module';\nregister(${JSON.stringify(hooks.href)});\nexport function f() { return 'registered'; }\n`);
    const target = module(`${which}/hooks/target.mjs`, 'export function f() { return "ORIGINAL"; }\n');
    const values = await schedule$([moduleTask<string>(registers, 'f', []), moduleTask<string>(target, 'f', [])], { concurrency: 1 }).toOrderedArray();
    t.deepEqual(values, ['registered', 'HOOKED']);
  });

  test(`${which}: a run started by what a task module's top level deferred (a promise callback, an await) is refused like one started at the top level`, async (t) => {
    const { moduleTask, schedule$ } = await library();
    const lib = await libraryUrls[which as keyof typeof libraryUrls]();
    // Nothing is subscribed: a run that were let through would start nothing here, only say so.
    const url = module(
      `${which}/deferred/a.mjs`,
      `import { moduleTask, schedule$ } from ${JSON.stringify(lib.href)};\n` +
        'const seen = {};\n' +
        'function attempt(label) {\n  try { schedule$([moduleTask(import.meta.url, "work", [])]); seen[label] = "let through"; }\n  catch (error) { seen[label] = /was loading the task module/.test(error.message) ? "refused" : error.message; }\n}\n' +
        'attempt("sync");\nPromise.resolve().then(() => attempt("promise callback"));\n(async () => { await null; attempt("await"); })();\n' +
        'export function work() { return 1; }\nexport function seenThen() { return seen; }\n',
    );
    const [seen] = await schedule$([moduleTask<Record<string, string>>(url, 'seenThen', [])], { concurrency: 1 }).toOrderedArray();
    t.deepEqual(seen, { sync: 'refused', 'promise callback': 'refused', await: 'refused' });
  });
}
