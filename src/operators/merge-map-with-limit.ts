import {
  Observable,
  from,
  type ObservableInput,
  type OperatorFunction,
  type Subscriber,
  type Subscription,
  type Unsubscribable,
} from 'rxjs';
import { objectArray } from '../collections.js';
import { toPullSource, type PullSink, type PullSource, type TaskSourceInput } from './pull-source.js';

/**
 * @internal The key of {@link DirectInner}'s start method. An inner Observable that has it can
 * be started by the merge engine without rxjs's subscribe machinery (a Subscriber, a finalizer
 * list and a closure per inner, and their teardown): the scheduler's per-task inners do.
 */
export const START_DIRECT = Symbol('startDirect');

/** @internal What a started {@link DirectInner} is: its teardown, and whether it has ended. */
export interface DirectSubscription extends RunningInner {
  /** True once the inner has completed or errored (it then calls no sink method again). */
  readonly closed: boolean;
}

/**
 * @internal An inner the merge engine keeps among its running ones, at position `innerSlot`
 * (-1 while not kept): written by the engine only. A start of a direct inner begins with -1.
 */
export interface RunningInner extends Unsubscribable {
  innerSlot: number;
}

/** An rxjs inner's subscription, with the slot the engine needs. */
class RxjsInner implements RunningInner {
  innerSlot = -1;
  subscription: Subscription | undefined;
  unsubscribe(): void {
    this.subscription?.unsubscribe();
  }
}

/**
 * @internal Where a {@link DirectInner} sends its events. `complete` names the inner that ended,
 * since one sink serves every inner. A Subscriber is a sink too (its complete ignores the
 * argument), which is how a direct inner also serves a plain rxjs subscription.
 */
export interface InnerSink<R> {
  next(value: R): void;
  error(error: unknown): void;
  complete(inner: DirectSubscription): void;
}

/**
 * @internal An Observable the merge engine may start directly. Starting it must behave as
 * subscribing would: values, then `complete(itself)` or `error`, nothing after; the returned
 * subscription cancels it; it may end before returning (then `closed` is already true).
 */
export interface DirectInner<R> {
  [START_DIRECT](sink: InnerSink<R>): DirectSubscription;
}

/**
 * Options of {@link mergeWithLimit}. The callbacks are called as methods of this object, so it
 * may be a class instance (the scheduler's is: the same functions in every run).
 */
export interface MergeWithLimitOptions<T, R> {
  /** The items, pulled one at a time only while a slot is free. */
  source: TaskSourceInput<T>;
  /** Maps an item and its 0-based position in the source to the inner to run. */
  project: (value: T, index: number) => ObservableInput<R>;
  /** How many inners may run at once: a fixed number or one that changes over time. */
  limit$: Observable<number> | number;
  /** Called when an item was pulled and its inner is about to be subscribed. */
  onStart?: (index: number) => void;
  /** Called once, when the source is known to be exhausted, with its number of items. */
  onSourceDone?: (total: number) => void;
  /**
   * Called when the source's number of items is known before they have all been pulled: an
   * Observable that completed while its items waited for a slot (a paused run). `onSourceDone`
   * still follows, once the last of them is pulled.
   */
  onSourceSize?: (total: number) => void;
}

/** The one message template for a bad concurrency limit (`paused`: 0 was allowed). */
function invalidLimit(value: unknown, paused: boolean): RangeError {
  return new RangeError(`concurrency limit must be a positive integer${paused ? ', 0 (paused)' : ''} or Infinity, got ${describeValue(value)}`);
}

function describeValue(value: unknown): string {
  if (typeof value === 'number') return String(value); // NaN, -1, 1.5 read best as is
  if (typeof value === 'string') return `${JSON.stringify(value)} (a string)`;
  if (value === null || value === undefined) return String(value);
  try {
    return `${String(value)} (a ${typeof value})`;
  } catch {
    return `a ${typeof value}`;
  }
}

