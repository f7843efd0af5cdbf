import test, { type ExecutionContext } from 'ava';
import {
  BehaviorSubject,
  NEVER,
  Observable,
  Subject,
  lastValueFrom,
  map,
  of,
  take,
  toArray,
  type ObservableInput,
} from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import {
  START_DIRECT,
  mergeMapWithLimit,
  mergeWithLimit,
  type DirectInner,
  type DirectSubscription,
  type InnerSink,
} from '../../src/operators/merge-map-with-limit.js';
import { reorderByIndex } from '../../src/operators/reorder.js';

const virtualTime = (t: ExecutionContext): TestScheduler =>
  new TestScheduler((actual, expected) => t.deepEqual(actual, expected));

/** `fixed`: the limit was a number, for which 0 is not allowed (it would never start anything). */
const limitError = (got: string, fixed = false): RangeError =>
  new RangeError(`concurrency limit must be a positive integer${fixed ? '' : ', 0 (paused)'} or Infinity, got ${got}`);

/** A generator that records how many items were taken from it and whether it was released. */
function countingSource(count: number) {
  const stats = { pulled: 0, released: false };
  function* generate(): Generator<number> {
    try {
      for (let i = 0; i < count; i++) {
        stats.pulled++;
        yield i;
      }
    } finally {
      stats.released = true;
    }
  }
  return { stats, items: generate() };
}

// ---------------------------------------------------------------------------------------
// The limit following limit$ (virtual time)

test('raising the limit mid-run starts waiting inners at once', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('----a|'), b: cold('----b|'), c: cold('-----c|'), d: cold('----d|') };
    const source = cold<keyof typeof inners>('(abcd|)');
    const limit$ = cold('1-3', { 1: 1, 3: 3 });

    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$))).toBe('----a-bc-d|');
    expectSubscriptions(inners.a.subscriptions).toBe('^----!');
    // b and c start in the very frame the limit goes up to 3.
    expectSubscriptions(inners.b.subscriptions).toBe('--^----!');
    expectSubscriptions(inners.c.subscriptions).toBe('--^-----!');
    // d waits for a free slot (a ends at frame 5).
    expectSubscriptions(inners.d.subscriptions).toBe('-----^----!');
    expectSubscriptions(limit$.subscriptions).toBe('^---------!');
  });
});

test('lowering the limit mid-run keeps running inners and delays new starts', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = {
      a: cold('----a|'),
      b: cold('----b|'),
      c: cold('----c|'),
      d: cold('----d|'),
      e: cold('----e|'),
    };
    const source = cold<keyof typeof inners>('(abcde|)');
    const limit$ = cold('3-1', { 1: 1, 3: 3 });

    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$))).toBe(
      '----(abc)d----e|',
    );
    // The drop to 1 at frame 2 does not unsubscribe anything: all three run to their end.
    expectSubscriptions(inners.a.subscriptions).toBe('^----!');
    expectSubscriptions(inners.b.subscriptions).toBe('^----!');
    expectSubscriptions(inners.c.subscriptions).toBe('^----!');
    // After that only one runs at a time.
    expectSubscriptions(inners.d.subscriptions).toBe('-----^----!');
    expectSubscriptions(inners.e.subscriptions).toBe('----------^----!');
  });
});

test('a limit$ that completes keeps its last value', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('--a|'), b: cold('---b|'), c: cold('--c|') };
    const source = cold<keyof typeof inners>('(abc|)');
    const limit$ = cold('(2|)', { 2: 2 });

    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$))).toBe('--ab-c|');
    expectSubscriptions(limit$.subscriptions).toBe('(^!)');
    expectSubscriptions(inners.a.subscriptions).toBe('^--!');
    expectSubscriptions(inners.b.subscriptions).toBe('^---!');
    // Still limited to 2 after limit$ completed: c starts when a frees its slot.
    expectSubscriptions(inners.c.subscriptions).toBe('---^--!');
  });
});

test('a limit$ that completes without a value errors instead of hanging', (t) => {
  virtualTime(t).run(({ cold, expectObservable }) => {
    const source = cold('(a|)');
    const limit$ = cold<number>('--|');
    expectObservable(source.pipe(mergeMapWithLimit(() => NEVER, limit$))).toBe(
      '--#',
      undefined,
      new RangeError('concurrency limit Observable completed without emitting a limit'),
    );
  });
});

