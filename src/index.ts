/// <reference types="node" preserve="true" />
/**
 * async-process-scheduler: run many tasks in child processes behind an RxJS API.
 *
 * Start with {@link schedule$}. Tasks are made with {@link moduleTask}, {@link taskModule},
 * {@link commandTask} and {@link processTask}. The API a task uses from inside its child lives in
 * `async-process-scheduler/child`.
 *
 * @module async-process-scheduler
 */
export { schedule$, ScheduledRun } from './schedule.js';
export type { TaskResult, TaskFailure, TaskOutcome, RunMode, Completion, Ordered } from './schedule.js';
export { moduleTask, taskModule, commandTask, processTask, isTask } from './task.js';
export type {
  Task, TaskValue, TaskOptions, ModuleTask, CommandTask, ProcessTask, CommandTaskOptions, CommandResult, TaskModule, FunctionExports,
} from './task.js';
export { TaskError, OptionError, RunTerminatedError, isTaskError, isOptionError, isRunTerminatedError } from './errors.js';
export type { TaskFailureKind, RemoteErrorInfo, TaskErrorInit } from './errors.js';
export type { ScheduleOptions, ConcurrencyOption, OutputMode, RetryOptions, RetryableKind } from './options.js';
export type { Progress, TaskProgress, RunState } from './progress.js';
export type { TaskStats, TaskRuntime, JobSpec, JobEvents, JobHandle, ExecutingJob } from './runtime/runtime.js';
export type { OutputLine } from './runtime/output.js';
export type { LoadReading } from './load/samplers.js';
export { optimalConcurrency } from './optimal-concurrency.js';
export { mergeMapWithLimit } from './operators/merge-map-with-limit.js';
export type { TaskSourceInput } from './operators/pull-source.js';
export { reorderByIndex } from './operators/reorder.js';
export { liveChildPids } from './runtime/cleanup.js';
export { WorkerPool } from './pool.js';
export type { WorkerPoolOptions, WarmOptions } from './pool.js';
export { Scheduler } from './scheduler.js';
export type { SchedulerOptions, ProgressCallback, TaskFactory, ExportRef, RunControl } from './scheduler.js';
