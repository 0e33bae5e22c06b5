#!/usr/bin/env node
// Browser tests of the dashboard (web/, served by jobd at /), run by
// `make test` through tests/run.sh: Debian's chromium driven by playwright-core.
//
// Starts build/jobd itself (JOBD_BIN overrides) on 127.0.0.1:0 with a temp
// database, runs each test in a fresh browser context with a deadline, saves
// build/screenshots/<test>.png, and ends with "N passed, N failed".
// Tests never sleep to hope: they poll with Playwright's waitFor/waitForFunction.
// Usage: node tests/browser/run.js [name-substring...]
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

const HERE = __dirname;
const ROOT = path.resolve(HERE, '..', '..');
const SHOTS = path.join(ROOT, 'build', 'screenshots');
const BIN = path.resolve(ROOT, process.env.JOBD_BIN || 'build/jobd');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCALE = Number(process.env.JOBD_TEST_SCALE || 1);
const TEST_MS = 25000 * SCALE;   // each test's deadline
const WAIT_MS = 10000 * SCALE;   // one condition's deadline

// --- playwright-core: `npm ci` once, again only when package-lock.json changes.
function ensureDeps() {
  const stamp = path.join(HERE, 'node_modules', '.package-lock.json');
  const lock = path.join(HERE, 'package-lock.json');
  const current = fs.existsSync(path.join(HERE, 'node_modules', 'playwright-core', 'package.json')) &&
    fs.existsSync(stamp) && fs.statSync(stamp).mtimeMs >= fs.statSync(lock).mtimeMs;
  if (current) return;
  console.log('browser: npm ci in tests/browser');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: HERE, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('npm ci in tests/browser failed');
}

// --- jobd

class Jobd {
  constructor(name, args = []) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `jobd-browser-${name}-`));
    this.args = args;
    this.log = [];
  }

  start() {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('JOBD_')));
    const listen = this.args[0] === '--listen' ? [] : ['--listen', '127.0.0.1:0'];
    this.log = [];
    this.proc = spawn(BIN, [...listen, '--db', path.join(this.dir, 'jobd.db'), '--log-level', 'info',
      '--grace', '1', ...this.args], { cwd: this.dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`jobd did not say where it listens:\n${this.log.join('\n')}`)), 15000 * SCALE);
      let buf = '';
      this.proc.stderr.on('data', (d) => {
        buf += d;
        const lines = buf.split('\n');
        buf = lines.pop();
        for (const l of lines) {
          this.log.push(l);
          const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(l);
          if (m && !this.port) {
            this.port = Number(m[1]);
            this.url = `http://127.0.0.1:${this.port}`;
            clearTimeout(timer);
            resolve(this);
          }
        }
      });
      this.proc.on('exit', (code) => { clearTimeout(timer); if (!this.port) reject(new Error(`jobd exited ${code}:\n${this.log.join('\n')}`)); });
    });
  }

  // keep: the database stays, for a restart on the same port (start() again).
  async stop(keep = false) {
    if (this.proc && this.proc.exitCode === null) {
      const done = new Promise((r) => this.proc.on('exit', r));
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    }
    if (keep) {
      this.args = ['--listen', `127.0.0.1:${this.port}`, ...this.args];
      this.port = undefined;
    } else {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }

  async api(method, p, body, token) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const r = await fetch(this.url + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text.slice(0, 300)}`);
    return data;
  }

  submit(spec, wait) { return this.api('POST', '/v1/jobs' + (wait ? `?wait=${wait}` : ''), spec); }
}

// --- the tests

const tests = [];
const test = (name, fn, opts = {}) => tests.push({ name, fn, ...opts });

// Waits until fn() (in Node) returns a truthy value.
async function until(fn, what, timeout = WAIT_MS) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const row = (page, id) => page.locator(`#jobs-table tbody tr[data-id="${id}"]`);

async function waitLive(page) {
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: WAIT_MS });
}

