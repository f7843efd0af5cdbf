import { asyncScheduler, interval, Observable, type SchedulerLike } from 'rxjs';
import { optimalConcurrency } from '../optimal-concurrency.js';
import type { LoadReading, LoadSampler } from './samplers.js';

/** Tuning of {@link autoConcurrency$}. Validated elsewhere (src/options.ts); every field is assumed valid here. */
export interface AutoConcurrencyOptions {
  /** The limit before the first reading, normally `optimalConcurrency()`. */
  initial: number;
  /** The limit never goes below this. @default {@link DEFAULT_MIN_CONCURRENCY} */
  min: number;
  /** The limit never goes above this. @default {@link defaultMaxConcurrency}, passed by the caller */
  max: number;
  /**
   * System CPU percent to stay at or above: the limit rises while the CPU is below it, and also
   * above it while the tasks are I/O-bound and one more fits (see {@link nextLimit}).
   * @default {@link DEFAULT_CPU_TARGET}
   */
  cpuTarget: number;
  /**
   * Width of the band above `cpuTarget`, in percent points, inside which the limit holds: it is
   * lowered only when the CPU is above `cpuTarget + hysteresis`, and not for I/O-bound tasks that
   * fit (see {@link nextLimit}). The sum is below 100 (resolveOptions
   * rejects the rest), or the limit could never come down. @default {@link DEFAULT_HYSTERESIS}
   */
  hysteresis: number;
  /**
   * Largest change of the limit per interval; within it, moves follow {@link nextLimit}'s sizes
   * (a raise at most doubles the limit). @default {@link defaultConcurrencyStep}
   */
  step: number;
  /** Milliseconds between readings. @default {@link DEFAULT_SAMPLE_INTERVAL} */
  sampleInterval: number;
  /** Bytes; below this much available memory, new starts are held. @default {@link DEFAULT_MIN_FREE_MEMORY} */
  minFreeMemory: number;
  /** CPUs the tasks may use: turns `cpuTarget` into a number of cores. @default optimalConcurrency() */
  cpus?: number;
}

/** The smallest limit automatic concurrency goes down to. */
export const DEFAULT_MIN_CONCURRENCY = 1;
/** The default `max` is at least this many times the number of CPUs (I/O-bound tasks need many more slots than cores). */
export const DEFAULT_MAX_CONCURRENCY_PER_CPU = 4;
/**
 * The default `max` is at least this, however few the CPUs: how many I/O-bound tasks can usefully
 * wait at once depends on what they wait for, not on the cores, and 4 × 2 cores left a small machine
 * too little room (16 Node workers take about 0.7 GB; the memory hold guards the rest).
 */
export const DEFAULT_MAX_CONCURRENCY_FLOOR = 16;
/**
 * The default largest step is at least this (and at least the CPU count): enough for the limit to
 * double from 8 to 16 in one interval when the tasks are I/O-bound.
 */
export const DEFAULT_STEP_FLOOR = 8;
/**
 * Percent of the host's CPU to stay at or above. Lower than the Python library's 95 so that
 * `cpuTarget + hysteresis` stays below 100: readings saturate at 100, and a band reaching past it
 * would mean the limit could never be lowered (that library's defect).
 */
export const DEFAULT_CPU_TARGET = 85;
/** Percent points above `cpuTarget` within which the limit holds. */
export const DEFAULT_HYSTERESIS = 10;
/**
 * Milliseconds between readings. Short enough that a run of I/O-bound tasks reaches its useful
 * concurrency within about a second. On Linux a reading costs about 0.5 ms of CPU per child process
 * (one small /proc file per thread of each child, plus `os.cpus()` and /proc/meminfo): about 1 ms
 * with 2 workers and 7 ms (3 % of one core) with 16 on a crowded 2-core host.
 */
export const DEFAULT_SAMPLE_INTERVAL = 250;
/** Bytes of available memory below which new starts are held: 256 MiB. */
export const DEFAULT_MIN_FREE_MEMORY = 256 * 1024 * 1024;

