/** The packed (JSON text) form of worker messages: which values may take it, and how text is read back. */
import test from 'ava';
import { serialize } from 'node:v8';
import { jsonExact, pack, roughSize, unpack, TAG, type DoneMessage } from '../../src/runtime/protocol.js';

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

test('roughSize weighs arguments within a factor of two of their serialized size', (t) => {
  const mb = 2 ** 20;
  const cases: unknown[][] = [
    [Buffer.alloc(mb)],
    [new Float64Array(mb / 8), new ArrayBuffer(mb)],
    ['x'.repeat(mb)],
    [Array.from({ length: mb / 8 }, (_, i) => i + 0.5)],
    [{ id: 7, payload: { data: new Uint8Array(mb) } }],
    [new Map(Array.from({ length: 20_000 }, (_, i) => [`key ${i}`, 'v'.repeat(40)]))],
    [new Set(Array.from({ length: 50_000 }, (_, i) => `item ${i} `.repeat(2)))],
    [Array.from({ length: 10_000 }, (_, i) => ({ name: `row ${i}`, values: [i, i + 1, i + 2] }))],
    [{ a: { b: { c: { d: { e: Buffer.alloc(mb) } } } } }],
    [[1, 2, 3, 4, 5, 6, Buffer.alloc(mb)]],
    [Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`key ${i}`, 'v'.repeat(40)]))],
  ];
  const weigh = (args: unknown[]) => args.reduce<number>((sum, arg) => sum + roughSize(arg), 0);
  for (const args of cases) {
    const actual = serialize(args).byteLength;
    const rough = weigh(args);
    t.true(rough >= actual / 2 && rough <= actual * 2, `${rough} for ${actual} serialized bytes: ${String(args[0]?.constructor?.name)}`);
  }
  // Small arguments weigh little: tiny tasks pipeline as deep as they can.
  t.true(weigh([1, 'two', true, null, undefined]) < 100);
  t.true(roughSize({ a: 1, b: [2, 3] }) < 200);
  t.is(roughSize([]), 8);
});
