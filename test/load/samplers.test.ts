import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { moduleTask, schedule$ } from '../../src/index.js';
import { waitGone, work } from '../helpers.js';
import type { LoadReading } from '../../src/load/samplers.js';
import {
  cpuTimesSnapshot,
  cpuUtilisation,
  parseMemAvailable,
  parseSchedstat,
  STARTUP_MAX_MS,
  systemLoadSampler,
} from '../../src/load/samplers.js';

// Serial: the fd-count test must not see other tests' pipes and children come and go.

/** Starts a Node child that keeps one core busy until killed. */
function busyChild(): ChildProcess {
  return spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills the child and resolves once it has exited and been reaped. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

test.serial('the system sampler reports CPU within 0..100 on a second sample, and free memory', async (t) => {
  const sampler = systemLoadSampler();
  t.teardown(() => sampler.close?.());
  await sampler.sample();
  const until = Date.now() + 50;
  while (Date.now() < until) {
    // Some work, so that CPU time passes between the two samples.
  }
  const reading = await sampler.sample();
  t.is(typeof reading.cpu, 'number');
  t.true(reading.cpu! >= 0 && reading.cpu! <= 100, `cpu ${reading.cpu}`);
  t.true(reading.freeMemory! > 0);
  t.is(reading.childrenCpu, undefined, 'no childPids option, no children fields');
  t.is(reading.childrenRss, undefined);
});

test.serial('the CPU baseline is taken at creation, so the first sample can already report', async (t) => {
  const sampler = systemLoadSampler();
  await sleep(50);
  const { cpu } = await sampler.sample();
  t.true(cpu === undefined || (cpu >= 0 && cpu <= 100));
});

test.serial('cpuUtilisation: busy share of the time passed; unknown for no time or a changed CPU count', (t) => {
  t.is(cpuUtilisation({ idle: 1000, total: 2000, cpus: 2 }, { idle: 1500, total: 4000, cpus: 2 }), 75);
  t.is(cpuUtilisation({ idle: 1000, total: 2000, cpus: 2 }, { idle: 1000, total: 2000, cpus: 2 }), undefined);
  t.is(cpuUtilisation({ idle: 1000, total: 2000, cpus: 2 }, { idle: 1000, total: 3000, cpus: 4 }), undefined);
  t.is(cpuUtilisation({ idle: 0, total: 0, cpus: 0 }, { idle: 0, total: 0, cpus: 0 }), undefined);
  t.is(cpuUtilisation({ idle: 0, total: 0, cpus: 1 }, { idle: 50, total: 50, cpus: 1 }), 0);
  t.is(cpuUtilisation({ idle: 0, total: 0, cpus: 1 }, { idle: 0, total: 50, cpus: 1 }), 100);
  // Counters that go backwards (a reset) must not yield a reading outside 0..100.
  const odd = cpuUtilisation({ idle: 500, total: 1000, cpus: 1 }, { idle: 100, total: 1100, cpus: 1 });
  t.true(odd === undefined || (odd >= 0 && odd <= 100));
});

test.serial('cpuTimesSnapshot sums all CPUs', (t) => {
  const times = { user: 1, nice: 2, sys: 3, idle: 4, irq: 5 };
  t.deepEqual(cpuTimesSnapshot([{ model: 'x', speed: 1, times }, { model: 'x', speed: 1, times }]), {
    idle: 8,
    total: 30,
    cpus: 2,
  });
  t.deepEqual(cpuTimesSnapshot([]), { idle: 0, total: 0, cpus: 0 });
});

test.serial('parseMemAvailable reads MemAvailable in bytes, or nothing when it is missing', (t) => {
  const meminfo = 'MemTotal:       24683620 kB\nMemFree:        24442344 kB\nMemAvailable:   24390152 kB\n';
  t.is(parseMemAvailable(meminfo), 24390152 * 1024);
  t.is(parseMemAvailable('MemTotal: 100 kB\nMemFree: 50 kB\n'), undefined);
});

test.serial('childPids: a real child process is measured, and is gone after the test', async (t) => {
  const child = busyChild();
  t.teardown(() => stop(child));
  await once(child, 'spawn');
  const pid = child.pid!;
  const sampler = systemLoadSampler({ childPids: () => [pid] });
  t.teardown(() => sampler.close?.());

  const first = await sampler.sample();
  t.true(first.childrenRss! > 0, 'RSS on the first sample');
  await sleep(200);
  const second = await sampler.sample();
  t.true(second.childrenRss! > 0);
  t.true(second.childrenCpu! > 0, `a busy child uses CPU (read ${second.childrenCpu})`);

  await stop(child);
  t.false(isAlive(pid), 'the child is gone');
  const after = await sampler.sample();
  t.is(after.childrenCpu, 0, 'an exited child is skipped');
  t.is(after.childrenRss, 0);
});

test.serial('childPids: a pid that no longer exists does not throw and is skipped', async (t) => {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  t.teardown(() => stop(child));
  await once(child, 'exit');
  const gone = child.pid!;
  t.false(isAlive(gone));

  const sampler = systemLoadSampler({ childPids: () => [gone] });
  t.teardown(() => sampler.close?.());
  const reading = await sampler.sample();
  t.is(reading.childrenCpu, 0);
  t.is(reading.childrenRss, 0);
  t.true(reading.freeMemory! > 0, 'the rest of the reading is intact');

  // Mixed with a live pid (ours): the live one still counts.
  const mixed = systemLoadSampler({ childPids: () => [gone, process.pid, process.pid] });
  t.teardown(() => mixed.close?.());
  const both = await mixed.sample();
  t.true(both.childrenRss! > 0);
  t.true(both.childrenRss! < 1.5 * process.memoryUsage().rss, 'a duplicated pid counts once');
});

test.serial('childPids: an empty list reads zero; a throwing list keeps the CPU and memory reading', async (t) => {
  const empty = systemLoadSampler({ childPids: () => [] });
  t.like(await empty.sample(), { childrenCpu: 0, childrenRss: 0 });
  empty.close?.();

  const broken = systemLoadSampler({
    childPids: () => {
      throw new Error('no pid list');
    },
  });
  const reading = await broken.sample();
  t.true(reading.freeMemory! > 0);
  t.is(reading.childrenCpu, undefined);
  broken.close?.();
});

test.serial('os.cpus() that throws: the sampler is made, and its readings have no cpu but the rest; a run on automatic concurrency completes', async (t) => {
  // Before, the sampler threw as it was made, inside the run's start (a microtask): an uncaught
  // exception that ended the program.
  const cpus = os.cpus;
  os.cpus = () => {
    throw new Error('cpus unavailable');
  };
  syncBuiltinESMExports();
  try {
    const sampler = systemLoadSampler({ childPids: () => [] });
    const reading = await sampler.sample();
    t.is(reading.cpu, undefined);
    t.true(reading.freeMemory! > 0);
    t.is(reading.childrenCpu, 0);
    sampler.close?.();
    const run = schedule$([1, 2, 3].map((n) => moduleTask(work, 'square', [n])), { sampleInterval: 20 });
    t.deepEqual(await run.toOrderedArray(), [1, 4, 9]);
  } finally {
    os.cpus = cpus;
    syncBuiltinESMExports();
  }
});

test.serial('sampling the same pids again does not open more file descriptors', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('descriptor counting needs /proc/self/fd');
    return;
  }
  const child = busyChild();
  t.teardown(() => stop(child));
  await once(child, 'spawn');
  const sampler = systemLoadSampler({ childPids: () => [child.pid!, process.pid] });
  t.teardown(() => sampler.close?.());
  await sampler.sample();
  const open = readdirSync('/proc/self/fd').length;
  for (let i = 0; i < 20; i++) await sampler.sample();
  t.true(readdirSync('/proc/self/fd').length <= open, 'no descriptor per sample');
});