test('nothing starts before limit$ emits; an Observable source is subscribed at once, its items held', (t) => {
  virtualTime(t).run(({ cold, hot, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('-(a|)'), b: cold('-(b|)') };
    const source = cold<keyof typeof inners>('(ab|)');
    const limit$ = hot('---2', { 2: 2 });
    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$))).toBe('----(ab|)');
    expectSubscriptions(source.subscriptions).toBe('(^!)');
    expectSubscriptions(inners.a.subscriptions).toBe('---^!');
  });
});

test('a limit$ that errors errors the output and tears down every inner', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('-----a|'), b: cold('-----b|'), c: cold('-----c|') };
    const source = cold<keyof typeof inners>('(abc|)');
    const limit$ = cold('2--#', { 2: 2 }, new Error('load sampler broke'));

    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$))).toBe(
      '---#',
      undefined,
      new Error('load sampler broke'),
    );
    expectSubscriptions(inners.a.subscriptions).toBe('^--!');
    expectSubscriptions(inners.b.subscriptions).toBe('^--!');
    expectSubscriptions(inners.c.subscriptions).toBe([]);
  });
});

const invalidLimits: Array<[unknown, string]> = [
  [-1, '-1'],
  [Number.NaN, 'NaN'],
  [1.5, '1.5'],
  [-Infinity, '-Infinity'],
  ['2', '"2" (a string)'],
  [null, 'null'],
  [undefined, 'undefined'],
];

for (const [value, shown] of invalidLimits) {
  test(`limit$ emitting ${shown} errors with a RangeError naming it`, (t) => {
    virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
      const inner = cold('----x|');
      const source = cold('(ab|)');
      // A valid limit first, so we also see the running inner torn down by the bad one.
      const limit$ = cold<number>('1-b', { 1: 1, b: value as number });
      expectObservable(source.pipe(mergeMapWithLimit(() => inner, limit$))).toBe(
        '--#',
        undefined,
        limitError(shown),
      );
      expectSubscriptions(inner.subscriptions).toBe('^-!');
    });
  });
}

test('a fixed invalid limit errors the output on subscribe; a fixed 0 too, since it would never start anything', async (t) => {
  for (const [limit, shown] of [[0, '0'], [-1, '-1']] as const) {
    await t.throwsAsync(lastValueFrom(of(1).pipe(mergeMapWithLimit((x) => of(x), limit))), {
      instanceOf: RangeError,
      message: limitError(shown, true).message,
    });
  }
});

test('an Observable limit of 0 pauses: running inners finish, nothing new starts until the limit rises', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('---a|'), b: cold('---b|'), c: cold('---c|') };
    const source = cold<keyof typeof inners>('(abc|)');
    // 2, paused at frame 1, 1 again at frame 8.
    const limit$ = cold('20------1', { 0: 0, 1: 1, 2: 2 });

    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$))).toBe('---(ab)----c|');
    expectSubscriptions(inners.a.subscriptions).toBe('^---!');
    expectSubscriptions(inners.b.subscriptions).toBe('^---!');
    // Waits through the pause, from frame 4 to 8.
    expectSubscriptions(inners.c.subscriptions).toBe('--------^---!');
  });
});

test('Infinity is a valid limit: everything starts at once', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('--(a|)'), b: cold('--(b|)'), c: cold('--(c|)') };
    const source = cold<keyof typeof inners>('(abc|)');
    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], Infinity))).toBe('--(abc|)');
    expectSubscriptions(inners.c.subscriptions).toBe('^-!');
  });
});

// ---------------------------------------------------------------------------------------
// Teardown and errors (virtual time)

test('unsubscribing tears down running inners, the source and limit$ in that frame', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('-----a|'), b: cold('-----b|'), c: cold('-----c|') };
    const source = cold<keyof typeof inners>('a-b-c');
    const limit$ = cold('2', { 2: 2 });

    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit$)), '---!').toBe('---');
    expectSubscriptions(inners.a.subscriptions).toBe('^--!');
    expectSubscriptions(inners.b.subscriptions).toBe('--^!');
    expectSubscriptions(inners.c.subscriptions).toBe([]);
    expectSubscriptions(source.subscriptions).toBe('^--!');
    expectSubscriptions(limit$.subscriptions).toBe('^--!');
  });
});