/**
 * Readings needed in a row on the same side of the band before the limit moves: one reading off
 * the band (a spike) changes nothing, a sustained change moves the limit at the second interval.
 */
export const CONFIRM_READINGS = 2;
/**
 * Milliseconds during which a learned floor holds (see {@link PolicyMemo.floor}); afterwards the
 * controller may probe one step lower again, so it can follow load from other programs.
 */
export const FLOOR_HOLD_MS = 30_000;
/**
 * Demand per running task (in cores, from `childrenDemand`) at or below which the tasks count as
 * I/O-bound: starting one more adds little CPU, and stopping one frees little. Such tasks may be
 * raised even when other programs keep the host busy, as long as the CPU they use, one step more
 * included, fits within `cpuTarget` percent of the CPUs.
 */
export const IO_BOUND_SHARE = 0.25;

/**
 * The default `max` of automatic concurrency: the larger of 4 × `cpus` and 16.
 *
 * @example
 * ```ts
 * import { defaultMaxConcurrency } from './controller.js';
 * console.log(defaultMaxConcurrency(2), defaultMaxConcurrency(8)); // 16 32
 * ```
 * @param cpus The CPUs the tasks may use, normally `optimalConcurrency()`.
 * @returns A positive integer.
 */
export function defaultMaxConcurrency(cpus: number): number {
  return Math.max(DEFAULT_MAX_CONCURRENCY_FLOOR, DEFAULT_MAX_CONCURRENCY_PER_CPU * Math.max(1, Math.floor(cpus)));
}

/**
 * The default largest step of automatic concurrency: the larger of `cpus` and 8. A raise never more
 * than doubles the limit and a lowering starts at 1, so this only bounds how fast a long climb goes.
 *
 * @example
 * ```ts
 * import { defaultConcurrencyStep } from './controller.js';
 * console.log(defaultConcurrencyStep(2), defaultConcurrencyStep(32)); // 8 32
 * ```
 * @param cpus The CPUs the tasks may use, normally `optimalConcurrency()`.
 * @returns A positive integer.
 */
export function defaultConcurrencyStep(cpus: number): number {
  return Math.max(DEFAULT_STEP_FLOOR, Math.floor(cpus));
}

/**
 * How many intervals a learned floor holds at a given sample interval ({@link FLOOR_HOLD_MS}, at least 1).
 *
 * @example
 * ```ts
 * import { floorHoldIntervals } from './controller.js';
 * console.log(floorHoldIntervals(1000), floorHoldIntervals(250)); // 30 120
 * ```
 * @param sampleInterval Milliseconds between readings.
 * @returns A positive integer.
 */
export function floorHoldIntervals(sampleInterval: number): number {
  return Math.max(1, Math.round(FLOOR_HOLD_MS / sampleInterval));
}

/** What the controller needs to know about the work, asked at every interval. */
export interface WorkState {
  /** Tasks running now. */
  running: number;
  /** Tasks are queued and could start if the limit allowed it. */
  waiting: boolean;
}

/** What {@link autoConcurrency$} emits. */
export interface ControllerState {
  /** The concurrency the merge should use now; never below 1. */
  limit: number;
  /** The last reading (`{}` before the first one, or when the sampler failed). */
  load: LoadReading;
  /** True while available memory is below `minFreeMemory`: `limit` is then held at the running count. */
  memoryHeld: boolean;
}

/** What the policy remembers between intervals. Treat as opaque; start from {@link initialPolicyMemo}. */
export interface PolicyMemo {
  /** Evaluations so far; the first evaluation is tick 1. */
  readonly tick: number;
  /** Consecutive usable readings above `cpuTarget + hysteresis`, not explained by I/O-bound tasks that fit. */
  readonly over: number;
  /** Consecutive usable readings below `cpuTarget`. */
  readonly under: number;
  /** Consecutive readings in which the tasks were I/O-bound (see {@link IO_BOUND_SHARE}). */
  readonly light: number;
  readonly lastRaiseTick: number;
  readonly lastLowerTick: number;
  /**
   * Size of the last move and its direction (+1 raise, -1 lower, 0 none since a reading stopped
   * the streak): the next move in the same direction may be twice as large.
   */
  readonly lastMove: number;
  /**
   * A limit not to lower below until `floorUntil`, or 0 for none. Learned when a lowering had to be
   * undone at once (the CPU fell under target): on a host with few cores one task moves the CPU by
   * more than the band, and without this the limit would flap between two values for ever.
   */
  readonly floor: number;
  readonly floorUntil: number;
  /** The memory hold as last decided; kept when a reading has no `freeMemory`. */
  readonly memoryHeld: boolean;
}

