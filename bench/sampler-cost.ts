// What one reading of automatic concurrency costs: the system sampler over 16 idle Node processes,
// then over 16 shells that each wait for an idle Node child (their trees are followed too).
// `npx tsx bench/sampler-cost.ts`. Prints wall and CPU milliseconds per reading, medians of 5 runs
// of 50 readings each.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { systemLoadSampler } from '../src/load/samplers.js';

const PROCESSES = 16;
const READINGS = 50;
const idleNode = [process.execPath, '-e', 'setInterval(() => {}, 1000)'] as const;

async function start(shells: boolean): Promise<ChildProcess[]> {
  const children = Array.from({ length: PROCESSES }, () =>
    shells
      ? spawn('sh', ['-c', `${idleNode.map((arg) => `'${arg}'`).join(' ')}; exit $?`], { stdio: 'ignore', detached: true })
      : spawn(idleNode[0], idleNode.slice(1), { stdio: 'ignore', detached: true }),
  );
  await Promise.all(children.map((child) => once(child, 'spawn')));
  await sleep(2000); // past their start-up
  return children;
}

async function measure(pids: number[]): Promise<{ wall: number; cpu: number }> {
  const sampler = systemLoadSampler({ childPids: () => pids });
  await sampler.sample();
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < READINGS; i++) await sampler.sample();
  const cpu = process.cpuUsage(cpuBefore);
  sampler.close?.();
  return { wall: (performance.now() - start) / READINGS, cpu: (cpu.user + cpu.system) / 1000 / READINGS };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

for (const shells of [false, true]) {
  const children = await start(shells);
  try {
    const runs = [];
    for (let i = 0; i < 5; i++) runs.push(await measure(children.map((child) => child.pid!)));
    const what = shells ? `${PROCESSES} shells, each waiting for an idle Node child` : `${PROCESSES} idle Node processes`;
    console.log(`${what}: ${median(runs.map((r) => r.wall)).toFixed(2)} ms wall, ${median(runs.map((r) => r.cpu)).toFixed(2)} ms CPU per reading`);
  } finally {
    for (const child of children) process.kill(-child.pid!, 'SIGKILL');
  }
}
