import { asyncScheduler, interval, Observable, type SchedulerLike } from 'rxjs';
import type { LoadReading, LoadSampler } from './samplers.js';

/** Tuning of {@link autoConcurrency$}. Validated elsewhere (src/options.ts); every field is assumed valid here. */
export interface AutoConcurrencyOptions {
  /** The limit before the first reading, normally `optimalConcurrency()`. */
  initial: number;
  /** The limit never goes below this. @default {@link DEFAULT_MIN_CONCURRENCY} */
  min: number;
  /** The limit never goes above this. @default {@link DEFAULT_MAX_CONCURRENCY_PER_CPU} × CPUs, passed by the caller */
  max: number;
  /** System CPU percent to stay at or above: the limit rises while the CPU is below it. @default {@link DEFAULT_CPU_TARGET} */
  cpuTarget: number;
  /**
   * Width of the band above `cpuTarget`, in percent points, inside which the limit holds: it is
   * lowered only when the CPU is above `cpuTarget + hysteresis`. Keep the sum below 100, or the
   * limit can never come down. @default {@link DEFAULT_HYSTERESIS}
   */
  hysteresis: number;
  /** Largest change of the limit per interval. @default {@link DEFAULT_STEP} */
  step: number;
  /** Milliseconds between readings. @default {@link DEFAULT_SAMPLE_INTERVAL} */
  sampleInterval: number;
  /** Bytes; below this much available memory, new starts are held. @default {@link DEFAULT_MIN_FREE_MEMORY} */
  minFreeMemory: number;
}

/** The smallest limit automatic concurrency goes down to. */
export const DEFAULT_MIN_CONCURRENCY = 1;
/** The default `max` is this many times the number of CPUs (I/O-bound tasks need many more slots than cores). */
export const DEFAULT_MAX_CONCURRENCY_PER_CPU = 4;
/**
 * Percent of the host's CPU to stay at or above. Lower than the Python library's 95 so that
 * `cpuTarget + hysteresis` stays below 100: readings saturate at 100, and a band reaching past it
 * would mean the limit could never be lowered (that library's defect).
 */
export const DEFAULT_CPU_TARGET = 85;
/** Percent points above `cpuTarget` within which the limit holds. */
export const DEFAULT_HYSTERESIS = 10;
/** Largest change of the limit per interval. */
export const DEFAULT_STEP = 1;
/** Milliseconds between readings. */
export const DEFAULT_SAMPLE_INTERVAL = 1000;
/** Bytes of available memory below which new starts are held: 256 MiB. */
export const DEFAULT_MIN_FREE_MEMORY = 256 * 1024 * 1024;

/**
 * Readings needed in a row on the same side of the band before the limit moves: one reading off
 * the band (a spike) changes nothing, a sustained change moves the limit at the second interval.
 */
export const CONFIRM_READINGS = 2;
/**
 * Intervals during which a learned floor holds (see {@link PolicyMemo.floor}); afterwards the
 * controller may probe one step lower again, so it can follow load from other programs.
 */
export const FLOOR_HOLD_INTERVALS = 30;

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
  /** Consecutive usable readings above `cpuTarget + hysteresis`. */
  readonly over: number;
  /** Consecutive usable readings below `cpuTarget`. */
  readonly under: number;
  readonly lastRaiseTick: number;
  readonly lastLowerTick: number;
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
 * {@link FLOOR_HOLD_INTERVALS}: CPU-bound tasks at one per core read 100%, and a reading right after
 * the start cannot tell whether that load is ours or another program's. Probing one step lower at
 * once would cost the first intervals' throughput for nothing in the common case.
 *
 * @example
 * ```ts
 * import { initialPolicyMemo } from './controller.js';
 * console.log(initialPolicyMemo({ initial: 4, min: 1, max: 16 }).floor); // 4
 * ```
 * @param options The bounds and the initial limit.
 * @returns The memo for the first call of {@link nextLimit}.
 */
