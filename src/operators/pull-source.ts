import { config, isObservable, takeWhile, type Observable, type Subscription } from 'rxjs';
import { warnOfThrown } from '../errors.js';

/**
 * A task source read one item at a time, so that a generator of a million tasks is never
 * drained up front: the merge engine asks for the next item only when a slot is free.
 *
 * Contract:
 * - `request()` asks for the next item. At most one request is outstanding at a time (the
 *   caller guarantees it). It is answered by exactly one call of `item`, `done` or `error`,
 *   synchronously inside `request()` or later.
 * - A source that learns on its own that it has ended may call `done` or `error` without an
 *   outstanding request: an array after its last item, an Observable that completes or errors
 *   while nothing is buffered. This lets the caller learn the total as early as possible and
 *   fail fast; it never happens while unread items remain.
 * - After `done` or `error`, no more callbacks. After `close()`, no callbacks at all.
 */
export interface PullSource<T> {
  /** Ask for the next item; answered through the {@link PullSink}. */
  request(): void;
  /**
   * Stop: release the iterator (`iterator.return?.()`) or unsubscribe the Observable.
   * Idempotent, never throws: an error thrown by `iterator.return()` or the Observable's teardown
   * has nowhere to go (the run is ending for another reason), so it goes to rxjs's
   * `config.onUnhandledError` if one is set, and is a process warning otherwise: thrown, it would
   * end the program before the run's own outcome reached it.
   */
  close(): void;
  /**
   * Start listening before the first request, for a source that does not wait to be asked: an
   * Observable is subscribed now and what it emits is buffered (a hot one's items would else be
   * lost while nothing is requested). Iterables have none: they are read only on request.
   */
  open?(): void;
}

/** Receives the answers of a {@link PullSource}. */
export interface PullSink<T> {
  item(value: T): void;
  done(): void;
  error(err: unknown): void;
  /**
   * The source has ended with `buffered` items still waiting to be requested: how many it has is
   * known before `done` comes (an Observable that completed while nothing was requested).
   */
  ended?(buffered: number): void;
}

/** Everything the scheduler accepts as a list of tasks. A string is not one. */
export type TaskSourceInput<T> = Iterable<T> | AsyncIterable<T> | Observable<T> | ArrayLike<T>;

/**
 * Tells whether `x` can be read by {@link toPullSource}: an array or array-like, a sync or
 * async iterable, or an Observable. Strings are rejected: iterating one yields characters,
 * which is never what a caller passing a string as a task list meant.
 */
export function isTaskSourceInput(x: unknown): x is TaskSourceInput<unknown> {
  return sourceKind(x) !== undefined;
}

type SourceKind = 'array' | 'observable' | 'iterable' | 'async-iterable';

function sourceKind(x: unknown): SourceKind | undefined {
  if (Array.isArray(x)) return 'array';
  if (x === null || typeof x !== 'object' || x instanceof String) return undefined;
  if (isObservable(x)) return 'observable';
  // A typed array is iterable too, but the index walk is cheaper.
  if (ArrayBuffer.isView(x) && !(x instanceof DataView)) return 'array';
  if (typeof (x as Partial<Iterable<unknown>>)[Symbol.iterator] === 'function') return 'iterable';
  if (typeof (x as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === 'function') {
    return 'async-iterable';
  }
  const length = (x as { length?: unknown }).length;
  if (typeof length === 'number' && Number.isSafeInteger(length) && length >= 0) return 'array';
  return undefined;
}

function describeInput(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'object') return x.constructor?.name ? `a ${x.constructor.name}` : 'an object';
  return `a ${typeof x}`;
}

/**
 * Wraps a task source so it can be pulled one item at a time.
 *
 * - array / array-like: index walk; `done` follows the last item at once.
 * - sync iterable: `iterator.next()` inside `request()`.
 * - async iterable: `await iterator.next()`, answered later.
 * - Observable: subscribed by `open()` or on the first request; pushed items wait in a buffer
 *   (unbounded: an Observable cannot be slowed down), completion and error follow the buffered
 *   items, and a completion that comes with items buffered is told at once (`ended`).
 *
 * @param input the task source
 * @param sink receives the answers
 * @returns the pull handle
 * @throws TypeError if `input` is not a {@link TaskSourceInput}
 */