/** @internal A limit the engine takes: a whole number from `min` (0: a pause is allowed, 1: not), or Infinity. */
export function isValidLimit(value: unknown, min: number): value is number {
  return typeof value === 'number' && (value === Infinity || (Number.isInteger(value) && value >= min));
}

/**
 * The merge engine behind the scheduler: pulls items from `source` while fewer than the
 * current limit of inners are running, and merges their values.
 *
 * - Nothing is pulled before `limit$` has emitted; raising the limit starts waiting items at
 *   once, lowering it only delays new starts (a running inner is never unsubscribed). An
 *   Observable limit of 0 pauses: nothing more is pulled until it rises. An Observable source
 *   is subscribed at once all the same, and what it emits waits in a buffer; an iterable is
 *   read only as slots free up.
 * - An invalid limit (not a positive integer or `Infinity`, or 0 as a fixed number) errors the
 *   output with a RangeError; if `limit$` completes the last limit stays; if it errors, the output errors.
 *   A `limit$` that completes without ever emitting errors the output, rather than hang.
 * - A finished inner frees its slot once its teardown has run.
 * - An error from the source, `project`, an inner, `limit$` or a callback errors the output;
 *   every running inner is then unsubscribed and the source closed, as on unsubscribe.
 * - Completes once the source is exhausted and no inner is running.
 *
 * @param options see {@link MergeWithLimitOptions}
 * @returns the merged values of all inners, in the order they are emitted
 */
export function mergeWithLimit<T, R>(options: MergeWithLimitOptions<T, R>): Observable<R> {
  return new Observable<R>((subscriber) => {
    const merge = new MergeRun(options, subscriber);
    merge.start();
    return () => merge.teardown();
  });
}

/**
 * One subscription to {@link mergeWithLimit}. A class rather than closures made per
 * subscription: its methods are called for every item and every inner, and a method on a
 * prototype is the same function in every run, so the code V8 optimized for one run (with
 * these calls inlined) still holds in the next; a closure made per run is a new call target,
 * and the optimized code is thrown away at the start of each run.
 *
 * It is the source's sink (`item`, `done`, `error`), and the sink of every inner: direct ones
 * (`next`, `error`, `complete(inner)`) and rxjs ones (`next`, `error`; their slot is freed by
 * a finalizer, and the `complete` rxjs calls, with no inner, is a no-op). `error` serves both:
 * either way the output errors.
 */
class MergeRun<T, R> implements PullSink<T>, InnerSink<R> {
  #limit = 0; // nothing starts until a limit is known
  #limitKnown = false;
  #active = 0;
  #pulled = 0;
  #requesting = false;
  #sourceDone = false;
  #finished = false; // errored, completed or unsubscribed: no more work of any kind
  #draining = false;
  /**
   * The running inners, each knowing its position: removal swaps the last one in. (A Set with an
   * entry per task, long-lived, rehashes into tables in V8's old generation whose obsolete
   * copies keep tasks' objects alive: see collections.ts.)
   */
  readonly #inners: RunningInner[] = objectArray();
  #source: PullSource<T> | undefined;

  constructor(
    private readonly options: MergeWithLimitOptions<T, R>,
    private readonly subscriber: Subscriber<R>,
  ) {}

