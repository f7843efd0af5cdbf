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
      let nextIndex = firstIndex;
      const waiting = new Map<number, T>();

      return source.subscribe({
        next(item) {
          if (subscriber.closed) return; // a synchronous source may go on after an error
          let index: number;
          try {
            index = getIndex(item);
          } catch (err) {
            return subscriber.error(err);
          }
          if (!Number.isSafeInteger(index)) {
            return subscriber.error(
              new RangeError(`reorderByIndex: index must be an integer, got ${String(index)}`),
            );
          }
          if (index < firstIndex) {
            return subscriber.error(
              new RangeError(`reorderByIndex: index ${index} is below the first index ${firstIndex}`),
            );
          }
          if (index < nextIndex || waiting.has(index)) {
            return subscriber.error(new Error(`reorderByIndex: index ${index} arrived twice`));
          }
          if (index !== nextIndex) {
            waiting.set(index, item);
            return;
          }
          subscriber.next(item);
          nextIndex++;
          // Each buffered item is visited once, when its turn comes: O(1) amortized.
          while (waiting.size > 0 && waiting.has(nextIndex) && !subscriber.closed) {
            const buffered = waiting.get(nextIndex) as T;
            waiting.delete(nextIndex);
            nextIndex++;
            subscriber.next(buffered);
          }
        },
        error: (err: unknown) => subscriber.error(err),
        complete() {
          if (waiting.size === 0) return subscriber.complete();
          let firstWaiting = Infinity;
          for (const index of waiting.keys()) firstWaiting = Math.min(firstWaiting, index);
          subscriber.error(
            new Error(
              `reorderByIndex: source completed without index ${nextIndex}; ` +
                `${waiting.size} later item(s) wait for it, the first being index ${firstWaiting}`,
            ),
          );
        },
      });
    });
}