export function toPullSource<T>(input: TaskSourceInput<T>, sink: PullSink<T>): PullSource<T> {
  switch (sourceKind(input)) {
    case 'array':
      return new ArraySource(input as ArrayLike<T>, sink);
    case 'observable':
      return observableSource(input as Observable<T>, sink);
    case 'iterable':
      return new IterableSource(input as Iterable<T>, sink);
    case 'async-iterable':
      return asyncIterableSource(input as AsyncIterable<T>, sink);
    default:
      throw new TypeError(
        `task source must be an array, an iterable, an async iterable or an Observable, got ${describeInput(input)}`,
      );
  }
}

/** An error of the source's return() or teardown (see PullSource.close), which has nowhere to go. */
function reportCloseError(err: unknown): void {
  const { onUnhandledError } = config;
  if (onUnhandledError) {
    setTimeout(() => onUnhandledError(err));
    return;
  }
  warnOfThrown('the task source threw while it was being closed (its return() or teardown)', err);
}

/**
 * Classes rather than objects of closures: the merge engine calls `request()` for every task, and
 * a method on a prototype is the same function in every run, so code V8 optimized in one run,
 * with the call inlined, still holds in the next (a closure made per run is a new call target,
 * and the optimized code would be thrown away at the start of each run).
 */
class ArraySource<T> implements PullSource<T> {
  #index = 0;
  #open = true;

  constructor(
    private readonly input: ArrayLike<T>,
    private readonly sink: PullSink<T>,
  ) {}

