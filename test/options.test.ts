import test from 'ava';
import { BehaviorSubject, of } from 'rxjs';
import { OptionError, isOptionError, schedule$ } from '../src/index.js';
import { resolveOptions } from '../src/options.js';

const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
  ['concurrency 0', { concurrency: 0 }, /^options\.concurrency must be a positive integer, Infinity, an Observable<number | 'auto'> or 'auto', got 0$/],
  ['concurrency negative', { concurrency: -2 }, /options\.concurrency .* got -2$/],
  ['concurrency NaN', { concurrency: NaN }, /options\.concurrency .* got NaN$/],
  ['concurrency fraction', { concurrency: 1.5 }, /options\.concurrency .* got 1\.5$/],
  ['concurrency string', { concurrency: '4' }, /options\.concurrency .* got "4"$/],
  ['cpuTarget above 99', { cpuTarget: 150 }, /^options\.cpuTarget must be a number from 1 to 99, got 150$/],
  ['sampleInterval too small', { sampleInterval: 1 }, /^options\.sampleInterval must be a number from 10 to 2147483647, got 1$/],
  // A timer cannot wait longer: Node would read the load every millisecond instead.
  ['sampleInterval past a timer', { sampleInterval: 2 ** 31 }, /^options\.sampleInterval must be a number from 10 to 2147483647, got 2147483648$/],
  ['minConcurrency 0', { minConcurrency: 0 }, /^options\.minConcurrency must be a positive integer, got 0$/],
  ['maxConcurrency below min', { minConcurrency: 4, maxConcurrency: 2 }, /^options\.maxConcurrency must be at least minConcurrency \(4\), got 2$/],
  ['timeout 0', { timeout: 0 }, /^options\.timeout must be a number from 1/],
  ['killTimeout negative', { killTimeout: -1 }, /^options\.killTimeout must be a number from 0/],
  ['maxTasksPerWorker 0', { maxTasksPerWorker: 0 }, /^options\.maxTasksPerWorker must be a positive integer, got 0$/],
  ['settle not boolean', { settle: 'yes' }, /^options\.settle must be a boolean, got "yes"$/],
  ['signal not a signal', { signal: {} }, /^options\.signal must be an AbortSignal/],
  ['output unknown', { output: 'file' }, /^options\.output must be 'inherit', 'capture' or 'ignore', got "file"$/],
  ['retries negative', { retries: -1 }, /^options\.retries must be an integer >= 0, got -1$/],
  ['retries.backoff unknown', { retries: { retries: 1, backoff: 'linear' } }, /^options\.retries\.backoff must be 'fixed' or 'exponential'/],
  ['retries.on not an array', { retries: { retries: 1, on: 'threw' } }, /^options\.retries\.on must be an array of failure kinds/],
  ['unknown option', { concurency: 2 }, /^options\.concurency is not an option; the options are concurrency, /],
  ['maxWorkerRss in megabytes', { maxWorkerRss: 512 }, /^options\.maxWorkerRss is in bytes and must be at least 16777216 \(16 MiB, less than any Node process takes\), got 512; for 512 MiB write 512 \* 2 \*\* 20$/],
  ['maxWorkerRss in bytes, too small', { maxWorkerRss: 1_000_000 }, /^options\.maxWorkerRss is in bytes and must be at least 16777216 \(16 MiB, less than any Node process takes\), got 1000000$/],
  ['maxWorkerRss fraction', { maxWorkerRss: 0.5 }, /^options\.maxWorkerRss is in bytes and must be at least 16777216 \(16 MiB, less than any Node process takes\), got 0\.5$/],
  ['maxWorkerRss 0', { maxWorkerRss: 0 }, /^options\.maxWorkerRss must be a number of at least 16777216, got 0$/],
  ['maxWorkerRss string', { maxWorkerRss: '1G' }, /^options\.maxWorkerRss must be a number of at least 16777216, got "1G"$/],
  ['workerExecArgv not strings', { workerExecArgv: [1] }, /^options\.workerExecArgv must be an array of strings/],
  ['workerStartTimeout 0', { workerStartTimeout: 0 }, /^options\.workerStartTimeout must be a number from 1 to 2147483647, got 0$/],
  ['workerStartTimeout Infinity', { workerStartTimeout: Infinity }, /^options\.workerStartTimeout must be a number from 1 to 2147483647, got Infinity$/],
];

