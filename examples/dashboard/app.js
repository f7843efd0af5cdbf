// The dashboard page: sends Start, Cancel and slider moves to the server, and draws what the
// server streams on /events (see dashboard-run.ts for the events). No framework, no build step.

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'), message: $('message'),
  tasks: $('tasks'), auto: $('auto'), limit: $('limit'), limitValue: $('limit-value'),
  start: $('start'), cancel: $('cancel'),
  bar: $('bar'), barDone: $('bar-done'), barFailed: $('bar-failed'),
  completed: $('completed'), total: $('total'), failed: $('failed'), running: $('running'), cancelled: $('cancelled'), queued: $('queued'),
  concurrency: $('concurrency'), cpu: $('cpu'), cpuMeter: $('cpu-meter'), elapsed: $('elapsed'), eta: $('eta'),
  timeline: $('timeline'), timelineEmpty: $('timeline-empty'), axisEnd: $('axis-end'),
  taskProgress: $('task-progress'),
};

/** What the page knows about the run it shows. */
let run = emptyRun();

function emptyRun() {
  // status: from the server, or 'cancelling' once Cancel is clicked; limit: the run's concurrency
  // limit, 0 while paused.
  return { id: undefined, status: 'idle', limit: undefined, elapsedMs: 0, completions: [], rows: new Map(), taskProgress: new Map() };
}

// --- talking to the server ------------------------------------------------------------------

async function post(path, body) {
  ui.message.textContent = '';
  try {
    const response = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
    if (!response.ok) ui.message.textContent = (await response.json()).error ?? `${path}: HTTP ${response.status}`;
  } catch (error) {
    ui.message.textContent = `${path}: ${error.message}`;
  }
}

ui.start.addEventListener('click', () => {
  ui.start.disabled = true; // until the server says whether the run started
  const concurrency = ui.auto.checked ? 'auto' : Number(ui.limit.value);
  void post('/start', { tasks: Number(ui.tasks.value), concurrency }).then(updateControls);
});

ui.cancel.addEventListener('click', () => {
  setStatus('cancelling');
  updateControls();
  void post('/cancel'); // the page shows "cancelled" when the run event says so, once every process is gone
});

ui.auto.addEventListener('change', () => {
  updateControls();
  // During a run the checkbox hands the limit to the library, or back to the slider.
  if (run.status === 'running') void post('/concurrency', { auto: ui.auto.checked, limit: Number(ui.limit.value) });
});
ui.limit.addEventListener('input', () => (ui.limitValue.textContent = ui.limit.value));
ui.limit.addEventListener('change', () => void post('/concurrency', { limit: Number(ui.limit.value) }));

const events = new EventSource('/events');
events.addEventListener('config', (e) => {
  const config = JSON.parse(e.data);
  ui.limit.max = String(config.maxLimit);
  ui.tasks.max = String(config.maxTasks);
  if (run.id === undefined) {
    ui.limit.value = String(config.limit);
    ui.limitValue.textContent = String(config.limit);
  }
});
events.addEventListener('run', (e) => {
  const data = JSON.parse(e.data);
  if (data.id !== run.id) {
    run = emptyRun();
    run.id = data.id;
    run.mode = data.mode;
    ui.auto.checked = data.mode === 'auto';
    drawTimeline();
    drawTaskProgress();
  }
  run.mode = data.mode;
  ui.auto.checked = data.mode === 'auto';
  run.total = data.total;
  setStatus(data.status);
  if (data.error) ui.message.textContent = data.error;
  updateControls();
});
events.addEventListener('progress', (e) => {
  const p = JSON.parse(e.data);
  run.elapsedMs = p.elapsedMs;
  const total = p.total ?? run.total ?? 0;
  ui.completed.textContent = String(p.completed);
  ui.total.textContent = String(total);
  ui.failed.textContent = String(p.failed);
  ui.running.textContent = String(p.running);
  ui.cancelled.textContent = String(p.cancelled);
  ui.queued.textContent = p.queued === undefined ? '–' : String(p.queued);
  ui.elapsed.textContent = seconds(p.elapsedMs);
  const ended = run.status === 'cancelled' || run.status === 'failed'; // no time is left: nothing more will run
  ui.eta.textContent = p.etaMs === undefined || ended ? '–' : seconds(p.etaMs);
  ui.bar.setAttribute('aria-valuemax', String(total));
  ui.bar.setAttribute('aria-valuenow', String(p.completed + p.failed));
  ui.barDone.style.width = total ? `${(100 * p.completed) / total}%` : '0';
  ui.barFailed.style.width = total ? `${(100 * p.failed) / total}%` : '0';
  scheduleTimeline();
});
events.addEventListener('concurrency', (e) => {
  const { limit } = JSON.parse(e.data);
  run.limit = limit;
  drawStatus();
  ui.concurrency.textContent = limit === 0 ? '0 (paused)' : String(limit);
  // The slider follows the limit the library set; while the user drags it, it is theirs.
  if (document.activeElement !== ui.limit) {
    ui.limit.value = String(limit);
    ui.limitValue.textContent = String(limit);
  }
});
events.addEventListener('load', (e) => {
  const { cpu } = JSON.parse(e.data);
  ui.cpu.textContent = `${Math.round(cpu)}%`;
  ui.cpuMeter.style.width = `${Math.min(100, Math.max(0, cpu))}%`;
});
events.addEventListener('completion', (e) => {
  const c = JSON.parse(e.data);
  run.completions.push(c);
  run.taskProgress.delete(c.index);
  const key = c.pid ?? 'no process';
  if (!run.rows.has(key)) run.rows.set(key, []);
  run.rows.get(key).push(c);
  scheduleTimeline();
  drawTaskProgress();
});
events.addEventListener('task-progress', (e) => {
  const t = JSON.parse(e.data);
  run.taskProgress.set(t.index, t);
  drawTaskProgress();
});