  request(): void {
    if (!this.#open) return;
    if (this.#index >= this.input.length) return this.#finish();
    this.sink.item(this.input[this.#index++] as T);
    // Telling the caller at once that this was the last item lets it know the total
    // without a further request (which might never come while every slot is busy).
    if (this.#open && this.#index >= this.input.length) this.#finish();
  }

  close(): void {
    this.#open = false;
  }

  #finish(): void {
    this.#open = false;
    this.sink.done();
  }
}

function invalidResult(result: unknown): TypeError {
  return new TypeError(`iterator result ${String(result)} is not an object`);
}

class IterableSource<T> implements PullSource<T> {
  #iterator: Iterator<T> | undefined;
  /** open: may call sink; ended: iterator finished or threw, so it needs no `return()`. */
  #state: 'open' | 'ended' | 'closed' = 'open';

  constructor(
    private readonly input: Iterable<T>,
    private readonly sink: PullSink<T>,
  ) {}

  request(): void {
    if (this.#state !== 'open') return;
    let done: unknown;
    let value: T;
    try {
      this.#iterator ??= this.input[Symbol.iterator]();
      const result = this.#iterator.next();
      if (result === null || typeof result !== 'object') throw invalidResult(result);
      // Read here, inside the try: a result's `done` or `value` may be a getter that throws.
      done = result.done;
      value = result.value;
    } catch (err) {
      this.#state = 'ended';
      return this.sink.error(err);
    }
    if (done) {
      this.#state = 'ended';
      return this.sink.done();
    }
    this.sink.item(value);
  }

  close(): void {
    const mustRelease = this.#state === 'open' && this.#iterator !== undefined;
    this.#state = 'closed';
    if (!mustRelease) return;
    try {
      this.#iterator!.return?.();
    } catch (err) {
      reportCloseError(err);
    }
  }
}

function asyncIterableSource<T>(input: AsyncIterable<T>, sink: PullSink<T>): PullSource<T> {
  let iterator: AsyncIterator<T> | undefined;
  let state: 'open' | 'ended' | 'closed' = 'open';
  const fail = (err: unknown): void => {
    if (state !== 'open') return;
    state = 'ended';
    sink.error(err);
  };
  const answer = (result: IteratorResult<T>): void => {
    if (state !== 'open') return;
    if (result === null || typeof result !== 'object') return fail(invalidResult(result));
    let done: unknown;
    let value: T;
    try {
      done = result.done;
      value = result.value;
    } catch (err) {
      return fail(err); // a getter that throws
    }
    if (done) {
      state = 'ended';
      return sink.done();
    }
    sink.item(value);
  };
  return {
    request() {
      if (state !== 'open') return;
      let next: Promise<IteratorResult<T>>;
      try {
        iterator ??= input[Symbol.asyncIterator]();
        next = Promise.resolve(iterator.next());
      } catch (err) {
        return fail(err);
      }
      next.then(answer, fail);
    },
    close() {
      const mustRelease = state === 'open' && iterator !== undefined;
      state = 'closed';
      if (!mustRelease) return;
      try {
        // An async generator queues return() behind a pending next(), so this is safe
        // while a request is in flight; its answer is then ignored.
        const returned = iterator!.return?.();
        if (returned) Promise.resolve(returned).then(undefined, reportCloseError);
      } catch (err) {
        reportCloseError(err);
      }
    },
  };
}

/** Above this many consumed slots the buffer is compacted, keeping memory proportional to its content. */
const COMPACT_THRESHOLD = 1024;

function observableSource<T>(input: Observable<T>, sink: PullSink<T>): PullSource<T> {
  // A queue as an array plus a head index: shift() would be O(n) per item.
  let buffer: (T | undefined)[] = [];
  let head = 0;
  let waiting = false; // a request is outstanding and the buffer was empty
  let subscribed = false;
  let closed = false;
  let ended = false; // done or error was delivered
  let terminal: { kind: 'done' } | { kind: 'error'; err: unknown } | undefined;
  let subscription: Subscription | undefined;

  const deliverTerminal = (): void => {
    const t = terminal!;
    ended = true;
    if (t.kind === 'done') sink.done();
    else sink.error(t.err);
  };

  const take = (): T => {
    const value = buffer[head] as T;
    buffer[head++] = undefined; // let the item be collected before the next compaction
    if (head === buffer.length) {
      buffer.length = 0;
      head = 0;
    } else if (head >= COMPACT_THRESHOLD && head * 2 >= buffer.length) {
      buffer = buffer.slice(head);
      head = 0;
    }
    return value;
  };

  const onTerminal = (t: NonNullable<typeof terminal>): void => {
    if (closed || terminal) return;
    terminal = t;
    if (head === buffer.length) {
      waiting = false;
      deliverTerminal();
    } else if (t.kind === 'done') {
      sink.ended?.(buffer.length - head);
    }
  };

  const subscribe = (): void => {
    subscribed = true;
    // takeWhile lets close() stop a synchronous firehose in the middle of subscribe(),
    // before `subscription` has even been assigned.
    subscription = input.pipe(takeWhile(() => !closed)).subscribe({
      next(value) {
        if (closed) return;
        if (waiting) {
          waiting = false;
          sink.item(value);
        } else {
          buffer.push(value);
        }
      },
      error: (err: unknown) => onTerminal({ kind: 'error', err }),
      complete: () => onTerminal({ kind: 'done' }),
    });
    if (closed) subscription.unsubscribe();
  };

  return {
    request() {
      if (closed || ended) return;
      if (head < buffer.length) return sink.item(take());
      if (terminal) return deliverTerminal();
      waiting = true;
      if (!subscribed) subscribe();
    },
    open() {
      if (!closed && !subscribed) subscribe();
    },
    close() {
      if (closed) return;
      closed = true;
      buffer = [];
      head = 0;
      try {
        subscription?.unsubscribe();
      } catch (err) {
        // A teardown of the source's that threw (rxjs gathers them in an UnsubscriptionError).
        reportCloseError(err);
      }
    },
  };
}
