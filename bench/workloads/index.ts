// Every workload, in the order a full run performs them.
import type { Workload } from '../harness.js';
import { command } from './command.js';
import { cpu } from './cpu.js';
import { fresh } from './fresh.js';
import { ipc } from './ipc.js';
import { lazy } from './lazy.js';
import { tiny } from './tiny.js';

// Each workload has its own sizes type; the harness only passes them through as JSON.
export const workloads: Array<Workload<any>> = [tiny, cpu, fresh, command, ipc, lazy];
