import test, { type ExecutionContext } from 'ava';
import { Observable, Subject, config, of, throwError } from 'rxjs';
import {
  isTaskSourceInput,
  toPullSource,
  type PullSink,
  type PullSource,
  type TaskSourceInput,
} from '../../src/operators/pull-source.js';
import { nextWarning } from '../helpers.js';

/** A sink that records every callback, in order. */
function recorder<T>() {
  const events: Array<['item', T] | ['done'] | ['error', unknown]> = [];
  const sink: PullSink<T> = {
    item: (value) => events.push(['item', value]),
    done: () => events.push(['done']),
    error: (err) => events.push(['error', err]),
  };
  return { events, sink };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('isTaskSourceInput accepts the four kinds of source', (t) => {
  async function* asyncGen(): AsyncGenerator<number> {}
  function* gen(): Generator<number> {}
  const accepted: unknown[] = [
    [],
    [1, 2],
    new Set([1]),
    new Map([[1, 2]]),
    gen(),
    asyncGen(),
    of(1),
    new Subject<number>(),
    { length: 2, 0: 'a', 1: 'b' },
    new Uint8Array(3),
  ];
  for (const x of accepted) t.true(isTaskSourceInput(x), `accepts ${Object.prototype.toString.call(x)}`);
});

test('isTaskSourceInput rejects strings and non-sources', (t) => {
  const rejected: unknown[] = ['abc', '', new String('abc'), 42, null, undefined, {}, () => [1], { length: -1 }, { length: 1.5 }, Symbol('x')];
  for (const x of rejected) t.false(isTaskSourceInput(x), `rejects ${String(x)}`);
  t.throws(() => toPullSource('abc' as unknown as TaskSourceInput<string>, recorder<string>().sink), {
    instanceOf: TypeError,
    message: /got a string/,
  });
});

test('array: answers synchronously and says done right after the last item', (t) => {
  const { events, sink } = recorder<string>();
  const source = toPullSource(['a', 'b'], sink);
  source.request();
  t.deepEqual(events, [['item', 'a']]);
  source.request();
  t.deepEqual(events, [['item', 'a'], ['item', 'b'], ['done']]);
  source.request();
  t.is(events.length, 3, 'no callback after done');
});

test('array: an empty array answers done', (t) => {
  const { events, sink } = recorder<string>();
  toPullSource([], sink).request();
  t.deepEqual(events, [['done']]);
});

test('array-like: walked by index', (t) => {
  const { events, sink } = recorder<string>();
  const source = toPullSource({ length: 2, 0: 'x', 1: 'y' }, sink);
  source.request();
  source.request();
  t.deepEqual(events, [['item', 'x'], ['item', 'y'], ['done']]);
});

test('sync iterable: one next() per request, done when exhausted', (t) => {
  let nextCalls = 0;
  function* gen(): Generator<number> {
    for (let i = 0; i < 2; i++) {
      nextCalls++;
      yield i;
    }
  }
  const { events, sink } = recorder<number>();
  const source = toPullSource(gen(), sink);
  t.is(nextCalls, 0, 'nothing read before the first request');
  source.request();
  t.is(nextCalls, 1);
  source.request();
  source.request();
  t.deepEqual(events, [['item', 0], ['item', 1], ['done']]);
  source.request();
  t.is(events.length, 3);
});

test('sync iterable: a throw from next() becomes sink.error, and nothing follows', (t) => {
  let returned = 0;
  const boom = new Error('next failed');
  const iterable: Iterable<number> = {
    [Symbol.iterator]: () => ({
      next: () => {
        throw boom;
      },
      return: () => {
        returned++;
        return { done: true, value: undefined };
      },
    }),
  };
  const { events, sink } = recorder<number>();
  const source = toPullSource(iterable, sink);
  source.request();
  t.deepEqual(events, [['error', boom]]);
  source.request();
  source.close();
  t.is(events.length, 1);
  t.is(returned, 0, 'an iterator that threw is finished: no return()');
});

test('sync iterable: a result that is not an object is an error', (t) => {
  const iterable = { [Symbol.iterator]: () => ({ next: () => 42 }) } as unknown as Iterable<number>;
  const { events, sink } = recorder<number>();
  toPullSource(iterable, sink).request();
  t.is(events.length, 1);
  t.is(events[0]![0], 'error');
  t.true((events[0] as ['error', unknown])[1] instanceof TypeError);
});

test('sync iterable: close() calls return() once and silences the source', (t) => {
  let returned = 0;
  let i = 0;
  const iterable: Iterable<number> = {
    [Symbol.iterator]: () => ({
      next: () => ({ done: false, value: i++ }),
      return: () => {
        returned++;
        return { done: true, value: undefined };
      },
    }),
  };
  const { events, sink } = recorder<number>();
  const source = toPullSource(iterable, sink);
  source.request();
  source.close();
  source.close();
  source.request();
  t.is(returned, 1);
  t.deepEqual(events, [['item', 0]]);
});

test('sync iterable: close() after exhaustion does not call return()', (t) => {
  let returned = 0;
  const iterable: Iterable<number> = {
    [Symbol.iterator]: () => ({
      next: () => ({ done: true, value: undefined }),
      return: () => {
        returned++;
        return { done: true, value: undefined };
      },
    }),
  };
  const { sink } = recorder<number>();
  const source = toPullSource(iterable, sink);
  source.request();
  source.close();
  t.is(returned, 0);
});

test('async iterable: answers later, one item per request', async (t) => {
  async function* gen(): AsyncGenerator<string> {
    yield 'a';
    yield 'b';
  }
  const { events, sink } = recorder<string>();
  const source = toPullSource(gen(), sink);
  source.request();
  t.deepEqual(events, [], 'not answered synchronously');
  await tick();
  t.deepEqual(events, [['item', 'a']]);
  source.request();
  await tick();
  source.request();
  await tick();
  t.deepEqual(events, [['item', 'a'], ['item', 'b'], ['done']]);
});

test('async iterable: a rejected next() becomes sink.error', async (t) => {
  const boom = new Error('async next failed');
  async function* gen(): AsyncGenerator<string> {
    yield 'a';
    throw boom;
  }
  const { events, sink } = recorder<string>();
  const source = toPullSource(gen(), sink);
  source.request();
  await tick();
  source.request();
  await tick();
  t.deepEqual(events, [['item', 'a'], ['error', boom]]);
});

test('async iterable: close() with a request in flight calls return() and drops the answer', async (t) => {
  let released = false;
  let release!: () => void;
  async function* gen(): AsyncGenerator<string> {
    try {
      await new Promise<void>((resolve) => (release = resolve));
      yield 'late';
    } finally {
      released = true;
    }
  }
  const { events, sink } = recorder<string>();
  const source = toPullSource(gen(), sink);
  source.request();
  await tick();
  source.close();
  release();
  await tick();
  t.deepEqual(events, [], 'no callback after close');
  t.true(released, 'the generator ran its finally block');
});

test('Observable: subscribed only on the first request', (t) => {
  let subscriptions = 0;
  const input = new Observable<number>((subscriber) => {
    subscriptions++;
    subscriber.next(1);
  });
  const { events, sink } = recorder<number>();
  const source = toPullSource(input, sink);
  t.is(subscriptions, 0);
  source.request();
  source.request();
  t.is(subscriptions, 1);
  t.deepEqual(events, [['item', 1]]);
});

test('Observable: open() subscribes before any request and holds what it emits; once only', (t) => {
  const subject = new Subject<number>();
  let subscriptions = 0;
  const input = new Observable<number>((subscriber) => {
    subscriptions++;
    return subject.subscribe(subscriber);
  });
  const { events, sink } = recorder<number>();
  const source = toPullSource(input, sink);
  source.open?.();
  source.open?.();
  t.is(subscriptions, 1);
  subject.next(1);
  subject.next(2);
  subject.complete();
  t.deepEqual(events, [], 'nothing answered before a request');
  source.request();
  source.request();
  source.request();
  t.deepEqual(events, [['item', 1], ['item', 2], ['done']]);
});

test('Observable: buffers pushed items and answers from the buffer, completion last', (t) => {
  const { events, sink } = recorder<number>();
  const source = toPullSource(of(1, 2, 3), sink);
  source.request();
  t.deepEqual(events, [['item', 1]], 'of() pushed 3 items but only one was asked for');
  source.request();
  source.request();
  t.deepEqual(events, [['item', 1], ['item', 2], ['item', 3]]);
  source.request();
  t.deepEqual(events.at(-1), ['done']);
});

test('Observable: an error is delivered after the buffered items', (t) => {
  const boom = new Error('upstream failed');
  const { events, sink } = recorder<number>();
  const subject = new Subject<number>();
  const source = toPullSource(subject, sink);
  source.request();
  subject.next(1);
  subject.next(2);
  subject.error(boom);
  t.deepEqual(events, [['item', 1]]);
  source.request();
  t.deepEqual(events, [['item', 1], ['item', 2]]);
  source.request();
  t.deepEqual(events, [['item', 1], ['item', 2], ['error', boom]]);
});

test('Observable: an ending with nothing buffered is reported at once, unrequested', (t) => {
  const { events, sink } = recorder<number>();
  const subject = new Subject<number>();
  const source = toPullSource(subject, sink);
  source.request();
  subject.next(1);
  subject.complete(); // no request is outstanding, but nothing is left to read either
  t.deepEqual(events, [['item', 1], ['done']]);

  const failing = recorder<number>();
  toPullSource(throwError(() => new Error('x')), failing.sink).request();
  t.is(failing.events[0]![0], 'error');
});

test('Observable: the buffer keeps FIFO order across many pushes and pulls', (t) => {
  const { events, sink } = recorder<number>();
  const subject = new Subject<number>();
  const source = toPullSource(subject, sink);
  source.request();
  let pushed = 0;
  // Push and pull in uneven batches so the buffer is compacted while it holds items.
  for (const [push, pull] of [[3000, 2000], [1000, 10], [5, 1500], [2500, 4000]] as const) {
    for (let i = 0; i < push; i++) subject.next(pushed++);
    for (let i = 0; i < pull; i++) source.request();
  }
  subject.complete();
  source.request();
  const items = events.filter((e) => e[0] === 'item').map((e) => e[1]);
  t.deepEqual(items, Array.from({ length: pushed }, (_, i) => i));
  t.deepEqual(events.at(-1), ['done']);
});

test('Observable: close() unsubscribes, and stops a synchronous firehose mid-subscribe', (t) => {
  let emitted = 0;
  let tornDown = false;
  const firehose = new Observable<number>((subscriber) => {
    for (let i = 0; i < 1_000_000 && !subscriber.closed; i++) {
      emitted++;
      subscriber.next(i);
    }
    return () => (tornDown = true);
  });
  const events: number[] = [];
  const source: PullSource<number> = toPullSource(firehose, {
    item: (value) => {
      events.push(value);
      source.close(); // the consumer stops after the first item
    },
    done: () => t.fail('no done after close'),
    error: () => t.fail('no error after close'),
  });
  source.request();
  t.deepEqual(events, [0]);
  t.true(emitted <= 2, `stopped after ${emitted} emissions`);
  t.true(tornDown);
});

test('Observable: close() unsubscribes a running source and drops buffered items', (t) => {
  const { events, sink } = recorder<number>();
  const subject = new Subject<number>();
  const source = toPullSource(subject, sink);
  source.request();
  subject.next(1);
  subject.next(2);
  source.close();
  t.false(subject.observed);
  source.request();
  subject.next(3);
  t.deepEqual(events, [['item', 1]]);
});

/** Closes a source whose iterator.return() throws `thrown`; returns the warning that says so. */
async function closeWarning(t: ExecutionContext, thrown: unknown): Promise<Error> {
  const warned = nextWarning(/being closed/);
  const source = toPullSource(
    {
      [Symbol.iterator]: () => ({
        next: () => ({ done: false, value: 1 }),
        return: () => {
          throw thrown;
        },
      }),
    },
    recorder<number>().sink,
  );
  source.request();
  t.notThrows(() => source.close());
  return warned;
}

test.serial('a throw from iterator.return() during close() is a process warning when rxjs has no onUnhandledError, never thrown', async (t) => {
  const warning = await closeWarning(t, new RangeError('cleanup failed'));
  t.is(warning.name, 'AsyncProcessSchedulerWarning');
  t.is(warning.message, 'the task source threw while it was being closed (its return() or teardown): RangeError: cleanup failed');
  // A value with no string form too: before, building the warning called String() on it, which threw from close().
  const odd = await closeWarning(t, Object.create(null));
  t.regex(odd.message, /being closed \(its return\(\) or teardown\): NonErrorThrown: a non-Error value was thrown: /);
});


test.serial("a throw from an Observable source's teardown during close() is a process warning too, never thrown", async (t) => {
  const warned = nextWarning(/teardown failed/);
  const source = toPullSource(
    new Observable<number>((subscriber) => {
      subscriber.next(1);
      return () => {
        throw new Error('teardown failed');
      };
    }),
    recorder<number>().sink,
  );
  source.request();
  t.notThrows(() => source.close());
  t.regex((await warned).message, /^the task source threw while it was being closed \(its return\(\) or teardown\): UnsubscriptionError: .*teardown failed/s);
});

test.serial('a throw from iterator.return() during close() goes to rxjs config.onUnhandledError when set, not thrown', async (t) => {
  const previous = config.onUnhandledError;
  const reported = new Promise<unknown>((resolve) => (config.onUnhandledError = resolve));
  try {
    const iterable: Iterable<number> = {
      [Symbol.iterator]: () => ({
        next: () => ({ done: false, value: 1 }),
        return: () => {
          throw new Error('cleanup failed');
        },
      }),
    };
    const source = toPullSource(iterable, recorder<number>().sink);
    source.request();
    t.notThrows(() => source.close());
    t.is(((await reported) as Error).message, 'cleanup failed');
  } finally {
    config.onUnhandledError = previous;
  }
});
