/**
 * A small web dashboard for a run: Start and Cancel buttons, a progress bar, the live
 * concurrency and CPU load, and a timeline of which worker ran which task.
 *
 * Run it with `npx tsx examples/dashboard/server.ts [--port N]` and open the URL it prints
 * (`--port 0`, the default, picks a free port).
 *
 * Node's http server is all it uses. The page POSTs `/start`, `/cancel` and `/concurrency`, and
 * reads everything else from one Server-Sent Events stream, `/events`; see dashboard-run.ts for
 * what is streamed.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { optimalConcurrency } from '../../src/index.js';
import { DashboardRun, type ConcurrencyMode, type DashboardEvent } from './dashboard-run.js';

/** Options of {@link startDashboard}. */
export interface DashboardOptions {
  /** The port to listen on; `0` picks a free one. @default 0 */
  port?: number;
  /** The interface to listen on. @default '127.0.0.1' */
  host?: string;
}

/** A running dashboard server. */
export interface Dashboard {
  /** Where the page is, e.g. `http://127.0.0.1:39811/`. */
  url: string;
  /** Process ids of the current run's processes alive now; empty when no run is going. */
  currentRunPids(): number[];
  /** Who sets the current run's limit now: the library ('auto') or the slider ('manual'); undefined when no run is going. */
  currentRunMode(): 'auto' | 'manual' | undefined;
  /** Terminates the current run, ends every event stream and closes the server. Resolves when all of it is done. */
  close(): Promise<void>;
}

const STATIC_FILES: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
};
const CONTENT_TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};
const MAX_TASKS = 1000;
const DEFAULT_TASKS = 40;
const MAX_BODY_BYTES = 4096;
/** A comment line now and then keeps idle event streams open through proxies. */
const HEARTBEAT_MS = 15_000;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Starts the dashboard server.
 *
 * @example
 * ```ts
 * import { startDashboard } from './examples/dashboard/server.js';
 *
 * const dashboard = await startDashboard({ port: 0 });
 * console.log(`open ${dashboard.url}`);
 * // ... later
 * await dashboard.close();
 * ```
 * @param options Where to listen.
 * @returns The server's URL, the pids of the current run's processes, and `close()`.
 */
