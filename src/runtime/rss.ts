import { readFileSync } from 'node:fs';
import pidusage from 'pidusage';

const PROC = process.platform === 'linux';

/**
 * Calls `over` if the resident set of process `pid` is above `limit` bytes: read from /proc at
 * once on Linux, through pidusage (a moment later) elsewhere. Nothing happens if the process is gone.
 */
export function checkRss(pid: number, limit: number, over: () => void): void {
  if (PROC) {
    const rss = processRss(pid);
    if (rss !== undefined && rss > limit) over();
    return;
  }
  pidusage(pid).then(
    (stats) => {
      if (stats.memory > limit) over();
    },
    () => {},
  );
}

/** Resident set size of a process in bytes, from `VmRSS` in /proc/<pid>/status; undefined if it is gone. */
export function processRss(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+)\s*kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
