/**
 * One run started from the dashboard: the tasks, the subscriptions to the run's streams, and the
 * translation of what they emit into the small JSON events the page draws.
 */
import os from 'node:os';
import { BehaviorSubject, Subscription, distinctUntilChanged, filter, interval, map } from 'rxjs';
import { schedule$, taskModule, type Progress, type ScheduledRun } from '../../src/index.js';

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));

/** How the run's concurrency is set: by the library from CPU load, or by the page's slider. */
export type ConcurrencyMode = { mode: 'auto' } | { mode: 'manual'; limit: number };

/** Where a dashboard run is. `cancelled` is sent only once every process of the run is gone. */
export type RunStatus = 'running' | 'completed' | 'cancelled' | 'failed';

/** The events the server streams to the page, by SSE event name. */
export interface DashboardEvents {
  run: { id: number; status: RunStatus; total: number; mode: 'auto' | 'manual'; error?: string };
  progress: {
    total: number | undefined;
    completed: number;
    failed: number;
    running: number;
    /** Stopped by a cancel while they ran. */
    cancelled: number;
    queued: number | undefined;
    elapsedMs: number;
    etaMs: number | undefined;
    memoryHeld: boolean;
  };
  completion: {
    index: number;
    status: 'fulfilled' | 'rejected';
    kind: string;
    pid: number | undefined;
    durationMs: number;
    /** Milliseconds from the run's start to the moment the server saw the task end. */
    endMs: number;
    error?: string;
  };
  'task-progress': { index: number; done: number; of: number };
  concurrency: { limit: number };
  /** System-wide CPU use in percent. */
  load: { cpu: number };
}

export type DashboardEvent = { [K in keyof DashboardEvents]: { name: K; data: DashboardEvents[K] } }[keyof DashboardEvents];

/** Which example task runs at position `index`, and for how long: varied, but the same every run. */
function exampleTask(index: number) {
  const ms = 200 + ((index * 37) % 13) * 90; // 200..1280 ms
  if (index % 3 === 0) return { kind: 'stepped', task: work.stepped(ms, 5) };
  if (index % 5 === 4) return { kind: 'wait', task: work.wait(ms) };
  return { kind: 'spin', task: work.spin(ms) };
}

/**
 * Host CPU use in percent from `os.cpus()` time deltas, one reading per `periodMs`. Used only
 * with a manual limit: in auto mode the run's own progress snapshots carry the reading its
 * controller acts on.
 */
function hostCpu$(periodMs: number) {
  const totals = () => {
    let idle = 0;
    let total = 0;
    for (const { times } of os.cpus()) {
      idle += times.idle;
      total += times.user + times.nice + times.sys + times.idle + times.irq;
    }
    return { idle, total };
  };
  let previous = totals();
  return interval(periodMs).pipe(
    map(() => {
      const now = totals();
      const total = now.total - previous.total;
      const busy = total > 0 ? 100 * (1 - (now.idle - previous.idle) / total) : undefined;
      previous = now;
      return busy;
    }),
    filter((cpu): cpu is number => cpu !== undefined),
  );
}

/** A run of `taskCount` example tasks whose every event goes to `emit`. Starts at once. */
export class DashboardRun {
  readonly id: number;
  readonly total: number;
  /** Who sets the limit now: the library (auto) or the page's slider (manual); the page can switch mid-run. */
  mode: 'auto' | 'manual';
  status: RunStatus = 'running';
  /** What a page that connects mid-run needs to catch up: the latest of each event, and every completion. */
  readonly latest = new Map<'progress' | 'concurrency' | 'load', DashboardEvent>();
  readonly completions: DashboardEvent[] = [];
  readonly taskProgress = new Map<number, DashboardEvent>();
  readonly #run: ScheduledRun<number, 'settle'>;
  /** The run's limit: the slider's value in manual mode, 'auto' in auto mode (see setMode). */
  readonly #limit: BehaviorSubject<number | 'auto'>;
  /** The results subscription: unsubscribing it is what terminates the run. */
  readonly #results: Subscription;
  /** Everything else the run is watched with. */
  readonly #watchers = new Subscription();
  readonly #emit: (event: DashboardEvent) => void;
  readonly #startedAt = performance.now();
  readonly #ended: Promise<void>;
  #resolveEnded!: () => void;

