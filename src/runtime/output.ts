/**
 * A child's stdout and stderr: always read (a child never blocks on a full pipe), passed
 * through, split into lines, or dropped, and the tail of stderr kept for error messages.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { OutputMode } from '../options.js';
import { OUTPUT_MARK } from './protocol.js';

/** One line a child wrote, in `output: 'capture'` mode. */
export interface OutputLine {
  /** The task that was running when the line was written (undefined between tasks). */
  index: number | undefined;
  stream: 'stdout' | 'stderr';
  /** The line, without its newline. */
  line: string;
  pid: number | undefined;
}

const TAIL_BYTES = 8 * 1024;
/** A line longer than this is emitted in pieces, so one endless line cannot exhaust memory. */
const MAX_LINE = 64 * 1024;
/** Longer than any output mark: text that starts like one but runs longer is plain text. */
const MAX_MARK = OUTPUT_MARK.length + 24;

export interface OutputTap {
  /** Bytes written to stderr so far. */
  readonly stderrBytes: number;
  /** Up to the last 8 KiB of stderr, starting at byte offset `since` when given. */
  stderrTail(since?: number): string;
  /** Emits the unterminated last line of each stream, if any. */
  end(): void;
  /**
   * The process changes owner (a pooled worker goes back to its pool, or to a new run): a line its
   * last task left unfinished is emitted now, to the owner it had, and lines without a mark no
   * longer belong to that task.
   */
  release(): void;
}

/**
 * The last 8 KiB (at least) of a stream, kept as the chunks they came in: a chunk
 * costs no copy, the bytes are joined only when someone asks for them.
 */
export class Tail {
  #chunks: Buffer[] = [];
  /** Index of the oldest chunk still kept (dropping from the front without shifting). */
  #first = 0;
  #kept = 0;

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#kept += chunk.length;
    while (this.#kept - this.#chunks[this.#first]!.length >= TAIL_BYTES) this.#kept -= this.#chunks[this.#first++]!.length;
    if (this.#first > 64) {
      this.#chunks = this.#chunks.slice(this.#first);
      this.#first = 0;
    }
  }

