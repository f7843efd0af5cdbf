/**
 * A command's output: its result keeps stdout and stderr, `output: 'capture'` gives its lines
 * (with its index), and a failure carries the last 8 KiB of its stderr.
 */
import { constants } from 'node:buffer';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import test from 'ava';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { commandTask, liveChildPids, processTask, schedule$, type CommandResult, type TaskError, type CommandTask, type OutputLine } from '../../src/index.js';

/** Runs commands in capture mode; returns their results and every line, as [index, stream, line]. */
async function capture(scripts: string[]) {
  const run = schedule$(scripts.map((script) => commandTask('sh', ['-c', script])), { output: 'capture', concurrency: 2 });
  const lines = lastValueFrom(run.output$.pipe(toArray()));
  const results = await run.toOrderedArray();
  return { results, lines: (await lines).map((l: OutputLine) => [l.index, l.stream, l.line] as const), raw: await lines };
}

test('capture: CRLF ends a line like LF; a lone CR stays in the line; the unterminated last line comes too', async (t) => {
  const { results, lines } = await capture([String.raw`printf 'one\r\ntwo\rstill two\nthree'`]);
  t.deepEqual(lines, [
    [0, 'stdout', 'one'],
    [0, 'stdout', 'two\rstill two'],
    [0, 'stdout', 'three'],
  ]);
  t.is(results[0]!.stdout, 'one\r\ntwo\rstill two\nthree', 'the result has the bytes as written');
});

test('capture: two commands at once, each line carries the index and pid of the command that wrote it', async (t) => {
  const script = (name: string) => `for i in 1 2 3 4 5; do echo ${name}-$i; echo ${name}-err-$i >&2; sleep 0.01; done`;
  const { lines, raw } = await capture([script('a'), script('b')]);
  for (const [index, name] of [[0, 'a'], [1, 'b']] as const) {
    const own = lines.filter((l) => l[0] === index);
    t.deepEqual(own.filter((l) => l[1] === 'stdout').map((l) => l[2]), [1, 2, 3, 4, 5].map((i) => `${name}-${i}`));
    t.deepEqual(own.filter((l) => l[1] === 'stderr').map((l) => l[2]), [1, 2, 3, 4, 5].map((i) => `${name}-err-${i}`));
    const pids = new Set(raw.filter((l) => l.index === index).map((l) => l.pid));
    t.is(pids.size, 1);
    t.true([...pids][0]! > 0);
  }
});

test("capture: a command's output that looks like the library's output mark is plain text", async (t) => {
  const { results, lines } = await capture([String.raw`printf '\033]aps;7\007hello\n'`]);
  t.deepEqual(lines, [[0, 'stdout', '\u001b]aps;7\u0007hello']]);
  t.is(results[0]!.stdout, '\u001b]aps;7\u0007hello\n');
});

test('a failed command carries the last 8 KiB of its stderr, whatever it wrote before', async (t) => {
  // 20,000 bytes, then a last line: more than the tail keeps.
  const script = String.raw`head -c 20000 /dev/zero | tr '\0' x >&2; echo ' the end' >&2; exit 3`;
  const [outcome] = await schedule$([commandTask('sh', ['-c', script])], { output: 'ignore', settle: true }).toOrderedArray();
  t.is(outcome!.status, 'rejected');
  const tail = (outcome as { reason: { stderrTail: string; exitCode: number } }).reason;
  t.is(tail.exitCode, 3);
  t.is(tail.stderrTail.length, 8 * 1024);
  t.true(tail.stderrTail.endsWith('x the end\n'));
  t.true(/^x+ the end\n$/.test(tail.stderrTail));
});

test('a command with reject: false resolves with its whole stderr, and its exit code', async (t) => {
  const script = String.raw`head -c 20000 /dev/zero | tr '\0' y >&2; exit 4`;
  const [result] = await schedule$([commandTask('sh', ['-c', script], { reject: false })], { output: 'ignore' }).toOrderedArray();
  t.is(result!.exitCode, 4);
  t.is(result!.stderr, 'y'.repeat(20000));
  t.false(result!.truncated);
});

