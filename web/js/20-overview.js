// 20-overview.js - the overview: counts, utilisation bars, the charts, job rows and recent jobs. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

// ---------------------------------------------------------------- overview

function renderCounts() {
  const c = (state.stats && state.stats.counts) || {};
  const ul = $('#counts');
  if (!ul.children.length) {
    for (const s of STATUSES) {
      ul.append(h('li', {},
        h('a', { href: `#/jobs?status=${s}`, class: `st-${s}`, dataset: { count: s } },
          h('span', { class: 'label' }, icon(s), STATUS_LABEL[s]),
          h('span', { class: 'num' }, '—'))));
    }
  }
  for (const s of STATUSES) {
    const a = $(`[data-count="${s}"]`, ul);
    const n = c[s];
    $('.num', a).textContent = n === undefined ? '—' : n.toLocaleString();
    a.setAttribute('aria-label', `${STATUS_LABEL[s]}: ${n === undefined ? 'unknown' : n} jobs`);
  }
}

// Events nudge the counts between polls: the job left one status for another.
const knownStatus = new Map(); // job id -> last status seen (bounded)
function nudgeCounts(d) {
  if (!state.stats || !state.stats.counts) return;
  const c = state.stats.counts;
  const prev = knownStatus.get(d.id);
  if (prev === d.status) return;
  if (prev && c[prev] > 0) c[prev]--;
  c[d.status] = (c[d.status] || 0) + (prev || d.status === 'queued' || d.status === 'scheduled' ? 1 : 0);
  knownStatus.set(d.id, d.status);
  if (knownStatus.size > 5000) knownStatus.delete(knownStatus.keys().next().value);
  renderCounts();
}

function renderUtil() {
  const box = $('#util');
  box.replaceChildren();
  if (!state.executors.length) { box.append(h('p', { class: 'sub' }, state.stats ? 'No executors.' : 'Loading…')); return; }
  for (const e of state.executors) {
    const frac = e.size ? Math.min(1, e.busy / e.size) : 0;
    box.append(h('div', { class: 'util-row', dataset: { executor: e.name } },
      h('div', { class: 'util-name' }, e.name, h('span', { class: 'sub' }, `${e.kind} · ${e.size} slots`)),
      h('div', {
        class: 'bar' + (frac >= 0.9 ? ' hot' : ''), role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': String(e.size),
        'aria-valuenow': String(e.busy), 'aria-label': `${e.name}: ${e.busy} of ${e.size} busy`,
      }, h('span', { style: null })),
      h('div', { class: 'util-nums' }, h('b', {}, `${e.busy}/${e.size}`), ' busy · ', h('b', {}, String(e.queued)), ' queued')));
    $('.bar > span', box.lastChild).style.width = `${(frac * 100).toFixed(1)}%`;
  }
}

// ---------------------------------------------------------------- charts (canvas)

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function setupCanvas(cv) {
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth, hgt = cv.clientHeight;
  if (!w || !hgt) return null;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(hgt * dpr)) {
    cv.width = Math.round(w * dpr);
    cv.height = Math.round(hgt * dpr);
  }
  const ctx = cv.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  return { ctx, w, h: hgt };
}

// Axes and grid for a chart over the last 10 minutes; returns the plot box.
function frame(g, yMax, fmtY) {
  const { ctx, w, h: hh } = g;
  const pad = { l: 52, r: 10, t: 10, b: 24 };
  const box = { x: pad.l, y: pad.t, w: w - pad.l - pad.r, h: hh - pad.t - pad.b };
  ctx.font = `11px ${cssVar('--mono') || 'monospace'}`;
  ctx.fillStyle = cssVar('--muted');
  ctx.strokeStyle = cssVar('--line');
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(box.y + box.h - (i / 4) * box.h) + 0.5;
    ctx.beginPath(); ctx.moveTo(box.x, y); ctx.lineTo(box.x + box.w, y); ctx.stroke();
    ctx.fillText(fmtY((yMax * i) / 4), box.x - 6, y);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let m = 10; m >= 0; m -= 2) {
    const x = box.x + box.w * (1 - m / 10);
    ctx.fillText(m ? `-${m}m` : 'now', Math.min(Math.max(x, box.x + 12), box.x + box.w - 14), box.y + box.h + 6);
  }
  return box;
}

function xOf(box, t, now) { return box.x + box.w * (1 - (now - t) / HISTORY_MS); }

