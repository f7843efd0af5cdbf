import test from 'ava';
import { TaskError, commandTask, moduleTask, processTask, schedule$, taskModule, type Progress, type Task, type TaskFailure, type TaskResult } from '../src/index.js';
import { taskLabel } from '../src/task.js';
import { sparseLooksHuge } from './fixtures/work.js';
import { fixture, waitGone, work } from './helpers.js';

/** Runs tasks in settle mode and returns each failure (undefined for successes), in input order. */
async function failures(tasks: unknown[]): Promise<Array<TaskError | undefined>> {
  const outcomes = await schedule$(tasks as never, { settle: true, concurrency: 2 }).toOrderedArray();
  return outcomes.map((o) => (o.status === 'rejected' ? (o as TaskFailure).reason : undefined));
}

test('a module that does not exist is an invalid task naming the module', async (t) => {
  const [error] = await failures([moduleTask(fixture('nope.ts'), 'x', [])]);
  t.true(error instanceof TaskError);
  t.is(error!.kind, 'invalid');
  t.regex(error!.message, /task #0 \(nope\.ts#x\) is invalid/);
  t.regex(error!.remote!.message, /cannot load module file:.*nope\.ts/);
});

test('a missing export lists the function exports there are', async (t) => {
  const [error] = await failures([moduleTask(work, 'squar', [2])]);
  t.is(error!.kind, 'invalid');
  t.is(error!.remote!.name, 'ExportNotFoundError');
  t.regex(error!.remote!.message, /has no export named 'squar' \(its function exports: .*square/);
  t.notRegex(error!.remote!.message, /CustomError/, 'a class it exports is not offered as a function to call');
});

test('an export that is not a function says what it is', async (t) => {
  const [error] = await failures([moduleTask(work, 'notAFunction', [])]);
  t.is(error!.remote!.name, 'ExportNotFunctionError');
  t.regex(error!.remote!.message, /export 'notAFunction' .* is not a function \(it is number\)/);
});

test('an export that is a class is an invalid task, not one that threw (which a retry would run again)', async (t) => {
  const outcomes = await schedule$([moduleTask(work, 'CustomError', ['x'])], { settle: true, retries: 2 }).toOrderedArray();
  const error = (outcomes[0] as TaskFailure).reason;
  t.is(error.kind, 'invalid');
  t.is(error.attempt, 1);
  t.is(error.remote!.name, 'ExportNotFunctionError');
  t.regex(error.remote!.message, /export 'CustomError' .* is a class, not a function a task can call/);
});

// In 'capture' mode a task travels with its index (four values per task in a batch, not three).
for (const output of ['inherit', 'capture'] as const) {
  test(`an argument that cannot be cloned fails that task only, naming the argument (output: ${output})`, async (t) => {
    const tasks = [moduleTask(work, 'square', [2]), moduleTask(work, 'echo', [() => 1]), moduleTask(work, 'square', [3])];
    const outcomes = await schedule$(tasks, { settle: true, concurrency: 1, output }).toOrderedArray();
    t.deepEqual(outcomes.map((o) => o.status), ['fulfilled', 'rejected', 'fulfilled']);
    t.deepEqual([outcomes[0], outcomes[2]].map((o) => (o as TaskResult<number>).value), [4, 9]);
    const error = (outcomes[1] as TaskFailure).reason;
    t.is(error.kind, 'invalid');
    t.is(error.index, 1);
    t.regex(error.message, /args\[0\] \(a function \(anonymous\)\) cannot be sent to a child process/);
  });
}

test('an argument that throws when it is read fails that task only, naming the argument', async (t) => {
  // The run weighs arguments before it sends them (how many to pipeline), and structured clone
  // reads them again: neither may throw out of the run.
  const trap = () => {
    throw new Error('trap');
  };
  const hostile = new Proxy([1, 2], { get: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap, getPrototypeOf: trap });
  const getter = { get boom(): number { throw new Error('getter'); } };
  const tasks = [moduleTask(work, 'echo', [hostile]), moduleTask(work, 'square', [2]), moduleTask(work, 'echo', [{ nested: getter }])];
  const outcomes = await schedule$(tasks, { settle: true, concurrency: 1 }).toOrderedArray();
  t.deepEqual(outcomes.map((o) => o.status), ['rejected', 'fulfilled', 'rejected']);
  for (const [i, why] of [[0, /could not be cloned/], [2, /getter/]] as const) {
    const error = (outcomes[i] as TaskFailure).reason;
    t.is(error.kind, 'invalid');
    t.is(error.index, i);
    t.regex(error.message, /args\[0\] \(.*\) cannot be sent to a child process: /);
    t.regex(error.message, why);
  }
});

test('a result that cannot be cloned is an invalid task, and the worker lives on', async (t) => {
  const [bad, good] = await failures([moduleTask(work, 'returnsFunction', []), moduleTask(work, 'square', [2])]);
  t.is(bad!.kind, 'invalid');
  t.regex(bad!.remote!.message, /result cannot be sent to the parent/);
  t.is(good, undefined);
});

test('an argument a worker could not read back fails its task only, and no worker dies of it', async (t) => {
  // A worker reads its tasks in Node's own code, where the error was uncaught: it died, the task
  // it was running was blamed, and the tasks sent with it failed as workers that die starting.
  const deep = { next: {} as object };
  for (let i = 0; i < 2500; i++) deep.next = { next: deep.next };
  const wasm = new (globalThis as unknown as { WebAssembly: { Module: new (bytes: Uint8Array) => object } }).WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
  const hidden = [0, 1, 2, deep, 4, 5, 6, 7, 8, 9];
  const tasks = [
    moduleTask(work, 'pid', []),
    moduleTask(work, 'echo', [deep]),
    moduleTask(work, 'pid', []),
    moduleTask(work, 'echo', [1, wasm]),
    moduleTask(work, 'pid', []),
    // Where a sample of a container's entries would not look; and the same object as the task
    // before it, which is not weighed again.
    moduleTask(work, 'echo', [hidden]),
    moduleTask(work, 'echo', [hidden]),
    moduleTask(work, 'pid', []),
  ];
  const outcomes = await schedule$(tasks, { settle: true, concurrency: 1 }).toOrderedArray();
  t.deepEqual(outcomes.map((o) => o.status), ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled', 'rejected', 'rejected', 'fulfilled']);
  for (const [i, name] of [[1, /args\[0\]/], [3, /args\[1\]/], [5, /args\[0\]/], [6, /args\[0\]/]] as const) {
    const error = (outcomes[i] as TaskFailure).reason;
    t.is(error.kind, 'invalid');
    t.regex(error.message, name);
    t.regex(error.message, /cannot be read by a worker process: /);
  }
  const pids = new Set([0, 2, 4, 7].map((i) => (outcomes[i] as TaskResult<number>).value));
  t.is(pids.size, 1, 'one worker ran every good task');
});

test('a result the parent could not read back fails its task only, and the parent lives on', async (t) => {
  // Node reads a message in its own code, where an error is uncaught: a value nested thousands
  // deep overflowed the parent's stack there, and a WebAssembly.Module could not be read back,
  // and either ended the parent with an uncaught exception. The worker now reads them back first.
  const outcomes = await schedule$(
    [
      moduleTask(work, 'square', [2]),
      moduleTask(work, 'nested', [2500]),
      moduleTask(work, 'wasmModule', []),
      moduleTask(work, 'nested', [10]),
      moduleTask(work, 'throwWithWasm', []),
      // Where a sample of a container's entries would not look, and behind an Error's causes.
      moduleTask(work, 'nestedAmong', [3000, 3, 10]),
      moduleTask(work, 'deepCause', [3000]),
      moduleTask(work, 'reportDeep', [3000]),
    ],
    { settle: true, concurrency: 1 },
  ).toOrderedArray();
  t.deepEqual(outcomes.map((o) => o.status), ['fulfilled', 'rejected', 'rejected', 'fulfilled', 'rejected', 'rejected', 'rejected', 'rejected']);
  t.regex((outcomes[7] as TaskFailure).reason.remote!.message, /reportProgress: the value cannot be sent to the parent process: it could not be read back/);
  for (const i of [1, 2, 5, 6]) {
    const error = (outcomes[i] as TaskFailure).reason;
    t.is(error.kind, 'invalid');
    // Deeper still, the worker's own serializer gives up first ("cannot be sent").
    t.regex(error.remote!.message, /the task's result cannot be (read by|sent to) the parent process: /);
  }
  // A task's error that cannot travel whole keeps its name and message.
  const thrown = (outcomes[4] as TaskFailure).reason;
  t.is(thrown.kind, 'threw');
  t.is(thrown.remote!.message, 'with a module');
  t.is(thrown.remote!.name, 'Error');
});

test('something that is not a task is an invalid task naming what it got', async (t) => {
  const [error] = await failures([{ module: 'x' }]);
  t.is(error!.kind, 'invalid');
  t.regex(error!.message, /task #0 is invalid: it is not a task: expected one made by moduleTask/);
});

test('a copy of a task is not a task: the brand is neither an own property nor writable, and options are read-only', async (t) => {
  const task = moduleTask(work, 'square', [2]);
  t.deepEqual(Reflect.ownKeys(task), ['kind', 'module', 'exportName', 'args', 'options']);
  t.throws(() => {
    (task as unknown as Record<symbol, unknown>)[Symbol.for('async-process-scheduler.Task')] = false;
  }, { instanceOf: TypeError });
  // Tasks made without options share one frozen object.
  t.is(task.options, moduleTask(work, 'square', [3]).options);
  t.throws(() => {
    (task.options as { timeout?: number }).timeout = 5;
  }, { instanceOf: TypeError });
  const copies = await failures([{ ...task }, structuredClone({ ...commandTask('true') }), JSON.parse(JSON.stringify(task))]);
  t.true(copies.every((error) => error?.kind === 'invalid'));
  // A copy is said to be one, with what to do instead.
  t.regex(copies[0]!.message, /it is not a task: .* \(a copy of a task, made with \{ \.\.\.task \} or structuredClone, is not one: make it again with moduleTask\(\), with the options it needs\)$/);
  t.regex(copies[1]!.message, /make it again with commandTask\(\)/);
  t.regex(copies[2]!.message, /make it again with moduleTask\(\)/);
});

test('invalid per-task options are that task\'s error', async (t) => {
  const [error] = await failures([moduleTask(work, 'square', [2], { timeout: -5 })]);
  t.is(error!.kind, 'invalid');
  t.regex(error!.message, /task option timeout must be a number from 1 to 2147483647, got -5$/);
  // A string is quoted, as in a run option's error: '100' is not 100.
  const [quoted] = await failures([moduleTask(work, 'square', [2], { timeout: '100' } as never)]);
  t.regex(quoted!.message, /task option timeout must be a number from 1 to 2147483647, got "100"$/);
});

test('a misspelt task option is that task\'s error, naming the options of its kind', async (t) => {
  const [moduleError, commandError] = await failures([
    moduleTask(work, 'square', [2], { timout: 5 } as never),
    commandTask('true', [], { maxbuffer: 10 } as never),
  ]);
  t.is(moduleError!.kind, 'invalid');
  t.regex(moduleError!.message, /task option timout is not an option of a module task; they are timeout, label, weight, retries$/);
  t.regex(commandError!.message, /task option maxbuffer is not an option of a command task; they are timeout, label, weight, retries, cwd, env, input, reject, encoding, maxBuffer$/);
});

test('bad command options are that task\'s error, and the run goes on', async (t) => {
  // maxBuffer: 1.5 once threw from inside the command's close handler, which ended the parent
  // process when the output was longer than maxBuffer.
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ maxBuffer: 1.5 }, /task option maxBuffer must be an integer >= 0 \(bytes\) or Infinity, got 1\.5$/],
    [{ maxBuffer: Number.NaN }, /maxBuffer must be .*, got NaN$/],
    [{ maxBuffer: -1 }, /maxBuffer must be .*, got -1$/],
    [{ maxBuffer: 'big' }, /maxBuffer must be .*, got "big"$/],
    [{ encoding: 'hex' }, /task option encoding must be 'utf8' or 'buffer', got "hex"$/],
    [{ reject: 'no' }, /task option reject must be true or false, got "no"$/],
    [{ cwd: 3 }, /task option cwd must be a string or a file: URL, got 3$/],
    [{ env: null }, /task option env must be an object, got null$/],
    [{ label: 7 }, /task option label must be a string, got 7$/],
  ];
  const tasks = [...cases.map(([options]) => commandTask('echo', ['hello'], options as never)), commandTask('echo', ['hello'], { maxBuffer: 2 })];
  const outcomes = await schedule$(tasks, { settle: true, concurrency: 2 }).toOrderedArray();
  cases.forEach(([options, message], i) => {
    const outcome = outcomes[i]!;
    t.is(outcome.status, 'rejected', JSON.stringify(options));
    const reason = (outcome as TaskFailure).reason;
    t.is(reason.kind, 'invalid');
    t.regex(reason.message, message);
  });
  const last = outcomes.at(-1) as TaskResult<{ stdout: string; truncated: boolean }>;
  t.like(last.value, { stdout: 'he', truncated: true });
});

test('options that are not an object, and an invalid weight, are that task\'s error; progress still adds up', async (t) => {
  const tasks = [
    moduleTask(work, 'square', [2], null as never),
    moduleTask(work, 'square', [2], { weight: 'x' } as never),
    moduleTask(work, 'square', [3], { weight: 4 }),
  ];
  const run = schedule$(tasks, { settle: true, concurrency: 2, progressInterval: 0 });
  const snapshots: Progress[] = [];
  run.progress$.subscribe((p) => snapshots.push(p));
  const outcomes = await run.toOrderedArray();
  t.deepEqual(outcomes.map((o) => (o.status === 'rejected' ? (o as TaskFailure).reason.message : (o as TaskResult<number>).value)), [
    'task #0 (work.ts#square) is invalid: task options must be an object, got null',
    'task #1 (work.ts#square) is invalid: task option weight must be a finite number >= 0, got "x"',
    9,
  ]);
  // A task that cannot run counts 1: the weights are 1 + 1 + 4, known from the first snapshot.
  t.true(snapshots.every((p) => p.weightTotal === 6));
  t.like(snapshots.at(-1), { weightDone: 6, weightTotal: 6 });
});

test('a malformed command or process task (from plain JavaScript) is that task\'s error', async (t) => {
  const errors = await failures([
    commandTask('echo', 'hello' as never),
    commandTask('echo', ['a', 1] as never),
    commandTask(42 as never),
    processTask('calc.js' as never),
    processTask(null as never),
  ]);
  t.deepEqual(errors.map((e) => `${e!.kind}: ${e!.message}`), [
    'invalid: task #0 (echo) is invalid: its arguments must be an array of strings, got "hello"',
    'invalid: task #1 (echo) is invalid: its arguments must be strings, got 1 at position 1',
    'invalid: task #2 (42) is invalid: its program must be a string, got 42',
    'invalid: task #3 (process) is invalid: its factory must be a function that returns a ChildProcess, got "calc.js"',
    'invalid: task #4 (process) is invalid: its factory must be a function that returns a ChildProcess, got null',
  ]);
});

test('a relative module path is refused when the task is made, with the fix in the message', (t) => {
  t.throws(() => moduleTask('./work.js', 'square', []), { instanceOf: TypeError, message: /use new URL\('\.\/work\.js', import\.meta\.url\) \(in CommonJS: path\.join\(__dirname, '\.\/work\.js'\)\)$/ });
  // A bare name may be a package: the message says how to give one too.
  t.throws(() => moduleTask('lodash', 'chunk', []), {
    instanceOf: TypeError,
    message: /, or, for a package, import\.meta\.resolve\('lodash'\) \(in CommonJS: require\.resolve\('lodash'\)\)$/,
  });
});

test('an export name that is not a string is refused when the task is made, naming what it got', (t) => {
  function longCalculation(x: number) {
    return x;
  }
  t.throws(() => moduleTask(work, longCalculation as never, [1]), {
    instanceOf: TypeError,
    message: "exportName must be the name of an export of the module (a string), got a function (longCalculation): pass its name, 'longCalculation', or use taskModule(url).longCalculation(...); a function cannot be sent to a worker",
  });
  // An anonymous function has no name to suggest: the fix is still given.
  t.throws(() => taskModule<Record<string, () => void>>(work).task((() => 1) as never, []), {
    instanceOf: TypeError,
    message:
      'exportName must be the name of an export of the module (a string), got a function (anonymous): pass the name it is exported under, or use taskModule(url).<name>(...); a function cannot be sent to a worker',
  });
  t.throws(() => moduleTask(work, '', []), { instanceOf: TypeError, message: /^exportName must be the name of an export .*got ""$/ });
  t.throws(() => taskModule<Record<string, () => void>>(work).task(42 as never, []), { instanceOf: TypeError, message: /got 42$/ });
});

test('arguments that are not an array are named first, before the options after them', async (t) => {
  const [error] = await failures([moduleTask(work, 'square', 1 as never, 2 as never)]);
  t.is(error!.kind, 'invalid');
  t.is(error!.message, 'task #0 (work.ts#square) is invalid: its arguments must be an array, got 1');
});

test('an exception thrown in a timer of a task fails that task with the error, and the worker is replaced', async (t) => {
  const [error, after] = await failures([moduleTask(work, 'throwInTimer', []), moduleTask(work, 'square', [3])]);
  t.is(error!.kind, 'threw');
  t.is(error!.remote!.message, 'thrown in a timer');
  t.regex(error!.message, /uncaught in the worker/);
  t.is(after, undefined);
});

test('an error whose fields throw when read: the task threw, with what could be read; its worker lives on', async (t) => {
  // Before, the worker's error serializer read them unguarded and threw: the worker died, and
  // the task was reported with the getter's error, as uncaught, or the next task was blamed.
  const tasks = [moduleTask(work, 'throwUnreadable', [false]), moduleTask(work, 'throwUnreadable', [true]), moduleTask(work, 'pid', [])];
  const outcomes = await schedule$(tasks, { settle: true, concurrency: 1 }).toOrderedArray();
  const [broken, proxy] = [outcomes[0], outcomes[1]].map((o) => (o as TaskFailure).reason);
  t.is(broken!.kind, 'threw');
  t.is(broken!.remote?.code, 'E_BROKEN', 'the fields that can be read are kept');
  t.is(broken!.remote?.message, '(its message could not be read)');
  t.is(proxy!.kind, 'threw');
  t.is(proxy!.remote?.message, 'a value was thrown that cannot be inspected (reading it threw)');
  t.is(outcomes[2]!.status, 'fulfilled');
  t.is(broken!.pid, (outcomes[2] as TaskResult<number>).value, 'the same worker ran the task after them');
});

test('a task source or a task whose fields throw when read: an error of the run or an invalid task, not a crash', async (t) => {
  const hostile = new Proxy({}, { get: () => { throw new Error('proxy get'); } });
  const [fromProxy] = await failures([hostile]);
  t.is(fromProxy!.kind, 'invalid');
  t.regex(fromProxy!.message, /it is not a task: .*got an object that cannot be inspected$/);

  const options = { get timeout(): number { throw new Error('timeout getter'); } };
  const [fromGetter] = await failures([moduleTask(work, 'square', [2], options)]);
  t.is(fromGetter!.kind, 'invalid');
  t.regex(fromGetter!.message, /is invalid: reading it threw Error: timeout getter$/);
  // A real task behind a Proxy whose `options` throws: that task fails, in an array too (whose
  // weights are summed when the run is made).
  const proxied = new Proxy(moduleTask(work, 'square', [2]), {
    get: (target, key) => {
      if (key === 'options') throw new Error('options getter');
      return Reflect.get(target, key) as unknown;
    },
  });
  const [fromProxiedTask, after] = await failures([proxied, moduleTask(work, 'square', [3])]);
  t.regex(fromProxiedTask!.message, /is invalid: reading it threw Error: options getter$/);
  t.is(after, undefined, 'the next task ran');

  // An iterator whose result's `done` is a getter that throws: the run errors with that error.
  const source = {
    [Symbol.iterator]: () => ({ next: () => ({ get done(): boolean { throw new Error('done getter'); }, value: undefined }) }),
  };
  await t.throwsAsync(schedule$(source as never).toOrderedArray(), { message: 'done getter' });
  const asyncSource = {
    [Symbol.asyncIterator]: () => ({ next: async () => ({ done: false, get value(): unknown { throw new Error('value getter'); } }) }),
  };
  await t.throwsAsync(schedule$(asyncSource as never).toOrderedArray(), { message: 'value getter' });
});

test('throws where a task is taken in or started (an array-like source, an argument, a command or a factory): an error of the run or an invalid task, never an uncaught exception', async (t) => {
  // Each of these ended the parent before: they ran in a callback (a result's handler, a
  // microtask) that nothing guarded.
  const boom = (what: string) => () => {
    throw new Error(what);
  };
  // An array-like source whose element getter throws: the run errors with it.
  const arrayLike = { length: 3, 0: moduleTask(work, 'square', [2]), get 1(): never { return boom('element getter')(); }, 2: moduleTask(work, 'square', [3]) };
  await t.throwsAsync(schedule$(arrayLike as never, { concurrency: 1 }).toOrderedArray(), { message: 'element getter' });

  // A module task's arguments array whose element getter throws.
  const args: unknown[] = [1];
  Object.defineProperty(args, 0, { get: boom('args getter'), enumerable: true });
  // A command's arguments likewise, and a process factory that returns a Proxy whose get throws.
  const commandArgs: string[] = ['hi'];
  Object.defineProperty(commandArgs, 0, { get: boom('command args getter'), enumerable: true });
  const proxy = new Proxy({}, { get: boom('factory result proxy') });
  const errors = await failures([
    moduleTask(work, 'echo', args),
    commandTask('echo', commandArgs),
    processTask(() => proxy as never),
    moduleTask(work, 'square', [4]),
  ]);
  t.deepEqual(errors.map((e) => e?.kind), ['invalid', 'invalid', 'invalid', undefined]);
  t.regex(errors[0]!.message, /is invalid: its arguments cannot be read: args getter$/);
  t.regex(errors[1]!.message, /is invalid: it could not be started: command args getter$/);
  t.regex(errors[2]!.message, /is invalid: it could not be started: factory result proxy$/);

  // What the getters throw may be anything: a value with no string form made the message throw.
  const odd: unknown[] = [1];
  Object.defineProperty(odd, 0, { get: () => { throw Object.create(null); }, enumerable: true });
  const oddCommand: string[] = ['hi'];
  Object.defineProperty(oddCommand, 0, { get: () => { throw Object.create(null); }, enumerable: true });
  const oddErrors = await failures([moduleTask(work, 'echo', odd), commandTask('echo', oddCommand)]);
  t.deepEqual(oddErrors.map((e) => e?.kind), ['invalid', 'invalid']);
  t.regex(oddErrors[0]!.message, /its arguments cannot be read: a non-Error value was thrown: /);
  t.regex(oddErrors[1]!.message, /it could not be started: a non-Error value was thrown: /);
});

test('an argument getter that works as the task starts and throws as it is sent: invalid, naming it; never an uncaught exception', async (t) => {
  // The arguments are read when the task starts (to weigh them) and again when its batch is sent.
  // A getter that threw only on those later reads ended the parent.
  // One argument, a getter: on its nth read it throws `thrown(n)` when `throwsOn(n)`, else gives `value()`.
  const getterArgs = (value: () => unknown, throwsOn: (n: number) => boolean, thrown = (n: number): unknown => new Error(`read ${n}`)): unknown[] => {
    const args: unknown[] = [];
    let n = 0;
    Object.defineProperty(args, 0, {
      get: () => {
        n++;
        if (throwsOn(n)) throw thrown(n);
        return value();
      },
      enumerable: true,
    });
    return args;
  };
  // By a pattern of reads: 'o' gives 5, 't' throws (reads past the pattern give 5).
  const reads = (pattern: string, thrown?: (n: number) => unknown): unknown[] => getterArgs(() => 5, (n) => pattern[n - 1] === 't', thrown);
  // From the second read on, with an Error, null or a value with no string form.
  const always = await failures([
    moduleTask(work, 'echo', reads('o' + 't'.repeat(20), (n) => new Error(`read ${n}`))),
    moduleTask(work, 'echo', reads('o' + 't'.repeat(20), () => null)),
    moduleTask(work, 'echo', reads('o' + 't'.repeat(20), () => Object.create(null))),
    moduleTask(work, 'square', [3]),
  ]);
  t.deepEqual(always.map((e) => e?.kind), ['invalid', 'invalid', 'invalid', undefined]);
  t.regex(always[0]!.message, /is invalid: args\[0\] \(a getter that throws\) cannot be sent to a child process: read \d+$/);
  t.regex(always[1]!.message, /cannot be sent to a child process: a non-Error value was thrown: null$/);
  t.regex(always[2]!.message, /a non-Error value was thrown: an object \(null prototype\)$/);
  // On some reads only: whichever read throws, the task either runs or is invalid.
  const patterns = ['ot', 'ott', 'ottoot', 'ottooto', 'otot', 'otto'];
  const outcomes = [];
  for (const p of patterns) outcomes.push(...(await schedule$([moduleTask(work, 'echo', reads(p, (n) => new Error(`read ${n}`)))], { settle: true }).toOrderedArray()));
  for (const [i, outcome] of outcomes.entries()) {
    if (outcome.status === 'fulfilled') t.is(outcome.value, 5, patterns[i]);
    else t.is(outcome.reason.kind, 'invalid', patterns[i]);
  }
  t.true(outcomes.some((o) => o.status === 'rejected' && /the arguments cannot be sent to a child process: read \d+$/.test(o.reason.message)));

  // An argument that is a class instance is read back before it is sent (it may not clone as it
  // is): a getter throwing on that read, on the first attempt or on a retry's, escaped too.
  class Point {
    x = 1;
  }
  const onRead = (bad: number): unknown[] => getterArgs(() => new Point(), (n) => n === bad);
  for (let bad = 2; bad <= 8; bad++) {
    const [outcome] = await schedule$([moduleTask(work, 'throwValue', onRead(bad), { retries: { retries: 1, delay: 1 } })], { settle: true }).toOrderedArray();
    t.is(outcome!.status, 'rejected');
    t.true(['invalid', 'threw'].includes((outcome as TaskFailure).reason.kind), `read ${bad}`);
  }
  const [refused, fine] = await failures([moduleTask(work, 'echo', onRead(2)), moduleTask(work, 'square', [3])]);
  t.regex(refused!.message, /is invalid: its arguments cannot be read: read 2$/);
  t.is(fine, undefined);

  // The next task's start looks at the arguments of the one before (an object they share is
  // weighed once): a getter of that task's that throws then was blamed on the next task.
  const shared = new Point();
  const earlier = getterArgs(() => shared, (n) => n >= 3);
  const [first, next] = await schedule$([moduleTask(work, 'echo', earlier), moduleTask(work, 'echo', [{ y: 2 }])], { settle: true, concurrency: 2 }).toOrderedArray();
  t.is(first!.status, 'rejected');
  t.like(next, { status: 'fulfilled', value: { y: 2 } });
});

test('taskLabel never throws: a task whose fields throw when read is named as such', (t) => {
  const task = Object.create(moduleTask(work, 'square', [1]), {
    kind: {
      get: () => {
        throw new Error('kind');
      },
    },
  }) as Task;
  t.is(taskLabel(task), 'a task whose fields cannot be read');
  t.is(taskLabel(moduleTask(work, 'square', [1])), 'work.ts#square');
});

test('a value that looks over 1 GiB and cannot be cloned, as an argument or a result: invalid, naming it; the worker lives on', async (t) => {
  // It is serialized to learn its exact size, and that threw: uncaught in the parent (an argument)
  // or in the worker (a result, which then died and was retried as threw).
  const [arg, result, after] = await failures([
    moduleTask(work, 'echo', [work.href, sparseLooksHuge(true)]),
    moduleTask(work, 'sparseLooksHuge', [true]),
    moduleTask(work, 'pid', []),
  ]);
  t.is(arg!.kind, 'invalid');
  t.regex(arg!.message, /args\[1\] .*could not be cloned/);
  t.is(result!.kind, 'invalid');
  t.regex(result!.message, /the task's result cannot be sent to the parent process: .*could not be cloned/);
  t.is(after, undefined);
  // Without the function, both go through.
  const [value] = await schedule$([moduleTask(work, 'sparseLooksHuge', [false])]).toOrderedArray();
  t.is((value as unknown[]).length, 2 ** 20);
});

test('a task changed after it was made, to a kind there is not: invalid, not a run that never ends', async (t) => {
  // Before, it was counted as running and nothing ran it: the run never settled.
  const task = commandTask('echo', ['hi']);
  (task as { kind: string }).kind = 'Command';
  const moved = moduleTask(work, 'square', [2]);
  (moved as unknown as { module: unknown }).module = new URL(String(work));
  const [kind, module] = await failures([task, moved]);
  t.is(kind!.kind, 'invalid');
  t.is(kind!.message, `task #0 (Command) is invalid: its kind must be 'module', 'command' or 'process', got "Command"`);
  t.regex(module!.message, /is invalid: its module must be a URL string, got an object \(URL\)$/);
});

test('an environment variable that is not a string: the command is invalid, naming it (Node would pass "null" or "[object Object]")', async (t) => {
  const [error] = await failures([commandTask('env', [], { env: { PATH: process.env.PATH, A: null } as never })]);
  t.is(error!.kind, 'invalid');
  t.is(error!.message, 'task #0 (env) is invalid: task option env.A must be a string (or undefined, to leave it out), got null');
  t.throws(() => schedule$([], { workerEnv: { A: 1 } as never }), { name: 'OptionError', message: 'options.workerEnv.A must be a string (or undefined, to leave it out), got 1' });
});

test("a task that removes the process's listeners, or replaces JSON's functions: its worker still hears the next tasks", async (t) => {
  // Before, the tasks sent next were dropped, unheard, and the run waited for them forever.
  t.timeout(30_000);
  // Removed, taken over (a listener of the task's own added, as a library might), or every
  // listener of the process removed (Node's own, which keep the IPC channel referenced, with them),
  // or JSON's functions, with which messages are read and written, replaced by ones that throw.
  for (const fn of ['deafen', 'hijack', 'deafenAll', 'poisonJson']) {
    const tasks = [moduleTask(work, fn, []), moduleTask(work, 'square', [2]), moduleTask(work, 'pid', [])];
    const [pid, four, samePid] = await schedule$(tasks, { concurrency: 1 }).toOrderedArray();
    t.is(four, 4, fn);
    t.is(samePid, pid, `${fn}: in the same worker`);
    t.deepEqual(await waitGone([pid as number]), [], `${fn}: the worker is gone after the run`);
  }
});

// Serial: each holds two copies of a 2 GiB value at its peak, in a worker or in this process.
test.serial("a result too large for any message between processes (2 GiB or more) fails its task as invalid, saying so; the parent and the run go on", async (t) => {
  // Before, the parent died of an uncaught exception in Node's channel code.
  t.timeout(120_000);
  const outcomes = await schedule$([moduleTask(work, 'bufferOf', [2 ** 31 + 2 ** 20]), moduleTask(work, 'bufferOf', [100 * 2 ** 20]), moduleTask(work, 'square', [3])], {
    concurrency: 1,
    settle: true,
  }).toOrderedArray();
  const [tooLarge, large, small] = outcomes;
  t.is(tooLarge!.status, 'rejected');
  const error = (tooLarge as TaskFailure).reason;
  t.is(error.kind, 'invalid');
  t.is(
    error.message,
    "task #0 (work.ts#bufferOf) is invalid: the task's result is too large to send to the parent process: 2049.0 MiB serialized, and a message between processes must be under 2047.9 MiB; write it to a file and return the file's path",
  );
  t.is(large?.status === 'fulfilled' && (large.value as Buffer).length, 100 * 2 ** 20, 'a large result that fits arrives');
  t.like(small, { status: 'fulfilled', value: 9 });
});

test('a task that calls process.disconnect() fails saying so (its worker can no longer hear the scheduler, and ends); the next task runs in a new worker', async (t) => {
  const outcomes = await schedule$([moduleTask(work, 'disconnectSelf', []), moduleTask(work, 'square', [3])], { concurrency: 1, settle: true, output: 'ignore' }).toOrderedArray();
  const error = (outcomes[0] as TaskFailure).reason;
  t.is(error.kind, 'signaled');
  t.is(error.message, 'task #0 (work.ts#disconnectSelf) was killed by SIGKILL: it called process.disconnect(), which ends its worker process (and what it started)');
  t.like(outcomes[1], { status: 'fulfilled', value: 9 });
});

test("a module whose top level calls process.exit() fails its task as invalid, saying so, and is not retried", async (t) => {
  // Before, it failed as 'exited' ("while running it") and was retried: with retries: 2, three
  // workers ran the same exit.
  const outcomes = await schedule$([moduleTask(fixture('preloaded.ts'), 'loadInfo', []), moduleTask(work, 'square', [4])], {
    concurrency: 1,
    settle: true,
    output: 'ignore',
    retries: 2,
    workerEnv: { ...process.env, EXIT_ON_LOAD: '3' },
  }).toOrderedArray();
  const error = (outcomes[0] as TaskFailure).reason;
  t.is(error.kind, 'invalid');
  t.is(error.attempt, 1);
  t.is(error.exitCode, 3);
  t.is(error.message, "task #0 (preloaded.ts#loadInfo) is invalid: its module ended the worker process as it loaded (exit code 3): a task module's top level must not call process.exit()");
  t.like(outcomes[1], { status: 'fulfilled', value: 16 });
});

test.serial('an argument too large for any message between processes (2 GiB or more) fails its task as invalid before it is sent; the worker and the run go on', async (t) => {
  // Before, the worker died trying to read it, and the task failed as 'threw' with Node's message.
  t.timeout(120_000);
  const outcomes = await schedule$([moduleTask(work, 'echo', [new Uint8Array(2 ** 31 + 2 ** 20)]), moduleTask(work, 'square', [5])], {
    concurrency: 1,
    settle: true,
  }).toOrderedArray();
  const error = (outcomes[0] as TaskFailure).reason;
  t.is(error.kind, 'invalid');
  t.regex(error.message, /^task #0 \(work\.ts#echo\) is invalid: its arguments are too large to send to a worker: 2049\.\d MiB serialized, and a message between processes must be under 2047\.9 MiB; pass a file's path instead$/);
  t.like(outcomes[1], { status: 'fulfilled', value: 25 });
});

test('reportProgress with a value that cannot be cloned: the task threw, naming reportProgress', async (t) => {
  const [error] = await failures([moduleTask(work, 'reportUncloneable', [])]);
  t.is(error!.kind, 'threw');
  t.is(error!.remote?.name, 'TypeError');
  t.regex(error!.remote!.message, /^reportProgress: the value cannot be sent to the parent process: .*could not be cloned/);
});
