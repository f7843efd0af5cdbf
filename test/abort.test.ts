/** whenAborted: one listener per signal, however many waits. */
import { execFile } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';
import { whenAborted } from '../src/abort.js';

test('every wait on a signal is called once on abort, through one listener; a wait that ended is not', (t) => {
  const controller = new AbortController();
  const calls: string[] = [];
  const stopA = whenAborted(controller.signal, () => calls.push('a'));
  whenAborted(controller.signal, () => calls.push('b'));
  const stopC = whenAborted(controller.signal, () => calls.push('c'));
  t.is(getEventListeners(controller.signal, 'abort').length, 1);
  stopC();
  controller.abort();
  t.deepEqual(calls, ['a', 'b']);
  stopA(); // after the abort: nothing to do
  t.is(getEventListeners(controller.signal, 'abort').length, 0);
});

test('the listener goes once the last wait ends', (t) => {
  const controller = new AbortController();
  const stops = [whenAborted(controller.signal, () => {}), whenAborted(controller.signal, () => {})];
  stops[0]!();
  t.is(getEventListeners(controller.signal, 'abort').length, 1);
  stops[1]!();
  t.is(getEventListeners(controller.signal, 'abort').length, 0);
});

test('a wait whose callback throws does not keep the others from their abort; its error is thrown as a listener error would be', async (t) => {
  const abort = fileURLToPath(new URL('../src/abort.ts', import.meta.url));
  const program = `
    const { whenAborted } = await import(${JSON.stringify(abort)});
    const controller = new AbortController();
    whenAborted(controller.signal, () => { throw new Error('first wait failed'); });
    whenAborted(controller.signal, () => console.log('second wait called'));
    controller.abort();
  `;
  const failed = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program]).then(
    () => undefined,
    (error: { code: number; stdout: string; stderr: string }) => error,
  );
  t.is(failed?.code, 1, 'the error is uncaught, as a throwing listener would be');
  t.regex(failed?.stdout ?? '', /second wait called/);
  t.regex(failed?.stderr ?? '', /first wait failed/);
});