  start(): void {
    try {
      this.#source = toPullSource(this.options.source, this);
    } catch (err) {
      this.subscriber.error(err);
      return;
    }
    const limit$ = this.options.limit$;
    if (typeof limit$ === 'number') {
      // A fixed 0 would never start anything: an error, not a pause.
      this.#setLimit(limit$, 1);
    } else {
      // Added to the subscriber, so it is unsubscribed even if the output already ended
      // while limit$ was emitting synchronously inside subscribe().
      this.subscriber.add(
        limit$.subscribe({
          next: (value) => this.#setLimit(value, 0),
          error: (err) => this.#fail(err),
          complete: () => {
            if (!this.#limitKnown) this.#fail(new RangeError('concurrency limit Observable completed without emitting a limit'));
          },
        }),
      );
    }
    // An Observable source is listened to from now on, even while the limit is 0 or not known
    // yet: a Subject's items would else be lost until the first request. (With a limit already
    // known, the first request has subscribed it.)
    if (!this.#isOver()) {
      try {
        this.#source.open?.();
      } catch (err) {
        this.#fail(err);
      }
    }
  }

  teardown(): void {
    this.#finished = true;
    // Taken out first: each inner's finalizer would remove it from the list while we iterate.
    const running = this.#inners.splice(0);
    for (let i = 0; i < running.length; i++) {
      running[i]!.innerSlot = -1;
      running[i]!.unsubscribe();
    }
    this.#source?.close();
  }

  // ---- the source's answers (PullSink) ------------------------------------------------------

  item(value: T): void {
    this.#requesting = false;
    if (!this.#isOver()) this.#startInner(value);
    if (!this.#draining) this.#drain();
  }

  done(): void {
    this.#requesting = false;
    if (this.#isOver() || this.#sourceDone) return;
    this.#sourceDone = true;
    try {
      this.options.onSourceDone?.(this.#pulled);
    } catch (err) {
      this.#fail(err);
    }
    if (!this.#draining) this.#drain();
  }

  ended(buffered: number): void {
    if (this.#isOver() || this.#sourceDone) return;
    try {
      this.options.onSourceSize?.(this.#pulled + buffered);
    } catch (err) {
      this.#fail(err);
    }
  }

  /** The source failed, or an inner did. */
  error(err: unknown): void {
    this.#requesting = false;
    this.#fail(err);
  }

  // ---- the inners' events (InnerSink) -------------------------------------------------------

  next(value: R): void {
    this.subscriber.next(value);
  }

  /** A direct inner ended: its slot is free. (rxjs inners call it with nothing: a no-op.) */
  complete(inner?: RunningInner): void {
    if (inner) this.#ended(inner);
  }

  // ---- the engine ---------------------------------------------------------------------------

  // The subscriber closes before our teardown exists when a downstream take() unsubscribes
  // during the synchronous part of subscribe(); the loop must see that too.
  #isOver(): boolean {
    return this.#finished || this.subscriber.closed;
  }

  #fail(err: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    this.subscriber.error(err); // runs the teardown
  }

  #setLimit(value: unknown, min: number): void {
    if (!isValidLimit(value, min)) return this.#fail(invalidLimit(value, min === 0));
    this.#limitKnown = true;
    this.#limit = value;
    if (!this.#draining) this.#drain();
  }

  /**
   * Starts as many inners as the limit allows, then completes if all is done. A state change
   * made while this loop runs (an inner that completes inside subscribe, a source that answers
   * inside request) is only recorded by its handler: the running loop re-reads the state after
   * every step. That keeps the stack flat however many inners complete synchronously.
   * Handlers call it as `if (!draining) drain()`.
   */
  #drain(): void {
    this.#draining = true;
    try {
      while (!this.#isOver() && !this.#requesting && !this.#sourceDone && this.#active < this.#limit) {
        this.#requesting = true;
        try {
          this.#source!.request();
        } catch (err) {
          // Sources report their errors through error(); this is a throw past them (an array-like
          // whose element getter throws, say), inside a callback where it would be uncaught.
          this.#fail(err);
        }
      }
      if (!this.#isOver() && this.#sourceDone && this.#active === 0) {
        this.#finished = true;
        this.subscriber.complete();
      }
    } finally {
      this.#draining = false;
    }
  }

  /** Frees the slot of an inner that ended (its teardown has run, if it had one). */
  #ended(inner: RunningInner): void {
    const slot = inner.innerSlot;
    const inners = this.#inners;
    if (slot < 0 || inners[slot] !== inner) return;
    const last = inners.pop()!;
    if (last !== inner) {
      inners[slot] = last;
      last.innerSlot = slot;
    }
    inner.innerSlot = -1;
    this.#active--;
    if (!this.#isOver() && !this.#draining) this.#drain();
  }

  #startInner(value: T): void {
    const index = this.#pulled++;
    let input: ObservableInput<R>;
    try {
      input = this.options.project(value, index);
      if (typeof (input as Partial<DirectInner<R>>)[START_DIRECT] !== 'function') input = from(input);
      this.options.onStart?.(index);
    } catch (err) {
      return this.#fail(err);
    }
    this.#active++;
    const direct = (input as Partial<DirectInner<R>>)[START_DIRECT];
    if (direct) {
      let started: DirectSubscription;
      try {
        started = direct.call(input, this);
      } catch (err) {
        // As for an rxjs inner, whose subscribe() turns a throw into its error.
        this.#active--;
        return this.#fail(err);
      }
      // Ended inside its start: its complete() found nothing to free, so its slot is freed here
      // (and the caller's drain() fills it). Else the same checks as for an rxjs inner below.
      if (started.closed) this.#active--;
      else if (this.#isOver()) started.unsubscribe();
      else this.#keep(started);
      return;
    }
    const inner = new RxjsInner();
    const subscription = (inner.subscription = (input as Observable<R>).subscribe(this));
    // The output may have ended during subscribe (a downstream take(1), an error elsewhere),
    // and its teardown did not see this inner, which was not in `inners` yet.
    if (this.#isOver()) subscription.unsubscribe();
    // Added after subscribe, so it runs after the inner's own teardown (at once, if the inner
    // already ended inside subscribe): a slot frees only once its inner is torn down.
    this.#keep(inner);
    subscription.add(() => this.#ended(inner));
  }

  #keep(inner: RunningInner): void {
    inner.innerSlot = this.#inners.length;
    this.#inners.push(inner);
  }
}

/**
 * Like rxjs `mergeMap`, but the concurrency limit follows an Observable (a GUI slider, a
 * CPU-load controller) instead of being fixed.
 *
 * Raising the limit starts waiting items at once; lowering it never unsubscribes a running
 * inner, it only delays new starts; 0 pauses (nothing more starts until the limit rises).
 * Upstream is subscribed at once, whatever the limit (0 and a limit not known yet included),
 * so that a hot source's items are not lost; they wait in a buffer until a slot is free. So an
 * upstream that completes (or errors) with nothing buffered ends the output at once, before any
 * limit is known. An invalid limit (anything but a positive integer, 0 or `Infinity`; a fixed
 * limit must be positive) errors the output with a RangeError. When `limit$` completes, its
 * last value stays in force.
 *
 * @example
 * ```ts
 * import { BehaviorSubject, map, of, timer } from 'rxjs';
 * import { mergeMapWithLimit } from 'async-process-scheduler';
 *
 * const limit$ = new BehaviorSubject(1);
 * of(300, 100, 200)
 *   .pipe(mergeMapWithLimit((ms) => timer(ms).pipe(map(() => ms)), limit$))
 *   .subscribe((ms) => console.log(ms));
 * // With the limit left at 1, this would log 300, 100, 200: one at a time, in order.
 * limit$.next(3); // the two waiting items start at once: logs 100, 200, 300
 * // limit$.next(0) would pause: what runs finishes, and nothing more starts until it rises.
 * ```
 *
 * @param project maps each value and its 0-based index to the inner Observable to merge
 * @param limit$ the maximum number of inners subscribed at once, or an Observable of it
 * @returns an operator that merges the projected inners under the changing limit
 */
export function mergeMapWithLimit<T, R>(
  project: (value: T, index: number) => ObservableInput<R>,
  limit$: Observable<number> | number,
): OperatorFunction<T, R> {
  // Called as a plain function, not as a method of the options object.
  return (source) => mergeWithLimit({ source, project: (value, index) => project(value, index), limit$ });
}