function legend(el, items) {
  el.replaceChildren(...items.map(([label, color, kind]) =>
    h('span', {}, h('i', { class: kind || '', style: null, dataset: { c: color } }), label)));
  for (const i of el.querySelectorAll('i')) i.style.setProperty('--c', cssVar(i.dataset.c));
}

function drawCharts() {
  const now = Date.now();
  const pts = state.history.filter((p) => p.at >= now - HISTORY_MS);
  const step = state.historyInterval;
  // throughput: stacked bars, jobs/s per interval
  const cv1 = $('#chart-throughput');
  const g1 = setupCanvas(cv1);
  const series = [['succeeded', '--chart-1'], ['failed', '--chart-2'], ['cancelled', '--chart-3']];
  if (g1) {
    const rate = (p) => ((p.succeeded || 0) + (p.failed || 0) + (p.cancelled || 0)) / step;
    const yMax = niceMax(Math.max(0, ...pts.map(rate)));
    const box = frame(g1, yMax, (v) => fmtNum(v));
    const bw = Math.max(2, (box.w * step * 1000) / HISTORY_MS - 2);
    let drawn = 0;
    for (const p of pts) {
      let y = box.y + box.h;
      const x = xOf(box, p.at + step * 1000, now) - bw - 1;
      for (const [k, c] of series) {
        const v = (p[k] || 0) / step;
        if (!v) continue;
        const hgt = (v / yMax) * box.h;
        g1.ctx.fillStyle = cssVar(c);
        g1.ctx.fillRect(x, y - hgt, bw, hgt);
        y -= hgt;
        drawn++;
      }
    }
    cv1.dataset.drawn = String(drawn);
    const tp = state.stats ? state.stats.throughput_per_s : NaN;
    $('#thru-now').textContent = `${fmtNum(tp)} jobs/s over the last minute`;
    cv1.setAttribute('aria-label', `Jobs finished per second over the last 10 minutes, by status; now ${fmtNum(tp)} per second`);
  }
  legend($('#legend-throughput'), series.map(([k, c]) => [STATUS_LABEL[k], c, 'box']));

  // latency: queue wait and run time, p50 solid and p95 dashed
  const cv2 = $('#chart-latency');
  const g2 = setupCanvas(cv2);
  const lines = [
    ['Run time p50', 'run_time_ms', 'p50', '--chart-4', false],
    ['Run time p95', 'run_time_ms', 'p95', '--chart-4', true],
    ['Queue wait p50', 'queue_wait_ms', 'p50', '--chart-5', false],
    ['Queue wait p95', 'queue_wait_ms', 'p95', '--chart-5', true],
  ];
  if (g2) {
    // An interval in which no job finished has no latency: a gap, not a zero.
    const finished = (p) => (p.succeeded || 0) + (p.failed || 0) + (p.cancelled || 0) > 0 || !state.serverHistory;
    const val = (p, k, q) => (finished(p) && p[k] && Number.isFinite(p[k][q]) ? p[k][q] : null);
    const all = pts.flatMap((p) => lines.map(([, k, q]) => val(p, k, q))).filter((v) => v !== null);
    const yMax = niceMax(Math.max(0, ...all));
    const box = frame(g2, yMax, (v) => (v ? fmtDuration(v).replace(' ', '') : '0'));
    let drawn = 0;
    const { ctx } = g2;
    for (const [, k, q, c, dashed] of lines) {
      ctx.strokeStyle = cssVar(c);
      ctx.lineWidth = dashed ? 1.5 : 2.2;
      ctx.setLineDash(dashed ? [5, 4] : []);
      ctx.beginPath();
      let started = false;
      for (const p of pts) {
        const v = val(p, k, q);
        if (v === null) { started = false; continue; }
        const x = xOf(box, p.at + (step * 1000) / 2, now);
        const y = box.y + box.h - (v / yMax) * box.h;
        if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        started = true;
        if (v > 0) drawn++;
      }
      ctx.stroke();
      // points with no neighbour on either side would not show as a line: dots
      for (let i = 0; i < pts.length; i++) {
        const v = val(pts[i], k, q);
        const p = pts[i];
        if (v === null || (i > 0 && val(pts[i - 1], k, q) !== null) || (i + 1 < pts.length && val(pts[i + 1], k, q) !== null)) continue;
        ctx.fillStyle = cssVar(c);
        ctx.beginPath();
        ctx.arc(xOf(box, p.at + (step * 1000) / 2, now), box.y + box.h - (v / yMax) * box.h, 3, 0, 7);
        ctx.fill();
      }
    }
    ctx.setLineDash([]);
    cv2.dataset.drawn = String(drawn);
    const s = state.stats || {};
    const rt = s.run_time_ms || {}, qw = s.queue_wait_ms || {};
    $('#lat-now').textContent = `run p50 ${fmtDuration(rt.p50)} · p95 ${fmtDuration(rt.p95)}`;
    cv2.setAttribute('aria-label', `Latency over the last 10 minutes. Run time p50 ${fmtDuration(rt.p50)}, p95 ${fmtDuration(rt.p95)}; queue wait p50 ${fmtDuration(qw.p50)}, p95 ${fmtDuration(qw.p95)}`);
  }
  legend($('#legend-latency'), lines.map(([label, , , c, dashed]) => [label, c, dashed ? 'dash' : '']));
}

