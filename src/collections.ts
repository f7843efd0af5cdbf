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
 * An empty array that V8 already stores as an array of any values (objects, or a flat mix of
 * numbers and objects). `[]` starts as an array of small integers and changes kind at its first
 * push of anything else: a new run's arrays would then meet code optimized for the other kind in
 * the last run, and throw it away (a 'wrong map' deoptimization at the start of every run).
 */
export function objectArray<T>(): T[] {
  const array = [undefined] as unknown as T[];
  array.pop();
  return array;
}

/**
 * @internal Entries by numeric id (the runtime's jobs in flight): an array indexed by the id's
 * low bits, over a store replaced only when it grows.
 *
 * Every entry sits in its home slot (no probing): an id whose slot is taken makes the table grow
 * instead, until the ids in flight fit. Job ids are consecutive, so this settles within a few
 * growths, and the paths that handle a collision then stop running. That matters: a path first
 * taken after V8 has optimized the code around it (the probing of an open-addressed table, say)
 * throws that code away, mid-run, and costs a second compilation. The table grows only while it
 * stays at most {@link SPREAD} times larger than its entries need; past that (one task that runs
 * for hours while millions pass), the ids that do not fit wait in a Map.
 */
export class IdTable<T extends { readonly id: number }> {
  #slots: Array<T | undefined>;
  #mask: number;
  #size = 0;
  /** Entries whose home slot was taken once the table could not grow any more. */
  #overflow: Map<number, T> | undefined;

  /** @param capacity initial number of slots, a power of two */
  constructor(capacity = 64) {
    this.#slots = emptySlots(capacity);
    this.#mask = capacity - 1;
  }

  /** How many entries the table holds. */
  get size(): number {
    return this.#size;
  }

  /** How many slots its store has. */
  get capacity(): number {
    return this.#slots.length;
  }

  get(id: number): T | undefined {
    const entry = this.#slots[id & this.#mask];
    if (entry !== undefined && entry.id === id) return entry;
    return this.#overflow?.get(id);
  }

  /** Adds an entry, or replaces the one with the same id. */
  set(entry: T): void {
    const id = entry.id;
    for (;;) {
      const slot = id & this.#mask;
      const current = this.#slots[slot];
      if (current === undefined || current.id === id) {
        if (current === undefined && this.#overflow?.delete(id) !== true) this.#size++;
        this.#slots[slot] = entry;
        return;
      }
      if (!this.#grow()) break;
    }
    const overflow = (this.#overflow ??= new Map());
    if (!overflow.has(id)) this.#size++;
    overflow.set(id, entry);
  }

  /** Removes the entry with this id; false if there was none. */
  delete(id: number): boolean {
    const slot = id & this.#mask;
    const entry = this.#slots[slot];
    if (entry !== undefined && entry.id === id) {
      this.#slots[slot] = undefined;
    } else if (this.#overflow?.delete(id) !== true) {
      return false;
    }
    this.#size--;
    return true;
  }

  clear(): void {
    this.#slots.fill(undefined);
    this.#overflow = undefined;
    this.#size = 0;
  }

  /** Doubles the store and moves every entry home (overflowed ones too, where they now fit); false if the table is as large as it may get. */
  #grow(): boolean {
    const old = this.#slots;
    if (old.length >= MIN_BOUNDED_CAPACITY && old.length >= SPREAD * this.#size) return false;
    const slots = emptySlots<T>(old.length * 2);
    const mask = slots.length - 1;
    // Two entries from different old slots never share a new one: their ids differ in the low bits.
    for (let i = 0; i < old.length; i++) {
      const entry = old[i];
      if (entry !== undefined) slots[entry.id & mask] = entry;
    }
    old.fill(undefined);
    this.#slots = slots;
    this.#mask = mask;
    const overflow = this.#overflow;
    if (overflow) {
      for (const [id, entry] of overflow) {
        if (slots[id & mask] !== undefined) continue;
        slots[id & mask] = entry;
        overflow.delete(id);
      }
      if (overflow.size === 0) this.#overflow = undefined;
    }
    return true;
  }
}

/** How many slots per entry an {@link IdTable} may grow to (it always may up to MIN_BOUNDED_CAPACITY). */
const SPREAD = 8;
const MIN_BOUNDED_CAPACITY = 1024;

/**
 * @internal A first-in, first-out queue over a ring: O(1) at both ends, indexed from the head,
 * and its store replaced only to grow it.
 */
export class RingQueue<T> {
  #items: Array<T | undefined> = emptySlots(16);
  #head = 0;
  /**
   * How many items it holds. Read only (the queue's methods write it): a field rather than a
   * getter, since the runtime reads it several times per task, and before V8 has optimized the
   * code that reads it, a getter is a call each time.
   */
  length = 0;

  /** The item `i` places from the head (0 is the head), or undefined past the end. */
  at(i: number): T | undefined {
    return i < this.length ? this.#items[(this.#head + i) & (this.#items.length - 1)] : undefined;
  }

  push(item: T): void {
    if (this.length === this.#items.length) this.#grow();
    this.#items[(this.#head + this.length) & (this.#items.length - 1)] = item;
    this.length++;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) & (this.#items.length - 1);
    this.length--;
    return item;
  }

  indexOf(item: T): number {
    const items = this.#items;
    const mask = items.length - 1;
    for (let i = 0; i < this.length; i++) if (items[(this.#head + i) & mask] === item) return i;
    return -1;
  }

  /** Removes the item `i` places from the head; the items behind it move up one place. */
  removeAt(i: number): void {
    if (i < 0 || i >= this.length) return;
    if (i === 0) {
      this.shift();
      return;
    }
    const items = this.#items;
    const mask = items.length - 1;
    for (let j = i; j < this.length - 1; j++) items[(this.#head + j) & mask] = items[(this.#head + j + 1) & mask];
    items[(this.#head + this.length - 1) & mask] = undefined;
    this.length--;
  }

  /** Removes `item` if it is queued; true if it was. */
  remove(item: T): boolean {
    // Most often the head (a lane's results come in its order): taken without a search.
    if (this.length > 0 && this.#items[this.#head] === item) {
      this.shift();
      return true;
    }
    const at = this.indexOf(item);
    this.removeAt(at);
    return at !== -1;
  }

  /** The items, head first, in a new array. */
  toArray(): T[] {
    const array: T[] = [];
    for (let i = 0; i < this.length; i++) array.push(this.at(i)!);
    return array;
  }

  /** Empties the queue and returns what it held, head first. */
  takeAll(): T[] {
    const array = this.toArray();
    this.#items.fill(undefined);
    this.#head = 0;
    this.length = 0;
    return array;
  }

  #grow(): void {
    const old = this.#items;
    const items = emptySlots<T>(old.length * 2);
    for (let i = 0; i < this.length; i++) items[i] = old[(this.#head + i) & (old.length - 1)];
    old.fill(undefined);
    this.#items = items;
    this.#head = 0;
  }
}

function emptySlots<T>(capacity: number): Array<T | undefined> {
  return new Array<T | undefined>(capacity).fill(undefined);
}
