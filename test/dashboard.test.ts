/**
 * End-to-end test of examples/dashboard: the server runs in this process, the page in headless
 * Chromium (Debian's `chromium`, driven by playwright-core). The tests wait on what the page
 * shows, never on time, and check by pid that the run's worker processes are gone.
 */
import test, { type ExecutionContext } from 'ava';
import { chromium, type Page } from 'playwright-core';
import { startDashboard, type Dashboard } from '../examples/dashboard/server.js';
import { liveChildPids } from '../src/index.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** How long to wait for the page to reach a state: generous, since CI machines are slow and workers boot through tsx. */
const WAIT = { timeout: 90_000 };

/** Starts the server and a browser on its page; both are closed when the test ends. */
async function openDashboard(t: ExecutionContext): Promise<{ dashboard: Dashboard; page: Page }> {
  t.timeout(240_000);
  const dashboard = await startDashboard({ port: 0 });
  t.teardown(() => dashboard.close());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  t.teardown(() => browser.close()); // teardowns run last-registered first: the browser goes before the server
  const page = await browser.newPage();
  await page.goto(dashboard.url);
  await page.waitForSelector('#status[data-state="idle"]', WAIT);
  return { dashboard, page };
}

/** A DOM element's text as a number. */
async function numberIn(page: Page, selector: string): Promise<number> {
  return Number(await page.locator(selector).textContent());
}

/** The worker pids the page's timeline shows, one row per worker. */
async function timelinePids(page: Page): Promise<number[]> {
  const labels = await page.locator('#timeline .pid').allTextContents();
  return labels.map((label) => Number(label.replace('pid ', '')));
}

/** Asserts that no process has `pid`: `kill(pid, 0)` fails with ESRCH. */
function assertGone(t: ExecutionContext, pid: number): void {
  t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `process ${pid} is still there`);
}

test.serial('start shows progress; cancel ends the run and leaves no worker process', async (t) => {
  const { dashboard, page } = await openDashboard(t);
  await page.fill('#tasks', '40');
  await page.uncheck('#auto');
  await page.fill('#limit', '2'); // a fixed limit, so the run lasts long enough to be cancelled on any machine
  await page.click('#start');

  await page.waitForSelector('#status[data-state="running"]', WAIT);
  await page.waitForFunction("Number(document.getElementById('completed').textContent) >= 1", undefined, WAIT);
  t.is(await numberIn(page, '#total'), 40);
  t.is(await page.locator('#concurrency').textContent(), '2');
  // The slider moves the limit of the running run (an Observable<number> limit on the server).
  await page.fill('#limit', '3');
  await page.waitForSelector('#concurrency:text-is("3")', WAIT);

  const pids = dashboard.currentRunPids();
  t.true(pids.length > 0, 'the run has worker processes');
  const shown = await timelinePids(page);
  t.true(shown.length > 0, 'the timeline has a row for a worker');
  for (const pid of shown) t.true(pids.includes(pid), `timeline row for pid ${pid} is one of the run's workers ${pids.join(', ')}`);

  await page.click('#cancel');
  // The page says "cancelled" only once the server has seen every process of the run end.
  await page.waitForSelector('#status[data-state="cancelled"]', WAIT);
  t.is(await page.locator('#status').textContent(), 'cancelled');
  t.true((await numberIn(page, '#completed')) < 40, 'the run was cut short');
  // The last snapshot: the tasks that were running are cancelled, the others never started.
  await page.waitForFunction(
    "['completed', 'failed', 'cancelled', 'queued'].reduce((sum, id) => sum + Number(document.getElementById(id).textContent), 0) === 40 && document.getElementById('running').textContent === '0'",
    undefined,
    WAIT,
  );
  const cancelled = await numberIn(page, '#cancelled');
  t.true(cancelled >= 1 && cancelled <= 3, `the tasks running at the cancel (at most the limit, 3): ${cancelled}`);
  t.deepEqual(dashboard.currentRunPids(), []);
  for (const pid of pids) assertGone(t, pid);
  t.deepEqual(liveChildPids(), [], 'the library tracks no child process of this test any more');
  t.false(await page.locator('#start').isDisabled(), 'Start is available again');
});