test("maxBuffer: each stream's result stops at maxBuffer bytes and is marked truncated; the tail still has stderr's end", async (t) => {
  const script = String.raw`head -c 5000 /dev/zero | tr '\0' o; head -c 5000 /dev/zero | tr '\0' e >&2; echo last >&2; exit 1`;
  const [outcome] = await schedule$([commandTask('sh', ['-c', script], { maxBuffer: 1000, encoding: 'buffer' })], { output: 'ignore', settle: true }).toOrderedArray();
  const reason = (outcome as { reason: { stderrTail: string } }).reason;
  t.true(reason.stderrTail.endsWith('eeelast\n'));
  const [result] = await schedule$([commandTask('sh', ['-c', script], { maxBuffer: 1000, encoding: 'buffer', reject: false })], { output: 'ignore' }).toOrderedArray();
  t.true(result!.truncated);
  t.true(Buffer.isBuffer(result!.stdout));
  t.deepEqual(result!.stdout, Buffer.alloc(1000, 'o'));
  t.deepEqual(result!.stderr, Buffer.alloc(1000, 'e'));
});

test('capture: a multi-byte character cut between two writes comes out whole', async (t) => {
  const { lines } = await capture([String.raw`printf 'caf\303'; sleep 0.2; printf '\251\n'`]);
  t.deepEqual(lines, [[0, 'stdout', 'café']]);
});

test('capture: the unterminated last line comes even when a background child keeps the pipes open', async (t) => {
  const { results, lines } = await capture(['printf last-words; sleep 30 &']);
  t.deepEqual(lines, [[0, 'stdout', 'last-words']]);
  t.is(results[0]!.stdout, 'last-words');
});

test('the stderr tail of a command that wrote thousands of small pieces is its last 8 KiB', async (t) => {
  const script = 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo line-$i >&2; done; exit 1';
  const [outcome] = await schedule$([commandTask('sh', ['-c', script])], { output: 'ignore', settle: true }).toOrderedArray();
  const { stderrTail } = (outcome as { reason: { stderrTail: string } }).reason;
  t.is(stderrTail.length, 8 * 1024);
  t.true(stderrTail.endsWith('\nline-2999\nline-3000\n'));
});

