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

/** An empty slot of the reorder ring (an item itself may be undefined). */
const HOLE: unique symbol = Symbol('hole');
/** The ring grows to cover an early item up to this many places ahead; further ones wait in a Map. */
const MAX_RING = 1 << 16;

/**
 * @internal The buffer behind {@link reorderByIndex}, also used by the scheduler directly (with no
 * Subscriber per item): hands its target the items in index order, each as soon as it can.
 *
 * Early items wait in a ring indexed by their index, which grows (up to MAX_RING places) to
 * reach the furthest one; an item further ahead than that waits in a Map until its turn. Not a
 * Map for all: in a run, about every other result waits here, and a Map with an entry per task
 * in V8's old generation kept tasks' objects alive through scavenges (see collections.ts).
 */
export class IndexReorderer<T> {
  #next: number;
  #ring: Array<T | typeof HOLE> = new Array<T | typeof HOLE>(16).fill(HOLE);
  /** Items in the ring. */
  #inRing = 0;
  /** Items too far ahead for the ring, by index; created when first needed. */
  #far: Map<number, T> | undefined;

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
    if (index !== this.#next) return this.#early(index, item);
    this.target.emit(item);
    this.#next++;
    // Each buffered item is visited once, when its turn comes: O(1) amortized.
    while ((this.#inRing > 0 || this.#far !== undefined) && !this.target.stopped()) {
      const ring = this.#ring;
      const at = this.#next & (ring.length - 1);
      let buffered = ring[at] as T | typeof HOLE;
      if (buffered !== HOLE) {
        ring[at] = HOLE;
        this.#inRing--;
      } else {
        if (this.#far === undefined || !this.#far.has(this.#next)) break;
        buffered = this.#far.get(this.#next) as T;
        this.#far.delete(this.#next);
        if (this.#far.size === 0) this.#far = undefined;
      }
      this.#next++;
      this.target.emit(buffered as T);
    }
    return undefined;
  }

  /** The error to end with if the source ended while items still wait for a missing index. */
  end(): Error | undefined {
    const waiting = this.#inRing + (this.#far?.size ?? 0);
    if (waiting === 0) return undefined;
    let firstWaiting = Infinity;
    for (let i = 0; i < this.#ring.length && firstWaiting === Infinity; i++) {
      if (this.#ring[(this.#next + i) & (this.#ring.length - 1)] !== HOLE) firstWaiting = this.#next + i;
    }
    for (const index of this.#far?.keys() ?? []) firstWaiting = Math.min(firstWaiting, index);
    return new Error(
      `reorderByIndex: source completed without index ${this.#next}; ` +
        `${waiting} later item(s) wait for it, the first being index ${firstWaiting}`,
    );
  }

  /** An item that is not the next one: it waits, or it is an error. */
  #early(index: number, item: T): Error | undefined {
    if (!Number.isSafeInteger(index)) return new RangeError(`reorderByIndex: index must be an integer, got ${String(index)}`);
    if (index < this.firstIndex) return new RangeError(`reorderByIndex: index ${index} is below the first index ${this.firstIndex}`);
    if (index < this.#next || this.#waits(index)) return new Error(`reorderByIndex: index ${index} arrived twice`);
    this.#keep(index, item);
    return undefined;
  }

  /** Whether an item with this index (past the next) already waits. */
  #waits(index: number): boolean {
    const ring = this.#ring;
    if (index - this.#next < ring.length && ring[index & (ring.length - 1)] !== HOLE) return true;
    return this.#far !== undefined && this.#far.has(index);
  }

  #keep(index: number, item: T): void {
    const ahead = index - this.#next;
    if (ahead >= this.#ring.length && ahead < MAX_RING) this.#grow(ahead);
    if (ahead < this.#ring.length) {
      this.#ring[index & (this.#ring.length - 1)] = item;
      this.#inRing++;
    } else {
      (this.#far ??= new Map()).set(index, item);
    }
  }

  /** Makes the ring long enough to hold an item `ahead` places past the next. */
  #grow(ahead: number): void {
    const old = this.#ring;
    let length = old.length * 2;
    while (length <= ahead) length *= 2;
    const ring = new Array<T | typeof HOLE>(length).fill(HOLE);
    for (let i = 0; i < old.length; i++) {
      const index = this.#next + i;
      ring[index & (length - 1)] = old[index & (old.length - 1)] as T | typeof HOLE;
    }
    old.fill(HOLE);
    this.#ring = ring;
  }
}