for (const limit of [2, 3]) {
  // With limit 2 both slots are busy when the error comes (no request outstanding);
  // with limit 3 a request is waiting for it. Either way the error must not wait.
  test(`a source error errors the output at once and tears down inners (limit ${limit})`, (t) => {
    virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
      const inners = { a: cold('-'), b: cold('-') };
      const source = cold<keyof typeof inners>('(ab)--#', undefined, new Error('source broke'));
      expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], limit))).toBe(
        '------#',
        undefined,
        new Error('source broke'),
      );
      expectSubscriptions(inners.a.subscriptions).toBe('^-----!');
      expectSubscriptions(inners.b.subscriptions).toBe('^-----!');
    });
  });
}

test('a throwing project errors the output, tears down inners and unsubscribes the source', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('------a|'), b: cold('------b|') };
    const source = cold<'a' | 'b' | 'c'>('a-b-c-');
    const project = (x: 'a' | 'b' | 'c'): ObservableInput<string> => {
      if (x === 'c') throw new TypeError('cannot project c');
      return inners[x];
    };
    expectObservable(source.pipe(mergeMapWithLimit(project, Infinity))).toBe(
      '----#',
      undefined,
      new TypeError('cannot project c'),
    );
    expectSubscriptions(inners.a.subscriptions).toBe('^---!');
    expectSubscriptions(inners.b.subscriptions).toBe('--^-!');
    expectSubscriptions(source.subscriptions).toBe('^---!');
  });
});

test('an inner error errors the output and tears down the other inners', (t) => {
  virtualTime(t).run(({ cold, expectObservable, expectSubscriptions }) => {
    const inners = { a: cold('------a|'), b: cold('--#', undefined, new Error('task b failed')), c: cold('-c|') };
    const source = cold<keyof typeof inners>('(abc|)');
    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], 2))).toBe(
      '--#',
      undefined,
      new Error('task b failed'),
    );
    expectSubscriptions(inners.a.subscriptions).toBe('^-!');
    expectSubscriptions(inners.c.subscriptions).toBe([]);
  });
});

test('values pass through and the output completes only after the last inner', (t) => {
  virtualTime(t).run(({ cold, expectObservable }) => {
    const inners = { a: cold('-x-y|'), b: cold('z------|') };
    const source = cold<keyof typeof inners>('a-b|');
    expectObservable(source.pipe(mergeMapWithLimit((x) => inners[x], 2))).toBe('-xzy-----|');
  });
});

test('with reorderByIndex, values come out in input order whatever the finishing order', (t) => {
  virtualTime(t).run(({ cold, expectObservable }) => {
    const durations = ['-----|', '-|', '---|', '--|'];
    const source = cold('(abcd|)', { a: 0, b: 1, c: 2, d: 3 });
    const result = source.pipe(
      mergeMapWithLimit((i, index) => cold(durations[i]!.replace('|', '(v|)'), { v: { index, i } }), 3),
      reorderByIndex((r) => r.index),
      map((r) => r.i),
    );
    // 0 ends last (frame 5); 1, 2, 3 were waiting for it.
    expectObservable(result).toBe('-----(abcd|)', { a: 0, b: 1, c: 2, d: 3 });
  });
});

// ---------------------------------------------------------------------------------------
// Pulling, sources and the engine's callbacks (real time, no timers)

test('100,000 inners that complete synchronously do not overflow the stack (limit 1)', (t) => {
  const items = Array.from({ length: 100_000 }, (_, i) => i);
  let count = 0;
  let last = -1;
  let completed = false;
  mergeWithLimit({ source: items, project: (x) => of(x), limit$: 1 }).subscribe({
    next: (x) => {
      count++;
      last = x;
    },
    complete: () => (completed = true),
  });
  t.is(count, 100_000);
  t.is(last, 99_999);
  t.true(completed);
});

test('100,000 synchronous inners through the operator, with a BehaviorSubject limit', (t) => {
  const { stats, items } = countingSource(100_000);
  let count = 0;
  let completed = false;
  mergeWithLimit({ source: items, project: (x) => of(x), limit$: new BehaviorSubject(1) }).subscribe({
    next: () => count++,
    complete: () => (completed = true),
  });
  t.is(count, 100_000);
  t.is(stats.pulled, 100_000);
  t.true(completed);
});