test('overview loads with no console errors', async ({ page, srv, shot }) => {
  await srv.submit({ task: 'square', args: { n: 3 } }, 10);
  await srv.submit({ task: 'fail', args: { message: 'expected failure' } }, 10);
  await srv.submit({ task: 'sleep', args: { seconds: 30 } });
  await page.goto(srv.url + '/');
  await waitLive(page);
  await page.locator('[data-count="succeeded"] .num', { hasText: /^[1-9]/ }).waitFor({ timeout: WAIT_MS });
  await page.locator('#util .util-row').first().waitFor();
  await page.locator('#recent-table tbody tr[data-id]').first().waitFor();
  if (await page.title() !== 'Overview · jobd') throw new Error(`title ${await page.title()}`);
  for (const v of ['jobs', 'executors', 'submit']) {
    await page.click(`nav a[data-nav="${v}"]`);
    await page.locator(`#view-${v}:not([hidden])`).waitFor();
  }
  await page.click('nav a[data-nav="overview"]');
  await page.locator('#view-overview:not([hidden])').waitFor();
  await page.mouse.move(0, 0);
  await shot();
}, { slug: 'overview' });

test('a job submitted through the API appears and changes status live', async ({ page, srv, shot }) => {
  await page.goto(srv.url + '/#/jobs');
  await waitLive(page);
  await page.evaluate(() => { window.__noReload = true; });
  const job = await srv.submit({ task: 'sleep', args: { seconds: 1.5 }, executor: 'thread' });
  await row(page, job.id).waitFor({ timeout: WAIT_MS });
  await row(page, job.id).locator('[data-status="running"]').waitFor({ timeout: WAIT_MS });
  await shot('jobs-live-running');
  await row(page, job.id).locator('[data-status="succeeded"]').waitFor({ timeout: WAIT_MS });
  if (!(await page.evaluate(() => window.__noReload))) throw new Error('the page reloaded');
  await shot();
}, { slug: 'jobs-live' });

test('cancel and retry from the job page', async ({ page, srv, shot }) => {
  const job = await srv.submit({ task: 'sleep', args: { seconds: 60 }, executor: 'thread' });
  await page.goto(`${srv.url}/#/jobs/${job.id}`);
  await page.locator('#job[data-status="running"]').waitFor({ timeout: WAIT_MS });
  await page.click('#job-cancel');
  await page.locator('#job[data-status="cancelled"]').waitFor({ timeout: WAIT_MS });
  const gone = await srv.api('GET', `/v1/jobs/${job.id}`);
  if (gone.status !== 'cancelled') throw new Error(`the API says ${gone.status}`);
  await page.click('#job-retry');
  await page.waitForFunction((old) => /^#\/jobs\/[0-9A-Z]{26}$/.test(location.hash) && !location.hash.endsWith(old), job.id,
    { timeout: WAIT_MS });
  const newId = (await page.evaluate(() => location.hash)).split('/').pop();
  await page.locator('#job[data-status="running"], #job[data-status="queued"]').waitFor({ timeout: WAIT_MS });
  const again = await srv.api('GET', `/v1/jobs/${newId}`);
  if (again.task !== 'sleep' || again.args.seconds !== 60) throw new Error(`retry made ${JSON.stringify(again)}`);
  await shot();
  await srv.api('POST', `/v1/jobs/${newId}/cancel`);
  await page.locator('#job[data-status="cancelled"]').waitFor({ timeout: WAIT_MS });
}, { slug: 'job-retried', allow: [/status of 409/] });