test.serial('parseSchedstat reads run and wait nanoseconds, or nothing from text that is not two numbers', (t) => {
  t.deepEqual(parseSchedstat('206824842 10504249 404\n'), { runNs: 206824842, waitNs: 10504249 });
  t.is(parseSchedstat(''), undefined);
  t.is(parseSchedstat('12'), undefined);
  t.is(parseSchedstat('a b c'), undefined);
  t.is(parseSchedstat('-1 5 3'), undefined);
});

/** Samples every 100 ms until `done(reading)` or 20 s; returns every reading. */
async function sampleUntil(sampler: ReturnType<typeof systemLoadSampler>, done: (r: LoadReading) => boolean): Promise<LoadReading[]> {
  const readings: LoadReading[] = [];
  const until = Date.now() + 20_000;
  do {
    await sleep(100);
    readings.push(await sampler.sample());
  } while (!done(readings.at(-1)!) && Date.now() < until);
  return readings;
}

test.serial('childrenDemand: a busy child demands a whole core however crowded the host; start-up is left out', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('childrenDemand needs /proc/<pid>/schedstat');
    return;
  }
  const child = busyChild();
  t.teardown(() => stop(child));
  await once(child, 'spawn');
  const sampler = systemLoadSampler({ childPids: () => [child.pid!] });
  t.teardown(() => sampler.close?.());
  const first = await sampler.sample();
  t.like(first, { childrenDemand: 0, childrenMeasured: 0 }, 'a child seen for the first time only gives its baseline');
  // A busy loop never reads low, so it counts from STARTUP_MAX_MS on.
  const readings = await sampleUntil(sampler, (r) => r.childrenMeasured === 1);
  const measured = readings.at(-1)!;
  t.is(measured.childrenMeasured, 1, `measured within 20 s (STARTUP_MAX_MS is ${STARTUP_MAX_MS})`);
  // Run + wait covers the whole interval for a thread that is always runnable. The kernel adds a
  // wait to schedstat only once it ends, so on a crowded host one short interval can read low (and
  // that may be the very interval that counted the child in); over a second the deferred waits
  // are in. Skew between the reads allows a margin.
  await sleep(1000);
  const later = await sampler.sample();
  t.is(later.childrenMeasured, 1);
  t.true(Number.isFinite(later.childrenDemand) && later.childrenDemand! >= 50, `demand ${later.childrenDemand} over a second (${measured.childrenDemand} when first measured)`);
});