test('pulls lazily: limit 2 and inners that never end take exactly 2 items', (t) => {
  const { stats, items } = countingSource(1_000_000);
  const limit$ = new BehaviorSubject(2);
  const started: number[] = [];
  const subscription = mergeWithLimit({
    source: items,
    project: () => NEVER,
    limit$,
    onStart: (index) => started.push(index),
  }).subscribe();
  t.is(stats.pulled, 2);
  t.deepEqual(started, [0, 1]);

  limit$.next(5); // raising the limit pulls exactly the difference, synchronously
  t.is(stats.pulled, 5);
  t.deepEqual(started, [0, 1, 2, 3, 4]);

  subscription.unsubscribe();
  t.true(stats.released, 'the generator was released (its finally block ran)');
  t.false(limit$.observed, 'limit$ was unsubscribed');
  limit$.next(10);
  t.is(stats.pulled, 5, 'no pulls after unsubscribe');
});

test('nothing is pulled until limit$ has emitted', (t) => {
  const { stats, items } = countingSource(10);
  const limit$ = new Subject<number>();
  const subscription = mergeWithLimit({ source: items, project: () => NEVER, limit$ }).subscribe();
  t.true(limit$.observed, 'limit$ is subscribed at once');
  t.is(stats.pulled, 0);
  limit$.next(3);
  t.is(stats.pulled, 3);
  subscription.unsubscribe();
});

test('an Observable source is subscribed at once, even paused at 0 or before the first limit: a Subject loses nothing', (t) => {
  // It was subscribed on the first request, which a limit of 0, or none yet, never makes: what a
  // hot source emitted meanwhile was lost, and the output completed without it.
  for (const [what, limit$, resume] of [
    ['paused at 0', new BehaviorSubject(0), (l: Subject<number>) => l.next(2)],
    ['no limit yet', new Subject<number>(), (l: Subject<number>) => l.next(2)],
  ] as const) {
    const source = new Subject<number>();
    const got: number[] = [];
    let completed = false;
    const subscription = source.pipe(mergeMapWithLimit((x) => of(x * 10), limit$)).subscribe({ next: (v) => got.push(v), complete: () => (completed = true) });
    t.true(source.observed, what);
    source.next(1);
    source.next(2);
    source.complete();
    t.deepEqual(got, [], `${what}: nothing starts`);
    t.false(completed, what);
    resume(limit$);
    t.deepEqual(got, [10, 20], what);
    t.true(completed, what);
    subscription.unsubscribe();
  }
  // An Observable that completes empty while paused completes the output; one that errors errors it.
  let completed = false;
  mergeMapWithLimit((x: number) => of(x), new BehaviorSubject(0))(of<number>()).subscribe({ complete: () => (completed = true) });
  t.true(completed);
  let error: unknown;
  mergeMapWithLimit((x: number) => of(x), new BehaviorSubject(0))(new Observable<number>((s) => s.error(new Error('source')))).subscribe({ error: (e) => (error = e) });
  t.is((error as Error).message, 'source');
  // An iterable is still read only on request.
  const { stats, items } = countingSource(10);
  const subscription = mergeWithLimit({ source: items, project: () => NEVER, limit$: new BehaviorSubject(0) }).subscribe();
  t.is(stats.pulled, 0);
  subscription.unsubscribe();
});

test('onSourceSize: an Observable that completes with items still waiting tells how many there are before they are pulled', (t) => {
  const sizes: number[] = [];
  const dones: number[] = [];
  const limit$ = new BehaviorSubject(0);
  const source = new Subject<number>();
  mergeWithLimit({ source, project: (x) => of(x), limit$, onSourceSize: (n) => sizes.push(n), onSourceDone: (n) => dones.push(n) }).subscribe();
  source.next(1);
  source.next(2);
  t.deepEqual(sizes, []);
  source.complete();
  t.deepEqual([sizes, dones], [[2], []], 'known while paused; not done: nothing was pulled');
  limit$.next(1);
  t.deepEqual([sizes, dones], [[2], [2]]);
  // Items already pulled count too: of() delivers its first item to the first request.
  const later: number[] = [];
  mergeWithLimit({ source: of(1, 2, 3), project: () => NEVER, limit$: 1, onSourceSize: (n) => later.push(n) }).subscribe().unsubscribe();
  t.deepEqual(later, [3]);
});