test.serial('a short run finishes with completed = total, and its workers are gone', async (t) => {
  const { page } = await openDashboard(t);
  await page.fill('#tasks', '6');
  t.true(await page.isChecked('#auto'), 'auto concurrency is the default');
  await page.click('#start');

  await page.waitForSelector('#status[data-state="completed"]', WAIT);
  t.is(await numberIn(page, '#completed'), 6);
  t.is(await numberIn(page, '#total'), 6);
  t.is(await numberIn(page, '#failed'), 0);
  t.is(await page.locator('#bar').getAttribute('aria-valuenow'), '6');
  t.is(await page.locator('#timeline .task').count(), 6, 'one timeline bar per task');
  const shown = await timelinePids(page);
  t.true(shown.length > 0);
  for (const pid of shown) assertGone(t, pid);
});

/** Starts a run of `tasks` tasks with the slider at `limit` (manual mode), and waits for it to run. */
async function startManual(page: Page, tasks: number, limit: number): Promise<void> {
  await page.fill('#tasks', String(tasks));
  await page.uncheck('#auto');
  await page.fill('#limit', String(limit));
  await page.click('#start');
  await page.waitForSelector('#status[data-state="running"]', WAIT);
}

test.serial('the slider at 0 pauses the run: the running tasks finish, nothing else starts until it moves up', async (t) => {
  const { dashboard, page } = await openDashboard(t);
  await startManual(page, 8, 1);
  // Paused once the first task runs: it finishes, and the seven others wait.
  await page.waitForFunction("document.getElementById('running').textContent === '1'", undefined, WAIT);
  await page.fill('#limit', '0');
  await page.waitForSelector('#status[data-state="paused"]', WAIT);
  t.is(await page.locator('#concurrency').textContent(), '0 (paused)');
  await page.waitForFunction("document.getElementById('running').textContent === '0'", undefined, WAIT);
  const done = (await numberIn(page, '#completed')) + (await numberIn(page, '#failed'));
  t.true(done >= 1 && done <= 2, `the task running at the pause ended (and none or one more that had started): ${done}`);
  t.is(await numberIn(page, '#queued'), 8 - done);
  // A while later (the longest example task takes 1.3 s), still nothing has started.
  await page.waitForTimeout(2000);
  t.is(await numberIn(page, '#running'), 0);
  t.is((await numberIn(page, '#completed')) + (await numberIn(page, '#failed')), done, 'nothing ran during the pause');
  t.is(await page.locator('#status').textContent(), 'paused');

  const pids = new Set(dashboard.currentRunPids());
  await page.fill('#limit', '2');
  await page.waitForSelector('#status[data-state="running"], #status[data-state="completed"]', WAIT);
  await page.waitForSelector('#status[data-state="completed"]', WAIT);
  t.is(await numberIn(page, '#completed'), 8);
  for (const pid of await timelinePids(page)) pids.add(pid);
  t.true(pids.size > 0);
  for (const pid of pids) assertGone(t, pid);
  t.deepEqual(liveChildPids(), [], 'the library tracks no child process of this test any more');
});

test.serial('the Auto checkbox hands the limit to the library mid-run, and unchecked gives it back to the slider', async (t) => {
  const { dashboard, page } = await openDashboard(t);
  await startManual(page, 40, 1);
  await page.waitForFunction("document.getElementById('running').textContent === '1'", undefined, WAIT);
  t.true(await page.locator('#limit').isEnabled(), 'the slider sets the limit');

  await page.check('#auto');
  // The library reads the load and raises the limit from 1: two CPUs, one task running.
  await page.waitForFunction("Number(document.getElementById('concurrency').textContent) > 1", undefined, WAIT);
  t.is(dashboard.currentRunMode(), 'auto');
  t.true(await page.locator('#limit').isDisabled(), 'the slider only shows the limit now');
  const pids = new Set(dashboard.currentRunPids());

  // Unchecked, the limit stays where the slider shows it (it followed the library's), and the
  // slider moves it again.
  const answered = page.waitForResponse((response) => response.url().endsWith('/concurrency'), WAIT);
  await page.uncheck('#auto');
  await answered;
  t.true(await page.locator('#limit').isEnabled(), 'the slider has the limit again');
  t.is(dashboard.currentRunMode(), 'manual');
  await page.fill('#limit', '1');
  await page.waitForSelector('#concurrency:text-is("1")', WAIT);
  for (const pid of dashboard.currentRunPids()) pids.add(pid);

  await page.click('#cancel');
  await page.waitForSelector('#status[data-state="cancelled"]', WAIT);
  for (const pid of pids) assertGone(t, pid);
  t.deepEqual(liveChildPids(), [], 'the library tracks no child process of this test any more');
});
