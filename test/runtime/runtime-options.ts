import { DEFAULT_PROGRESS_INTERVAL } from '../../src/runtime/protocol.js';
import type { LocalRuntimeOptions } from '../../src/runtime/local-runtime.js';
import { DEFAULT_START_TIMEOUT } from '../../src/runtime/worker-process.js';

/** Options for a LocalRuntime built directly by a test: one lane, the library's defaults, and `overrides`. */
export function runtimeOptions(overrides: Partial<LocalRuntimeOptions> = {}): LocalRuntimeOptions {
  return {
    concurrency: 1,
    maxTasksPerWorker: Infinity,
    idleTimeout: 5000,
    killTimeout: 1000,
    maxWorkerRss: undefined,
    output: 'inherit',
    workerExecArgv: [],
    workerStartTimeout: DEFAULT_START_TIMEOUT,
    progressInterval: DEFAULT_PROGRESS_INTERVAL,
    workerEnv: undefined,
    ...overrides,
  };
}
