// A minimal hand-written pool over child_process.fork: the floor a process pool can reach.
// It has no error handling, no timeouts and no cancellation on purpose; it only exists to
// show what the IPC round trip costs with 1 or several tasks in flight per child, and with
// a tick's tasks sent as one message.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

/** How the bare pool dispatches; see {@link ForkPool}. */
export interface ForkPoolOptions {
  /** Number of child processes. */
  size: number;
  /** Tasks sent to a child before its first reply comes back. */
  inFlight: number;
  /** Send all tasks that become sendable in one tick as a single message per child. */
  batch: boolean;
}

interface Job {
  x: number;
  done: (result: number) => void;
}

interface LazySource {
  iterator: Iterator<number>;
  exhausted: boolean;
  onResult: (result: number) => void;
  resolve: () => void;
}

interface Worker {
  child: ChildProcess;
  inFlight: number;
  outbox: Array<[number, number]>;
}

type Reply = [number, number] | Array<[number, number]>;

/** Script run by each child: answers `[id, x]` messages (or arrays of them) with `[id, x + 1]`. */
export const forkWorkerScript = new URL('../fixtures/fork-worker.mjs', import.meta.url);

/**
 * A bare fork pool that computes `x + 1` in its children.
 *
 * @example
 * const pool = new ForkPool({ size: 2, inFlight: 32, batch: true });
 * await pool.run(41); // 42
 * await pool.destroy();
 */
export class ForkPool {
  readonly #options: ForkPoolOptions;
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Job>();
  #queue: Job[] = [];
  #queueHead = 0;
  #lazy: LazySource | undefined;
  #nextId = 0;
  #flushScheduled = false;

  /**
   * Forks the children at once; tasks submitted before they boot wait in their IPC pipes.
   *
   * @param options - size, tasks in flight per child, batching
   */
  constructor(options: ForkPoolOptions) {
    this.#options = options;
    for (let i = 0; i < options.size; i++) {
      // execArgv: [] so children run plain Node even when the bench itself runs under tsx.
      const child = fork(forkWorkerScript, [], { execArgv: [] });
      const worker: Worker = { child, inFlight: 0, outbox: [] };
      child.on('message', (reply: Reply) => this.#onReply(worker, reply));
      this.#workers.push(worker);
    }
  }

  /**
   * Queues one task.
   *
   * @param x - the number to increment
   * @returns `x + 1`, computed in a child
   */
  run(x: number): Promise<number> {
    return new Promise((resolve) => {
      this.#queue.push({ x, done: resolve });
      this.#pump();
    });
  }

  /**
   * Runs every value of a lazy source, pulling only as slots free up, so memory stays flat.
   *
   * @param source - values to increment; pulled one at a time
   * @param onResult - called with each result, in completion order
   * @returns resolves once every value has a result
   */
  drain(source: Iterable<number>, onResult: (result: number) => void): Promise<void> {
    return new Promise((resolve) => {
      this.#lazy = { iterator: source[Symbol.iterator](), exhausted: false, onResult, resolve };
      this.#pump();
      this.#finishLazyIfIdle();
    });
  }

  /**
   * Closes every child's IPC channel (they then exit on their own) and waits for them to exit;
   * SIGKILL after 2 s in case one does not.
   *
   * @returns resolves when every child has exited
   */
  async destroy(): Promise<void> {
    await Promise.all(
      this.#workers.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, 'exit');
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        if (child.connected) child.disconnect();
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  #nextJob(): Job | undefined {
    if (this.#queueHead < this.#queue.length) {
      const job = this.#queue[this.#queueHead++];
      if (this.#queueHead === this.#queue.length) {
        this.#queue = [];
        this.#queueHead = 0;
      }
      return job;
    }
    const lazy = this.#lazy;
    if (lazy && !lazy.exhausted) {
      const item = lazy.iterator.next();
      if (!item.done) return { x: item.value, done: lazy.onResult };
      lazy.exhausted = true;
    }
    return undefined;
  }

  #pump(): void {
    const { inFlight, batch } = this.#options;
    for (const worker of this.#workers) {
      while (worker.inFlight < inFlight) {
        const job = this.#nextJob();
        if (!job) return;
        const id = this.#nextId++;
        this.#pending.set(id, job);
        worker.inFlight++;
        if (batch) {
          worker.outbox.push([id, job.x]);
          this.#scheduleFlush();
        } else {
          worker.child.send([id, job.x]);
        }
      }
    }
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // A microtask runs after the current burst of synchronous submissions or replies,
    // so everything that became sendable in this tick leaves in one message per child.
    queueMicrotask(() => {
      this.#flushScheduled = false;
      for (const worker of this.#workers) {
        if (worker.outbox.length === 0) continue;
        worker.child.send(worker.outbox);
        worker.outbox = [];
      }
    });
  }

  #onReply(worker: Worker, reply: Reply): void {
    if (typeof reply[0] === 'number') {
      this.#settle(worker, reply as [number, number]);
    } else {
      for (const one of reply as Array<[number, number]>) this.#settle(worker, one);
    }
    this.#pump();
    this.#finishLazyIfIdle();
  }

  #finishLazyIfIdle(): void {
    const lazy = this.#lazy;
    if (lazy?.exhausted && this.#pending.size === 0) {
      this.#lazy = undefined;
      lazy.resolve();
    }
  }

  #settle(worker: Worker, [id, result]: [number, number]): void {
    const job = this.#pending.get(id);
    this.#pending.delete(id);
    worker.inFlight--;
    job?.done(result);
  }
}