export async function startDashboard(options: DashboardOptions = {}): Promise<Dashboard> {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const maxLimit = 4 * optimalConcurrency(); // the library's own upper bound in auto mode
  const clients = new Set<ServerResponse>();
  let current: DashboardRun | undefined;
  let runCount = 0;
  let nextLimit = optimalConcurrency();
  let closing: Promise<void> | undefined;

  const broadcast = (event: DashboardEvent) => {
    for (const client of clients) writeEvent(client, event);
  };

  function openEventStream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write('retry: 1000\n\n');
    writeRaw(res, 'config', { maxLimit, limit: nextLimit, tasks: DEFAULT_TASKS, maxTasks: MAX_TASKS });
    // A page that connects mid-run (or reloads) catches up from what the run kept.
    if (current) {
      writeEvent(res, { name: 'run', data: { id: current.id, status: current.status, total: current.total, mode: current.mode } });
      for (const event of current.latest.values()) {
        if (event.name !== 'load' || current.status === 'running') writeEvent(res, event); // a past load reading is not news
      }
      for (const event of current.completions) writeEvent(res, event);
      for (const event of current.taskProgress.values()) writeEvent(res, event);
    }
    clients.add(res);
    const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), HEARTBEAT_MS);
    req.on('close', () => {
      clearInterval(heartbeat);
      clients.delete(res);
    });
  }

  async function start(body: unknown): Promise<unknown> {
    if (current?.status === 'running') throw new HttpError(409, 'a run is already going; cancel it first');
    const { tasks = DEFAULT_TASKS, concurrency = 'auto' } = (body ?? {}) as { tasks?: unknown; concurrency?: unknown };
    if (!isIntegerIn(tasks, 1, MAX_TASKS)) throw new HttpError(400, `tasks must be an integer from 1 to ${MAX_TASKS}`);
    let mode: ConcurrencyMode;
    if (concurrency === 'auto') mode = { mode: 'auto' };
    // 0 starts the run paused: nothing starts until the slider moves up.
    else if (isIntegerIn(concurrency, 0, maxLimit)) mode = { mode: 'manual', limit: (nextLimit = concurrency) };
    else throw new HttpError(400, `concurrency must be 'auto' or an integer from 0 to ${maxLimit}`);
    current = new DashboardRun(++runCount, tasks, mode, broadcast);
    return { id: current.id };
  }

  async function cancel(): Promise<unknown> {
    const run = current;
    if (run?.status !== 'running') throw new HttpError(409, 'no run is going');
    await run.cancel();
    return { id: run.id, status: run.status };
  }

  async function setConcurrency(body: unknown): Promise<unknown> {
    const { limit, auto } = (body ?? {}) as { limit?: unknown; auto?: unknown };
    // 0 pauses a running run: what runs finishes, nothing else starts (see the concurrency option).
    if (!isIntegerIn(limit, 0, maxLimit)) throw new HttpError(400, `limit must be an integer from 0 to ${maxLimit}`);
    if (auto !== undefined && typeof auto !== 'boolean') throw new HttpError(400, 'auto must be true or false');
    nextLimit = limit;
    // The Auto checkbox, mid-run: the library takes the limit, or the slider takes it back.
    if (auto !== undefined) {
      if (current?.status === 'running') current.setMode(auto ? { mode: 'auto' } : { mode: 'manual', limit });
      return { limit, auto, applied: current?.status === 'running' };
    }
    // In auto mode the library sets the limit; the slider's value waits for the next manual run.
    const applied = current?.status === 'running' ? current.setLimit(limit) : false;
    return { limit, applied };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method === 'GET' && path === '/events') return openEventStream(req, res);
    if (req.method === 'GET' && STATIC_FILES[path]) {
      const file = STATIC_FILES[path];
      const body = await readFile(`${here}/${file}`);
      res.writeHead(200, { 'content-type': CONTENT_TYPES[file.split('.').pop()!]!, 'cache-control': 'no-cache' });
      res.end(body);
      return;
    }
    const actions: Record<string, (body: unknown) => Promise<unknown>> = { '/start': start, '/cancel': cancel, '/concurrency': setConcurrency };
    const action = actions[path];
    if (!action) throw new HttpError(404, `nothing at ${path}`);
    if (req.method !== 'POST') throw new HttpError(405, `${path} takes POST`);
    if (closing) throw new HttpError(503, 'the server is closing');
    sendJson(res, 200, await action(await readJsonBody(req)));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 500;
      if (status === 500) console.error(error);
      if (!res.headersSent) sendJson(res, status, { error: error instanceof Error ? error.message : String(error) });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;

  return {
    url: `http://${host}:${port}/`,
    currentRunPids: () => (current?.status === 'running' ? current.pids() : []),
    currentRunMode: () => (current?.status === 'running' ? current.mode : undefined),
    close() {
      closing ??= (async () => {
        await current?.cancel();
        for (const client of clients) client.end();
        clients.clear();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };
}

function writeEvent(res: ServerResponse, event: DashboardEvent): void {
  writeRaw(res, event.name, event.data);
}

function writeRaw(res: ServerResponse, name: string, data: unknown): void {
  res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) {
    text += String(chunk);
    if (text.length > MAX_BODY_BYTES) throw new HttpError(413, 'the request body is too large');
  }
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'the request body is not JSON');
  }
}

function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return Number.isInteger(value) && (value as number) >= min && (value as number) <= max;
}

/** `--port N` or `--port=N` from the command line; 0 when absent. */
function portFromArgs(args: readonly string[]): number {
  const at = args.findIndex((a) => a === '--port' || a.startsWith('--port='));
  if (at === -1) return 0;
  const text = args[at]!.includes('=') ? args[at]!.slice('--port='.length) : args[at + 1];
  const port = Number(text);
  if (!isIntegerIn(port, 0, 65535)) throw new Error(`--port must be an integer from 0 to 65535, got ${String(text)}`);
  return port;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dashboard = await startDashboard({ port: portFromArgs(process.argv.slice(2)) });
  console.log(`dashboard: ${dashboard.url}`);
  // `on`, not `once`: the library kills its children on these signals and then re-raises the
  // signal only when nobody else listens, which would end the process before the pages hear
  // that the run ended.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => void dashboard.close().then(() => process.exit(0)));
  }
}