/** One step of the policy: {@link nextLimit}'s result. */
export interface PolicyStep {
  /** The policy's limit, ignoring memory: feed it back as `current` next time. */
  limit: number;
  /** The limit to use now: `limit`, or the running count while memory is held; never below 1. */
  effectiveLimit: number;
  memoryHeld: boolean;
  memo: PolicyMemo;
}

/**
 * The memory to start the policy with.
 *
 * The initial limit (the CPU count, normally) counts as a learned floor for
 * {@link FLOOR_HOLD_MS}: CPU-bound tasks at one per core read 100%, and a reading right after
 * the start cannot tell whether that load is ours or another program's. Probing one step lower at
 * once would cost the first intervals' throughput for nothing in the common case.
 *
 * @example
 * ```ts
 * import { initialPolicyMemo } from './controller.js';
 * console.log(initialPolicyMemo({ initial: 4, min: 1, max: 16, sampleInterval: 250 }).floor); // 4
 * ```
 * @param options The bounds, the initial limit and the interval.
 * @returns The memo for the first call of {@link nextLimit}.
 */
export function initialPolicyMemo(options: Pick<AutoConcurrencyOptions, 'initial' | 'min' | 'max' | 'sampleInterval'>): PolicyMemo {
  return {
    tick: 0,
    over: 0,
    under: 0,
    light: 0,
    lastRaiseTick: 0,
    lastLowerTick: Number.NEGATIVE_INFINITY,
    lastMove: 0,
    floor: clamp(options.initial, options),
    floorUntil: floorHoldIntervals(options.sampleInterval),
    memoryHeld: false,
  };
}

/**
 * Decides the concurrency limit for the next interval: the whole policy, as a pure function.
 *
 * - **Raise** after {@link CONFIRM_READINGS} readings in a row that call for it, if tasks are
 *   waiting, memory is not held, and the previous raise has shown (all slots are in use, or an
 *   extra interval has passed). A reading calls for a raise when the host's CPU is below
 *   `cpuTarget`, or when the tasks are I/O-bound (the demand of the children, per running task, is
 *   at most {@link IO_BOUND_SHARE} of a core) and one more of them still fits within `cpuTarget`
 *   percent of the CPUs, counting the CPU they use (`childrenDemand - childrenWait`). The second
 *   reason lets I/O-bound tasks grow on a host that other programs keep busy: they add almost no CPU.
 * - **Lower** after as many readings above `cpuTarget + hysteresis`, unless the tasks are I/O-bound
 *   and fit (stopping them would free next to nothing), unless more tasks are running than the
 *   limit already allows (the previous lowering has not shown yet: lowering never kills, it waits
 *   for tasks to finish), and never below a learned floor.
 * - **Size of a raise**: with a measured demand per task, as many tasks as the readings have room
 *   for (the CPU left under the target, or the budget left, divided by that demand), but at most the
 *   current limit: the limit at most doubles per interval. Without one, 1, then twice the previous
 *   raise while every reading in between still called for more. Always at least 1, at most `step`.
 * - **Size of a lowering**: 1, then twice the previous one while every reading in between still
 *   called for it, at most `step`.
 * - Otherwise hold. The result stays within `[min, max]`. A missing, negative or non-finite reading
 *   is no information: it neither moves the limit nor breaks a run of readings. Zero is a valid
 *   reading (an idle host); a reading is divided by only after checking that it is positive.
 * - Memory below `minFreeMemory` holds new starts: the effective limit becomes the running count
 *   (at least 1) until memory recovers.
 *
 * @example
 * ```ts
 * import { initialPolicyMemo, nextLimit } from './controller.js';
 * const options = { initial: 2, min: 1, max: 8, cpuTarget: 85, hysteresis: 10, step: 4, sampleInterval: 250, minFreeMemory: 0, cpus: 2 };
 * const work = { running: 2, waiting: true };
 * let step = nextLimit(2, { cpu: 30 }, work, options, initialPolicyMemo(options));
 * console.log(step.limit); // 2: one low reading could be noise
 * step = nextLimit(step.limit, { cpu: 30 }, work, options, step.memo);
 * console.log(step.limit); // 3
 * step = nextLimit(step.limit, { cpu: 30 }, { running: 3, waiting: true }, options, step.memo);
 * console.log(step.limit); // 5: the second raise in a row is twice the first
 * ```
 * @param current The policy's current limit (`limit` of the previous step, or `initial`).
 * @param reading The reading just taken.
 * @param work The running count and whether tasks are waiting.
 * @param options Target, band, bounds, step and memory threshold.
 * @param memo The previous step's `memo`, or {@link initialPolicyMemo} the first time.
 * @returns The new limit, the limit to apply now, the memory hold, and the memo for the next call.
 */
