import { PassThrough } from 'node:stream';
import test from 'ava';
import { afterQuiet } from '../../src/runtime/output.js';

const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('quiet comes only once the data stops, and a cancelled wait never calls back', async (t) => {
  const stream = new PassThrough();
  stream.resume();
  let quietAfterWrites = -1;
  let writes = 0;
  afterQuiet([stream, null], 40, 60_000, () => (quietAfterWrites = writes));
  for (; writes < 20; writes++) {
    stream.write('x');
    await tick(10);
  }
  t.is(quietAfterWrites, -1, 'not quiet while data keeps coming');
  // Quiet comes 40 ms after the last write; a stalled test process may see it later, not sooner.
  for (let waited = 0; quietAfterWrites === -1 && waited < 5000; waited += 20) await tick(20);
  t.is(quietAfterWrites, 20);

  let called = false;
  const cancel = afterQuiet([stream], 20, 60_000, () => (called = true));
  cancel();
  await tick(100);
  t.false(called);
  t.is(stream.listenerCount('data'), 0, 'both waits removed their listeners');
});

test('data that keeps coming is given up on after maxMs', async (t) => {
  const stream = new PassThrough();
  stream.resume();
  let quiet = false;
  afterQuiet([stream], 20, 100, () => (quiet = true));
  for (let i = 0; i < 100 && !quiet; i++) {
    stream.write('x');
    await tick(5);
  }
  t.true(quiet);
});
