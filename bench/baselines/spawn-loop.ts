// Baseline for external commands: child_process.spawn in a loop, no shell, `concurrency` at a time.
import { spawn } from 'node:child_process';
import { runInLanes } from './lanes.js';

/**
 * Spawns a command `count` times, `concurrency` at a time, and waits for each to close.
 *
 * @example
 * await spawnLoop('/bin/true', 10, 2, true);
 * @param file - executable to run (no shell)
 * @param count - number of runs
 * @param concurrency - runs at once
 * @param captureOutput - pipe and collect stdout/stderr (as a task runner must), or ignore them
 * @returns resolves when every run has exited with code 0
 */
export async function spawnLoop(
  file: string,
  count: number,
  concurrency: number,
  captureOutput: boolean,
): Promise<void> {
  await runInLanes(count, concurrency, () => {
    return new Promise<void>((resolve, reject) => {
      const child = spawn(file, [], { stdio: captureOutput ? ['ignore', 'pipe', 'pipe'] : 'ignore' });
      const chunks: Buffer[] = [];
      child.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk));
      child.stderr?.on('data', (chunk: Buffer) => chunks.push(chunk));
      child.once('error', reject);
      // 'close' (not 'exit') so captured output is complete, as a task runner would need.
      child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${file} exited ${code}`))));
    });
  });
}
