import test, { type ExecutionContext } from 'ava';
import { Subject, from, lastValueFrom, of, take, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { IndexReorderer, reorderByIndex } from '../../src/operators/reorder.js';

const virtualTime = (t: ExecutionContext): TestScheduler =>
  new TestScheduler((actual, expected) => t.deepEqual(actual, expected));

/** mulberry32: a tiny seeded PRNG, so a failing shuffle can be replayed from its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled(count: number, random: () => number): number[] {
  const items = Array.from({ length: count }, (_, i) => i);
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

for (const seed of [1, 2, 3, 42, 2024, 0xdeadbeef]) {
  test(`emits 1,000 shuffled indices in order, each as early as possible (seed ${seed})`, (t) => {
    const arrivals = shuffled(1000, mulberry32(seed));
    t.notDeepEqual(arrivals, [...arrivals].sort((a, b) => a - b), 'the shuffle did shuffle');

    const input = new Subject<number>();
    const emitted: number[] = [];
    let completed = false;
    input.pipe(reorderByIndex((i) => i)).subscribe({
      next: (i) => emitted.push(i),
      complete: () => (completed = true),
    });

    const arrived = new Set<number>();
    let prefix = 0; // length of the contiguous run 0..prefix-1 that has arrived
    for (const index of arrivals) {
      input.next(index);
      arrived.add(index);
      while (arrived.has(prefix)) prefix++;
      // As early as possible: after each arrival, exactly the contiguous prefix is out.
      if (emitted.length !== prefix) {
        t.fail(`after index ${index} arrived, ${emitted.length} items were out instead of ${prefix}`);
        return;
      }
    }
    input.complete();
    t.deepEqual(emitted, Array.from({ length: 1000 }, (_, i) => i));
    t.true(completed);
  });
}

test('emits a contiguous run in the frame its missing head arrives (marbles)', (t) => {
  virtualTime(t).run(({ cold, expectObservable }) => {
    const values = { a: 0, b: 1, c: 2, d: 3 };
    const source = cold('-c-a-d-(b|)', values);
    expectObservable(source.pipe(reorderByIndex((i) => i))).toBe('---a---(bcd|)', values);
  });
});

test('works on result objects and honours firstIndex', async (t) => {
  const results = [
    { index: 11, value: 'b' },
    { index: 10, value: 'a' },
    { index: 12, value: 'c' },
  ];
  const ordered = await lastValueFrom(from(results).pipe(reorderByIndex((r) => r.index, 10), toArray()));
  t.deepEqual(
    ordered.map((r) => r.value),
    ['a', 'b', 'c'],
  );
});

test('a gap at completion errors, naming the missing index', async (t) => {
  const error = await t.throwsAsync(lastValueFrom(of(0, 3, 2, 5).pipe(reorderByIndex((i) => i))));
  t.is(
    error?.message,
    'reorderByIndex: source completed without index 1; 3 later item(s) wait for it, the first being index 2',
  );
});

test('the values before a gap are still emitted before the error', async (t) => {
  const seen: number[] = [];
  let failure: unknown;
  of(1, 0, 3)
    .pipe(reorderByIndex((i) => i))
    .subscribe({ next: (i) => seen.push(i), error: (err) => (failure = err) });
  t.deepEqual(seen, [0, 1]);
  t.regex((failure as Error).message, /without index 2/);
});

test('a duplicate of an emitted index errors at once', (t) => {
  virtualTime(t).run(({ cold, expectObservable }) => {
    const source = cold('a-b-b-c|', { a: 0, b: 1, c: 2 });
    expectObservable(source.pipe(reorderByIndex((i) => i))).toBe(
      'a-b-#',
      { a: 0, b: 1 },
      new Error('reorderByIndex: index 1 arrived twice'),
    );
  });
});

test('a duplicate of a buffered index errors at once', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const source = cold('c-c-a|', { a: 0, c: 2 });
    expectObservable(source.pipe(reorderByIndex((i) => i))).toBe(
      '--#',
      undefined,
      new Error('reorderByIndex: index 2 arrived twice'),
    );
    expectSubscriptions(source.subscriptions).toBe('^-!');
  });
});

test('an index below firstIndex or not an integer errors', async (t) => {
  await t.throwsAsync(lastValueFrom(of(4).pipe(reorderByIndex((i) => i, 5))), {
    instanceOf: RangeError,
    message: 'reorderByIndex: index 4 is below the first index 5',
  });
  await t.throwsAsync(lastValueFrom(of(0.5).pipe(reorderByIndex((i) => i))), {
    instanceOf: RangeError,
    message: 'reorderByIndex: index must be an integer, got 0.5',
  });
  t.throws(() => reorderByIndex((i: number) => i, 1.5), { instanceOf: RangeError });
});

test('a throwing getIndex errors the output', async (t) => {
  await t.throwsAsync(
    lastValueFrom(
      of(1).pipe(
        reorderByIndex(() => {
          throw new Error('no index here');
        }),
      ),
    ),
    { message: 'no index here' },
  );
});

test('source errors pass through', async (t) => {
  const source = new Subject<number>();
  const done = lastValueFrom(source.pipe(reorderByIndex((i) => i), toArray()));
  source.next(1);
  source.error(new Error('upstream failed'));
  await t.throwsAsync(done, { message: 'upstream failed' });
});

test('unsubscribing releases the source and drops what was buffered', (t) => {
  const input = new Subject<number>();
  const seen: number[] = [];
  const subscription = input.pipe(reorderByIndex((i) => i)).subscribe((i) => seen.push(i));
  input.next(2);
  input.next(1);
  subscription.unsubscribe();
  t.false(input.observed);
  input.next(0);
  t.deepEqual(seen, []);
});

test('the buffer gives every item in order whatever the arrival order, near or far ahead', (t) => {
  const random = mulberry32(5);
  for (const [count, spread] of [
    [5_000, 3],
    [5_000, 300],
    [200_000, 150_000],
  ] as const) {
    // Each index arrives up to `spread` positions away from its place.
    const order = Array.from({ length: count }, (_, i) => ({ i, key: i + random() * spread }))
      .sort((a, b) => a.key - b.key)
      .map((x) => x.i);
    const out: number[] = [];
    const reorderer = new IndexReorderer<number>(0, { emit: (x) => out.push(x), stopped: () => false });
    for (const index of order) t.is(reorderer.push(index, index * 10), undefined);
    t.is(reorderer.end(), undefined);
    t.is(out.length, count);
    t.true(out.every((x, i) => x === i * 10), `spread ${spread}: out of order`);
  }
});

test('the buffer finds a repeated waiting index, near or far, and names the first waiting one at a gap', (t) => {
  const reorderer = new IndexReorderer<string>(0, { emit: () => {}, stopped: () => false });
  t.is(reorderer.push(3, 'near'), undefined);
  t.is(reorderer.push(100_000, 'far'), undefined);
  t.regex(reorderer.push(3, 'again')!.message, /index 3 arrived twice/);
  t.regex(reorderer.push(100_000, 'again')!.message, /index 100000 arrived twice/);
  t.is(reorderer.end()!.message, 'reorderByIndex: source completed without index 0; 2 later item(s) wait for it, the first being index 3');
  const farOnly = new IndexReorderer<string>(0, { emit: () => {}, stopped: () => false });
  farOnly.push(70_000, 'far');
  t.regex(farOnly.end()!.message, /the first being index 70000/);
  // Once the order has come within reach of the far item, its repeat is still found.
  for (let i = 0; i < 10_000; i++) t.is(farOnly.push(i, 'near'), undefined);
  t.regex(farOnly.push(70_000, 'again')!.message, /index 70000 arrived twice/);
  t.regex(farOnly.end()!.message, /without index 10000; 1 later item\(s\) wait for it, the first being index 70000/);
});

test('undefined is an item like any other while it waits', (t) => {
  const out: unknown[] = [];
  const reorderer = new IndexReorderer<undefined | number>(0, { emit: (x) => out.push(x), stopped: () => false });
  reorderer.push(1, undefined);
  reorderer.push(0, 0);
  t.deepEqual(out, [0, undefined]);
});