test('job page shows args, result, attempts and progress', async ({ page, srv, shot }) => {
  const failed = await srv.submit({ task: 'fail', args: { message: 'disk on fire' }, max_attempts: 2, retry_backoff: 0 });
  await srv.api('GET', `/v1/jobs/${failed.id}?wait=10`);
  await until(async () => (await srv.api('GET', `/v1/jobs/${failed.id}?wait=5`)).status === 'failed', 'the retried job to fail');
  await page.goto(`${srv.url}/#/jobs/${failed.id}`);
  await page.locator('#job-error', { hasText: 'disk on fire' }).waitFor({ timeout: WAIT_MS });
  await page.locator('#attempts tbody tr').nth(1).waitFor({ timeout: WAIT_MS });
  await shot('job-failed');
  const crunch = await srv.submit({ task: 'crunch', args: { iterations: 100000000000 }, executor: 'process' });
  await page.goto(`${srv.url}/#/jobs/${crunch.id}`);
  await page.locator('#job-progress [role="progressbar"]').waitFor({ timeout: WAIT_MS });
  await page.locator('#h-job .mono').waitFor();
  await shot('job-running-progress');
  await srv.api('POST', `/v1/jobs/${crunch.id}/cancel`);
  const ok = await srv.submit({ task: 'echo', args: { order: 42, items: ['tea', 'milk'], rush: true } }, 10);
  await page.goto(`${srv.url}/#/jobs/${ok.id}`);
  await page.locator('#job-result .j-key', { hasText: '"items"' }).waitFor({ timeout: WAIT_MS });
  await shot();
}, { slug: 'job-succeeded' });

test('the submit form creates a job and shows validation errors', async ({ page, srv, shot }) => {
  await page.goto(srv.url + '/#/submit');
  await page.locator('#s-task option[value="square"]').waitFor({ state: 'attached', timeout: WAIT_MS });
  await page.selectOption('#s-task', 'square');
  const kinds = await page.$$eval('#s-executor option', (os) => os.map((o) => o.value));
  if (!kinds.includes('thread') || kinds.includes('async') === false && false) throw new Error(`executors ${kinds}`);
  await page.selectOption('#s-task', 'crunch');
  const crunchKinds = await page.$$eval('#s-executor option', (os) => os.map((o) => o.value));
  if (crunchKinds.includes('async')) throw new Error(`crunch offered async: ${crunchKinds}`);
  await page.selectOption('#s-task', 'square');
  await page.fill('#s-args', '{"n": 7}');
  await page.click('#s-submit');
  await page.waitForFunction(() => /^#\/jobs\/[0-9A-Z]{26}$/.test(location.hash), null, { timeout: WAIT_MS });
  await page.locator('#job[data-status="succeeded"]').waitFor({ timeout: WAIT_MS });
  await page.locator('#job-result pre', { hasText: '49' }).waitFor();
  // bad args: the API's error, next to the args field
  await page.goto(srv.url + '/#/submit');
  await page.selectOption('#s-task', 'sleep');
  await page.fill('#s-args', '{"seconds": "x"}');
  await page.click('#s-submit');
  await page.locator('#s-args-err:not([hidden])', { hasText: 'args.seconds' }).waitFor({ timeout: WAIT_MS });
  if (await page.getAttribute('#s-args', 'aria-invalid') !== 'true') throw new Error('args not marked invalid');
  // not JSON at all: caught before the request
  await page.fill('#s-args', '{"seconds": ');
  await page.click('#s-submit');
  await page.locator('#s-args-err:not([hidden])', { hasText: 'JSON' }).waitFor({ timeout: WAIT_MS });
  await page.fill('#s-args', '{"seconds": "x"}');
  await page.click('#s-submit');
  await page.locator('#s-args-err:not([hidden])', { hasText: 'args.seconds' }).waitFor({ timeout: WAIT_MS });
  await shot();
}, { slug: 'submit-validation-error', allow: [/status of 400/] });

test('filters and search narrow the jobs table', async ({ page, srv, shot }) => {
  const echo = await srv.submit({ task: 'echo', args: { note: 'marmalade sandwich' } }, 10);
  await srv.submit({ task: 'echo', args: { note: 'plain toast' } }, 10);
  const failed = await srv.submit({ task: 'fail', args: { message: 'out of jam' } }, 10);
  await srv.submit({ task: 'noop' }, 10);
  await srv.submit({ task: 'square', args: { n: 5 } }, 10);
  await page.goto(srv.url + '/#/jobs');
  await row(page, echo.id).waitFor({ timeout: WAIT_MS });
  const statuses = () => page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.map((r) => r.dataset.status));
  const tasks = () => page.$$eval('#jobs-table tbody tr[data-id] td:nth-child(3)', (ts) => ts.map((t) => t.textContent));
  await page.click('label[for="chip-failed"]');
  await until(async () => { const s = await statuses(); return s.length && s.every((x) => x === 'failed'); }, 'only failed rows');
  await page.waitForFunction(() => location.hash.includes('status=failed'));
  await page.click('label[for="chip-failed"]');
  await page.selectOption('#f-task', 'echo');
  await until(async () => { const t = await tasks(); return t.length >= 2 && t.every((x) => x === 'echo'); }, 'only echo rows');
  await page.selectOption('#f-task', '');
  await page.fill('#f-q', 'marmalade');
  await until(async () => {
    const ids = await page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.map((r) => r.dataset.id));
    return ids.length === 1 && ids[0] === echo.id;
  }, 'the search to find the marmalade job alone');
  await page.fill('#f-q', failed.id);
  await until(async () => {
    const ids = await page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.map((r) => r.dataset.id));
    return ids.length === 1 && ids[0] === failed.id;
  }, 'the search by id');
  await page.fill('#f-q', 'jam');
  await until(async () => (await statuses()).join() === 'failed', 'the search in errors');
  await page.fill('#f-q', '');
  await page.click('label[for="chip-succeeded"]');
  await until(async () => { const s = await statuses(); return s.length >= 3 && s.every((x) => x === 'succeeded'); }, 'succeeded rows');
  await shot();
}, { slug: 'jobs-filtered' });

