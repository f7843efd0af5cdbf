/**
 * A child's stdout and stderr: always read (a child never blocks on a full pipe), passed
 * through, split into lines, or dropped, and the tail of stderr kept for error messages.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { OutputMode } from '../options.js';

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

export interface OutputTap {
  /** Bytes written to stderr so far. */
  readonly stderrBytes: number;
  /** Up to the last 8 KiB of stderr, starting at byte offset `since` when given. */
  stderrTail(since?: number): string;
  /** Emits the unterminated last line of each stream, if any. */
  end(): void;
}

/**
 * Reads `stdout` and `stderr` of a child according to `mode`. `currentIndex` says which task a
 * line belongs to when it is read; `emit` receives captured lines.
 */
export function tapOutput(
  stdout: Readable | null,
  stderr: Readable | null,
  mode: OutputMode,
  pid: number | undefined,
  currentIndex: () => number | undefined,
  emit: (line: OutputLine) => void,
): OutputTap {
  let tail = Buffer.alloc(0);
  let stderrBytes = 0;
  const splitters: Array<() => void> = [];

  const wire = (stream: Readable | null, name: 'stdout' | 'stderr') => {
    if (!stream) return;
    const target = name === 'stdout' ? process.stdout : process.stderr;
    let partial = '';
    const onLine = (line: string) => emit({ index: currentIndex(), stream: name, line, pid });
    stream.on('data', (chunk: Buffer) => {
      if (name === 'stderr') {
        stderrBytes += chunk.length;
        tail = tail.length + chunk.length <= TAIL_BYTES ? Buffer.concat([tail, chunk]) : Buffer.concat([tail, chunk]).subarray(-TAIL_BYTES);
      }
      if (mode === 'inherit') target.write(chunk);
      else if (mode === 'capture') {
        let text = partial + chunk.toString('utf8');
        let start = 0;
        for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
          onLine(text.slice(start, nl > start && text[nl - 1] === '\r' ? nl - 1 : nl));
          start = nl + 1;
        }
        text = text.slice(start);
        while (text.length > MAX_LINE) {
          onLine(text.slice(0, MAX_LINE));
          text = text.slice(MAX_LINE);
        }
        partial = text;
      }
    });
    // A read error on a child's pipe is not the task's failure; the exit status tells that.
    stream.on('error', () => {});
    splitters.push(() => {
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
      const start = Math.max(0, tail.length - (stderrBytes - since));
      return tail.subarray(start).toString('utf8');
    },
    end() {
      for (const flush of splitters) flush();
    },
  };
}
