// Entry of one measurement process (started by harness.ts measureIsolated): runs one contender
// once, sends back its Measurement over IPC, disconnects, and must then exit on its own.
// Usage: measure.ts <workload> <contender> <sizes as JSON>
import { PROBE_OURS, type MeasurementReply } from './harness.js';
import { workloads } from './workloads/index.js';

async function measureOnce(workloadName: string, contenderName: string, sizes: unknown): Promise<MeasurementReply> {
  try {
    if (contenderName === PROBE_OURS) {
      await import('./ours.js');
      return { ok: true, measurement: { metrics: {} } };
    }
    const workload = workloads.find((candidate) => candidate.name === workloadName);
    const contender = workload?.contenders.find((candidate) => candidate.name === contenderName);
    if (!contender) throw new Error(`unknown contender ${workloadName}/${contenderName}`);
    return { ok: true, measurement: await contender.measure(sizes) };
  } catch (error) {
    const { message, stack } = error instanceof Error ? error : { message: String(error), stack: undefined };
    const code = (error as { code?: unknown } | null)?.code;
    return { ok: false, error: code ? `${code}: ${message}` : message, stack };
  }
}

const [workloadName = '', contenderName = '', sizes = '{}'] = process.argv.slice(2);
const reply = await measureOnce(workloadName, contenderName, JSON.parse(sizes));
process.send!(reply, () => process.disconnect());