export function nextLimit(
  current: number,
  reading: LoadReading,
  work: WorkState,
  options: AutoConcurrencyOptions,
  memo: PolicyMemo,
): PolicyStep {
  const { cpuTarget, hysteresis, step, minFreeMemory } = options;
  const cpus = Math.max(1, options.cpus ?? optimalConcurrency());
  // The cores the tasks may keep busy.
  const budget = (cpus * cpuTarget) / 100;
  const tick = memo.tick + 1;
  const limit = clamp(current, options);
  const cpu = usableCpu(reading.cpu);
  const freeMemory = reading.freeMemory;
  const memoryHeld =
    typeof freeMemory === 'number' && !Number.isNaN(freeMemory) ? freeMemory < minFreeMemory : memo.memoryHeld;
  const running = Number.isFinite(work.running) ? Math.max(0, work.running) : 0;
  const share = demandPerTask(reading, running);
  const use = usePerTask(reading, running) ?? share;

  let { over, under, light, lastRaiseTick, lastLowerTick, lastMove, floor, floorUntil } = memo;
  const ioBound = share !== undefined && share <= IO_BOUND_SHARE;
  // How many such tasks fit within the budget, by the CPU they use (their waits for a CPU on a crowded
  // host are latency, not use; the demand already said they are I/O-bound).
  const fitting = use === undefined ? 0 : use === 0 ? Number.POSITIVE_INFINITY : Math.floor(budget / use + 1e-9);
  const lightFits = ioBound && limit <= fitting;
  const wantsLower = cpu !== undefined && cpu > cpuTarget + hysteresis && !lightFits;
  // A missing part of a reading is no information: the runs of readings stay as they are.
  if (cpu !== undefined) {
    over = wantsLower ? over + 1 : 0;
    // While nothing runs (the first workers still starting), a low reading says nothing of what the
    // tasks will need: it neither counts toward a raise nor ends a streak.
    if (cpu >= cpuTarget) under = 0;
    else if (running > 0) under += 1;
  }
  if (share !== undefined) light = ioBound ? light + 1 : 0;

  const systemRoom = cpu !== undefined && cpu < cpuTarget;
  const tasksRoom = ioBound && limit < fitting;
  const canRaise = work.waiting && !memoryHeld;
  // A streak of moves ends at the first informative reading that does not call for the same move.
  if (lastMove > 0 && (!canRaise || ((cpu !== undefined || share !== undefined) && !systemRoom && !tasksRoom))) lastMove = 0;
  if (lastMove < 0 && cpu !== undefined && !wantsLower) lastMove = 0;

  let next = limit;
  if (over >= CONFIRM_READINGS && running <= limit) {
    const size = lastMove < 0 ? Math.min(step, -2 * lastMove) : 1;
    const floorHolds = floor > 0 && tick <= floorUntil;
    const lowest = floorHolds ? Math.min(floor, limit) : options.min;
    next = Math.max(clamp(limit - size, options), lowest);
    if (next < limit) {
      lastLowerTick = tick;
      lastMove = next - limit;
    }
  } else if (canRaise && ((under >= CONFIRM_READINGS && systemRoom) || (light >= CONFIRM_READINGS && tasksRoom))) {
    const raiseHasShown = running >= limit || tick - lastRaiseTick >= 2;
    if (raiseHasShown) {
      // How many more tasks the readings have room for: under the target on the host, or within the
      // budget. Unknown without a measured demand per task: then start at 1 and double while the
      // readings keep calling for more.
      const room = Math.max(
        systemRoom ? slotsFor(((cpuTarget - cpu!) / 100) * cpus, share) : 0,
        tasksRoom ? fitting - limit : 0,
      );
      const size = share === undefined ? (lastMove > 0 ? 2 * lastMove : 1) : room;
      next = clamp(limit + Math.max(1, Math.min(size, limit, step)), options);
    }
    if (next > limit) {
      // Raising right after a lowering means the lowering overshot: remember where to stop.
      if (tick - lastLowerTick <= CONFIRM_READINGS + 1) {
        floor = next;
        floorUntil = tick + floorHoldIntervals(options.sampleInterval);
      }
      lastRaiseTick = tick;
      lastMove = next - limit;
    }
  }

  const effectiveLimit = memoryHeld ? Math.max(1, Math.min(next, running)) : next;
  return {
    limit: next,
    effectiveLimit,
    memoryHeld,
    memo: { tick, over, under, light, lastRaiseTick, lastLowerTick, lastMove, floor, floorUntil, memoryHeld },
  };
}

