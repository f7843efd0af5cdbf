/**
 * Child output is never swallowed and never blocks a child: passed through by default; in
 * `output: 'capture'` mode, whole lines on `run.output$`, each with the task that wrote it.
 */
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { WorkerPool, commandTask, processTask, schedule$, taskModule, type OutputLine, type Task, type TaskFailure } from '../../src/index.js';
import { tapOutput } from '../../src/runtime/output.js';
import { outputMark } from '../../src/runtime/protocol.js';
import { LocalRuntime } from '../../src/runtime/local-runtime.js';
import { runtimeOptions } from './runtime-options.js';
import { fixture, runParent, waitGone } from '../helpers.js';

const chaos = taskModule<typeof import('../fixtures/chaos-tasks.js')>(fixture('chaos-tasks.ts'));

test("by default a worker's stdout and stderr pass through to the parent's", async (t) => {
  const { stdout, stderr, code } = await runParent(['print']);
  t.is(code, 0, stderr);
  for (let i = 0; i < 4; i++) {
    t.regex(stdout, new RegExp(`^line of task ${i}$`, 'm'));
    t.regex(stderr, new RegExp(`^err of task ${i}$`, 'm'));
  }
  t.regex(stdout, /^done \[0,1,2,3\]$/m);
});

test('capture: two tasks printing long lines at once never interleave mid-line', async (t) => {
  const width = 20_000;
  const run = schedule$([chaos.printLines('a', 40, width, 700), chaos.printLines('b', 40, width, 700)], { concurrency: 2, output: 'capture' });
  const lines = lastValueFrom(run.output$.pipe(toArray()));
  t.deepEqual(await run.toOrderedArray(), [40, 40]);
  const got = await lines;
  t.true(got.length > 0);
  for (const { line, index, stream } of got) {
    const tag = index === 0 ? 'a' : 'b';
    t.is(stream, 'stdout');
    t.is(line.length, width);
    t.regex(line, new RegExp(`^${tag}:\\d+:${tag}+$`), `a line of task ${index} is mixed: ${line.slice(0, 40)}…`);
  }
  for (const [index, tag] of [[0, 'a'], [1, 'b']] as const) {
    const numbers = got.filter((l) => l.index === index).map((l) => Number(l.line.split(':')[1]));
    t.deepEqual(numbers, numbers.map((_, n) => n), `task ${tag}'s lines, in order`);
  }
});

test('capture: every line is attributed to the task that wrote it, even with tiny tasks pipelined', async (t) => {
  const count = 400;
  const run = schedule$(Array.from({ length: count }, (_, i) => chaos.printIndex(i)), { concurrency: 2, output: 'capture' });
  const lines = lastValueFrom(run.output$.pipe(toArray()));
  await run.toOrderedArray();
  const got = await lines;
  t.true(got.length > count, `only ${got.length} lines`);
  const wrong = got.filter((l) => l.line !== `${l.stream === 'stdout' ? 'line' : 'err'} of task ${l.index}`);
  t.deepEqual(wrong.slice(0, 5), [], `${wrong.length} of ${got.length} lines attributed to the wrong task`);
});

// Lines still in a pipe when the last task's result arrives must reach run.output$ too.
test('capture: no line is lost at the end of a run', async (t) => {
  for (let round = 0; round < 3; round++) {
    const run = schedule$([chaos.printLines('a', 40, 20_000, 700), chaos.printLines('b', 40, 20_000, 700)], { concurrency: 2, output: 'capture' });
    const lines = lastValueFrom(run.output$.pipe(toArray()));
    await run.toOrderedArray();
    t.is((await lines).length, 80);
  }
});

test('capture: multi-byte characters cut between two reads of the pipe come out whole', async (t) => {
  const line = 'é€😀'.repeat(50_000);
  const lines = await captureOnRuntime([chaos.printText(`${line}\n${line}\n`)]);
  // Lines longer than 64 Ki characters come in pieces; put them back together.
  const text = lines.map((l) => l.line).join('');
  t.false(text.includes('\uFFFD'), 'a character was cut');
  t.true(text === line + line, `got ${text.length} characters, want ${2 * line.length}`);
});