  /** Up to the last 8 KiB. */
  bytes(): Buffer {
    const kept = this.#first === 0 ? this.#chunks : this.#chunks.slice(this.#first);
    return Buffer.concat(kept, this.#kept).subarray(-TAIL_BYTES);
  }
}

/**
 * Reads `stdout` and `stderr` of a child according to `mode`; `emit` receives captured lines.
 * A line belongs to the task named by the last output mark before it in its stream (see
 * `outputMark`), or, until a stream has one, to the task `currentIndex` names when it is read.
 * With `marks: false` (a program of the user's, which knows nothing of marks), text that looks
 * like a mark is plain text, and every line belongs to `currentIndex`.
 */
export function tapOutput(
  stdout: Readable | null,
  stderr: Readable | null,
  mode: OutputMode,
  pid: number | undefined,
  currentIndex: () => number | undefined,
  emit: (line: OutputLine) => void,
  { marks = true }: { marks?: boolean } = {},
): OutputTap {
  const tail = new Tail();
  let stderrBytes = 0;
  const splitters: Array<() => void> = [];
  const releasers: Array<() => void> = [];

  const wire = (stream: Readable | null, name: 'stdout' | 'stderr') => {
    if (!stream) return;
    const target = name === 'stdout' ? process.stdout : process.stderr;
    let partial = '';
    // A multi-byte character or an output mark may be cut between two chunks.
    const decoder = mode === 'capture' ? new StringDecoder('utf8') : undefined;
    let carry = '';
    let marked = false;
    let markedIndex: number | undefined;
    const onLine = (line: string) => emit({ index: marked ? markedIndex : currentIndex(), stream: name, line, pid });
    const split = (more: string) => {
      const text = partial + more;
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        const end = nl > start && text[nl - 1] === '\r' ? nl - 1 : nl;
        // A whole line longer than MAX_LINE comes in pieces too.
        while (end - start > MAX_LINE) start = emitPiece(text, start);
        onLine(text.slice(start, end));
        start = nl + 1;
      }
      while (text.length - start > MAX_LINE) start = emitPiece(text, start);
      partial = text.slice(start);
    };
    /** Emits the MAX_LINE characters of `text` from `start` (one less if that would cut a character in two); returns where the rest starts. */
    const emitPiece = (text: string, start: number): number => {
      let end = start + MAX_LINE;
      const last = text.charCodeAt(end - 1);
      if (last >= 0xd800 && last <= 0xdbff) end--; // a high surrogate: its pair starts the next piece
      onLine(text.slice(start, end));
      return end;
    };
    stream.on('data', (data: Buffer | string) => {
      // Text when a process task's factory set an encoding on the stream (to log it itself, say).
      const chunk = typeof data === 'string' ? Buffer.from(data, stream.readableEncoding ?? 'utf8') : data;
      if (name === 'stderr') {
        stderrBytes += chunk.length;
        tail.push(chunk);
      }
      if (mode === 'inherit') target.write(chunk);
      else if (mode === 'capture' && !marks) split(decoder!.write(chunk));
      else if (mode === 'capture') {
        let text = carry + decoder!.write(chunk);
        carry = '';
        let from = 0;
        for (let at = text.indexOf(OUTPUT_MARK); at !== -1; at = text.indexOf(OUTPUT_MARK, from)) {
          const end = text.indexOf('\u0007', at + OUTPUT_MARK.length);
          const label = end === -1 ? undefined : text.slice(at + OUTPUT_MARK.length, end);
          if (end === -1 && text.length - at < MAX_MARK) {
            carry = text.slice(at); // the rest of this mark comes with the next chunk
            text = text.slice(0, at);
            break;
          }
          if (label === undefined || !/^\d*$/.test(label)) {
            from = at + 1; // looks like a mark, is not one: plain text
            continue;
          }
          split(text.slice(0, at));
          const index = label === '' ? undefined : Number(label);
          // A line the previous task left unfinished ends where the next one's output begins
          // (the worker marks every change of task, even to a task with the same index).
          if (partial) {
            onLine(partial);
            partial = '';
          }
          marked = true;
          markedIndex = index;
          text = text.slice(end! + 1);
          from = 0;
        }
        // The chunk may end in the first bytes of a mark.
        const esc = text.lastIndexOf('\u001b');
        if (!carry && esc !== -1 && OUTPUT_MARK.startsWith(text.slice(esc))) {
          carry = text.slice(esc);
          text = text.slice(0, esc);
        }
        split(text);
      }
    });
    // A read error on a child's pipe is not the task's failure; the exit status tells that.
    stream.on('error', () => {});
    releasers.push(() => {
      if (partial) onLine(partial);
      partial = '';
      marked = false;
      markedIndex = undefined;
    });
    splitters.push(() => {
      if (decoder) split(carry + decoder.end());
      carry = '';
      if (partial) onLine(partial);
      partial = '';
    });
  };
  wire(stdout, 'stdout');
  wire(stderr, 'stderr');

  return {
    get stderrBytes() {
      return stderrBytes;
    },
    stderrTail(since = 0) {
      const bytes = tail.bytes();
      const text = bytes.subarray(Math.max(0, bytes.length - (stderrBytes - since))).toString('utf8');
      return marks && text.includes(OUTPUT_MARK) ? text.replace(/\u001b\]aps;\d*\u0007/g, '') : text;
    },
    end() {
      for (const flush of splitters) flush();
    },
    release() {
      for (const release of releasers) release();
    },
  };
}

/**
 * Calls `onQuiet` once `streams` have given no data for `quietMs`, or once `maxMs` have passed
 * (at the next check), whichever comes first; returns what cancels the wait. A loaded event loop
 * may run an overdue timer before it reads what waits in a pipe, so a quiet spell counts only if
 * no data came in the poll phase after it either (checked with setImmediate). Instead of streams,
 * `activity` may be a count of the chunks read so far that someone else keeps.
 *
 * @param ref - whether the wait keeps the event loop alive
 */
export function afterQuiet(activity: ReadonlyArray<Readable | null> | (() => number), quietMs: number, maxMs: number, onQuiet: () => void, ref = true): () => void {
  const watched = typeof activity === 'function' ? [] : activity.filter((stream): stream is Readable => stream !== null);
  const since = performance.now();
  let chunks = 0;
  const seenSoFar = typeof activity === 'function' ? activity : () => chunks;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const count = (): void => void chunks++;
  const stop = (): void => {
    stopped = true;
    clearTimeout(timer);
    for (const stream of watched) stream.off('data', count);
  };
  const arm = (): void => {
    const seen = seenSoFar();
    timer = setTimeout(() => {
      setImmediate(() => {
        if (stopped) return;
        if (seenSoFar() !== seen && performance.now() - since < maxMs) return arm();
        stop();
        onQuiet();
      });
    }, quietMs);
    if (!ref) timer.unref();
  };
  for (const stream of watched) stream.on('data', count);
  arm();
  return stop;
}
