/** The run's bookkeeping collections, against a Map and an array doing the same operations. */
import test from 'ava';
import { IdTable, RingQueue } from '../src/collections.js';
import { prng } from './helpers.js';

interface Entry {
  readonly id: number;
  readonly value: number;
}

test('IdTable keeps a long-lived id while a million others pass, and its store stays small', (t) => {
  const table = new IdTable<Entry>(4);
  const stuck = { id: 3, value: -1 };
  table.set(stuck);
  const problems: string[] = [];
  // Eight in flight at a time, consecutive ids, the way jobs come and go past one that never ends.
  for (let id = 10; id < 1_000_010; id++) {
    table.set({ id, value: id });
    if (id >= 18 && !table.delete(id - 8)) problems.push(`delete(${id - 8}) found nothing`);
    if (id % 99_991 === 0 && table.get(3) !== stuck) problems.push(`at ${id}: the long-lived entry is lost`);
    if (problems.length > 5) break;
  }
  t.deepEqual(problems, []);
  t.is(table.size, 9);
  t.is(table.get(3), stuck);
  t.is(table.get(1_000_009)?.value, 1_000_009);
  // Grown only as far as its bound allows (see IdTable), not to span the ids in between.
  t.true(table.capacity <= 1024, `capacity ${table.capacity}`);
  t.true(table.delete(3));
  t.is(table.get(3), undefined);
  t.is(table.size, 8);
});

test('IdTable moves an id home once its slot is free, and when it grows', (t) => {
  const table = new IdTable<Entry>(4);
  // Filled up to its bound with ids that share their low bits, the rest overflow.
  const entries = Array.from({ length: 300 }, (_, i) => ({ id: i * 4096, value: i }));
  for (const entry of entries) table.set(entry);
  t.is(table.size, 300);
  for (const entry of entries) t.is(table.get(entry.id), entry);
  // Replacing an overflowed id keeps the count.
  const replacement = { id: 299 * 4096, value: 1 };
  table.set(replacement);
  t.is(table.size, 300);
  t.is(table.get(299 * 4096), replacement);
  for (const entry of entries.slice(0, 299)) t.true(table.delete(entry.id));
  t.false(table.delete(0));
  t.is(table.size, 1);
  t.is(table.get(299 * 4096), replacement);
  table.clear();
  t.is(table.size, 0);
  t.is(table.get(299 * 4096), undefined);
});

for (const seed of [1, 7, 99]) {
  test(`IdTable finds, replaces and deletes like a Map, through growth and wrap-around (seed ${seed})`, (t) => {
    const random = prng(seed);
    const table = new IdTable<Entry>(4);
    const model = new Map<number, Entry>();
    let nextId = 1;
    const problems: string[] = [];
    for (let step = 0; step < 20_000; step++) {
      const roll = random();
      // Ids mostly ascending, like jobs, with some far apart and some colliding in the low bits.
      const id = roll < 0.05 ? Math.floor(random() * 1e9) : roll < 0.1 ? nextId + 1024 * Math.floor(random() * 8) : nextId++;
      if (random() < 0.55) {
        const entry = { id, value: step };
        table.set(entry);
        model.set(id, entry);
      } else {
        const known = [...model.keys()];
        const victim = known.length && random() < 0.8 ? known[Math.floor(random() * known.length)]! : id;
        if (table.delete(victim) !== model.delete(victim)) problems.push(`step ${step}: delete(${victim}) disagreed`);
      }
      if (table.size !== model.size) problems.push(`step ${step}: size ${table.size}, not ${model.size}`);
      if (step % 97 === 0) {
        for (const [key, entry] of model) if (table.get(key) !== entry) problems.push(`step ${step}: get(${key}) lost its entry`);
        if (table.get(-5) !== undefined || table.get(NaN) !== undefined) problems.push(`step ${step}: found an id never added`);
      }
      if (problems.length > 5) break;
    }
    t.deepEqual(problems, []);
    table.clear();
    t.is(table.size, 0);
    t.is(table.get(nextId - 1), undefined);
  });

  test(`RingQueue pushes, shifts, removes and indexes like an array (seed ${seed})`, (t) => {
    const random = prng(seed);
    const queue = new RingQueue<{ n: number }>();
    const model: Array<{ n: number }> = [];
    const problems: string[] = [];
    for (let step = 0; step < 20_000 && problems.length < 5; step++) {
      const roll = random();
      if (roll < 0.5 || model.length === 0) {
        const item = { n: step };
        queue.push(item);
        model.push(item);
      } else if (roll < 0.8) {
        if (queue.shift() !== model.shift()) problems.push(`step ${step}: shift disagreed`);
      } else if (roll < 0.95) {
        const at = Math.floor(random() * model.length);
        const item = model[at]!;
        t.is(queue.indexOf(item), at);
        queue.removeAt(at);
        model.splice(at, 1);
      } else {
        // Half the time the head, which remove() takes without a search (a lane's results come in its order).
        const item = model[random() < 0.5 ? 0 : Math.floor(random() * model.length)]!;
        t.true(queue.remove(item));
        model.splice(model.indexOf(item), 1);
        t.false(queue.remove(item));
      }
      if (queue.length !== model.length) problems.push(`step ${step}: length ${queue.length}, not ${model.length}`);
      if (step % 89 === 0 && queue.toArray().some((item, i) => item !== model[i])) problems.push(`step ${step}: contents differ`);
      if (queue.at(model.length) !== undefined) problems.push(`step ${step}: an item past the end`);
    }
    t.deepEqual(problems, []);
    t.deepEqual(queue.takeAll(), model);
    t.is(queue.length, 0);
    t.is(queue.shift(), undefined);
  });
}
