import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

let cached: number | undefined;

/**
 * How many CPUs this process may really use: the CPUs it is allowed to run on (affinity), capped
 * by the cgroup CPU quota where the OS reports one (containers often have fewer CPUs than the
 * host shows). At least 1. Read once and cached.
 *
 * The successor of the Python library's `Scheduler.optimal_process_count()`.
 *
 * @example
 * ```ts
 * import { optimalConcurrency, schedule$ } from 'async-process-scheduler';
 *
 * console.log(`this process may use ${optimalConcurrency()} CPUs`);
 * const run = schedule$([], { concurrency: optimalConcurrency() });
 * ```
 * @returns A positive integer.
 */
export function optimalConcurrency(): number {
  if (cached === undefined) {
    const quota = cgroupCpuQuota();
    cached = Math.max(1, Math.min(availableParallelism(), quota === undefined ? Infinity : Math.ceil(quota)));
  }
  return cached;
}

/** The cgroup CPU quota in CPUs (v2 `cpu.max`, else v1 `cfs_quota_us / cfs_period_us`), if limited. */
export function cgroupCpuQuota(read: (path: string) => string | undefined = readText): number | undefined {
  const v2 = read('/sys/fs/cgroup/cpu.max');
  if (v2 !== undefined) return parseQuota(v2.trim().split(/\s+/));
  const quota = read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') ?? read('/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us');
  const period = read('/sys/fs/cgroup/cpu/cpu.cfs_period_us') ?? read('/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us');
  if (quota === undefined || period === undefined) return undefined;
  return parseQuota([quota.trim(), period.trim()]);
}

function parseQuota([quota, period]: string[]): number | undefined {
  if (quota === undefined || quota === 'max' || quota === '-1') return undefined;
  const q = Number(quota);
  const p = Number(period ?? 100000);
  if (!(q > 0) || !(p > 0)) return undefined;
  return q / p;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