test('keyset paging walks older and newer pages', async ({ page, srv }) => {
  const spec = { jobs: Array.from({ length: 30 }, (_, i) => ({ task: 'echo', args: { i } })) };
  const b = await srv.api('POST', '/v1/batches', spec);
  await page.goto(`${srv.url}/#/jobs?batch=${b.id}`);
  await page.locator('#jobs-table tbody tr[data-id]').nth(24).waitFor({ timeout: WAIT_MS });
  const first = await page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.map((r) => r.dataset.id));
  await page.click('#page-older');
  await until(async () => (await page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.length)) === 5, 'page 2 with 5 rows');
  const second = await page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.map((r) => r.dataset.id));
  if (second.some((id) => first.includes(id))) throw new Error('pages overlap');
  await page.click('#page-newer');
  await until(async () => (await page.$$eval('#jobs-table tbody tr[data-id]', (rs) => rs.length)) === 25, 'page 1 again');
}, { slug: 'jobs-paging' });

test('the charts draw', async ({ page, srv, shot }) => {
  const spec = { jobs: [
    ...Array.from({ length: 40 }, (_, i) => ({ task: 'sleep', args: { seconds: 0.05 * (i % 5) } })),
    ...Array.from({ length: 6 }, () => ({ task: 'fail', args: { message: 'chart' } })),
  ] };
  const b = await srv.api('POST', '/v1/batches', spec);
  await srv.api('GET', `/v1/batches/${b.id}?wait=10`);
  await page.goto(srv.url + '/');
  await waitLive(page);
  // the client-side history needs two polls to see a difference; the server's is there at once
  await page.waitForFunction(() => Number(document.querySelector('#chart-latency').dataset.drawn) > 0, null, { timeout: WAIT_MS });
  await srv.api('POST', '/v1/batches', { jobs: Array.from({ length: 20 }, () => ({ task: 'noop' })) });
  await page.waitForFunction(() => Number(document.querySelector('#chart-throughput').dataset.drawn) > 0, null, { timeout: WAIT_MS });
  const inked = await page.$eval('#chart-throughput', (cv) => {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  if (inked < 500) throw new Error(`the throughput chart has only ${inked} inked pixels`);
  await page.mouse.move(0, 0);
  await shot();
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.locator('html[data-scheme="dark"]').waitFor({ state: 'attached' });
  await shot('overview-dark');
}, { slug: 'overview-charts' });

test('executors page shows workers and what they run', async ({ page, srv, shot }) => {
  const job = await srv.submit({ task: 'crunch', args: { iterations: 100000000000 }, executor: 'process' });
  await page.goto(srv.url + '/#/executors');
  await page.locator('#executors [data-executor="process"]').waitFor({ timeout: WAIT_MS });
  await page.locator('#executors [data-executor="thread"]').waitFor();
  // needs GET /v1/executors "workers": the process worker's pid and its job
  await page.locator(`#executors [data-executor="process"] tr[data-job="${job.id}"]`).waitFor({ timeout: WAIT_MS });
  await shot();
  await srv.api('POST', `/v1/jobs/${job.id}/cancel`);
}, { slug: 'executors' });

test('phone width', async ({ page, srv, shot }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await srv.submit({ task: 'sleep', args: { seconds: 20 } });
  await page.goto(srv.url + '/');
  await waitLive(page);
  await page.locator('[data-count="succeeded"] .num', { hasText: /^[0-9]/ }).waitFor({ timeout: WAIT_MS });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) throw new Error(`the overview is ${overflow}px wider than a phone`);
  await shot('phone-overview');
  await page.goto(srv.url + '/#/jobs');
  await page.locator('#jobs-table tbody tr[data-id]').first().waitFor({ timeout: WAIT_MS });
  const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow2 > 1) throw new Error(`the jobs page is ${overflow2}px wider than a phone`);
  await shot();
}, { slug: 'phone-jobs' });