test('iterator.return() is called on unsubscribe, once', (t) => {
  let returned = 0;
  let next = 0;
  const iterable: Iterable<number> = {
    [Symbol.iterator]: () => ({
      next: () => ({ value: next++, done: false }),
      return: () => {
        returned++;
        return { value: undefined, done: true };
      },
    }),
  };
  const subscription = mergeWithLimit({ source: iterable, project: () => NEVER, limit$: 3 }).subscribe();
  t.is(next, 3);
  t.is(returned, 0);
  subscription.unsubscribe();
  subscription.unsubscribe();
  t.is(returned, 1);
});

test('an error tears down inners (their teardown runs) and releases the iterator', (t) => {
  const { stats, items } = countingSource(100);
  const tornDown: number[] = [];
  let failure: unknown;
  const inners: Array<Subject<number>> = [];
  mergeWithLimit({
    source: items,
    project: (x) => {
      const inner = new Subject<number>();
      inners.push(inner);
      return new Observable<number>((subscriber) => {
        const s = inner.subscribe(subscriber);
        return () => {
          s.unsubscribe();
          tornDown.push(x);
        };
      });
    },
    limit$: 3,
  }).subscribe({ error: (err) => (failure = err) });
  inners[1]!.error(new Error('task 1 failed'));
  t.deepEqual((failure as Error).message, 'task 1 failed');
  t.deepEqual([...tornDown].sort(), [0, 1, 2]);
  t.true(stats.released);
  t.is(stats.pulled, 3);
});

test('a finished inner frees its slot only after its teardown ran', (t) => {
  const events: string[] = [];
  const triggers = new Map<string, Subject<string>>();
  mergeWithLimit({
    source: ['a', 'b'],
    project: (x) =>
      new Observable<string>((subscriber) => {
        events.push(`start ${x}`);
        const trigger = new Subject<string>();
        triggers.set(x, trigger);
        const forwarding = trigger.subscribe(subscriber);
        return () => {
          forwarding.unsubscribe();
          events.push(`teardown ${x}`);
        };
      }),
    limit$: 1,
  }).subscribe();
  t.deepEqual(events, ['start a']);
  triggers.get('a')!.complete(); // completes outside any pull, from "the outside world"
  t.deepEqual(events, ['start a', 'teardown a', 'start b']);
});

test('an async iterable source is pulled one item at a time', async (t) => {
  let pulled = 0;
  let maxRunning = 0;
  let running = 0;
  async function* tasks(): AsyncGenerator<number> {
    for (let i = 0; i < 20; i++) {
      await Promise.resolve();
      pulled++;
      yield i * 10;
    }
  }
  const seen: Array<[number, number]> = [];
  const result = await lastValueFrom(
    mergeWithLimit({
      source: tasks(),
      project: async (value, index) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        seen.push([value, index]);
        await new Promise((resolve) => setImmediate(resolve));
        running--;
        return value;
      },
      limit$: 3,
    }).pipe(toArray()),
  );
  t.is(pulled, 20);
  t.is(maxRunning, 3);
  t.deepEqual([...result].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i * 10));
  t.deepEqual(seen.map(([value, index]) => value / 10 - index), Array(20).fill(0), 'index is the source position');
});

test('an async iterable is released when the output is unsubscribed', async (t) => {
  let released = false;
  async function* tasks(): AsyncGenerator<number> {
    try {
      for (let i = 0; ; i++) yield i;
    } finally {
      released = true;
    }
  }
  const values = await lastValueFrom(
    mergeWithLimit({ source: tasks(), project: (x) => of(x), limit$: 1 }).pipe(take(3), toArray()),
  );
  t.deepEqual(values, [0, 1, 2]);
  await new Promise((resolve) => setImmediate(resolve));
  t.true(released);
});

