import test, { type ExecutionContext } from 'ava';
import { distinctUntilChanged, filter, firstValueFrom, map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import {
  autoConcurrency$,
  CONFIRM_READINGS,
  type AutoConcurrencyOptions,
  type ControllerState,
  floorHoldIntervals,
  initialPolicyMemo,
  nextLimit,
  type WorkState,
} from '../../src/load/controller.js';
import type { LoadReading, LoadSampler } from '../../src/load/samplers.js';

const INTERVAL = 1000;
const base: AutoConcurrencyOptions = {
  initial: 2,
  min: 1,
  max: 8,
  cpuTarget: 85,
  hysteresis: 10,
  step: 1,
  sampleInterval: INTERVAL,
  minFreeMemory: 0,
  cpus: 2,
};
const FLOOR_HOLD_INTERVALS = floorHoldIntervals(INTERVAL);
const upperBand = base.cpuTarget + base.hysteresis;

/** What one scripted sample returns: a reading, or an Error to throw. */
type Script = LoadReading | Error | undefined;

interface Tick {
  /** 1 for the first reading. */
  tick: number;
  /** The limit in force during the interval that this reading measures. */
  limit: number;
}

interface Simulation {
  /** Every emission, with the virtual time it happened at. */
  emissions: Array<{ time: number; state: ControllerState }>;
  /** The emitted limit after each interval: index 0 is the initial limit, index k the limit after reading k. */
  limits: number[];
  samples: number;
  closes: number;
}

/**
 * Runs the controller in virtual time for `intervals` intervals. `reading` scripts the sampler from
 * the limit in force (so a test can model how the load follows the limit); `work` does the same for
 * the merge. By default every slot is filled and more tasks wait.
 */
function simulate(
  t: ExecutionContext,
  intervals: number,
  reading: (tick: Tick) => Script,
  options: Partial<AutoConcurrencyOptions> = {},
  work: (tick: Tick) => WorkState = ({ limit }) => ({ running: limit, waiting: true }),
): Simulation {
  const opts = { ...base, ...options };
  const scheduler = new TestScheduler((actual, expected) => t.deepEqual(actual, expected));
  const result: Simulation = { emissions: [], limits: [], samples: 0, closes: 0 };
  let limit = Number.NaN;
  let tick = 0;
  const sampler: LoadSampler = {
    sample() {
      result.samples += 1;
      tick += 1;
      const scripted = reading({ tick, limit });
      if (scripted instanceof Error) throw scripted;
      return scripted as LoadReading;
    },
    close() {
      result.closes += 1;
    },
  };
  scheduler.run(() => {
    const subscription = autoConcurrency$(opts, sampler, () => work({ tick, limit }), scheduler).subscribe({
      next(state) {
        limit = state.limit;
        result.emissions.push({ time: scheduler.now(), state });
      },
      error: (error: unknown) => t.fail(String(error)),
    });
    scheduler.schedule(() => subscription.unsubscribe(), intervals * opts.sampleInterval + 1);
  });
  for (let k = 0; k <= intervals; k++) {
    const time = k * opts.sampleInterval;
    result.limits.push(result.emissions.filter((e) => e.time <= time).at(-1)!.state.limit);
  }
  return result;
}

/** Indexes (reading numbers) at which the limit changed. */
function changes(limits: readonly number[]): number[] {
  return limits.flatMap((limit, k) => (k > 0 && limit !== limits[k - 1] ? [k] : []));
}

function assertInvariants(t: ExecutionContext, limits: readonly number[], options: Partial<AutoConcurrencyOptions> = {}) {
  const { min, max, step } = { ...base, ...options };
  for (const [k, limit] of limits.entries()) {
    t.true(Number.isInteger(limit) && limit >= Math.max(1, min) && limit <= max, `limit ${limit} at ${k}`);
    if (k > 0) t.true(Math.abs(limit - limits[k - 1]!) <= step, `step ${limits[k - 1]} -> ${limit} at ${k}`);
  }
}

/** Deterministic noise (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

test('readings taken while nothing runs yet (the first workers starting) do not count toward a raise', (t) => {
  const starting: WorkState = { running: 0, waiting: true };
  let step = nextLimit(2, { cpu: 20 }, starting, base, initialPolicyMemo(base));
  for (let i = 1; i < 4; i++) step = nextLimit(step.limit, { cpu: 20 }, starting, base, step.memo);
  t.is(step.limit, 2, 'four low readings with nothing running: no raise');
  const runningNow: WorkState = { running: 2, waiting: true };
  step = nextLimit(step.limit, { cpu: 20 }, runningNow, base, step.memo);
  t.is(step.limit, 2, 'the first low reading with tasks running starts the streak');
  step = nextLimit(step.limit, { cpu: 20 }, runningNow, base, step.memo);
  t.true(step.limit > 2, 'and the second raises');
});

test('emits the initial state synchronously, and unsubscribing closes the sampler', (t) => {
  let closes = 0;
  const sampler: LoadSampler = { sample: () => ({ cpu: 0 }), close: () => void (closes += 1) };
  const seen: ControllerState[] = [];
  autoConcurrency$(base, sampler, () => ({ running: 0, waiting: true }))
    .subscribe((state) => seen.push(state))
    .unsubscribe();
  t.deepEqual(seen, [{ limit: 2, load: {}, memoryHeld: false }]);
  t.is(closes, 1);
});

test('rising load: raises while below target, holds in the band, lowers above it (marbles)', (t) => {
  const cpu = [10, 10, 10, 10, 90, 90, 100, 100, 100, 100, 100, 100];
  const scheduler = new TestScheduler((actual, expected) => t.deepEqual(actual, expected));
  scheduler.run(({ expectObservable }) => {
    let limit = 0;
    let tick = 0;
    const sampler: LoadSampler = { sample: () => ({ cpu: cpu[tick++] }) };
    const limits$ = autoConcurrency$(base, sampler, () => ({ running: limit, waiting: true }), scheduler).pipe(
      map((state) => (limit = state.limit)),
      distinctUntilChanged(),
    );
    // Two low readings confirm the trend, then one step per interval; the initial limit is the floor.
    expectObservable(limits$, '^ 12000ms !').toBe('a 1999ms b 999ms c 999ms d 3999ms e 999ms f 999ms g', {
      a: 2, b: 3, c: 4, d: 5, e: 4, f: 3, g: 2,
    });
  });
});

test('falling load: a limit raised for I/O comes back down when the tasks turn CPU-bound', (t) => {
  // 10 readings of an I/O-bound phase, then a saturated CPU.
  const sim = simulate(t, 30, ({ tick }) => ({ cpu: tick <= 10 ? 10 : 100 }));
  assertInvariants(t, sim.limits);
  t.is(sim.limits[10], 8, 'raised to max during the I/O phase');
  for (let k = 12; k <= 17; k++) t.is(sim.limits[k], sim.limits[k - 1]! - 1, `one step down at ${k}`);
  t.is(sim.limits[17], 2);
  t.deepEqual(sim.limits.slice(17), Array(14).fill(2), 'stops at the initial limit');
});

test('a CPU-bound load on four cores settles at four without flapping', (t) => {
  const cores = 4;
  const sim = simulate(t, 60, ({ limit }) => ({ cpu: Math.min(100, (100 * limit) / cores) }));
  assertInvariants(t, sim.limits);
  // 2 (50%) -> 3 (75%) -> 4 (100%, above the band) -> probes 3 (75%, under target) -> back to 4, learned as floor.
  t.deepEqual(sim.limits.slice(0, 10), [2, 2, 3, 4, 4, 3, 3, 4, 4, 4]);
  const settledAt = 7;
  t.deepEqual(changes(sim.limits).filter((k) => k > settledAt && k <= settledAt + FLOOR_HOLD_INTERVALS), []);
  // Afterwards one probe per hold period at most: two changes (down and back up).
  t.true(changes(sim.limits).filter((k) => k > settledAt).length <= 2 * Math.ceil((60 - settledAt) / FLOOR_HOLD_INTERVALS));
});

test('a CPU-bound load on two cores stays at two: no probing below the initial limit at the start', (t) => {
  const sim = simulate(t, FLOOR_HOLD_INTERVALS, ({ limit }) => ({ cpu: Math.min(100, 50 * limit) }));
  t.deepEqual(changes(sim.limits), []);
});

test('after the hold period it probes lower, so load from other programs is followed', (t) => {
  // Another program keeps the CPU saturated whatever we do.
  const sim = simulate(t, FLOOR_HOLD_INTERVALS + 10, () => ({ cpu: 100 }), { initial: 4 });
  assertInvariants(t, sim.limits, { initial: 4 });
  t.is(sim.limits[FLOOR_HOLD_INTERVALS], 4);
  t.is(sim.limits.at(-1), 1);
});

test('hysteresis: noise within the band never changes the limit', (t) => {
  const noise = random(42);
  const sim = simulate(t, 300, () => ({ cpu: base.cpuTarget + noise() * base.hysteresis }));
  t.deepEqual(changes(sim.limits), []);
});

test('noise straddling the whole band, never twice on the same side, changes nothing', (t) => {
  const noise = random(7);
  const sim = simulate(t, 300, ({ tick }) => ({
    cpu: tick % 2 ? noise() * (base.cpuTarget - 1) : upperBand + 1 + noise() * (99 - upperBand),
  }));
  t.deepEqual(changes(sim.limits), []);
});

test('single-interval spikes change nothing; a sustained one moves the limit at its second interval', (t) => {
  const spikes = simulate(t, 60, ({ tick }) => ({ cpu: tick % 5 === 0 ? 100 : tick % 7 === 0 ? 5 : 90 }), { initial: 4, min: 1 });
  t.deepEqual(changes(spikes.limits), []);

  const options = { initial: 2, max: 8 };
  const sustained = simulate(t, 20, ({ tick }) => ({ cpu: tick < 10 ? 90 : 20 }), options);
  t.deepEqual(changes(sustained.limits).slice(0, 1), [11], 'raised at the second low reading');
});

test('the limit reacts within two intervals in both directions', (t) => {
  const scenario = ({ tick }: Tick): LoadReading => ({ cpu: tick <= 5 ? 5 : tick <= 10 ? 90 : tick <= 15 ? 100 : 90 });
  const sim = simulate(t, 20, scenario, { initial: 2 });
  // Low from reading 1: first raise at reading 2. Above the band from reading 11: first drop at 12.
  t.is(changes(sim.limits)[0], CONFIRM_READINGS);
  t.true(changes(sim.limits).includes(10 + CONFIRM_READINGS));
  t.true(sim.limits[10 + CONFIRM_READINGS]! < sim.limits[10]!);
});

test('all zeros: raises one step at a time up to max and never past it', (t) => {
  for (const step of [1, 3]) {
    const options = { step, max: 11 };
    const sim = simulate(t, 20, () => ({ cpu: 0 }), options);
    assertInvariants(t, sim.limits, options);
    t.is(sim.limits.at(-1), 11);
  }
});

test('no raise when nothing is waiting, even on an idle host', (t) => {
  const sim = simulate(t, 30, () => ({ cpu: 0 }), {}, () => ({ running: 1, waiting: false }));
  t.deepEqual(changes(sim.limits), []);
});

test('all missing, NaN, negative or infinite readings: hold, no error, no division', (t) => {
  const bad: Script[] = [{}, { cpu: undefined }, { cpu: Number.NaN }, { cpu: -5 }, { cpu: Number.POSITIVE_INFINITY }, undefined];
  const sim = simulate(t, 60, ({ tick }) => bad[tick % bad.length]);
  t.deepEqual(changes(sim.limits), []);
  t.is(sim.samples, 60);
});

test('missing readings neither move the limit nor break a run of readings', (t) => {
  const sim = simulate(t, 6, ({ tick }) => (tick % 2 ? { cpu: 10 } : {}));
  // Low readings at 1 and 3 (with a gap at 2) confirm each other.
  t.deepEqual(sim.limits, [2, 2, 2, 3, 3, 4, 4]);
});

test('a sampler that throws counts as a missing reading', (t) => {
  const sim = simulate(t, 8, ({ tick }) => (tick <= 4 ? new Error('sensor down') : { cpu: 10 }));
  t.deepEqual(sim.limits, [2, 2, 2, 2, 2, 2, 3, 4, 5]);
  t.deepEqual(sim.emissions.slice(0, 2).map((e) => e.state.load), [{}, { cpu: 10 }]);
});

test('a raise waits until it has shown: tasks that are slow to start are counted', (t) => {
  // The merge needs two intervals to fill a new slot.
  const history: number[] = [];
  const sim = simulate(t, 20, () => ({ cpu: 10 }), { max: 20 }, ({ limit }) => {
    history.push(limit);
    return { running: history.at(-3) ?? limit, waiting: true };
  });
  assertInvariants(t, sim.limits, { max: 20 });
  const raises = changes(sim.limits);
  t.true(raises.length >= 5);
  for (let i = 1; i < raises.length; i++) t.true(raises[i]! - raises[i - 1]! >= 2, `raises at ${raises.join(',')}`);
});

test('lowering waits for running tasks to finish, so it does not overshoot', (t) => {
  // Eight long CPU-bound tasks hold the CPU for 10 intervals, whatever the limit says.
  const sim = simulate(
    t,
    14,
    () => ({ cpu: 100 }),
    { initial: 8, min: 1 },
    ({ tick, limit }) => ({ running: tick <= 10 ? 8 : limit, waiting: true }),
  );
  t.deepEqual(sim.limits.slice(0, 11), Array(11).fill(8), 'held by the floor');
  const overshoot = simulate(
    t,
    FLOOR_HOLD_INTERVALS + 8,
    () => ({ cpu: 100 }),
    { initial: 8, min: 1 },
    ({ tick, limit }) => ({ running: tick <= FLOOR_HOLD_INTERVALS + 4 ? 8 : limit, waiting: true }),
  );
  // The floor expires after FLOOR_HOLD_INTERVALS: one step down, then nothing until tasks finish.
  const k = FLOOR_HOLD_INTERVALS + 1;
  t.deepEqual(overshoot.limits.slice(k - 1, k + 4), [8, 7, 7, 7, 7]);
  t.true(overshoot.limits.at(-1)! < 7);
});

test('memory pressure holds new starts at the running count, never 0, and recovery restores the limit', (t) => {
  const MiB = 1024 * 1024;
  const options = { initial: 4, minFreeMemory: 256 * MiB };
  const free = (tick: number) => (tick >= 3 && tick <= 8 ? 100 * MiB : 2048 * MiB);
  const running = (tick: number) => (tick <= 4 ? 4 : tick <= 6 ? 2 : 0);
  const sim = simulate(t, 12, ({ tick }) => ({ cpu: 90, freeMemory: free(tick) }), options, ({ tick }) => ({
    running: running(tick),
    waiting: true,
  }));
  t.deepEqual(sim.limits, [4, 4, 4, 4, 4, 2, 2, 1, 1, 4, 4, 4, 4]);
  // Emitted: initial, first reading, held at 4, 2, 1, released.
  t.deepEqual(
    sim.emissions.map((e) => [e.time / INTERVAL, e.state.limit, e.state.memoryHeld]),
    [[0, 4, false], [1, 4, false], [3, 4, true], [5, 2, true], [7, 1, true], [9, 4, false]],
  );
  t.true(sim.limits.every((limit) => limit >= 1));
});

test('no raise while memory is held, even on an idle host; a reading without memory keeps the hold', (t) => {
  const MiB = 1024 * 1024;
  const sim = simulate(
    t,
    10,
    ({ tick }) => (tick === 1 ? { cpu: 0, freeMemory: MiB } : { cpu: 0 }),
    { initial: 3, minFreeMemory: 256 * MiB },
    () => ({ running: 3, waiting: true }),
  );
  t.deepEqual(changes(sim.limits), []);
  t.true(sim.emissions.slice(1).every((e) => e.state.memoryHeld));
});

test('bounds and step hold under random readings and random work', (t) => {
  for (const [seed, options] of [
    [1, { step: 1 }],
    [2, { step: 3, min: 2, max: 12, initial: 5 }],
    [3, { step: 2, cpuTarget: 50, hysteresis: 30 }],
  ] as const) {
    const noise = random(seed);
    const sim = simulate(
      t,
      500,
      () => {
        const r = noise();
        return r < 0.1 ? {} : r < 0.15 ? new Error('flaky') : { cpu: noise() * 120 - 10 };
      },
      options,
      ({ limit }) => ({ running: Math.floor(noise() * (limit + 2)), waiting: noise() < 0.8 }),
    );
    assertInvariants(t, sim.limits, options);
    t.true(new Set(sim.limits).size > 1, 'it moved at all');
  }
});

test('only changes are emitted after the first emission', (t) => {
  const sim = simulate(t, 10, () => ({ cpu: 90, freeMemory: 1e9 }));
  t.is(sim.emissions.length, 2);
  t.deepEqual(sim.emissions[1], { time: INTERVAL, state: { limit: 2, load: { cpu: 90, freeMemory: 1e9 }, memoryHeld: false } });
});

test('unsubscribing stops sampling', (t) => {
  const sim = simulate(t, 3, () => ({ cpu: 90 }));
  t.is(sim.samples, 3);
  t.is(sim.closes, 1);
});

test('an error from work() errors the stream', (t) => {
  const scheduler = new TestScheduler((actual, expected) => t.deepEqual(actual, expected));
  scheduler.run(({ expectObservable }) => {
    const failing = () => {
      throw new Error('no work state');
    };
    const limits$ = autoConcurrency$(base, { sample: () => ({ cpu: 1 }) }, failing, scheduler).pipe(map((s) => s.limit));
    expectObservable(limits$).toBe('a 999ms #', { a: 2 }, new Error('no work state'));
  });
});

test('an asynchronous sampler that rejects counts as a missing reading; the stream goes on', async (t) => {
  let calls = 0;
  const sampler: LoadSampler = {
    async sample() {
      calls += 1;
      if (calls <= 3) throw new Error('not yet');
      return { cpu: 10 };
    },
  };
  const raised = await firstValueFrom(
    autoConcurrency$({ ...base, sampleInterval: 5 }, sampler, () => ({ running: 2, waiting: true })).pipe(
      filter((state) => state.limit > 2),
    ),
  );
  t.is(raised.limit, 3);
  t.true(calls >= 5);
});

test('a slow asynchronous sampler is not called again while a sample is pending', async (t) => {
  let pending = 0;
  let overlapped = false;
  let calls = 0;
  const sampler: LoadSampler = {
    async sample() {
      calls += 1;
      pending += 1;
      overlapped ||= pending > 1;
      await new Promise((resolve) => setTimeout(resolve, 12));
      pending -= 1;
      return { cpu: 10 };
    },
  };
  await firstValueFrom(
    autoConcurrency$({ ...base, sampleInterval: 2 }, sampler, () => ({ running: 2, waiting: true })).pipe(
      filter((state) => state.limit > 3),
    ),
  );
  t.false(overlapped);
  t.true(calls >= 4);
});

test('nextLimit is a pure step: the same inputs give the same output', (t) => {
  const work = { running: 2, waiting: true };
  const first = nextLimit(2, { cpu: 30 }, work, base, initialPolicyMemo(base));
  t.is(first.limit, 2);
  const second = nextLimit(first.limit, { cpu: 30 }, work, base, first.memo);
  t.is(second.limit, 3);
  t.deepEqual(nextLimit(first.limit, { cpu: 30 }, work, base, first.memo), second);
  t.is(first.memo.tick, 1, 'the memo passed in is not mutated');
});

// ---- the tasks' own demand (childrenDemand): I/O-bound tasks on a busy host ---------------------

/** A reading of `running` tasks that each demand `perTask` percent of a core, on a host at `cpu` percent. */
function demandReading(cpu: number, running: number, perTask: number, idleWorkers = 0): LoadReading {
  return { cpu, childrenDemand: running * perTask, childrenMeasured: running + idleWorkers };
}

test('I/O-bound tasks rise to max on a host that other programs keep busy, doubling at most', (t) => {
  const options = { max: 16, step: 8 };
  const sim = simulate(t, 12, ({ limit }) => demandReading(100, limit, 3), options);
  assertInvariants(t, sim.limits, options);
  t.deepEqual(sim.limits.slice(0, 6), [2, 2, 4, 8, 16, 16], 'confirmed at the second reading, then the limit doubles');
  for (const [k, limit] of sim.limits.entries()) if (k > 0) t.true(limit <= 2 * sim.limits[k - 1]!, `at most doubles at ${k}`);
  t.deepEqual(changes(sim.limits).filter((k) => k > 4), [], 'and stays there: lowering them would free nothing');
});

test('I/O-bound tasks rise only as far as their own demand fits within cpuTarget of the CPUs', (t) => {
  // 2 CPUs at 85%: 1.7 cores. Tasks of 20% of a core each: 8 fit (1.6), 9 would not (1.8).
  const sim = simulate(t, 20, ({ limit }) => demandReading(100, limit, 20), { max: 32, step: 32 });
  t.is(Math.max(...sim.limits), 8);
  t.is(sim.limits.at(-1), 8);
});

test('CPU-bound tasks are never raised on their own account, however crowded the host', (t) => {
  // Each task is runnable all the time: 100% of a core of demand, whatever CPU share it gets.
  const sim = simulate(t, 2 * FLOOR_HOLD_INTERVALS, ({ limit }) => demandReading(100, limit, 100), { max: 16, step: 8 });
  t.true(sim.limits.every((limit) => limit <= 2), 'never above the initial limit');
  t.true(sim.limits.slice(FLOOR_HOLD_INTERVALS + 2).every((limit) => limit === 1), 'the crowded host is followed down once the floor expires');
});

test('idle workers do not make busy tasks look I/O-bound', (t) => {
  // 2 busy tasks and 14 idle workers left over from an earlier, higher limit: 200% over 16 children.
  const sim = simulate(t, 20, () => demandReading(100, 2, 100, 14), { max: 16, step: 8 }, () => ({ running: 2, waiting: true }));
  t.deepEqual(changes(sim.limits), []);
});

test('the workload turns CPU-bound: the limit comes down, lowerings start at 1 and double, down to the floor', (t) => {
  const options = { max: 16, step: 8 };
  // I/O-bound for 8 readings, then each task demands a whole core.
  const sim = simulate(t, 30, ({ tick, limit }) => demandReading(100, limit, tick <= 8 ? 3 : 100), options);
  assertInvariants(t, sim.limits, options);
  t.is(sim.limits[8], 16);
  const downs = sim.limits.slice(8).flatMap((limit, k, all) => (k > 0 && limit < all[k - 1]! ? [all[k - 1]! - limit] : []));
  t.deepEqual(downs.slice(0, 3), [1, 2, 4]);
  t.is(sim.limits.at(-1), 2, 'the initial limit holds as the floor');
});

test('a raise for I/O-bound tasks waits for memory, and for tasks to wait', (t) => {
  const MiB = 1024 * 1024;
  const held = simulate(t, 10, ({ limit }) => ({ ...demandReading(100, limit, 3), freeMemory: MiB }), { minFreeMemory: 256 * MiB });
  t.deepEqual(changes(held.limits), []);
  const idle = simulate(t, 10, ({ limit }) => demandReading(100, limit, 3), {}, ({ limit }) => ({ running: limit, waiting: false }));
  t.deepEqual(changes(idle.limits), []);
});

test('missing, negative or non-finite demand is no information', (t) => {
  // The CPU in the band: only the demand could move the limit.
  const bad: LoadReading[] = [
    { cpu: 90, childrenDemand: Number.NaN, childrenMeasured: 2 },
    { cpu: 90, childrenDemand: -5, childrenMeasured: 2 },
    { cpu: 90, childrenDemand: Number.POSITIVE_INFINITY, childrenMeasured: 2 },
    { cpu: 90, childrenDemand: 10, childrenMeasured: 0 },
    { cpu: 90, childrenDemand: 10 },
    { cpu: 90 },
  ];
  const sim = simulate(t, 36, ({ tick }) => bad[tick % bad.length]);
  t.deepEqual(changes(sim.limits), []);
});

test('a busy host without demand readings: raises start at 1 and double, never past step', (t) => {
  const options = { max: 40, step: 8 };
  const sim = simulate(t, 12, () => ({ cpu: 10 }), options);
  assertInvariants(t, sim.limits, options);
  t.deepEqual(sim.limits.slice(0, 8), [2, 2, 3, 5, 9, 17, 25, 33]);
});

test('a raise is kept within the CPU left under the target, measured per task', (t) => {
  // 4 CPUs, tasks of 50% of a core: at 2 tasks the host reads 25%, and 2.4 cores are left under 85%.
  const options = { cpus: 4, max: 32, step: 32 };
  const sim = simulate(t, 3, ({ limit }) => ({ cpu: (limit * 50) / 4, childrenDemand: limit * 50, childrenMeasured: limit }), options);
  t.deepEqual(sim.limits, [2, 2, 4, 6]);
});

test('waiting for a CPU on a crowded host is not counted against the budget of I/O-bound tasks', (t) => {
  // Each task uses 5% of a core and waits another 15% for a CPU after each wake-up: 20% of demand,
  // I/O-bound. By demand only 8 would fit in 1.7 cores; by use, 34 do.
  const options = { max: 32, step: 32 };
  const crowded = simulate(t, 12, ({ limit }) => ({ cpu: 100, childrenDemand: limit * 20, childrenWait: limit * 15, childrenMeasured: limit }), options);
  t.is(crowded.limits.at(-1), 32);
  const unknownWait = simulate(t, 12, ({ limit }) => demandReading(100, limit, 20), options);
  t.is(unknownWait.limits.at(-1), 8, 'without childrenWait the demand is the conservative measure');
});
