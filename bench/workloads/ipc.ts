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
    `${megabytes} MB Buffer argument and result, concurrency 1, worker start-up excluded (${trips} round trips per sample). ` +
    'round trip = latency, each task sent after the previous result; pipelined = per Buffer with tasks queued back to back',
  sizes: { megabytes: 10, trips: 15 },
  quickSizes: { megabytes: 10, trips: 5 },
  metrics: {
    'round trip': { unit: 'ms', description: 'one round trip of the Buffer, the next task sent only after the previous result; worker already started' },
    pipelined: { unit: 'ms', description: 'time per Buffer when tasks are queued back to back (parent and child work at once)' },
  },
  reference: 'raw-advanced',
  contenders: [
    {
      name: 'ours',
      description:
        'this library, moduleTask echoing its Buffer, concurrency 1. round trip: tasks fed one at a time through an Observable, ' +
        'the next only after the previous result, median after the first; pipelined: (run of 1 + trips tasks, each with a Buffer of its own, − run of 1 task) / trips, median of 3 pairs',
      usesOurs: true,
      measure: async (sizes) => (await import('../ours.js')).ipc(sizes),
    },
    {
      name: 'raw-advanced',
      description:
        "baseline: fork with serialization 'advanced'. round trip: send the Buffer, await the echo, median of `trips`; " +
        'pipelined: `trips` Buffers sent back to back, total / trips',
      async measure({ megabytes, trips }) {
        const { sequential, pipelined } = await rawIpcRoundTrips(Buffer.alloc(megabytes * 2 ** 20, 7), trips);
        return { metrics: { 'round trip': median(sequential), pipelined } };
      },
    },
  ],
  targets: [{ contender: 'ours', metric: 'round trip', vs: 'raw-advanced', maxRatio: 1.3 }],
  timeoutMs: 120_000,
};