export function initialPolicyMemo(options: Pick<AutoConcurrencyOptions, 'initial' | 'min' | 'max'>): PolicyMemo {
  return {
    tick: 0,
    over: 0,
    under: 0,
    lastRaiseTick: 0,
    lastLowerTick: Number.NEGATIVE_INFINITY,
    floor: clamp(options.initial, options),
    floorUntil: FLOOR_HOLD_INTERVALS,
    memoryHeld: false,
  };
}

/**
 * Decides the concurrency limit for the next interval: the whole policy, as a pure function.
 *
 * - Raise by `step` after {@link CONFIRM_READINGS} readings in a row below `cpuTarget`, if tasks are
 *   waiting, memory is not held, and the previous raise has shown (all slots are in use, or an extra
 *   interval has passed).
 * - Lower by `step` after as many readings above `cpuTarget + hysteresis`, unless more tasks are
 *   running than the limit already allows (the previous lowering has not shown yet: lowering never
 *   kills, it waits for tasks to finish), and never below a learned floor.
 * - Otherwise hold. The result stays within `[min, max]` and moves by at most `step`. A missing,
 *   negative or non-finite CPU reading is no information: it neither moves the limit nor breaks a
 *   run of readings. Zero is a valid reading (an idle host); nothing is ever divided by a reading.
 * - Memory below `minFreeMemory` holds new starts: the effective limit becomes the running count
 *   (at least 1) until memory recovers.
 *
 * @example
 * ```ts
 * import { initialPolicyMemo, nextLimit } from './controller.js';
 * const options = { initial: 2, min: 1, max: 8, cpuTarget: 85, hysteresis: 10, step: 1, sampleInterval: 1000, minFreeMemory: 0 };
 * const work = { running: 2, waiting: true };
 * let step = nextLimit(2, { cpu: 30 }, work, options, initialPolicyMemo(options));
 * console.log(step.limit); // 2: one low reading could be noise
 * step = nextLimit(step.limit, { cpu: 30 }, work, options, step.memo);
 * console.log(step.limit); // 3
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
  const tick = memo.tick + 1;
  const limit = clamp(current, options);
  const cpu = usableCpu(reading.cpu);
  const freeMemory = reading.freeMemory;
  const memoryHeld =
    typeof freeMemory === 'number' && !Number.isNaN(freeMemory) ? freeMemory < minFreeMemory : memo.memoryHeld;
  const running = Number.isFinite(work.running) ? Math.max(0, work.running) : 0;

  let { over, under, lastRaiseTick, lastLowerTick, floor, floorUntil } = memo;
  let next = limit;
  // Without a usable reading there is nothing to act on: hold, and keep the runs of readings as they are.
  if (cpu !== undefined) {
    over = cpu > cpuTarget + hysteresis ? over + 1 : 0;
    under = cpu < cpuTarget ? under + 1 : 0;

    if (over >= CONFIRM_READINGS && running <= limit) {
      const floorHolds = floor > 0 && tick <= floorUntil;
      const lowest = floorHolds ? Math.min(floor, limit) : options.min;
      next = Math.max(clamp(limit - step, options), lowest);
      if (next < limit) lastLowerTick = tick;
    } else if (under >= CONFIRM_READINGS && work.waiting && !memoryHeld) {
      const raiseHasShown = running >= limit || tick - lastRaiseTick >= 2;
      next = raiseHasShown ? clamp(limit + step, options) : limit;
      if (next > limit) {
        // Raising right after a lowering means the lowering overshot: remember where to stop.
        if (tick - lastLowerTick <= CONFIRM_READINGS + 1) {
          floor = next;
          floorUntil = tick + FLOOR_HOLD_INTERVALS;
        }
        lastRaiseTick = tick;
      }
    }
  }

  const effectiveLimit = memoryHeld ? Math.max(1, Math.min(next, running)) : next;
  return {
    limit: next,
    effectiveLimit,
    memoryHeld,
    memo: { tick, over, under, lastRaiseTick, lastLowerTick, floor, floorUntil, memoryHeld },
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
    Object.is(a.load.childrenRss, b.load.childrenRss)
  );
}

function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