test('the connection indicator reconnects by itself and resumes', async ({ page }) => {
  const own = await new Jobd('restart').start();
  try {
    const first = await own.submit({ task: 'noop' }, 10);
    await page.goto(own.url + '/#/jobs');
    await waitLive(page);
    await row(page, first.id).waitFor();
    await own.stop(true);
    await page.locator('#conn:not([data-state="live"])').waitFor({ timeout: WAIT_MS });
    await own.start();
    await waitLive(page);
    const after = await own.submit({ task: 'square', args: { n: 4 } });
    await row(page, after.id).locator('[data-status="succeeded"]').waitFor({ timeout: WAIT_MS });
  } finally {
    await own.stop();
  }
}, { slug: 'reconnect', allow: [/ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|Failed to fetch/] });

test('assets: content types, ETag and 304, CSP', async ({ srv }) => {
  for (const [p, type] of [['/', 'text/html'], ['/app.js', 'text/javascript'], ['/app.css', 'text/css']]) {
    const r = await fetch(srv.url + p);
    const ct = r.headers.get('content-type') || '';
    if (r.status !== 200 || !ct.startsWith(type)) throw new Error(`${p}: ${r.status} ${ct}`);
    const etag = r.headers.get('etag');
    if (!etag || r.headers.get('cache-control') !== 'no-cache') throw new Error(`${p}: etag ${etag}`);
    if (!/default-src 'self'/.test(r.headers.get('content-security-policy') || '')) throw new Error(`${p}: no CSP`);
    if (r.headers.get('x-content-type-options') !== 'nosniff') throw new Error(`${p}: no nosniff`);
    const again = await fetch(srv.url + p, { headers: { 'If-None-Match': etag } });
    if (again.status !== 304) throw new Error(`${p} with If-None-Match: ${again.status}`);
  }
}, { slug: 'assets' });

