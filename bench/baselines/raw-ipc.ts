// Baseline for large arguments: a Buffer sent to a forked child and echoed back over IPC
// with the V8 serializer ('advanced'), which carries a Buffer as bytes instead of JSON.
import { fork } from 'node:child_process';
import { once } from 'node:events';

const echoChildScript = new URL('../fixtures/echo-child.mjs', import.meta.url);

/**
 * Times sequential IPC round trips of one Buffer through an echoing child.
 *
 * @example
 * const times = await rawIpcRoundTrips(Buffer.alloc(1024), 3); // three durations in ms
 * @param payload - the Buffer to send; the echo must come back with the same length
 * @param trips - timed round trips, after one untimed warm-up trip
 * @returns the duration of each timed trip, in ms
 */
export async function rawIpcRoundTrips(payload: Buffer, trips: number): Promise<number[]> {
  const child = fork(echoChildScript, [], { execArgv: [], serialization: 'advanced' });
  try {
    const roundTrip = async (): Promise<void> => {
      const reply = once(child, 'message');
      child.send(payload);
      const [echoed] = (await reply) as [Uint8Array];
      if (echoed.byteLength !== payload.byteLength) throw new Error('echo came back with a different length');
    };
    await roundTrip();
    const times: number[] = [];
    for (let i = 0; i < trips; i++) {
      const start = performance.now();
      await roundTrip();
      times.push(performance.now() - start);
    }
    return times;
  } finally {
    const exited = once(child, 'exit');
    child.disconnect();
    await exited;
  }
}