  constructor(id: number, taskCount: number, concurrency: ConcurrencyMode, emit: (event: DashboardEvent) => void) {
    this.id = id;
    this.total = taskCount;
    this.mode = concurrency.mode;
    this.#emit = emit;
    this.#limit = new BehaviorSubject<number | 'auto'>(concurrency.mode === 'manual' ? concurrency.limit : 'auto');
    const tasks = Array.from({ length: taskCount }, (_, i) => exampleTask(i));
    // settle: a failed task shows up on the page instead of ending the whole run.
    this.#run = schedule$(tasks.map((t) => t.task), { concurrency: this.#limit, settle: true, progressInterval: 100 });
    const run = this.#run;
    this.#send({ name: 'run', data: this.#runData() });

    let lastLoad: Progress['load'];
    this.#watchers.add(
      run.progress$.subscribe((p) => {
        const { total, completed, failed, running, cancelled, queued, elapsedMs, etaMs, memoryHeld } = p;
        this.#keep({ name: 'progress', data: { total, completed, failed, running, cancelled, queued, elapsedMs, etaMs, memoryHeld } });
        // Snapshots come far more often than load samples and repeat the last one: send each sample once.
        if (p.load !== lastLoad && p.load?.cpu !== undefined) this.#keep({ name: 'load', data: { cpu: p.load.cpu } });
        lastLoad = p.load;
      }),
    );
    this.#watchers.add(run.concurrency$.subscribe((limit) => this.#keep({ name: 'concurrency', data: { limit } })));
    this.#watchers.add(
      run.taskProgress$.subscribe(({ index, value }) => {
        const { done, of } = value as { done: number; of: number };
        const event: DashboardEvent = { name: 'task-progress', data: { index, done, of } };
        this.taskProgress.set(index, event);
        this.#send(event);
      }),
    );
    // In auto mode the run's own snapshots carry the load; in manual mode the page gets it from here.
    this.#watchers.add(
      hostCpu$(1000)
        .pipe(
          filter(() => this.mode === 'manual'),
          distinctUntilChanged(),
        )
        .subscribe((cpu) => this.#keep({ name: 'load', data: { cpu } })),
    );

    this.#ended = new Promise((resolve) => (this.#resolveEnded = resolve));
    this.#results = run.subscribe({
      next: (outcome) => {
        const endMs = performance.now() - this.#startedAt;
        const kind = tasks[outcome.index]!.kind;
        const data: DashboardEvents['completion'] =
          outcome.status === 'fulfilled'
            ? { index: outcome.index, status: 'fulfilled', kind, pid: outcome.stats.pid, durationMs: outcome.stats.durationMs, endMs }
            : { index: outcome.index, status: 'rejected', kind, pid: outcome.reason.pid, durationMs: outcome.reason.durationMs ?? 0, endMs, error: outcome.reason.message };
        const event: DashboardEvent = { name: 'completion', data };
        this.taskProgress.delete(outcome.index);
        this.completions.push(event);
        this.#send(event);
      },
      // The run's streams end only once every process it started is gone.
      complete: () => this.#end('completed'),
      error: (error: Error) => this.#end('failed', error.message),
    });
  }

  /** Process ids of the run's processes alive now. */
  pids(): number[] {
    return this.#run.pids();
  }

  /** Moves the limit of a manual-mode run (0 pauses it). Returns false in auto mode. */
  setLimit(limit: number): boolean {
    if (this.mode === 'auto') return false;
    this.#limit.next(limit);
    return true;
  }

  /** Hands the limit to the library (auto) or back to the slider (manual, at `limit`), mid-run. */
  setMode(concurrency: ConcurrencyMode): void {
    if (this.status !== 'running') return;
    this.mode = concurrency.mode;
    this.#limit.next(concurrency.mode === 'auto' ? 'auto' : concurrency.limit);
    this.#send({ name: 'run', data: this.#runData() });
  }

  /**
   * Cancels the run by unsubscribing from its results (the last subscriber leaving terminates
   * it), then waits for the run's processes to be gone before reporting `cancelled`.
   */
  async cancel(): Promise<void> {
    if (this.status !== 'running') return this.#ended;
    this.#results.unsubscribe();
    // The unsubscription above already terminated the run; this only waits for its processes.
    await this.#run.terminate();
    this.#end('cancelled');
    return this.#ended;
  }

  /** Resolves when the run has ended, every process gone. */
  ended(): Promise<void> {
    return this.#ended;
  }

  #end(status: RunStatus, error?: string): void {
    if (this.status !== 'running') return;
    this.status = status;
    this.#watchers.unsubscribe();
    this.#limit.complete();
    this.taskProgress.clear();
    this.#send({ name: 'run', data: this.#runData(error) });
    this.#resolveEnded();
  }

  #runData(error?: string): DashboardEvents['run'] {
    return { id: this.id, status: this.status, total: this.total, mode: this.mode, ...(error === undefined ? {} : { error }) };
  }

  /** Sends an event and keeps it as the latest of its kind for pages that connect later. */
  #keep(event: DashboardEvent & { name: 'progress' | 'concurrency' | 'load' }): void {
    this.latest.set(event.name, event);
    this.#send(event);
  }

  #send(event: DashboardEvent): void {
    this.#emit(event);
  }
}
