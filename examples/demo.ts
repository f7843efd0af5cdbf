/**
 * `npm run demo`: 16 tasks in worker processes with a live progress display, then the results in
 * input order.
 *
 * Progress goes to stderr: a cli-progress bar when stderr is a terminal, plain lines otherwise
 * (CI logs, pipes). The results go to stdout as one JSON line.
 *
 * Concurrency is automatic: it starts at optimalConcurrency() and rises while the tasks wait. These
 * tasks mostly sleep, so they use little CPU each: more of them fit even when other programs keep
 * the CPU busy (the `cpu` column), as long as what they use stays within `cpuTarget`.
 */
import { SingleBar } from 'cli-progress';
import { schedule$, taskModule, type Progress } from '../src/index.js';

const TASKS = 16;

const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
const run = schedule$(Array.from({ length: TASKS }, (_, i) => work.longCalculation(i, i + 1)));

const seconds = (ms: number | undefined) => (ms === undefined ? '?' : `${(ms / 1000).toFixed(1)}s`);
const cpu = (p: Progress) => (p.load?.cpu === undefined ? '-' : `${Math.round(p.load.cpu)}%`);

if (process.stderr.isTTY) {
  const bar = new SingleBar({
    format: '{bar} {value}/{total} done | running {running} | concurrency {concurrency} | cpu {cpu} | ETA {left}',
    hideCursor: true,
    // Redraw on our updates only; the ETA comes from the scheduler, not from cli-progress.
    fps: 10,
  });
  bar.start(TASKS, 0, { running: 0, concurrency: '-', cpu: '-', left: '?' });
  run.progress$.subscribe({
    next: (p) => bar.update(p.completed + p.failed, { running: p.running, concurrency: p.concurrency, cpu: cpu(p), left: seconds(p.etaMs) }),
    complete: () => bar.stop(),
  });
} else {
  // One line per finished task (and the first and last snapshot), not per snapshot.
  let printed = -1;
  run.progress$.subscribe((p) => {
    const ended = p.completed + p.failed;
    if (ended === printed && p.state === 'running') return;
    printed = ended;
    console.error(
      `[${p.state}] ${ended}/${p.total ?? '?'} done, running ${p.running}, concurrency ${p.concurrency}, cpu ${cpu(p)}, ETA ${seconds(p.etaMs)}`,
    );
  });
}

const results = await run.toOrderedArray();
console.log(JSON.stringify(results));