// Colours come from CSS variables: redraw when the colour scheme flips.
const darkQuery = window.matchMedia('(prefers-color-scheme: dark)');
darkQuery.addEventListener('change', () => {
  if (state.view === 'overview') drawCharts();
  document.documentElement.dataset.scheme = darkQuery.matches ? 'dark' : 'light';
});
document.documentElement.dataset.scheme = darkQuery.matches ? 'dark' : 'light';

new ResizeObserver(debounce(() => { if (state.view === 'overview') drawCharts(); }, 100))
  .observe(document.documentElement);

// ---------------------------------------------------------------- job rows (recent + jobs table)

function jobRow(j, cols) {
  const tr = h('tr', { dataset: { id: j.id, status: j.status } });
  fillRow(tr, j, cols);
  return tr;
}

function detailCell(j) {
  if (j.status === 'running' && j.progress && Number.isFinite(j.progress.fraction)) {
    const pct = Math.round(j.progress.fraction * 100);
    const bar = h('span', { class: 'mini-progress', role: 'progressbar', 'aria-valuenow': String(pct),
      'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-label': 'progress' }, h('span'));
    bar.firstChild.style.width = `${pct}%`;
    return h('td', { class: 'detail' }, bar, `${pct}%`, j.progress.message ? ` ${j.progress.message}` : '');
  }
  if (j.error) return h('td', { class: 'detail error', title: j.error.message || '' }, `${j.error.type}: ${j.error.message || ''}`);
  if (j.status === 'succeeded' && j.result !== null && j.result !== undefined) {
    const text = JSON.stringify(j.result);
    return h('td', { class: 'detail mono', title: text.slice(0, 500) }, '→ ', text.length > 120 ? text.slice(0, 120) + '…' : text);
  }
  if (j.batch_id) return h('td', { class: 'detail' }, 'batch ', h('a', { href: `#/jobs?batch=${j.batch_id}` }, shortId(j.batch_id)));
  return h('td', { class: 'detail' }, '');
}

function fillRow(tr, j, cols) {
  tr.dataset.status = j.status;
  const cells = [
    h('td', {}, badge(j.status)),
    h('td', { class: 'id' }, h('a', { href: `#/jobs/${j.id}`, title: j.id, 'aria-label': `Job ${j.id}` }, shortId(j.id))),
    h('td', {}, j.task),
    h('td', { class: 'hide-s' }, j.executor || '—'),
  ];
  if (cols === 'full') cells.push(h('td', { class: 'num hide-m' }, `${j.attempt || 0}/${j.max_attempts || 1}`));
  cells.push(h('td', { class: 'num hide-s', title: j.created_at || '' }, fmtAgo(j.created_at)));
  cells.push(h('td', { class: 'num' }, fmtDuration(jobDuration(j))));
  if (cols === 'full') { const d = detailCell(j); d.classList.add('hide-m'); cells.push(d); }
  tr.replaceChildren(...cells);
  tr._job = j;
}

function flash(tr) {
  tr.classList.remove('flash');
  void tr.offsetWidth; // restart the animation
  tr.classList.add('flash');
}

// ---------------------------------------------------------------- recent jobs (overview)

async function loadRecent() {
  try {
    const r = await api('GET', '/v1/jobs' + qs({ limit: 8 }));
    const tb = $('#recent-table tbody');
    tb.replaceChildren(...r.jobs.map((j) => jobRow(j, 'short')));
    if (!r.jobs.length) tb.append(h('tr', {}, h('td', { colspan: '6', class: 'empty' }, 'No jobs yet. ', h('a', { href: '#/submit' }, 'Submit one →'))));
  } catch (e) { /* shown by the connection indicator */ }
}
