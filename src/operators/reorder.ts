import { Observable, type OperatorFunction } from 'rxjs';

/**
 * Re-emits items in ascending index order (`firstIndex`, `firstIndex + 1`, ...), each as soon
 * as every earlier index has been emitted. Items that arrive early wait in a buffer.
 *
 * Each item costs O(1) amortized. The source is expected to carry every index exactly once:
 * a repeated index errors the output at once, and a source that completes while items are
 * still waiting (a gap) errors with the first missing index instead of completing.
 *
 * @example
 * ```ts
 * import { of } from 'rxjs';
 * import { reorderByIndex } from 'async-process-scheduler';
 *
 * of({ index: 2, value: 'c' }, { index: 0, value: 'a' }, { index: 1, value: 'b' })
 *   .pipe(reorderByIndex((result) => result.index))
 *   .subscribe((result) => console.log(result.value)); // logs a, b, c
 * ```
 *
 * @param getIndex reads the position of an item; must return an integer
 * @param firstIndex the index to emit first
 * @defaultValue firstIndex `0`
 * @returns an operator that emits the same items in index order
 */
export function reorderByIndex<T>(
  getIndex: (item: T) => number,
  firstIndex = 0,
): OperatorFunction<T, T> {
  if (!Number.isSafeInteger(firstIndex)) {
    throw new RangeError(`reorderByIndex: firstIndex must be an integer, got ${String(firstIndex)}`);
  }
  return (source) =>
    new Observable<T>((subscriber) => {
      const reorderer = new IndexReorderer<T>(firstIndex, {
        emit: (item) => subscriber.next(item),
        stopped: () => subscriber.closed,
      });
      return source.subscribe({
        next(item) {
          if (subscriber.closed) return; // a synchronous source may go on after an error
          let index: number;
          try {
            index = getIndex(item);
          } catch (err) {
            return subscriber.error(err);
          }
          const error = reorderer.push(index, item);
          if (error) subscriber.error(error);
        },
        error: (err: unknown) => subscriber.error(err),
        complete() {
          const gap = reorderer.end();
          if (gap) subscriber.error(gap);
          else subscriber.complete();
        },
      });
    });
}

/** @internal Where an {@link IndexReorderer} hands its items. */
export interface ReorderTarget<T> {
  /** Receives the items in order. */
  emit(item: T): void;
  /** True once nothing more should be emitted (checked between buffered items). */
  stopped(): boolean;
}

/** Marks an empty slot of the reorder ring (items themselves may be anything, undefined included). */
const EMPTY: unique symbol = Symbol('empty');
/** Items at most this far ahead of the next index wait in the ring; farther ones in a Map. */
const RING_MAX = 1 << 16;

/**
 * @internal The buffer behind {@link reorderByIndex}, also used by the scheduler directly (with no
 * Subscriber per item): hands items to `emit` in index order, each as soon as it can.
 *
 * Early items wait in a ring indexed by their index, which grows to cover the span of indices
 * waiting (up to RING_MAX); a Map of the same items would allocate and rehash as items come and
 * go, and with two workers about every other result of a run waits here.
 */
export class IndexReorderer<T> {
  #next: number;
  /** Items for indices `#next` to `#next + capacity - 1`, at `index & #mask`. */
  #ring: Array<T | typeof EMPTY> = new Array<T | typeof EMPTY>(64).fill(EMPTY);
  #mask = 63;
  #inRing = 0;
  /** Items that came more than RING_MAX ahead of `#next`. */
  readonly #far = new Map<number, T>();

  /**
   * @param firstIndex the index to emit first
   * @param target receives the items in order; an object with methods, not two closures, so a
   *   class instance gives the same call targets in every run
   */
  constructor(
    readonly firstIndex: number,
    private readonly target: ReorderTarget<T>,
  ) {
    this.#next = firstIndex;
  }

  /** Takes one item; returns the error to end with if its index is not an integer, too low, or repeated. */
  push(index: number, item: T): Error | undefined {
    if (!Number.isSafeInteger(index)) return new RangeError(`reorderByIndex: index must be an integer, got ${String(index)}`);
    if (index < this.firstIndex) return new RangeError(`reorderByIndex: index ${index} is below the first index ${this.firstIndex}`);
    if (index < this.#next || this.#isWaiting(index)) return new Error(`reorderByIndex: index ${index} arrived twice`);
    if (index !== this.#next) {
      this.#store(index, item);
      return undefined;
    }
    this.target.emit(item);
    this.#next++;
    // Each buffered item is visited once, when its turn comes: O(1) amortized.
    while ((this.#inRing > 0 || this.#far.size > 0) && !this.target.stopped()) {
      const slot = this.#next & this.#mask;
      const buffered = this.#ring[slot]!;
      let ready: T;
      if (buffered !== EMPTY) {
        this.#ring[slot] = EMPTY;
        this.#inRing--;
        ready = buffered;
      } else if (this.#far.size > 0 && this.#far.has(this.#next)) {
        ready = this.#far.get(this.#next) as T;
        this.#far.delete(this.#next);
      } else {
        break;
      }
      this.#next++;
      this.target.emit(ready);
    }
    return undefined;
  }

  /** The error to end with if the source ended while items still wait for a missing index. */
  end(): Error | undefined {
    const waiting = this.#inRing + this.#far.size;
    if (waiting === 0) return undefined;
    let firstWaiting = Infinity;
    for (const index of this.#far.keys()) firstWaiting = Math.min(firstWaiting, index);
    for (let index = this.#next; index <= this.#next + this.#mask; index++) {
      if (this.#ring[index & this.#mask] !== EMPTY) {
        firstWaiting = Math.min(firstWaiting, index);
        break;
      }
    }
    return new Error(
      `reorderByIndex: source completed without index ${this.#next}; ` +
        `${waiting} later item(s) wait for it, the first being index ${firstWaiting}`,
    );
  }

  #isWaiting(index: number): boolean {
    if (index - this.#next <= this.#mask && this.#ring[index & this.#mask] !== EMPTY) return true;
    return this.#far.size > 0 && this.#far.has(index);
  }

  #store(index: number, item: T): void {
    const ahead = index - this.#next;
    if (ahead >= RING_MAX) {
      this.#far.set(index, item);
      return;
    }
    if (ahead > this.#mask) this.#grow(ahead);
    this.#ring[index & this.#mask] = item;
    this.#inRing++;
  }

  /** Doubles the ring until it covers `ahead` indices past the next one. */
  #grow(ahead: number): void {
    let size = this.#ring.length;
    while (size <= ahead) size *= 2;
    const ring = new Array<T | typeof EMPTY>(size).fill(EMPTY);
    const mask = size - 1;
    for (let index = this.#next; index <= this.#next + this.#mask; index++) {
      const item = this.#ring[index & this.#mask]!;
      if (item !== EMPTY) ring[index & mask] = item;
    }
    this.#ring = ring;
    this.#mask = mask;
  }
}
