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

/**
 * @internal The buffer behind {@link reorderByIndex}, also used by the scheduler directly (with no
 * Subscriber per item): hands its target the items in index order, each as soon as it can.
 *
 * Early items wait in a Map. (A ring indexed by the items' index allocated less per item, but a
 * run of a million lazily generated tasks then ended with a parent RSS 7 MB higher, median of 4
 * runs: see bench/README.md.)
 */
export class IndexReorderer<T> {
  #next: number;
  readonly #waiting = new Map<number, T>();

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
    if (index < this.#next || this.#waiting.has(index)) return new Error(`reorderByIndex: index ${index} arrived twice`);
    if (index !== this.#next) {
      this.#waiting.set(index, item);
      return undefined;
    }
    this.target.emit(item);
    this.#next++;
    // Each buffered item is visited once, when its turn comes: O(1) amortized.
    while (this.#waiting.size > 0 && this.#waiting.has(this.#next) && !this.target.stopped()) {
      const buffered = this.#waiting.get(this.#next) as T;
      this.#waiting.delete(this.#next);
      this.#next++;
      this.target.emit(buffered);
    }
    return undefined;
  }

  /** The error to end with if the source ended while items still wait for a missing index. */
  end(): Error | undefined {
    if (this.#waiting.size === 0) return undefined;
    let firstWaiting = Infinity;
    for (const index of this.#waiting.keys()) firstWaiting = Math.min(firstWaiting, index);
    return new Error(
      `reorderByIndex: source completed without index ${this.#next}; ` +
        `${this.#waiting.size} later item(s) wait for it, the first being index ${firstWaiting}`,
    );
  }
}