/**
 * Follows the host's load with a concurrency limit, in either direction.
 *
 * Emits `{ limit: initial, load: {}, memoryHeld: false }` synchronously on subscription, then takes a
 * reading every `sampleInterval` ms and applies {@link nextLimit}. It emits only when the limit, the
 * memory hold or the reading differs from the last emission; pipe `map(s => s.limit)` and
 * `distinctUntilChanged()` for the limit alone. A sampler that throws or rejects counts as a missing
 * reading; a sample still pending when the next interval comes makes that interval be skipped.
 * Unsubscribing stops sampling and calls `sampler.close()`.
 *
 * @example
 * ```ts
 * import { take } from 'rxjs';
 * import { autoConcurrency$, DEFAULT_CPU_TARGET, DEFAULT_HYSTERESIS, DEFAULT_MIN_FREE_MEMORY } from './controller.js';
 * import { systemLoadSampler } from './samplers.js';
 *
 * let running = 0;
 * autoConcurrency$(
 *   { initial: 2, min: 1, max: 8, cpuTarget: DEFAULT_CPU_TARGET, hysteresis: DEFAULT_HYSTERESIS,
 *     step: 1, sampleInterval: 100, minFreeMemory: DEFAULT_MIN_FREE_MEMORY },
 *   systemLoadSampler(),
 *   () => ({ running, waiting: true }),
 * )
 *   .pipe(take(4))
 *   .subscribe(({ limit, load }) => {
 *     running = limit; // a real merge starts tasks up to the limit
 *     console.log(limit, load.cpu);
 *   });
 * ```
 * @param options Target, band, bounds, step, interval and memory threshold.
 * @param sampler Where readings come from.
 * @param work Called at every interval: how many tasks run and whether more are waiting.
 * @param scheduler Drives the interval; pass a `TestScheduler` to run in virtual time.
 * @returns The controller's state, starting with the initial limit.
 */
