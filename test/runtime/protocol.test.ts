/** The packed (JSON text) form of worker messages: which values may take it, and how text is read back. */
import test from 'ava';
import { jsonExact, pack, unpack, TAG, type DoneMessage } from '../../src/runtime/protocol.js';

test('only values JSON carries exactly may travel as text', (t) => {
  for (const value of ['', 'text', '\ud800 lone surrogate', true, false, null, 0, 1.5, -7, 5e-324, Number.MAX_VALUE]) {
    t.true(jsonExact(value), String(value));
    t.true(Object.is(JSON.parse(JSON.stringify([value]))[0], value), `${String(value)} survives JSON`);
  }
  for (const value of [-0, NaN, Infinity, -Infinity, undefined, 1n, Symbol('s'), {}, [], () => 1, new Date(0)]) {
    t.false(jsonExact(value), String(value));
  }
});

test('a packed message reads back as the message; any other text is left as it was', (t) => {
  const message: DoneMessage = { [TAG]: 'done', results: [1, 0, 'x', 2, -1, 2, 3, null, 0, -1] };
  const text = pack(message);
  t.is(typeof text, 'string');
  t.deepEqual(unpack(text), message);
  // A user's strings, even ones that look like ours but are cut short, stay strings (and are then ignored).
  for (const other of ['hello', `{"${TAG}":"done","results":[1,0`, '{"other":1}', '']) t.is(unpack(other), other);
  const object = { [TAG]: 'done', results: [] };
  t.is(unpack(object), object);
});