for (const [name, options, message] of invalid) {
  test(`rejects ${name} up front, naming the option`, (t) => {
    const error = t.throws(() => schedule$([], options as never), { instanceOf: OptionError, message });
    t.true(isOptionError(error));
    const named = /options\\\.((?:\w|\\\.)+)/.exec(message.source)?.[1] ?? '';
    t.is(error.option, named.replace(/\\/g, ''));
  });
}

test("options that only steer automatic concurrency are an OptionError with a fixed concurrency, not with an Observable, which may hand the limit to it", (t) => {
  t.throws(() => schedule$([], { concurrency: 4, cpuTarget: 70 }), {
    instanceOf: OptionError,
    message: 'options.cpuTarget only steers automatic concurrency; leave it out with concurrency 4',
  });
  t.notThrows(() => schedule$([], { concurrency: new BehaviorSubject<number | 'auto'>(2), maxConcurrency: 8 }));
  t.notThrows(() => schedule$([], { concurrency: 'auto', cpuTarget: 70, maxConcurrency: 8 }));
  t.notThrows(() => schedule$([], { cpuTarget: 70 }));
});

test("cpuTarget + cpuHysteresis at 100 or more is an OptionError: readings never exceed 100, so the limit could never come down", (t) => {
  t.throws(() => schedule$([], { cpuTarget: 95 }), {
    instanceOf: OptionError,
    message: 'options.cpuTarget + options.cpuHysteresis must be below 100, got 95 + 10 (cpuHysteresis defaults to 10): CPU readings never go above 100, so concurrency could rise and never come down',
  });
  const hysteresis = t.throws(() => schedule$([], { cpuHysteresis: 15 }), { instanceOf: OptionError });
  t.is(hysteresis.option, 'cpuHysteresis');
  t.regex(hysteresis.message, /got 85 \+ 15 \(cpuTarget defaults to 85\)/);
  t.is(t.throws(() => schedule$([], { cpuTarget: 100, cpuHysteresis: 0 }), { instanceOf: OptionError, message: /from 1 to 99, got 100$/ }).option, 'cpuTarget');
  t.is(t.throws(() => schedule$([], { cpuTarget: 99, cpuHysteresis: 1 }), { instanceOf: OptionError }).option, 'cpuTarget');
  t.notThrows(() => schedule$([], { cpuTarget: 94, cpuHysteresis: 5 }));
  t.notThrows(() => schedule$([], { cpuTarget: 99, cpuHysteresis: 0 }));
});

test('an unknown or never-retried failure kind in retries.on is named, with its place; so is an unknown retry option', (t) => {
  const error = t.throws(() => schedule$([], { retries: { retries: 1, on: ['threw', 'nope'] } } as never), {
    instanceOf: OptionError,
    message: 'options.retries.on[1] must be a failure kind that can be retried (threw, exited, signaled, timeout, spawn), got "nope"',
  });
  t.is(error.option, 'retries.on[1]');
  // Kinds that are never retried, and unknown keys, would make a policy that does not do what it says.
  // (Refused by the types too: the line would not compile.)
  // @ts-expect-error: 'invalid' is not a RetryableKind
  t.throws(() => schedule$([], { retries: { retries: 1, on: ['invalid'] } }), {
    instanceOf: OptionError,
    message: 'options.retries.on[0] must be a failure kind that can be retried (threw, exited, signaled, timeout, spawn), got "invalid" ("invalid" failures are never retried)',
  });
  const misspelt = t.throws(() => schedule$([], { retries: { retries: 1, delai: 50 } as never }), {
    instanceOf: OptionError,
    message: 'options.retries.delai is not a retry option; they are retries, delay, backoff, maxDelay, jitter, on',
  });
  t.is(misspelt.option, 'retries.delai');
});

test('options that are not an object are an OptionError that says so', (t) => {
  t.throws(() => schedule$([], null as never), { instanceOf: OptionError, message: 'options must be an object, got null' });
  const error = t.throws(() => schedule$([], 'fast' as never), { instanceOf: OptionError, message: 'options must be an object, got "fast"' });
  t.is(error.option, '(options)');
});

test('an array as options, and a null concurrency, are OptionErrors (before, both were taken as the defaults)', (t) => {
  t.throws(() => schedule$([], [] as never), { instanceOf: OptionError, message: 'options must be an object, got an array of 0' });
  t.throws(() => schedule$([], { concurrency: null } as never), {
    instanceOf: OptionError,
    message: "options.concurrency must be a positive integer, Infinity, an Observable<number | 'auto'> or 'auto', got null",
  });
});

