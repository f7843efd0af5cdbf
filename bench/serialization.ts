// Which serialization for the worker channel? A micro-benchmark in one process, not a test:
// the cost of encoding and decoding what crosses the channel, with Node's two IPC formats.
//
//   npx tsx bench/serialization.ts
//
// - `json` is what `fork()` uses by default: JSON text, one line per message.
// - `advanced` is `fork(..., { serialization: 'advanced' })`: V8's structured-clone format,
//   the one the library uses, because it keeps Buffer, typed arrays, Map, Set, Date, BigInt,
//   NaN and undefined, which JSON turns into something else or drops.
//
// Two payloads: a batch of 128 tiny task messages (the tiny workload's unit, as the runtime sends
// it: one message per worker and tick) and one 10 MB Buffer. Medians of 15 samples, interleaved.
import { deserialize, serialize } from 'node:v8';

type Codec = { name: string; encode(value: unknown): Buffer | string; decode(data: Buffer | string): unknown };

const codecs: Codec[] = [
  { name: 'json', encode: (v) => JSON.stringify(v), decode: (d) => JSON.parse(d as string) },
  { name: 'advanced', encode: (v) => serialize(v), decode: (d) => deserialize(d as Buffer) },
];

const batch = { tag: 'run', tasks: Array.from({ length: 128 }, (_, i) => [i + 1, 1, [i], i]) };
const big = { tag: 'run', tasks: [[1, 1, [Buffer.alloc(10 * 1024 * 1024, 7)], 0]] };

function sample(codec: Codec, payload: unknown, reps: number): number {
  const start = performance.now();
  for (let i = 0; i < reps; i++) codec.decode(codec.encode(payload));
  return ((performance.now() - start) * 1000) / reps; // µs per round trip of the payload
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

for (const [label, payload, reps, per] of [
  ['128 tiny task messages in one batch', batch, 2000, 128],
  ['one 10 MB Buffer argument', big, 1, 1],
] as const) {
  const times = new Map<string, number[]>(codecs.map((c) => [c.name, []]));
  for (const codec of codecs) sample(codec, payload, reps); // warm-up
  for (let round = 0; round < 15; round++) {
    for (const codec of round % 2 ? [...codecs].reverse() : codecs) times.get(codec.name)!.push(sample(codec, payload, reps) / per);
  }
  console.log(label + ': encode + decode, per task');
  for (const codec of codecs) {
    const us = median(times.get(codec.name)!);
    console.log(`  ${codec.name.padEnd(8)} ${us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${us.toFixed(2)} µs`}`);
  }
}
// What JSON does to the values structured clone keeps:
const mangled = JSON.parse(JSON.stringify({ buf: Buffer.from('hi'), map: new Map([[1, 2]]), date: new Date(0), nan: NaN, u: undefined })) as object;
console.log('json turns { buf, map, date, nan, u } into', JSON.stringify(mangled));