test('capture: a command task\'s lines carry its index, and its result still has its output', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', 'echo one; echo two >&2; printf three'])], { output: 'capture' });
  const lines = lastValueFrom(run.output$.pipe(toArray()));
  const [result] = await run.toOrderedArray();
  t.is(result!.stdout, 'one\nthree');
  const got = (await lines).map((l: OutputLine) => [l.index, l.stream, l.line]);
  t.deepEqual(got.filter((l) => l[1] === 'stdout'), [[0, 'stdout', 'one'], [0, 'stdout', 'three']]);
  t.deepEqual(got.filter((l) => l[1] === 'stderr'), [[0, 'stderr', 'two']]);
});

test('ignore: output is read and dropped, the tail of stderr still explains a failure', async (t) => {
  const run = schedule$([commandTask('sh', ['-c', 'echo visible-only-in-the-error >&2; exit 2'])], { output: 'ignore', settle: true });
  const lines = lastValueFrom(run.output$.pipe(toArray()));
  const [outcome] = await run.toOrderedArray();
  t.deepEqual(await lines, []);
  t.like(outcome, { status: 'rejected', reason: { stderrTail: 'visible-only-in-the-error\n' } });
});

/** Runs tasks on a LocalRuntime in capture mode; returns every line once it has shut down. */
async function captureOnRuntime(tasks: Task[]): Promise<OutputLine[]> {
  const runtime = new LocalRuntime(runtimeOptions({ concurrency: 2, output: 'capture' }));
  const lines = lastValueFrom(runtime.output$.pipe(toArray()));
  await Promise.all(
    tasks.map(
      (task, index) =>
        new Promise((resolve, reject) =>
          runtime.start({ task, index, attempt: 1, timeout: undefined }, { fulfilled: resolve, rejected: reject, progress: () => {} }),
        ),
    ),
  );
  await runtime.shutdown(true);
  return lines;
}

test("the runtime's output$ gives every line a task wrote before it completes, even lines still in the pipe at the task's end", async (t) => {
  const runtime = new LocalRuntime(runtimeOptions({ concurrency: 2, output: 'capture' }));
  const lines = lastValueFrom(runtime.output$.pipe(toArray()));
  const width = 20_000;
  const results = await Promise.all(
    (['a', 'b'] as const).map(
      (tag, index) =>
        new Promise((resolve, reject) =>
          runtime.start(
            { task: chaos.printLines(tag, 40, width, 700), index, attempt: 1, timeout: undefined },
            { fulfilled: resolve, rejected: reject, progress: () => {} },
          ),
        ),
    ),
  );
  t.deepEqual(results, [40, 40]);
  await runtime.shutdown(true);
  const got = await lines;
  t.is(got.length, 80);
  t.true(got.every((l) => l.line.length === width && l.line.startsWith(`${l.index === 0 ? 'a' : 'b'}:`)));
});

// ---- the line splitter itself, on streams fed by hand ------------------------------------------

/** A tap on two hand-fed streams in capture mode; returns the streams, the tap and the lines. */
function handTap(marks = true) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const lines: OutputLine[] = [];
  const tap = tapOutput(stdout, stderr, 'capture', 1, () => 99, (line) => lines.push(line), { marks });
  const flushed = () => new Promise((resolve) => setImmediate(resolve));
  return { stdout, tap, lines, flushed };
}

test('capture: a whole line longer than 64 Ki characters comes in pieces of at most 64 Ki, a character never cut in two', async (t) => {
  const { stdout, lines, flushed } = handTap(false);
  stdout.write(`${'x'.repeat(200_000)}\n`);
  stdout.write(`a${'\u{1F600}'.repeat(70_000)}\n`);
  await flushed();
  const xs = lines.filter((l) => l.line.startsWith('x'));
  t.deepEqual(xs.map((l) => l.line.length), [65_536, 65_536, 65_536, 3_392]);
  const emoji = lines.filter((l) => !l.line.startsWith('x'));
  t.true(emoji.every((l) => l.line.length <= 65_536));
  t.is(emoji.map((l) => l.line).join(''), `a${'\u{1F600}'.repeat(70_000)}`);
  for (const { line } of emoji) t.false(/[\uD800-\uDBFF]$|^[\uDC00-\uDFFF]/.test(line), 'no piece ends or starts with half a character');
});