test('terminate() resolves only once a terminated command is settled: its pid is no longer tracked', async (t) => {
  // The shell's grandchild leaves its process group (setsid) but keeps the shell's stdout open, so
  // the command settles only when the library stops waiting for its pipes, after the shell died.
  const run = schedule$([commandTask('sh', ['-c', 'setsid sleep 5 & echo $!; exec sleep 60'])], { output: 'capture', killTimeout: 1000 });
  t.teardown(() => run.terminate()); // whatever fails below, the shell goes
  const grandchild = firstValueFrom(run.output$);
  run.subscribe({ error: () => {} });
  const escaped = Number((await grandchild).line);
  t.teardown(() => {
    try {
      process.kill(escaped, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const [shell] = run.pids();
  t.true(liveChildPids().includes(shell!));
  await run.terminate();
  t.false(liveChildPids().includes(shell!), 'no longer tracked once terminate() has resolved');
  t.deepEqual(run.pids(), []);
});

// Serial: the other tests here spawn hundreds of processes, and each spawn holds this event loop;
// an exit seen seconds late would be a timeout indeed.
test.serial('a command that exited 0 while a background process it left holds its pipes is fulfilled, not timed out, and not run again', async (t) => {
  // The background writer ignores SIGTERM, so the pipes stay open until the run stops reading
  // them, 5 s after the exit: past the timeout, which the shell's own exit is well within.
  const script = "(trap '' TERM; while :; do echo x; sleep 0.05; done) & echo done";
  const run = schedule$([commandTask('sh', ['-c', script])], { timeout: 3000, killTimeout: 8000, retries: 1, concurrency: 1 });
  const completions = lastValueFrom(run.pipe(toArray()));
  const [result] = await run.toOrderedArray();
  t.is(result!.exitCode, 0);
  t.true(result!.stdout.includes('done'));
  const { stats } = (await completions)[0]!;
  t.is(stats.attempt, 1);
  t.throws(() => process.kill(-stats.pid!, 0), undefined, 'its process group, the background writer included, is gone');
});

test('a command or a process task that timed out carries what it wrote to stderr', async (t) => {
  const program = "process.stderr.write('waiting for lock\\n'); setInterval(() => {}, 1000)";
  const run = schedule$(
    [
      commandTask('sh', ['-c', 'echo waiting for lock >&2; sleep 30']),
      processTask(() => spawn(process.execPath, ['-e', program], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], detached: true })),
    ],
    { timeout: 2000, settle: true, concurrency: 2, output: 'ignore' },
  );
  const outcomes = await run.toOrderedArray();
  t.deepEqual(
    outcomes.map((o) => (o.status === 'rejected' ? [o.reason.kind, o.reason.stderrTail] : [o.status])),
    [
      ['timeout', 'waiting for lock\n'],
      ['timeout', 'waiting for lock\n'],
    ],
  );
  for (const outcome of outcomes) {
    const pid = outcome.status === 'rejected' ? outcome.reason.pid : undefined;
    t.true(pid !== undefined);
    t.throws(() => process.kill(-pid!, 0), undefined, 'its process group is gone');
  }
});

test('commands that cannot start hold no pipe and no object past their failure', async (t) => {
  const fds = () => readdirSync('/proc/self/fd').length;
  const before = fds();
  let most = before;
  function* missing() {
    for (let i = 0; i < 300; i++) {
      most = Math.max(most, fds());
      yield commandTask('no-such-program-here', []);
    }
  }
  const outcomes = await schedule$(missing(), { concurrency: 4, settle: true }).toOrderedArray();
  t.true(outcomes.every((o) => o.status === 'rejected' && o.reason.kind === 'invalid'));
  // Each failed spawn used to keep its two pipes open until a garbage collection: 600 here.
  t.true(most - before < 60, `${most - before} more file descriptors open during the run`);
});

test('maxBuffer: a character the cut splits is left out of a text result, not turned into U+FFFD', async (t) => {
  // 'é' is two bytes: a maxBuffer of 3 cuts the second 'é' in half.
  const [result] = await schedule$([commandTask('printf', ['éé'], { maxBuffer: 3 })], { output: 'ignore' }).toOrderedArray();
  t.true(result!.truncated);
  t.is(result!.stdout, 'é');
  const [whole] = await schedule$([commandTask('printf', ['éé'], { maxBuffer: 4 })], { output: 'ignore' }).toOrderedArray();
  t.is(whole!.stdout, 'éé');
});

test('output longer than a string can hold fails its command as invalid, saying what to pass; the parent goes on', async (t) => {
  // Before, decoding it threw inside the child's 'close' handler: an uncaught error that ended
  // the parent, even in settle mode, and no outcome came.
  const bytes = constants.MAX_STRING_LENGTH + 1;
  const tasks = [
    commandTask('head', ['-c', String(bytes), '/dev/zero'], { maxBuffer: Infinity }),
    commandTask('echo', ['after']),
  ];
  const outcomes = await schedule$(tasks, { output: 'ignore', settle: true, concurrency: 1 }).toOrderedArray();
  t.is(outcomes[0]!.status, 'rejected');
  const reason = (outcomes[0] as { reason: TaskError }).reason;
  t.is(reason.kind, 'invalid');
  t.is(reason.exitCode, 0);
  t.is(
    reason.message,
    `task #0 (head -c ${bytes} /dev/zero) is invalid: its stdout (${bytes} bytes, 512.0 MiB) is longer than a string can hold (${constants.MAX_STRING_LENGTH} bytes, 512.0 MiB): ` +
      `pass encoding: 'buffer', or a maxBuffer of at most ${constants.MAX_STRING_LENGTH} to keep only the start of it`,
  );
  t.like(outcomes[1], { status: 'fulfilled', value: { stdout: 'after\n' } });
  // As a Buffer the same output is a result.
  const [result] = await schedule$([commandTask('head', ['-c', String(bytes), '/dev/zero'], { maxBuffer: Infinity, encoding: 'buffer' })], {
    output: 'ignore',
  }).toOrderedArray();
  t.is(result!.stdout.length, bytes);
  t.false(result!.truncated);
});

test("commandTask's result type follows encoding: a string, a Buffer, or either when the encoding is only known at run time", async (t) => {
  const encoding = (process.env.APS_NO_SUCH_VARIABLE ? 'utf8' : 'buffer') as 'utf8' | 'buffer';
  const text: CommandTask<CommandResult<string>> = commandTask('echo', ['a']);
  const bytes: CommandTask<CommandResult<Buffer>> = commandTask('echo', undefined, { encoding: 'buffer' });
  const either = commandTask('echo', ['c'], { encoding });
  // @ts-expect-error: with an encoding known only at run time, stdout may be a Buffer
  const onlyText: CommandTask<CommandResult<string>> = either;
  const [a] = await schedule$([text]).toOrderedArray();
  const [b] = await schedule$([bytes]).toOrderedArray();
  const [c] = await schedule$([onlyText]).toOrderedArray();
  t.is(a!.stdout, 'a\n');
  t.true(Buffer.isBuffer(b!.stdout) && b!.stdout.toString() === '\n');
  t.true(Buffer.isBuffer(c!.stdout), 'the run-time encoding was buffer');
});