export function autoConcurrency$(
  options: AutoConcurrencyOptions,
  sampler: LoadSampler,
  work: () => WorkState,
  scheduler: SchedulerLike = asyncScheduler,
): Observable<ControllerState> {
  return new Observable<ControllerState>((subscriber) => {
    let policyLimit = clamp(options.initial, options);
    let memo = initialPolicyMemo(options);
    let last: ControllerState = { limit: policyLimit, load: {}, memoryHeld: false };
    let sampling = false;
    let closed = false;
    subscriber.next(last);

    const evaluate = (reading: LoadReading): void => {
      if (closed) return;
      try {
        const load: LoadReading = reading !== null && typeof reading === 'object' ? { ...reading } : {};
        const step = nextLimit(policyLimit, load, work(), options, memo);
        policyLimit = step.limit;
        memo = step.memo;
        const state: ControllerState = { limit: step.effectiveLimit, load, memoryHeld: step.memoryHeld };
        if (!sameState(state, last)) {
          last = state;
          subscriber.next(state);
        }
      } catch (error) {
        // Only work() or a subscriber can throw here; their errors belong to the stream.
        subscriber.error(error);
      }
    };

    const takeReading = (): void => {
      if (sampling) return;
      let result: LoadReading | Promise<LoadReading>;
      try {
        result = sampler.sample();
      } catch {
        evaluate({});
        return;
      }
      if (!isPromiseLike(result)) {
        evaluate(result);
        return;
      }
      sampling = true;
      Promise.resolve(result).then(
        (reading) => {
          sampling = false;
          evaluate(reading);
        },
        () => {
          sampling = false;
          evaluate({});
        },
      );
    };

    const ticks = interval(options.sampleInterval, scheduler).subscribe(takeReading);
    return () => {
      closed = true;
      ticks.unsubscribe();
      try {
        sampler.close?.();
      } catch {
        // Teardown must not throw; a sampler that fails to close has nothing left for us to do.
      }
    };
  });
}

function clamp(limit: number, { min, max }: Pick<AutoConcurrencyOptions, 'min' | 'max'>): number {
  return Math.max(1, min, Math.min(max, limit));
}

/**
 * Cores of demand per running task, from the children's demand, or `undefined` when it is unknown.
 * Divided by the smaller of the measured children and the running tasks: idle workers (read 0)
 * must not make busy tasks look light, and tasks on workers too young to be measured add nothing.
 */
function demandPerTask(reading: LoadReading, running: number): number | undefined {
  const demand = reading.childrenDemand;
  const measured = reading.childrenMeasured;
  if (typeof demand !== 'number' || !Number.isFinite(demand) || demand < 0) return undefined;
  if (typeof measured !== 'number' || !(measured >= 1) || !(running >= 1)) return undefined;
  return demand / 100 / Math.min(measured, running);
}

/**
 * Cores of CPU used per running task: the demand without the time spent waiting for a CPU, or
 * `undefined` when the wait is not reported.
 */
function usePerTask(reading: LoadReading, running: number): number | undefined {
  const share = demandPerTask(reading, running);
  const wait = reading.childrenWait;
  if (share === undefined || typeof wait !== 'number' || !Number.isFinite(wait) || wait < 0) return undefined;
  const demand = reading.childrenDemand!;
  return demand > 0 ? (share * Math.max(0, demand - wait)) / demand : 0;
}

/** How many tasks of `share` cores each fit in `cores`: unbounded when the share is unknown or 0. */
function slotsFor(cores: number, share: number | undefined): number {
  if (share === undefined || share === 0) return Number.POSITIVE_INFINITY;
  return Math.floor(cores / share + 1e-9);
}

/** A CPU reading the policy may act on: finite and not negative, capped at 100. */
function usableCpu(cpu: number | undefined): number | undefined {
  if (typeof cpu !== 'number' || !Number.isFinite(cpu) || cpu < 0) return undefined;
  return Math.min(100, cpu);
}

function sameState(a: ControllerState, b: ControllerState): boolean {
  return (
    a.limit === b.limit &&
    a.memoryHeld === b.memoryHeld &&
    Object.is(a.load.cpu, b.load.cpu) &&
    Object.is(a.load.freeMemory, b.load.freeMemory) &&
    Object.is(a.load.childrenCpu, b.load.childrenCpu) &&
    Object.is(a.load.childrenRss, b.load.childrenRss) &&
    Object.is(a.load.childrenDemand, b.load.childrenDemand) &&
    Object.is(a.load.childrenWait, b.load.childrenWait) &&
    Object.is(a.load.childrenMeasured, b.load.childrenMeasured)
  );
}

function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
