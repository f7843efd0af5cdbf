/**
 * A task printing 100 MB neither deadlocks nor blows up the parent's memory, whatever the output
 * mode. Serial, so that the parent's RSS measures one flood at a time.
 */
import test from 'ava';
import { commandTask, schedule$, taskModule } from '../../src/index.js';
import { LocalRuntime } from '../../src/runtime/local-runtime.js';
import { runtimeOptions } from './runtime-options.js';
import type { OutputMode } from '../../src/options.js';
import { fixture } from '../helpers.js';

const chaos = taskModule<typeof import('../fixtures/chaos-tasks.js')>(fixture('chaos-tasks.ts'));
const MB = 1024 * 1024;
const LIMIT = 200 * MB;

/** Samples this process's RSS while `work` runs; returns its result and the peak growth. */
async function rssGrowth<T>(work: () => Promise<T>, log?: (message: string) => void): Promise<{ result: T; growth: number }> {
  global.gc?.();
  const base = process.memoryUsage.rss();
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 10);
  try {
    const result = await work();
    peak = Math.max(peak, process.memoryUsage.rss());
    log?.(`parent RSS grew by ${Math.round((peak - base) / MB)} MB`);
    return { result, growth: peak - base };
  } finally {
    clearInterval(timer);
  }
}

function floodOnRuntime(output: OutputMode, stream: 'stdout' | 'stderr') {
  const runtime = new LocalRuntime(runtimeOptions({ output }));
  let lines = 0;
  let misattributed = 0;
  let longest = 0;
  runtime.output$.subscribe((l) => {
    lines++;
    if (l.index !== 0) misattributed++;
    longest = Math.max(longest, l.line.length);
  });
  return {
    lines: () => ({ lines, misattributed, longest }),
    run: () =>
      new Promise<number>((resolve, reject) =>
        runtime.start(
          { task: chaos.flood(100, 99, stream), index: 0, attempt: 1, timeout: undefined },
          { fulfilled: (v) => resolve(v as number), rejected: reject, progress: () => {} },
        ),
      ).finally(() => runtime.shutdown(true)),
  };
}

test.serial('capture: 100 MB on stdout arrive as lines, counted by a subscriber, in bounded memory', async (t) => {
  const flood = floodOnRuntime('capture', 'stdout');
  const { result: written, growth } = await rssGrowth(flood.run, t.log);
  t.is(written, Math.floor((100 * MB) / 100));
  t.deepEqual(flood.lines(), { lines: written, misattributed: 0, longest: 99 });
  t.true(growth < LIMIT, `the parent grew by ${Math.round(growth / MB)} MB`);
});

test.serial('capture: 100 MB on stderr too', async (t) => {
  const flood = floodOnRuntime('capture', 'stderr');
  const { result: written, growth } = await rssGrowth(flood.run, t.log);
  t.is(flood.lines().lines, written);
  t.true(growth < LIMIT, `the parent grew by ${Math.round(growth / MB)} MB`);
});

test.serial('ignore: 100 MB are read and dropped, in bounded memory', async (t) => {
  const flood = floodOnRuntime('ignore', 'stdout');
  const { result: written, growth } = await rssGrowth(flood.run, t.log);
  t.true(written > 0);
  t.is(flood.lines().lines, 0);
  t.true(growth < LIMIT, `the parent grew by ${Math.round(growth / MB)} MB`);
});

test.serial('the same through schedule$, with a line-counting subscriber on output$', async (t) => {
  const run = schedule$([chaos.flood(100)], { output: 'capture' });
  let lines = 0;
  run.output$.subscribe(() => lines++);
  const { result, growth } = await rssGrowth(() => run.toOrderedArray(), t.log);
  t.is(result[0], Math.floor((100 * MB) / 100));
  t.true(lines > 0);
  t.true(growth < LIMIT, `the parent grew by ${Math.round(growth / MB)} MB`);
});

// A command's result keeps up to maxBuffer of each stream (64 MiB by default, about twice that
// in memory for a moment while the result string is built): the tests set it lower.
test.serial('a command printing 100 MB: kept up to maxBuffer, marked truncated, never blocked', async (t) => {
  const script = 'yes "$(printf "%099d" 0)" | head -c 104857600';
  for (const [output, maxBuffer] of [['ignore', 8 * MB], ['capture', 1 * MB]] as const) {
    const run = schedule$([commandTask('sh', ['-c', script], { maxBuffer })], { output });
    let lines = 0;
    run.output$.subscribe(() => lines++);
    const { result, growth } = await rssGrowth(() => run.toOrderedArray(), t.log);
    const [r] = result;
    t.true(r!.truncated, output);
    t.is(r!.stdout.length, maxBuffer, output);
    if (output === 'capture') t.true(lines > 0);
    t.true(growth < LIMIT, `${output}: the parent grew by ${Math.round(growth / MB)} MB`);
  }
});