test('an Observable source: indices follow arrival order, completion waits for inners', async (t) => {
  const source = new Subject<string>();
  const inners = new Map<number, Subject<string>>();
  const out: string[] = [];
  let completed = false;
  source
    .pipe(
      mergeMapWithLimit((value, index) => {
        const inner = new Subject<string>();
        inners.set(index, inner);
        return inner.pipe(map((suffix) => `${value}${index}${suffix}`));
      }, 1),
    )
    .subscribe({ next: (v) => out.push(v), complete: () => (completed = true) });
  source.next('a');
  source.next('b'); // buffered: the only slot is busy
  source.complete();
  t.deepEqual([...inners.keys()], [0]);
  inners.get(0)!.next('!');
  inners.get(0)!.complete();
  t.deepEqual([...inners.keys()], [0, 1]);
  t.false(completed);
  inners.get(1)!.next('?');
  inners.get(1)!.complete();
  t.deepEqual(out, ['a0!', 'b1?']);
  t.true(completed);
});

test('onSourceDone reports the total once, as soon as it is known', (t) => {
  const totals: number[] = [];
  const inners: Array<Subject<never>> = [];
  let completed = false;
  mergeWithLimit({
    source: ['a', 'b', 'c'],
    project: () => {
      const inner = new Subject<never>();
      inners.push(inner);
      return inner;
    },
    limit$: 3, // every slot is busy after the last item, so no further request will come
    onSourceDone: (total) => totals.push(total),
  }).subscribe({ complete: () => (completed = true) });
  t.deepEqual(totals, [3], 'known while all inners still run');
  for (const inner of inners) inner.complete();
  t.deepEqual(totals, [3]);
  t.true(completed);

  const { items } = countingSource(4);
  const generatorTotals: number[] = [];
  mergeWithLimit({ source: items, project: (x) => of(x), limit$: 2, onSourceDone: (n) => generatorTotals.push(n) }).subscribe();
  t.deepEqual(generatorTotals, [4]);
});

test('an empty source completes at once', (t) => {
  let completed = false;
  const totals: number[] = [];
  mergeWithLimit({ source: [], project: () => of(1), limit$: 1, onSourceDone: (n) => totals.push(n) }).subscribe({
    complete: () => (completed = true),
  });
  t.true(completed);
  t.deepEqual(totals, [0]);
});

test('a throwing onStart errors the output', (t) => {
  let failure: unknown;
  mergeWithLimit({
    source: [1, 2],
    project: () => NEVER,
    limit$: 2,
    onStart: () => {
      throw new Error('progress broke');
    },
  }).subscribe({ error: (err) => (failure = err) });
  t.is((failure as Error).message, 'progress broke');
});

test('a string source is rejected with a TypeError', (t) => {
  let failure: unknown;
  mergeWithLimit({ source: 'abc' as unknown as string[], project: (x) => of(x), limit$: 1 }).subscribe({
    error: (err) => (failure = err),
  });
  t.true(failure instanceof TypeError);
  t.regex((failure as Error).message, /task source must be .*got a string/);
});

test('an inner that ends the output inside its own subscribe (a downstream take) is still torn down', (t) => {
  const started: number[] = [];
  const tornDown: number[] = [];
  const values: number[] = [];
  // Each inner emits at once and never completes: take(1) ends the output while the first inner
  // is still inside subscribe, before the merge has recorded it as running.
  const project = (x: number) =>
    new Observable<number>((subscriber) => {
      started.push(x);
      subscriber.next(x);
      return () => tornDown.push(x);
    });
  // The limit comes after subscribe() has returned, so the merge's teardown exists by then.
  const limit$ = new Subject<number>();
  mergeWithLimit({ source: [1, 2, 3], project, limit$ })
    .pipe(take(1))
    .subscribe((x) => values.push(x));
  limit$.next(3);
  t.deepEqual(values, [1]);
  t.deepEqual(started, [1], 'nothing starts after the output ended');
  t.deepEqual(tornDown, [1]);
});

test('a downstream take() during a synchronous burst stops the pulling', (t) => {
  const { stats, items } = countingSource(1_000);
  const values: number[] = [];
  mergeWithLimit({ source: items, project: (x) => of(x), limit$: 1 })
    .pipe(take(3))
    .subscribe((x) => values.push(x));
  t.deepEqual(values, [0, 1, 2]);
  t.is(stats.pulled, 3);
  t.true(stats.released);
});

// ---- direct inners: what the scheduler's task inners use instead of rxjs's subscribe -------