test('options that cannot be read (a getter that throws, a Proxy) are an OptionError saying so, with the cause', (t) => {
  const getter = t.throws(() => schedule$([], { get concurrency(): number { throw new Error('no config yet'); } }), { instanceOf: OptionError, message: 'options could not be read: Error: no config yet' });
  t.is((getter.cause as Error).message, 'no config yet');
  const proxy = new Proxy({}, { ownKeys() { throw new TypeError('revoked'); } });
  t.throws(() => schedule$([], proxy), { instanceOf: OptionError, message: 'options could not be read: TypeError: revoked' });
  // A revoked Proxy as the options themselves: before, Array.isArray's own TypeError.
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  t.throws(() => schedule$([], revoked), {
    instanceOf: OptionError,
    message: "options could not be read: TypeError: Cannot perform 'IsArray' on a proxy that has been revoked",
  });
});

test("an option's value that cannot be looked at (a revoked Proxy, a Proxy whose traps throw) is an OptionError naming it, with the cause", (t) => {
  // Before, the checks after the options were read threw the Proxy's own error.
  const revoked = () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    return proxy;
  };
  const trap = () => {
    throw new Error('trap');
  };
  const throwing = new Proxy({}, { get: trap, ownKeys: trap, getPrototypeOf: trap });
  // Throws on its first and third reads.
  let reads = 0;
  const flaky = (): string[] => {
    reads++;
    if (reads === 1 || reads === 3) throw new Error(`read ${reads}`);
    return ['threw'];
  };
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['concurrency', { concurrency: revoked() }, "TypeError: Cannot perform 'getPrototypeOf' on a proxy that has been revoked"],
    ['signal', { signal: revoked() }, "TypeError: Cannot perform 'getPrototypeOf' on a proxy that has been revoked"],
    ['pool', { pool: revoked() }, "TypeError: Cannot perform 'getPrototypeOf' on a proxy that has been revoked"],
    ['workerEnv', { workerEnv: throwing }, 'Error: trap'],
    ['retries', { retries: throwing }, 'Error: trap'],
    // A field of an option: it was named '(options)'.
    ['retries.on', { retries: { retries: 1, on: revoked() } }, "TypeError: Cannot perform 'IsArray' on a proxy that has been revoked"],
    // Looking for the culprit must not throw either: Object.keys runs a trap inspectable() does not.
    ['retries', { retries: new Proxy({ retries: 1 }, { getOwnPropertyDescriptor: trap }) }, 'Error: trap'],
    ['retries.on', { retries: { retries: 1, get on(): string[] { return flaky(); } } }, 'Error: read 1'],
  ];
  for (const [option, options, why] of cases) {
    const error = t.throws(() => schedule$([], options as never), { instanceOf: OptionError }, option);
    t.is(error.option, option);
    t.is(error.message, `options.${option} could not be read: ${why}`);
    t.true(error.cause instanceof Error);
  }
});

test('each option is read once: a getter runs once', (t) => {
  let reads = 0;
  const options = {
    get settle(): boolean {
      reads++;
      return true;
    },
  };
  t.true(resolveOptions(options).settle);
  t.is(reads, 1);
});

test('defaults are filled in', (t) => {
  const o = resolveOptions(undefined);
  t.is(o.concurrency, 'auto');
  t.false(o.settle);
  t.is(o.maxTasksPerWorker, Infinity);
  t.is(o.killTimeout, 3000);
  t.is(o.workerStartTimeout, 30_000);
  t.is(o.output, 'inherit');
  t.is(o.retries.retries, 0);
  t.true(o.maxConcurrency >= o.minConcurrency);
});

test('valid forms of concurrency are accepted', (t) => {
  t.notThrows(() => resolveOptions({ concurrency: 3 }));
  t.notThrows(() => resolveOptions({ concurrency: Infinity }));
  t.notThrows(() => resolveOptions({ concurrency: of(2) }));
  t.notThrows(() => resolveOptions({ concurrency: 'auto' }));
});

test('a value that is not a task source is a TypeError', (t) => {
  t.throws(() => schedule$('tasks' as never), { instanceOf: TypeError, message: /tasks must be an array, an iterable/ });
  t.throws(() => schedule$(42 as never), { instanceOf: TypeError });
});
