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
}

/**
 * Reads `stdout` and `stderr` of a child according to `mode`; `emit` receives captured lines.
 * A line belongs to the task named by the last output mark before it in its stream (see
 * `outputMark`), or, until a stream has one, to the task `currentIndex` names when it is read.
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
    // A multi-byte character or an output mark may be cut between two chunks.
    const decoder = new StringDecoder('utf8');
    let carry = '';
    let marked = false;
    let markedIndex: number | undefined;
    const onLine = (line: string) => emit({ index: marked ? markedIndex : currentIndex(), stream: name, line, pid });
    const split = (more: string) => {
      const text = partial + more;
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        onLine(text.slice(start, nl > start && text[nl - 1] === '\r' ? nl - 1 : nl));
        start = nl + 1;
      }
      let rest = text.slice(start);
      while (rest.length > MAX_LINE) {
        onLine(rest.slice(0, MAX_LINE));
        rest = rest.slice(MAX_LINE);
      }
      partial = rest;
    };
    stream.on('data', (chunk: Buffer) => {
      if (name === 'stderr') {
        stderrBytes += chunk.length;
        tail = tail.length + chunk.length <= TAIL_BYTES ? Buffer.concat([tail, chunk]) : Buffer.concat([tail, chunk]).subarray(-TAIL_BYTES);
      }
      if (mode === 'inherit') target.write(chunk);
      else if (mode === 'capture') {
        let text = carry + decoder.write(chunk);
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
          // A line the previous task left unfinished ends where the next one's output begins.
          if (partial && (!marked || index !== markedIndex)) {
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
    splitters.push(() => {
      if (mode === 'capture') split(carry + decoder.end());
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
      const start = Math.max(0, tail.length - (stderrBytes - since));
      const text = tail.subarray(start).toString('utf8');
      return text.includes(OUTPUT_MARK) ? text.replace(/\u001b\]aps;\d*\u0007/g, '') : text;
    },
    end() {
      for (const flush of splitters) flush();
    },
  };
}