// --- drawing --------------------------------------------------------------------------------

function setStatus(status) {
  run.status = status;
  drawStatus();
  if (status === 'cancelled' || status === 'failed') ui.eta.textContent = '–';
  // The load is a live reading: once the run has ended, the last one would only look current.
  if (status !== 'running' && status !== 'cancelling') {
    ui.cpu.textContent = '–';
    ui.cpuMeter.style.width = '0';
  }
}

/** The badge: the run's status, but 'paused' while a running run's limit is 0. */
function drawStatus() {
  const shown = run.status === 'running' && run.limit === 0 ? 'paused' : run.status;
  ui.status.textContent = shown;
  ui.status.dataset.state = shown;
}

function updateControls() {
  const going = run.status === 'running' || run.status === 'cancelling';
  ui.start.disabled = going;
  ui.cancel.disabled = run.status !== 'running';
  ui.tasks.disabled = going;
  ui.auto.disabled = run.status === 'cancelling';
  // The slider moves a manual run's limit live; in auto mode it only shows the library's limit.
  ui.limit.disabled = ui.auto.checked;
}

let timelineQueued = false;
function scheduleTimeline() {
  if (timelineQueued) return;
  timelineQueued = true;
  requestAnimationFrame(() => {
    timelineQueued = false;
    drawTimeline();
  });
}

/** One row per worker pid, one bar per task: it started `durationMs` before the server saw it end. */
function drawTimeline() {
  const span = Math.max(run.elapsedMs, ...run.completions.map((c) => c.endMs), 1);
  ui.timelineEmpty.hidden = run.rows.size > 0;
  ui.axisEnd.textContent = run.rows.size > 0 ? seconds(span) : '';
  const rows = [];
  for (const [pid, tasks] of run.rows) {
    const row = element('div', 'row');
    row.append(element('span', 'pid', typeof pid === 'number' ? `pid ${pid}` : pid));
    const track = element('div', 'track');
    for (const c of tasks) {
      const start = Math.max(0, c.endMs - c.durationMs);
      const bar = element('div', `task ${c.status === 'rejected' ? 'rejected' : c.kind}`);
      bar.style.left = `${(100 * start) / span}%`;
      bar.style.width = `${(100 * (c.endMs - start)) / span}%`;
      bar.title = `task #${c.index} (${c.kind}): ${Math.round(c.durationMs)} ms${c.error ? `, ${c.error}` : ''}`;
      track.append(bar);
    }
    row.append(track);
    rows.push(row);
  }
  ui.timeline.replaceChildren(...rows);
}

function drawTaskProgress() {
  const items = [...run.taskProgress.values()]
    .sort((a, b) => a.index - b.index)
    .map((t) => {
      const item = element('li', '', `#${t.index}`);
      const bar = document.createElement('progress');
      bar.max = t.of;
      bar.value = t.done;
      item.append(bar, `${t.done}/${t.of}`);
      return item;
    });
  ui.taskProgress.replaceChildren(...items);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

updateControls();
