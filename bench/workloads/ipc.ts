// A 10 MB Buffer as argument and result: the cost of moving big values to a worker and back.
import type { Workload } from '../harness.js';
import { median } from '../harness.js';
import { rawIpcRoundTrips } from '../baselines/raw-ipc.js';

/** Sizes of the ipc workload. */
export interface IpcSizes {
  megabytes: number;
  /** Timed round trips per measurement (the reported value is their median). */
  trips: number;
}

export const ipc: Workload<IpcSizes> = {
  name: 'ipc',
  describe: ({ megabytes, trips }) =>
    `${megabytes} MB Buffer argument and result, one task at a time, worker start-up excluded (${trips} round trips per sample)`,
  sizes: { megabytes: 10, trips: 5 },
  quickSizes: { megabytes: 10, trips: 3 },
  metrics: { 'round trip': { unit: 'ms', description: 'one round trip of the Buffer, worker already started' } },
  reference: 'raw-advanced',
  contenders: [
    {
      name: 'ours',
      description: 'this library, moduleTask echoing its Buffer argument, concurrency 1: (time of a run of 1 + trips tasks − time of a run of 1 task) / trips, median of 3 pairs',
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).ipc(sizes),
    },
    {
      name: 'raw-advanced',
      description: "baseline: fork with serialization 'advanced', send the Buffer, await the echo; median of `trips` sequential round trips",
      async measure({ megabytes, trips }) {
        const times = await rawIpcRoundTrips(Buffer.alloc(megabytes * 2 ** 20, 7), trips);
        return { metrics: { 'round trip': median(times) } };
      },
    },
  ],
  targets: [{ contender: 'ours', metric: 'round trip', vs: 'raw-advanced', maxRatio: 1.3 }],
  timeoutMs: 120_000,
};