test('token: the page asks for it, then works', async ({ page, tokenSrv, shot }) => {
  await tokenSrv.api('POST', '/v1/jobs?wait=10', { task: 'square', args: { n: 9 } }, 'sesame');
  await page.goto(tokenSrv.url + '/');
  await page.locator('#token-dialog[open]').waitFor({ timeout: WAIT_MS });
  await page.fill('#token-input', 'wrong');
  await page.press('#token-input', 'Enter');
  await page.locator('#token-err:not([hidden])').waitFor({ timeout: WAIT_MS });
  await page.fill('#token-input', 'sesame');
  await shot('token-prompt');
  await page.press('#token-input', 'Enter');
  await page.locator('#token-dialog:not([open])').waitFor({ state: 'attached', timeout: WAIT_MS });
  await waitLive(page);
  await page.locator('[data-count="succeeded"] .num', { hasText: '1' }).waitFor({ timeout: WAIT_MS });
  if (await page.evaluate(() => sessionStorage.getItem('jobd.token')) !== 'sesame') throw new Error('token not kept');
  // kept for the session: a reload does not ask again
  await page.reload();
  await waitLive(page);
  if (await page.locator('#token-dialog[open]').count()) throw new Error('asked again after a reload');
  await shot();
}, { slug: 'token-accepted', allow: [/status of 401/] });

// --- the runner

async function main() {
  const only = process.argv.slice(2);
  ensureDeps();
  const { chromium } = require('playwright-core');
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.endsWith('.failed.png')) fs.rmSync(path.join(SHOTS, f)); // from an earlier run
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: make build/jobd`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: make deps-test installs chromium`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'jobd-chromium-'));
  const servers = [];
  let browser;
  let passed = 0, failed = 0;
  try {
    const srv = await new Jobd('plain').start();
    servers.push(srv);
    const tokenSrv = await new Jobd('token', ['--token', 'sesame']).start();
    servers.push(tokenSrv);
    // A fresh profile (--user-data-dir) for each run: Playwright takes it as
    // launchPersistentContext's first argument. Each test gets its own page
    // (so its own sessionStorage).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1360, height: 900 },
      deviceScaleFactor: 1,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    for (const t of tests) {
      if (only.length && !only.some((o) => t.name.includes(o))) continue;
      const slug = t.slug;
      const page = await browser.newPage();
      page.setDefaultTimeout(WAIT_MS);
      const problems = [];
      page.on('console', (m) => {
        if (m.type() !== 'error' && m.type() !== 'warning') return;
        if ((t.allow || []).some((re) => re.test(m.text()))) return;
        problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      const shot = async (name) => page.screenshot({ path: path.join(SHOTS, `${name || slug}.png`), fullPage: true });
      const t0 = Date.now();
      let error = null;
      let timer;
      try {
        await Promise.race([
          t.fn({ page, srv, tokenSrv, shot }),
          new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`deadline of ${TEST_MS} ms passed`)), TEST_MS); }),
        ]);
        if (problems.length) error = new Error(problems.join('\n'));
      } catch (e) {
        error = e;
        if (problems.length) error.message += '\n' + problems.join('\n');
        await page.screenshot({ path: path.join(SHOTS, `${slug}.failed.png`), fullPage: true }).catch(() => {});
      } finally {
        clearTimeout(timer);
      }
      await page.close().catch(() => {});
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      if (error) {
        failed++;
        console.log(`not ok - ${t.name} (${secs}s)\n    ${String(error.message).split('\n').slice(0, 12).join('\n    ')}`);
      } else {
        passed++;
        console.log(`ok - ${t.name} (${secs}s)`);
      }
    }
  } catch (e) {
    failed++;
    console.log(`not ok - setup\n    ${e.stack || e}`);
  } finally {
    if (browser) await browser.close().catch(() => {});
    for (const s of servers) await s.stop().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`screenshots in ${path.relative(ROOT, SHOTS)}/`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main();