test.serial('childrenDemand: a child that waits reads low, and counts once it has started', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('childrenDemand needs /proc/<pid>/schedstat');
    return;
  }
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  t.teardown(() => stop(child));
  await once(child, 'spawn');
  const sampler = systemLoadSampler({ childPids: () => [child.pid!] });
  t.teardown(() => sampler.close?.());
  await sampler.sample();
  const readings = await sampleUntil(sampler, (r) => r.childrenMeasured === 1);
  t.is(readings.at(-1)!.childrenMeasured, 1);
  t.true(readings.at(-1)!.childrenDemand! <= 50, `demand ${readings.at(-1)!.childrenDemand}`);
  await stop(child);
  t.like(await sampler.sample(), { childrenDemand: 0, childrenMeasured: 0 }, 'an exited child is forgotten');
});

test.serial('a child counts with the processes it started: a shell waiting on a busy grandchild demands a core, with its memory', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('childrenDemand needs /proc/<pid>/schedstat');
    return;
  }
  // `; exit $?` keeps the shell from replacing itself with Node: it waits while its child works.
  const shell = spawn('sh', ['-c', `${JSON.stringify(process.execPath)} -e 'for (;;) {}'; exit $?`], { stdio: 'ignore', detached: true });
  const group = shell.pid!;
  t.teardown(() => {
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  await once(shell, 'spawn');
  let grandchild: number | undefined;
  const until = Date.now() + 20_000;
  while (grandchild === undefined && Date.now() < until) {
    await sleep(20);
    grandchild = Number(readFileSync(`/proc/${group}/task/${group}/children`, 'latin1').trim().split(' ')[0]) || undefined;
  }
  t.truthy(grandchild, 'the shell started its child');
  const sampler = systemLoadSampler({ childPids: () => [group] });
  t.teardown(() => sampler.close?.());
  await sampler.sample();
  // The shell only waits, but its tree is busy: it never reads calm, so it counts from STARTUP_MAX_MS on.
  const readings = await sampleUntil(sampler, (r) => r.childrenMeasured === 1);
  t.is(readings.at(-1)!.childrenMeasured, 1, `measured within 20 s (STARTUP_MAX_MS is ${STARTUP_MAX_MS})`);
  await sleep(1000);
  const later = await sampler.sample();
  t.true(later.childrenDemand! >= 50, `demand ${later.childrenDemand} over a second: the grandchild's busy loop, not the shell's wait`);
  t.true(later.childrenRss! > 10 * 2 ** 20, `memory ${later.childrenRss} bytes: the Node grandchild's, not only the shell's`);

  const exited = once(shell, 'exit');
  process.kill(-group, 'SIGKILL');
  await exited;
  t.deepEqual(await waitGone([group, grandchild!]), [], 'the shell and its child are gone');
});