test('capture: a mark ends the line the task before left unfinished, even a mark with the same index', async (t) => {
  const { stdout, lines, flushed } = handTap();
  stdout.write(`${outputMark(0)}unfinished`);
  stdout.write(`${outputMark(0)}next\n`);
  await flushed();
  t.deepEqual(lines.map((l) => [l.index, l.line]), [[0, 'unfinished'], [0, 'next']]);
});

test('capture: release() gives a line left unfinished to the owner of the moment, and forgets the last mark', async (t) => {
  const { stdout, tap, lines, flushed } = handTap();
  stdout.write(`${outputMark(3)}left unfinished`);
  await flushed();
  tap.release();
  t.deepEqual(lines.map((l) => [l.index, l.line]), [[3, 'left unfinished']]);
  stdout.write('unmarked\n');
  await flushed();
  t.deepEqual(lines.at(-1), { index: 99, stream: 'stdout', line: 'unmarked', pid: 1 }, 'a line without a mark belongs to the current index again');
});

test('capture on a pooled worker: a last line without a newline goes to its own run, and never into the next run\'s lines', async (t) => {
  const pool = new WorkerPool();
  t.teardown(() => pool.close());
  const capture = async (text: string) => {
    const run = schedule$([chaos.printText(text)], { pool, concurrency: 1, output: 'capture' });
    const lines = lastValueFrom(run.output$.pipe(toArray()));
    await run.toOrderedArray();
    return (await lines).map((l) => [l.index, l.line]);
  };
  t.deepEqual(await capture('A says hi, no newline'), [[0, 'A says hi, no newline']]);
  t.deepEqual(await capture('B line\n'), [[0, 'B line']]);
  t.deepEqual(await capture('C unfinished'), [[0, 'C unfinished']]);
  t.is(pool.pids().length, 1, 'one worker served all three');
});

test('capture on a pool: a worker whose task left it writing still goes back, so neither the end of its run nor a cancel waits for it to fall silent', async (t) => {
  // A hang guard: a run used to wait for 10 ms of silence, that is, for a minute.
  t.timeout(30_000);
  const pool = new WorkerPool();
  t.teardown(() => pool.close());
  const [chatty] = await schedule$([chaos.keepWriting()], { pool, concurrency: 1, output: 'capture' }).toOrderedArray();
  t.deepEqual(pool.pids(), [chatty], 'the run ended, its worker back in the pool, still writing');

  // Cancelled while one worker hangs in a task and the other writes: that one goes back, the
  // busy one is killed.
  const second = schedule$([chaos.reportPidAndHang(), chaos.keepWriting()], { pool, concurrency: 2, output: 'capture' });
  const subscription = second.subscribe();
  const [busy, writing] = await Promise.all([
    firstValueFrom(second.taskProgress$).then(({ value }) => (value as { pid: number }).pid),
    firstValueFrom(second).then(({ value }) => value as number),
  ]);
  subscription.unsubscribe();
  await second.terminate();
  t.not(busy, writing);
  t.deepEqual(pool.pids(), [writing]);
  t.deepEqual(await waitGone([busy]), [], 'the busy worker is gone');
});

for (const output of ['inherit', 'capture', 'ignore'] as const) {
  test(`a process task whose factory set an encoding on its stderr (to log it as text): its failure still carries the tail (output: ${output})`, async (t) => {
    // Text chunks went into the tail as they came; joining them threw inside the process's 'exit'
    // handler, and ended the parent.
    const task = processTask(() => {
      const child = spawn('sh', ['-c', 'echo something went wrong >&2; exit 3'], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], detached: true });
      child.stderr!.setEncoding('utf8');
      return child;
    });
    const [outcome] = await schedule$([task], { settle: true, output }).toOrderedArray();
    const reason = (outcome as TaskFailure).reason;
    t.is(reason.kind, 'exited');
    t.is(reason.exitCode, 3);
    t.is(reason.stderrTail, 'something went wrong\n');
  });
}
