/**
 * @internal Collections for the run's per-task bookkeeping, which live as long as a run or a
 * pool and see an entry come and go for every task.
 *
 * Why not Maps, Sets, and arrays used as queues: once a collection lives long enough to reach
 * V8's old generation, the new backing stores it grows or rehashes into are often allocated
 * there too, and each obsolete store still points at the entries it held. Those entries then
 * survive every scavenge until the next full collection: with a Map of jobs by id, a Set of
 * running inners and a lane's job array shifted at the front, finished tasks' objects were
 * promoted by the hundreds of bytes per task (bench/README.md, "Memory in the lazy run"). The collections
 * here clear a slot in place when its entry leaves, and replace their store only to grow it,
 * emptying the old one.
 */

/**
 * An empty array that V8 already stores as an array of objects. `[]` starts as an
 * array of small integers and changes kind at its first push: a new run's arrays would then
 * meet code optimized for the other kind in the last run, and throw it away (a 'wrong map'
 * deoptimization at the start of every run).
 */
export function objectArray<T extends object>(): T[] {
  const array = [undefined] as unknown as T[];
  array.pop();
  return array;
}

/**
 * @internal Entries by numeric id (the runtime's jobs in flight): an open-addressed table, linear
 * probing and deletion by backward shift, over an array replaced only when it grows.
 */
export class IdTable<T extends { readonly id: number }> {
  #slots: Array<T | undefined>;
  #mask: number;
  #size = 0;

  /** @param capacity initial number of slots, a power of two; the table holds up to half of it before growing */
  constructor(capacity = 64) {
    this.#slots = emptySlots(capacity);
    this.#mask = capacity - 1;
  }

  /** How many entries the table holds. */
  get size(): number {
    return this.#size;
  }

  get(id: number): T | undefined {
    const slots = this.#slots;
    const mask = this.#mask;
    for (let i = id & mask; ; i = (i + 1) & mask) {
      const entry = slots[i];
      if (entry === undefined || entry.id === id) return entry;
    }
  }

  /** Adds an entry, or replaces the one with the same id. */
  set(entry: T): void {
    if ((this.#size + 1) * 2 > this.#slots.length) this.#grow();
    if (this.#place(entry)) this.#size++;
  }

  /** Removes the entry with this id; false if there was none. */
  delete(id: number): boolean {
    const slots = this.#slots;
    const mask = this.#mask;
    let hole = id & mask;
    for (; ; hole = (hole + 1) & mask) {
      const entry = slots[hole];
      if (entry === undefined) return false;
      if (entry.id === id) break;
    }
    // Backward shift: an entry further along the same run moves into the hole unless its home
    // slot lies cyclically after the hole (then a lookup from its home would still reach it).
    for (let i = (hole + 1) & mask; ; i = (i + 1) & mask) {
      const entry = slots[i];
      if (entry === undefined) break;
      const home = entry.id & mask;
      const stays = hole <= i ? hole < home && home <= i : hole < home || home <= i;
      if (stays) continue;
      slots[hole] = entry;
      hole = i;
    }
    slots[hole] = undefined;
    this.#size--;
    return true;
  }

  clear(): void {
    this.#slots.fill(undefined);
    this.#size = 0;
  }

  /** Puts an entry in its slot; true if it was not there yet. */
  #place(entry: T): boolean {
    const slots = this.#slots;
    const mask = this.#mask;
    for (let i = entry.id & mask; ; i = (i + 1) & mask) {
      const current = slots[i];
      if (current === undefined || current.id === entry.id) {
        slots[i] = entry;
        return current === undefined;
      }
    }
  }

  #grow(): void {
    const old = this.#slots;
    this.#slots = emptySlots(old.length * 2);
    this.#mask = old.length * 2 - 1;
    for (let i = 0; i < old.length; i++) {
      const entry = old[i];
      if (entry !== undefined) this.#place(entry);
    }
    old.fill(undefined);
  }
}

/**
 * @internal A first-in, first-out queue over a ring: O(1) at both ends, indexed from the head,
 * and its store replaced only to grow it.
 */
export class RingQueue<T> {
  #items: Array<T | undefined> = emptySlots(16);
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** The item `i` places from the head (0 is the head), or undefined past the end. */
  at(i: number): T | undefined {
    return i < this.#length ? this.#items[(this.#head + i) & (this.#items.length - 1)] : undefined;
  }

  push(item: T): void {
    if (this.#length === this.#items.length) this.#grow();
    this.#items[(this.#head + this.#length) & (this.#items.length - 1)] = item;
    this.#length++;
  }

  shift(): T | undefined {
    if (this.#length === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) & (this.#items.length - 1);
    this.#length--;
    return item;
  }

  indexOf(item: T): number {
    for (let i = 0; i < this.#length; i++) if (this.at(i) === item) return i;
    return -1;
  }

  /** Removes the item `i` places from the head; the items behind it move up one place. */
  removeAt(i: number): void {
    if (i < 0 || i >= this.#length) return;
    if (i === 0) {
      this.shift();
      return;
    }
    const items = this.#items;
    const mask = items.length - 1;
    for (let j = i; j < this.#length - 1; j++) items[(this.#head + j) & mask] = items[(this.#head + j + 1) & mask];
    items[(this.#head + this.#length - 1) & mask] = undefined;
    this.#length--;
  }

  /** Removes `item` if it is queued; true if it was. */
  remove(item: T): boolean {
    const at = this.indexOf(item);
    this.removeAt(at);
    return at !== -1;
  }

  /** The items, head first, in a new array. */
  toArray(): T[] {
    const array: T[] = [];
    for (let i = 0; i < this.#length; i++) array.push(this.at(i)!);
    return array;
  }

  /** Empties the queue and returns what it held, head first. */
  takeAll(): T[] {
    const array = this.toArray();
    this.#items.fill(undefined);
    this.#head = 0;
    this.#length = 0;
    return array;
  }

  #grow(): void {
    const old = this.#items;
    const items = emptySlots<T>(old.length * 2);
    for (let i = 0; i < this.#length; i++) items[i] = old[(this.#head + i) & (old.length - 1)];
    old.fill(undefined);
    this.#items = items;
    this.#head = 0;
  }
}

function emptySlots<T>(capacity: number): Array<T | undefined> {
  return new Array<T | undefined>(capacity).fill(undefined);
}