test.serial("a tree's CPU time is counted once: a process whose busy thread ended is not counted again when its shell reaps it", async (t) => {
  if (process.platform !== 'linux') {
    t.pass('trees are followed on Linux only');
    return;
  }
  // A worker thread burns about 1 s and ends; then Node idles 1 s and exits; the shell reaps it.
  const program = `const { Worker } = require('node:worker_threads'); new Worker('const end = Date.now() + 1000; while (Date.now() < end);', { eval: true }).on('exit', () => setTimeout(() => {}, 1000));`;
  const shell = spawn('sh', ['-c', `${JSON.stringify(process.execPath)} -e "${program}"; sleep 0.5`], { stdio: 'ignore', detached: true });
  t.teardown(() => {
    try {
      process.kill(-shell.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const exited = once(shell, 'exit');
  await once(shell, 'spawn');
  const sampler = systemLoadSampler({ childPids: () => [shell.pid!] });
  t.teardown(() => sampler.close?.());
  await sampler.sample();
  let cpuMs = 0;
  let last = process.hrtime.bigint();
  const readings: number[] = [];
  // What Node used in all, as the shell's cutime + cstime once it has reaped it (it then sleeps).
  let reapedMs = 0;
  let done = false;
  void exited.then(() => (done = true));
  while (!done) {
    await sleep(100);
    const reading = await sampler.sample();
    const now = process.hrtime.bigint();
    readings.push(reading.childrenCpu ?? 0);
    cpuMs += ((reading.childrenCpu ?? 0) / 100) * (Number(now - last) / 1e6);
    last = now;
    try {
      const fields = readFileSync(`/proc/${shell.pid}/stat`, 'latin1').split(') ')[1]!.split(' ');
      reapedMs = (Number(fields[13]) + Number(fields[14])) * 10;
    } catch {
      // the shell has exited
    }
  }
  const most = 100 * os.cpus().length;
  const shown = readings.map((r) => r.toFixed(0)).join(' ');
  t.true(readings.every((cpu) => cpu <= most + 30), `no reading above what ${os.cpus().length} CPUs can give: ${shown}`);
  t.true(reapedMs > 0, 'the shell reaped Node');
  // The busy loop runs for a second of wall time; on a crowded host it gets less CPU than that.
  t.true(
    cpuMs >= 0.6 * reapedMs - 50 && cpuMs <= 1.4 * reapedMs + 100,
    `${cpuMs.toFixed(0)} ms of CPU counted, for ${reapedMs} ms used (its shell's cutime): ${shown}`,
  );
});

test.serial('a command that keeps starting short processes that wait (a shell loop of sleeps) reads calm, and counts as waiting', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('trees are followed on Linux only');
    return;
  }
  // Sleeps shorter than the 100 ms between readings: no two readings see the same processes.
  const shell = spawn('sh', ['-c', 'i=0; while [ $i -lt 100 ]; do sleep 0.03; i=$((i + 1)); done'], { stdio: 'ignore', detached: true });
  t.teardown(() => {
    try {
      process.kill(-shell.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  await once(shell, 'spawn');
  const sampler = systemLoadSampler({ childPids: () => [shell.pid!] });
  t.teardown(() => sampler.close?.());
  await sampler.sample();
  const readings = await sampleUntil(sampler, (r) => r.childrenMeasured === 1);
  const measured = readings.at(-1)!;
  t.is(measured.childrenMeasured, 1, 'counted although its processes change from one reading to the next');
  t.true(measured.childrenDemand! <= 50, `demand ${measured.childrenDemand}`);
});
