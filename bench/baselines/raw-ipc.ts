// Baseline for large arguments: a Buffer sent to a forked child and echoed back over IPC
// with the V8 serializer ('advanced'), which carries a Buffer as bytes instead of JSON.
import { fork } from 'node:child_process';
import { once } from 'node:events';

const echoChildScript = new URL('../fixtures/echo-child.mjs', import.meta.url);

/** Timings of one raw IPC session; see {@link rawIpcRoundTrips}. */
export interface RawIpcTimes {
  /** Each sequential round trip (send, await the echo, send the next), in ms. */
  sequential: number[];
  /** Time per Buffer when all `trips` are sent back to back and the echoes awaited, in ms. */
  pipelined: number;
}

/**
 * Times IPC round trips of one Buffer through an echoing child: sequential ones (latency),
 * then the same number sent back to back (throughput, parent and child working at once).
 *
 * @example
 * const { sequential, pipelined } = await rawIpcRoundTrips(Buffer.alloc(1024), 3);
 * @param payload - the Buffer to send; every echo must come back with the same length
 * @param trips - timed round trips of each kind, after two untimed warm-up trips
 * @returns the durations, in ms
 */
export async function rawIpcRoundTrips(payload: Buffer, trips: number): Promise<RawIpcTimes> {
  const child = fork(echoChildScript, [], { execArgv: [], serialization: 'advanced' });
  const echoes = (count: number): Promise<void> =>
    new Promise((resolve, reject) => {
      let left = count;
      const onMessage = (echoed: Uint8Array): void => {
        if (echoed.byteLength !== payload.byteLength) reject(new Error('echo came back with a different length'));
        if (--left === 0) {
          child.off('message', onMessage);
          resolve();
        }
      };
      child.on('message', onMessage);
    });
  try {
    const roundTrip = async (): Promise<void> => {
      const reply = echoes(1);
      child.send(payload);
      await reply;
    };
    // The first trips of a fresh channel are the slowest; a user's steady state comes after.
    await roundTrip();
    await roundTrip();
    const sequential: number[] = [];
    for (let i = 0; i < trips; i++) {
      const start = performance.now();
      await roundTrip();
      sequential.push(performance.now() - start);
    }
    const start = performance.now();
    const replies = echoes(trips);
    for (let i = 0; i < trips; i++) child.send(payload);
    await replies;
    return { sequential, pipelined: (performance.now() - start) / trips };
  } finally {
    const exited = once(child, 'exit');
    child.disconnect();
    await exited;
  }
}