/** A controllable direct inner; subscribing to it through rxjs fails the test. */
class Direct extends Observable<number> implements DirectInner<number> {
  sink: InnerSink<number> | undefined;
  readonly started: DirectSubscription & { closed: boolean; tornDown: boolean } = {
    closed: false,
    tornDown: false,
    innerSlot: -1,
    unsubscribe: () => void (this.started.tornDown = true),
  };

  constructor(
    readonly value: number,
    private readonly onStart: (inner: Direct) => void = () => {},
  ) {
    super(() => {
      throw new Error('a direct inner was subscribed through rxjs');
    });
  }

  [START_DIRECT](sink: InnerSink<number>): DirectSubscription {
    this.sink = sink;
    this.onStart(this);
    return this.started;
  }

  succeed(): void {
    this.started.closed = true;
    this.sink!.next(this.value);
    this.sink!.complete(this.started);
  }

  fail(error: Error): void {
    this.started.closed = true;
    this.sink!.error(error);
  }
}

test('direct inners: the limit holds, a completion frees its slot, the output completes after the last', (t) => {
  const inners: Direct[] = [];
  const values: number[] = [];
  let completed = false;
  mergeWithLimit({ source: [1, 2, 3, 4, 5], project: (x) => new Direct(x, (inner) => inners.push(inner)), limit$: 2 }).subscribe({
    next: (x) => values.push(x),
    complete: () => (completed = true),
  });
  t.deepEqual(inners.map((i) => i.value), [1, 2]);
  inners[1]!.succeed();
  t.deepEqual(inners.map((i) => i.value), [1, 2, 3], 'the freed slot is filled at once');
  for (const inner of [inners[0]!, inners[2]!]) inner.succeed();
  t.deepEqual(inners.map((i) => i.value), [1, 2, 3, 4, 5]);
  t.false(completed);
  inners[4]!.succeed();
  inners[3]!.succeed();
  t.deepEqual(values, [2, 1, 3, 5, 4]);
  t.true(completed);
  t.false(inners.some((i) => i.started.tornDown), 'an inner that ended is not torn down again');
});

test('direct inners that end inside their start: 100,000 at limit 1, no stack overflow, every value', (t) => {
  let sum = 0;
  let completed = false;
  mergeWithLimit({
    source: Array.from({ length: 100_000 }, (_, i) => i),
    project: (x) => new Direct(x, (inner) => inner.succeed()),
    limit$: 1,
  }).subscribe({ next: (x) => (sum += x), complete: () => (completed = true) });
  t.is(sum, (99_999 * 100_000) / 2);
  t.true(completed);
});

test('unsubscribing tears down the running direct inners only', (t) => {
  const inners: Direct[] = [];
  const subscription = mergeWithLimit({ source: [1, 2, 3, 4], project: (x) => new Direct(x, (inner) => inners.push(inner)), limit$: 3 }).subscribe();
  inners[0]!.succeed();
  t.is(inners.length, 4);
  subscription.unsubscribe();
  t.deepEqual(inners.map((i) => i.started.tornDown), [false, true, true, true]);
});

test('a direct inner error errors the output and tears down the other running inners', (t) => {
  const inners: Direct[] = [];
  let failure: unknown;
  mergeWithLimit({ source: [1, 2, 3], project: (x) => new Direct(x, (inner) => inners.push(inner)), limit$: 3 }).subscribe({
    error: (err) => (failure = err),
  });
  const boom = new Error('boom');
  inners[1]!.fail(boom);
  t.is(failure, boom);
  t.true(inners[0]!.started.tornDown);
  t.true(inners[2]!.started.tornDown);
});

test('a direct inner that ends the output inside its own start (a downstream take) is torn down', (t) => {
  const inners: Direct[] = [];
  const values: number[] = [];
  // It emits inside its start and does not complete: take(1) ends the output before the merge
  // has recorded the inner as running.
  const limit$ = new Subject<number>();
  mergeWithLimit({
    source: [1, 2, 3],
    project: (x) =>
      new Direct(x, (inner) => {
        inners.push(inner);
        inner.sink!.next(x);
      }),
    limit$,
  })
    .pipe(take(1))
    .subscribe((x) => values.push(x));
  limit$.next(3);
  t.deepEqual(values, [1]);
  t.is(inners.length, 1, 'nothing starts after the output ended');
  t.true(inners[0]!.started.tornDown);
});
