// jobd dashboard: plain modern JavaScript, no framework, no network but this
// origin. Fed by the API (/v1/...) and the event stream (/v1/events), read with
// fetch() so that the token can travel in an Authorization header.
'use strict';

const STATUSES = ['scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const STATUS_LABEL = {
  scheduled: 'Scheduled', queued: 'Queued', running: 'Running',
  succeeded: 'Succeeded', failed: 'Failed', cancelled: 'Cancelled',
};
// 24x24 stroke icons, so that a status never depends on its colour alone.
const STATUS_ICON = {
  scheduled: 'M12 7v5l3 2 M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18',
  queued: 'M4 7h16 M4 12h16 M4 17h10',
  running: 'M12 3a9 9 0 1 1-9 9',
  succeeded: 'M5 12.5l4.5 4.5L19 7.5',
  failed: 'M6 6l12 12 M18 6L6 18',
  cancelled: 'M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18 M5.6 5.6l12.8 12.8',
};
const PAGE_SIZE = 25;
const POLL_MS = 2000;
const HISTORY_MS = 10 * 60 * 1000;
const TOKEN_KEY = 'jobd.token';

// ---------------------------------------------------------------- helpers

const $ = (sel, root = document) => root.querySelector(sel);

// h('a', {href: '#'}, 'text', child): builds DOM without innerHTML, so that
// job data (args, results, errors) can never become markup.
function h(tag, attrs, ...children) {
  const ns = tag.startsWith('svg:') ? 'http://www.w3.org/2000/svg' : null;
  const el = ns ? document.createElementNS(ns, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function icon(status) {
  return h('svg:svg', { class: 'icon', viewBox: '0 0 24 24', 'aria-hidden': 'true' },
    h('svg:path', { d: STATUS_ICON[status] || STATUS_ICON.queued }));
}

function badge(status) {
  return h('span', { class: `badge st-${status}`, dataset: { status } }, icon(status), STATUS_LABEL[status] || status);
}

const ms = (t) => (t ? Date.parse(t) : NaN);

function fmtDuration(d) {
  if (!Number.isFinite(d) || d < 0) return '—';
  if (d === 0) return '0 ms';
  if (d < 1) return '<1 ms';
  if (d < 1000) return `${Math.round(d)} ms`;
  if (d < 60000) return `${(d / 1000).toFixed(d < 10000 ? 2 : 1)} s`;
  if (d < 3600000) return `${Math.floor(d / 60000)}m ${Math.round((d % 60000) / 1000)}s`;
  return `${Math.floor(d / 3600000)}h ${Math.round((d % 3600000) / 60000)}m`;
}

function fmtAgo(t) {
  const d = Date.now() - ms(t);
  if (!Number.isFinite(d)) return '—';
  if (d < 5000) return 'just now';
  if (d < 60000) return `${Math.round(d / 1000)}s ago`;
  if (d < 3600000) return `${Math.round(d / 60000)}m ago`;
  if (d < 86400000) return `${Math.round(d / 3600000)}h ago`;
  return new Date(ms(t)).toLocaleDateString();
}

function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(ms(t));
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function fmtNum(n) {
  if (!Number.isFinite(n)) return '—';
  return n >= 10000 ? n.toLocaleString() : String(Math.round(n * 100) / 100);
}

function jobDuration(j) {
  if (j.started_at) return (j.finished_at ? ms(j.finished_at) : Date.now()) - ms(j.started_at);
  if (j.finished_at) return ms(j.finished_at) - ms(j.created_at);
  return NaN;
}

function shortId(id) { return id ? id.slice(-10) : ''; }

function toast(msg, bad = false) {
  const t = h('div', { class: 'toast' + (bad ? ' bad' : ''), role: bad ? 'alert' : 'status' }, msg);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), 5000);
}

function debounce(fn, wait) {
  let timer = 0;
  return (...a) => { clearTimeout(timer); timer = setTimeout(() => fn(...a), wait); };
}

// Pretty-printed, syntax-coloured JSON, built as DOM nodes.
function jsonView(value) {
  const pre = h('pre', { class: 'json', tabindex: '0' });
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) { pre.append('null'); return pre; }
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    pre.append(text.slice(last, m.index));
    if (m[1] && m[2]) pre.append(h('span', { class: 'j-key' }, m[1]), m[2]);
    else if (m[1]) pre.append(h('span', { class: 'j-str' }, m[1]));
    else if (m[3]) pre.append(h('span', { class: 'j-num' }, m[3]));
    else pre.append(h('span', { class: 'j-lit' }, m[4]));
    last = m.index + m[0].length;
  }
  pre.append(text.slice(last));
  return pre;
}

// ---------------------------------------------------------------- API and token

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let tokenPrompt = null; // the pending prompt, shared by every request that got 401

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function askToken(wrong) {
  if (tokenPrompt) return tokenPrompt;
  const dlg = $('#token-dialog');
  const input = $('#token-input');
  const err = $('#token-err');
  err.hidden = !wrong;
  err.textContent = wrong ? 'That token was refused. Check it and try again.' : '';
  input.setAttribute('aria-invalid', wrong ? 'true' : 'false');
  input.value = '';
  tokenPrompt = new Promise((resolve) => {
    const form = $('#token-form');
    const done = (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      if (!v) { input.focus(); return; }
      form.removeEventListener('submit', done);
      token = v;
      sessionStorage.setItem(TOKEN_KEY, v);
      dlg.close();
      tokenPrompt = null;
      resolve();
    };
    form.addEventListener('submit', done);
    dlg.addEventListener('cancel', (ev) => ev.preventDefault(), { once: true });
  });
  if (!dlg.open) dlg.showModal();
  input.focus();
  return tokenPrompt;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'http_' + status;
    this.field = e.field || null;
  }
}

// fetch() against the API. Returns the parsed JSON (null for 204); throws
// ApiError for an error reply. A 401 asks for the token, then tries again.
async function api(method, path, body) {
  for (let tries = 0; ; tries++) {
    const init = { method, headers: authHeaders(body !== undefined ? { 'Content-Type': 'application/json' } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const r = await fetch(path, init);
    if (r.status === 401 && tries < 5) { await askToken(tries > 0 || !!token); continue; }
    const text = r.status === 204 ? '' : await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
}

// ---------------------------------------------------------------- shared state

const state = {
  tasks: [],        // /v1/tasks
  executors: [],    // /v1/executors
  stats: null,      // /v1/stats
  history: [],      // [{at, succeeded, failed, cancelled, queue_wait_ms, run_time_ms}] oldest first
  historyInterval: 10,
  serverHistory: false,
  lastCounts: null, // for the client-side history when the server has none
  view: '',
};

// ---------------------------------------------------------------- events (SSE over fetch)

const events = {
  lastId: null,
  ctrl: null,
  backoff: 500,
  retryTimer: 0,
  idleTimer: 0,
  listeners: new Set(),
};

function setConn(st, text) {
  const el = $('#conn');
  el.dataset.state = st;
  $('.conn-text', el).textContent = text;
  el.title = st === 'live' && events.lastId !== null ? `Last event #${events.lastId}` : '';
}

function onEvent(fn) { events.listeners.add(fn); }

function dispatchEvent(ev) {
  if (ev.id !== undefined && ev.id !== '') events.lastId = ev.id;
  let data = null;
  try { data = ev.data ? JSON.parse(ev.data) : null; } catch { return; }
  for (const fn of events.listeners) {
    try { fn(ev.type, data); } catch (e) { console.warn('event listener', e); }
  }
}

function armIdle() {
  clearTimeout(events.idleTimer);
  // The server sends a heartbeat every 15 s: 40 s of silence means a dead link.
  events.idleTimer = setTimeout(() => events.ctrl && events.ctrl.abort(), 40000);
}

async function connectEvents() {
  clearTimeout(events.retryTimer);
  if (events.ctrl) events.ctrl.abort();
  const ctrl = new AbortController();
  events.ctrl = ctrl;
  setConn(events.lastId === null ? 'connecting' : 'reconnecting', events.lastId === null ? 'Connecting…' : 'Reconnecting…');
  try {
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (events.lastId !== null) headers['Last-Event-ID'] = events.lastId;
    const r = await fetch('/v1/events', { headers, signal: ctrl.signal, cache: 'no-store' });
    if (r.status === 401) {
      setConn('offline', 'Needs token');
      await askToken(!!token);
      if (events.ctrl === ctrl) scheduleReconnect(0);
      return;
    }
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    const wasResume = events.lastId !== null;
    setConn('live', 'Live');
    events.backoff = 500;
    armIdle();
    if (wasResume) refreshAll(); // anything the stream did not carry (stats) is re-read
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let ev = { type: 'message', data: '', id: undefined };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      armIdle();
      buf += dec.decode(value, { stream: true });
      const lines = buf.split(/\r\n|\r|\n/);
      buf = lines.pop();
      for (const line of lines) {
        if (line === '') {
          if (ev.data !== '' || ev.type !== 'message') {
            if (ev.data.endsWith('\n')) ev.data = ev.data.slice(0, -1);
            dispatchEvent(ev);
          }
          ev = { type: 'message', data: '', id: undefined };
          continue;
        }
        if (line.startsWith(':')) continue; // comment: heartbeat
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') ev.data += val + '\n';
        else if (field === 'event') ev.type = val;
        else if (field === 'id') ev.id = val;
        else if (field === 'retry' && /^\d+$/.test(val)) events.backoff = Math.max(250, +val);
      }
    }
    throw new Error('stream ended');
  } catch (e) {
    if (events.ctrl !== ctrl) return; // replaced by a newer connection
    clearTimeout(events.idleTimer);
    scheduleReconnect(events.backoff);
    events.backoff = Math.min(events.backoff * 2, 30000);
  }
}

function scheduleReconnect(delay) {
  clearTimeout(events.retryTimer);
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      setConn(navigator.onLine === false ? 'offline' : 'reconnecting', `Reconnecting in ${left}s`);
      events.retryTimer = setTimeout(tick, 1000);
    } else {
      connectEvents();
    }
  };
  if (delay <= 0) connectEvents(); else tick();
}

window.addEventListener('online', () => scheduleReconnect(0));

// ---------------------------------------------------------------- polling: stats and executors

let pollTimer = 0;
let polling = false;

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [stats, ex] = await Promise.all([api('GET', '/v1/stats'), api('GET', '/v1/executors')]);
    state.stats = stats;
    state.executors = ex.executors || [];
    ingestHistory(stats);
    renderCounts();
    if (state.view === 'overview') { renderUtil(); drawCharts(); }
    if (state.view === 'executors') renderExecutors();
    if (state.view === 'jobs' || state.view === 'overview') refreshProgress();
  } catch (e) {
    if (!(e instanceof ApiError)) setConn('offline', 'Server unreachable');
  } finally {
    polling = false;
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, POLL_MS);
  }
}

// The charts' series: the server's own (stats.history) when it has one, else
// built here from successive polls (counts differences, latency samples).
function ingestHistory(stats) {
  const hist = stats.history;
  if (hist && Array.isArray(hist.points)) {
    state.serverHistory = true;
    state.historyInterval = hist.interval_s || 10;
    state.history = hist.points.map((p) => ({ ...p, at: ms(p.at) }));
    return;
  }
  const now = Date.now();
  const c = stats.counts || {};
  const step = state.historyInterval * 1000;
  const at = Math.floor(now / step) * step;
  let last = state.history[state.history.length - 1];
  if (!last || last.at !== at) {
    last = { at, succeeded: 0, failed: 0, cancelled: 0, queue_wait_ms: null, run_time_ms: null };
    state.history.push(last);
  }
  if (state.lastCounts) {
    for (const s of ['succeeded', 'failed', 'cancelled'])
      last[s] += Math.max(0, (c[s] || 0) - (state.lastCounts[s] || 0));
  }
  state.lastCounts = { ...c };
  if (stats.queue_wait_ms) last.queue_wait_ms = stats.queue_wait_ms;
  if (stats.run_time_ms) last.run_time_ms = stats.run_time_ms;
  while (state.history.length && state.history[0].at < now - HISTORY_MS) state.history.shift();
}

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

// ---------------------------------------------------------------- jobs view

const jobsView = {
  filters: { status: [], task: '', executor: '', batch: '', q: '' },
  cursors: [],     // cursors of the pages before this one ('' for the first)
  cursor: '',
  next: null,
  rows: new Map(), // id -> tr
  loading: 0,
};

function filtersFromHash(params) {
  const f = jobsView.filters;
  f.status = (params.get('status') || '').split(',').filter((s) => STATUSES.includes(s));
  f.task = params.get('task') || '';
  f.executor = params.get('executor') || '';
  f.batch = params.get('batch') || '';
  f.q = params.get('q') || '';
}

function filtersToHash() {
  const f = jobsView.filters;
  const q = qs({ status: f.status.join(','), task: f.task, executor: f.executor, batch: f.batch, q: f.q });
  const want = '#/jobs' + q;
  if (location.hash !== want) history.replaceState(null, '', want);
}

function syncFilterInputs() {
  const f = jobsView.filters;
  for (const s of STATUSES) $(`#chip-${s}`).checked = f.status.includes(s);
  fillSelect($('#f-task'), 'Any task', state.tasks.map((t) => t.name), f.task);
  fillSelect($('#f-executor'), 'Any executor', state.executors.map((e) => e.name), f.executor);
  $('#f-batch').value = f.batch;
  if (document.activeElement !== $('#f-q')) $('#f-q').value = f.q;
}

function fillSelect(sel, anyLabel, names, value) {
  const opts = [h('option', { value: '' }, anyLabel), ...names.map((n) => h('option', { value: n }, n))];
  if (value && !names.includes(value)) opts.push(h('option', { value }, value));
  sel.replaceChildren(...opts);
  sel.value = value;
}

function buildFilters() {
  const box = $('#status-chips');
  for (const s of STATUSES) {
    box.append(h('span', { class: `chip st-${s}` },
      h('input', { type: 'checkbox', id: `chip-${s}`, value: s, name: 'status' }),
      h('label', { for: `chip-${s}` }, icon(s), STATUS_LABEL[s])));
  }
  const form = $('#filters');
  const apply = () => {
    const f = jobsView.filters;
    f.status = STATUSES.filter((s) => $(`#chip-${s}`).checked);
    f.task = $('#f-task').value;
    f.executor = $('#f-executor').value;
    f.batch = $('#f-batch').value.trim();
    f.q = $('#f-q').value.trim();
    filtersToHash();
    loadJobs('');
  };
  form.addEventListener('change', (e) => { if (e.target.id !== 'f-q' && e.target.id !== 'f-batch') apply(); });
  $('#f-q').addEventListener('input', debounce(apply, 250));
  $('#f-batch').addEventListener('input', debounce(apply, 400));
  form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  $('#f-clear').addEventListener('click', () => {
    jobsView.filters = { status: [], task: '', executor: '', batch: '', q: '' };
    $('#f-q').value = '';
    syncFilterInputs();
    apply();
  });
  $('#page-older').addEventListener('click', () => {
    if (!jobsView.next) return;
    jobsView.cursors.push(jobsView.cursor);
    loadJobs(jobsView.next, true);
  });
  $('#page-newer').addEventListener('click', () => {
    if (!jobsView.cursors.length) return;
    loadJobs(jobsView.cursors.pop(), true);
  });
}

function listQuery(f, extra) {
  return qs({ status: f.status.join(','), task: f.task, executor: f.executor, batch: f.batch, q: f.q, ...extra });
}

async function loadJobs(cursor, paging = false) {
  if (!paging) jobsView.cursors = [];
  jobsView.cursor = cursor;
  const seq = ++jobsView.loading;
  const f = jobsView.filters;
  const note = $('#jobs-note');
  const tb = $('#jobs-table tbody');
  $('#jobs-table').setAttribute('aria-busy', 'true');
  let r;
  try {
    r = await api('GET', '/v1/jobs' + listQuery(f, { limit: PAGE_SIZE, cursor }));
  } catch (e) {
    if (seq !== jobsView.loading) return;
    $('#jobs-table').removeAttribute('aria-busy');
    if (e instanceof ApiError && e.field === 'q') {
      note.textContent = 'This server cannot search yet: showing the other filters only.';
      note.hidden = false;
      jobsView.filters.q = '';
      return loadJobs(cursor, paging);
    }
    tb.replaceChildren(h('tr', {}, h('td', { colspan: '8', class: 'empty' }, `Could not load jobs: ${e.message}`)));
    return;
  }
  if (seq !== jobsView.loading) return;
  if (f.q || !note.textContent.startsWith('This server')) note.hidden = true;
  $('#jobs-table').removeAttribute('aria-busy');
  jobsView.next = r.next_cursor;
  jobsView.rows.clear();
  const rows = r.jobs.map((j) => { const tr = jobRow(j, 'full'); jobsView.rows.set(j.id, tr); return tr; });
  tb.replaceChildren(...rows);
  if (!rows.length) {
    tb.append(h('tr', { class: 'none' }, h('td', { colspan: '8', class: 'empty' },
      anyFilter() ? 'No jobs match these filters.' : 'No jobs yet.')));
  }
  $('#page-older').disabled = !r.next_cursor;
  $('#page-newer').disabled = !jobsView.cursors.length;
  updateSummary();
}

function anyFilter() {
  const f = jobsView.filters;
  return !!(f.status.length || f.task || f.executor || f.batch || f.q);
}

function updateSummary() {
  const n = jobsView.rows.size;
  const page = jobsView.cursors.length + 1;
  $('#jobs-summary').textContent = `${n} job${n === 1 ? '' : 's'} shown · page ${page}${anyFilter() ? ' · filtered' : ''}`;
}

function matchesFilters(d) {
  const f = jobsView.filters;
  if (f.q) return false; // text search needs the server
  if (f.status.length && !f.status.includes(d.status)) return false;
  if (f.task && d.task !== f.task) return false;
  if (f.executor && d.executor !== f.executor) return false;
  if (f.batch && d.batch_id !== f.batch) return false;
  return true;
}

// A job event: update the row in place, or add the new job on the first page.
function jobsOnEvent(d) {
  const tr = jobsView.rows.get(d.id);
  if (tr) {
    const j = { ...tr._job, ...d };
    if (TERMINAL.has(d.status)) j.progress = tr._job.progress;
    fillRow(tr, j, 'full');
    flash(tr);
    const f = jobsView.filters;
    if (f.status.length && !f.status.includes(d.status)) tr.classList.add('stale');
    return;
  }
  if (jobsView.cursors.length || jobsView.cursor || !matchesFilters(d)) {
    if (jobsView.filters.q) refreshSearch();
    return;
  }
  if (ms(d.created_at) < Date.now() - 60000 && jobsView.rows.size >= PAGE_SIZE) return;
  const tb = $('#jobs-table tbody');
  $('tr.none', tb)?.remove();
  const row = jobRow({ progress: null, ...d }, 'full');
  jobsView.rows.set(d.id, row);
  tb.prepend(row);
  flash(row);
  while (tb.rows.length > PAGE_SIZE) {
    const last = tb.rows[tb.rows.length - 1];
    jobsView.rows.delete(last.dataset.id);
    last.remove();
    jobsView.next = jobsView.next || last.dataset.id;
    $('#page-older').disabled = false;
  }
  updateSummary();
}

const refreshSearch = debounce(() => { if (state.view === 'jobs' && !jobsView.cursor) loadJobs(''); }, 800);

// Running rows that report progress: re-read them (events carry no progress).
async function refreshProgress() {
  const rows = state.view === 'jobs' ? jobsView.rows : null;
  if (!rows) return;
  const running = [...rows.values()].filter((tr) => tr.dataset.status === 'running');
  if (!running.length) return;
  try {
    const r = await api('GET', '/v1/jobs' + qs({ status: 'running', limit: 200 }));
    for (const j of r.jobs) {
      const tr = rows.get(j.id);
      if (tr && tr.dataset.status === 'running') fillRow(tr, j, 'full');
    }
  } catch { /* next poll */ }
}

// ---------------------------------------------------------------- job view

const jobView = { id: '', job: null, timer: 0 };

async function loadJob(id) {
  jobView.id = id;
  clearTimeout(jobView.timer);
  const box = $('#job');
  try {
    const j = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
    if (jobView.id !== id) return;
    jobView.job = j;
    renderJob(j);
    if (j.status === 'running' || j.status === 'queued')
      jobView.timer = setTimeout(() => { if (state.view === 'job' && jobView.id === id) loadJob(id); }, j.progress ? 700 : 2500);
  } catch (e) {
    if (jobView.id !== id) return;
    box.replaceChildren(h('div', { class: 'card' }, h('h1', {}, e.status === 404 ? 'No such job' : 'Could not load the job'),
      h('p', { class: 'sub' }, e.message)));
  }
}

function timelineItem(label, t, gapLabel, gap) {
  return h('li', { class: t ? 'done' : '' },
    h('div', { class: 't-label' }, label),
    h('div', { class: 't-time', title: t || '' }, t ? fmtTime(t) : (gapLabel === 'running for' ? '' : '—')),
    gapLabel && Number.isFinite(gap) ? h('div', { class: 't-gap' }, `${gapLabel} ${fmtDuration(gap)}`) : null);
}

function kv(pairs) {
  const dl = h('dl', { class: 'kv' });
  for (const [k, v] of pairs) if (v !== undefined) dl.append(h('dt', {}, k), h('dd', {}, v === null || v === '' ? '—' : v));
  return dl;
}

function renderJob(j) {
  const box = $('#job');
  const canCancel = !TERMINAL.has(j.status);
  const canRetry = j.status === 'failed' || j.status === 'cancelled';
  const cancelBtn = h('button', { type: 'button', class: 'btn danger', id: 'job-cancel', disabled: !canCancel }, 'Cancel');
  const retryBtn = h('button', { type: 'button', class: 'btn primary', id: 'job-retry', disabled: !canRetry }, 'Retry');
  cancelBtn.addEventListener('click', async () => {
    cancelBtn.disabled = true;
    try { const r = await api('POST', `/v1/jobs/${j.id}/cancel`); renderJob(r); toast(`Job ${shortId(j.id)} ${r.status}.`); }
    catch (e) { toast(e.message, true); cancelBtn.disabled = false; }
  });
  retryBtn.addEventListener('click', async () => {
    retryBtn.disabled = true;
    try {
      const r = await api('POST', `/v1/jobs/${j.id}/retry`);
      toast(`Retried as job ${shortId(r.id)}.`);
      location.hash = `#/jobs/${r.id}`;
    } catch (e) { toast(e.message, true); retryBtn.disabled = false; }
  });

  const created = ms(j.created_at), sched = ms(j.scheduled_at), started = ms(j.started_at), fin = ms(j.finished_at);
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Timeline' },
    timelineItem('Created', j.created_at),
    timelineItem('Eligible', j.scheduled_at, sched > created ? 'after' : null, sched - created),
    timelineItem('Started', j.started_at, 'waited', started - Math.max(created, sched || created)),
    timelineItem('Finished', j.finished_at,
      j.started_at ? (j.finished_at ? 'ran' : 'running for') : 'after',
      j.started_at ? (j.finished_at ? fin : Date.now()) - started : fin - created));

  const worker = j.worker;
  const deps = Array.isArray(j.depends_on) && j.depends_on.length
    ? h('span', {}, ...j.depends_on.flatMap((d, i) => [i ? ', ' : '', h('a', { href: `#/jobs/${d}`, class: 'mono' }, d)]))
    : null;
  const details = kv([
    ['Task', j.task],
    ['Executor', j.executor],
    ['Attempt', `${j.attempt} of ${j.max_attempts}`],
    ['Priority', String(j.priority ?? 0)],
    ['Timeout', j.timeout ? `${j.timeout} s` : null],
    ['Worker', worker ? h('span', { class: 'mono' }, `pid ${worker.pid ?? '—'} · ${worker.thread ?? '—'}`) : null],
    ['Batch', j.batch_id ? h('a', { href: `#/jobs?batch=${j.batch_id}`, class: 'mono' }, j.batch_id) : null],
    ['Depends on', deps],
    ['Concurrency', j.concurrency_key ? `${j.concurrency_key} (limit ${j.concurrency_limit ?? 1})` : null],
    ['Idempotency key', j.idempotency_key],
    ['Callback', j.callback_url ? h('span', {}, h('span', { class: 'mono' }, j.callback_url), ` — ${j.callback_status || 'not yet'}`) : null],
  ]);

  let progress = null;
  if (j.progress && Number.isFinite(j.progress.fraction)) {
    const pct = Math.round(j.progress.fraction * 100);
    const bar = h('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': String(pct), 'aria-valuemin': '0',
      'aria-valuemax': '100', 'aria-labelledby': 'job-progress-label' }, h('span'));
    bar.firstChild.style.width = `${pct}%`;
    progress = h('section', { class: 'card', id: 'job-progress' },
      h('div', { class: 'card-head' }, h('h2', { id: 'job-progress-label' }, 'Progress'), h('span', { class: 'sub' }, `${pct}%${j.progress.message ? ' · ' + j.progress.message : ''}`)),
      bar);
  }

  const attempts = Array.isArray(j.attempts) && j.attempts.length
    ? h('section', { class: 'card flush' },
      h('div', { class: 'card-head', style: null }, h('h2', {}, `Attempts (${j.attempts.length})`)),
      h('div', { class: 'table-wrap' }, h('table', { class: 'jobs', id: 'attempts' },
        h('thead', {}, h('tr', {}, ...['#', 'Status', 'Started', 'Ran', 'Worker', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, ...j.attempts.map((a) => h('tr', {},
          h('td', { class: 'num' }, String(a.attempt)),
          h('td', {}, a.status ? badge(a.status) : '—'),
          h('td', { class: 'num' }, fmtTime(a.started_at)),
          h('td', { class: 'num' }, fmtDuration(ms(a.finished_at) - ms(a.started_at))),
          h('td', { class: 'mono' }, a.worker ? `${a.worker.pid ?? ''} ${a.worker.thread ?? ''}` : '—'),
          h('td', { class: 'detail error' }, a.error ? `${a.error.type}: ${a.error.message || ''}` : '')))))))
    : null;
  if (attempts) attempts.firstChild.style.padding = '1rem 1.1rem 0';

  box.replaceChildren(...[
    h('div', { class: 'job-head' },
      h('h1', { id: 'h-job' }, j.task, badge(j.status), h('span', { class: 'mono', id: 'job-id' }, j.id)),
      h('div', { class: 'actions' }, cancelBtn, retryBtn)),
    h('section', { class: 'card' }, timeline),
    progress,
    j.error ? h('div', { class: 'card error-box', role: 'note', id: 'job-error' }, h('b', {}, j.error.type), ': ', j.error.message || '') : null,
    h('div', { class: 'grid2' },
      h('section', { class: 'card' }, h('h2', {}, 'Details'), h('div', { style: null }, details)),
      h('div', {},
        h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Args')), jsonView(j.args)),
        h('section', { class: 'card', id: 'job-result' }, h('div', { class: 'card-head' }, h('h2', {}, 'Result')),
          j.result === null && j.status !== 'succeeded'
            ? h('p', { class: 'sub' }, TERMINAL.has(j.status) ? 'No result.' : 'Not finished yet.') : jsonView(j.result)))),
    attempts].filter(Boolean));
  for (const dl of box.querySelectorAll('dl.kv')) dl.style.marginTop = '.6rem';
  box.dataset.status = j.status;
  document.title = `${j.task} ${shortId(j.id)} · ${STATUS_LABEL[j.status] || j.status} · jobd`;
}

// ---------------------------------------------------------------- executors view

function renderExecutors() {
  const box = $('#executors');
  const cards = state.executors.map((e) => {
    const frac = e.size ? Math.min(1, e.busy / e.size) : 0;
    const bar = h('div', { class: 'bar' + (frac >= 0.9 ? ' hot' : ''), role: 'meter', 'aria-valuemin': '0',
      'aria-valuemax': String(e.size), 'aria-valuenow': String(e.busy), 'aria-label': `${e.busy} of ${e.size} busy` }, h('span'));
    bar.firstChild.style.width = `${(frac * 100).toFixed(1)}%`;
    let workers = null;
    if (Array.isArray(e.workers) && e.workers.length) {
      const shown = e.kind === 'async' ? e.workers.filter((w) => w.job_id) : e.workers;
      workers = h('table', { class: 'workers', 'aria-label': `${e.name} workers` },
        h('thead', {}, h('tr', {}, ...['Slot', 'PID', 'Thread', 'Running', 'For'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, ...(shown.length ? shown : []).map((w) => h('tr', { class: w.job_id ? 'busy' : 'idle', dataset: { job: w.job_id || '' } },
          h('td', {}, String(w.slot ?? '')),
          h('td', { class: 'mono' }, w.pid ? String(w.pid) : '—'),
          h('td', { class: 'mono' }, w.thread || '—'),
          h('td', {}, w.job_id ? h('a', { href: `#/jobs/${w.job_id}` }, `${w.task || 'job'} ${shortId(w.job_id)}`) : 'idle'),
          h('td', { class: 'num' }, w.started_at ? fmtDuration(Date.now() - ms(w.started_at)) : '')))));
      if (!shown.length) workers = h('p', { class: 'sub' }, 'Nothing running.');
    }
    return h('section', { class: 'card', dataset: { executor: e.name }, 'aria-label': `Executor ${e.name}` },
      h('div', { class: 'card-head' }, h('h2', {}, e.name, ' ', h('span', { class: 'kind' }, e.kind)),
        h('span', { class: 'sub' }, `${e.size} ${e.kind === 'async' ? 'at once' : e.kind === 'process' ? 'processes' : 'threads'}`)),
      h('div', { class: 'util-row' }, h('div', { class: 'util-name' }, 'Busy'), bar,
        h('div', { class: 'util-nums' }, h('b', {}, `${e.busy}/${e.size}`))),
      h('p', { class: 'sub' }, `Queue: ${e.queued} waiting (at most ${(e.max_queued ?? 0).toLocaleString()})`),
      h('div', { class: 'stats4' },
        ...[['submitted', e.submitted], ['succeeded', e.succeeded], ['failed', e.failed], ['cancelled', e.cancelled]]
          .map(([k, v]) => h('div', {}, h('b', {}, (v ?? 0).toLocaleString()), h('span', {}, k)))),
      workers);
  });
  box.replaceChildren(...cards);
}

// ---------------------------------------------------------------- submit view

const EXAMPLE_ARGS = {
  noop: {}, echo: { hello: 'world' }, sleep: { seconds: 2 }, square: { n: 12 }, crunch: { iterations: 20000000 },
  sha256: { data: 'abc', rounds: 1000 }, fail: { message: 'boom' }, http_get: { url: 'http://127.0.0.1/', timeout: 5 },
  exec: { argv: ['echo', 'hi'] }, crash: { signal: 'SEGV' },
};

function setFieldError(name, msg) {
  const input = $(`#s-${name}`);
  const err = $(`#s-${name}-err`);
  if (!err) return false;
  err.textContent = msg || '';
  err.hidden = !msg;
  if (input) input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  return true;
}

function clearErrors() {
  for (const n of ['task', 'executor', 'args', 'priority', 'max_attempts', 'timeout', 'delay', 'form']) setFieldError(n, '');
}

function fillSubmitTasks() {
  const sel = $('#s-task');
  const cur = sel.value;
  sel.replaceChildren(...state.tasks.map((t) => h('option', { value: t.name }, t.name)));
  if (cur && state.tasks.some((t) => t.name === cur)) sel.value = cur;
  onTaskChange(false);
}

function onTaskChange(resetArgs = true) {
  const t = state.tasks.find((x) => x.name === $('#s-task').value);
  $('#s-task-help').textContent = t ? t.description : '';
  const sel = $('#s-executor');
  const cur = sel.value;
  const ok = state.executors.filter((e) => !t || (t.kinds || []).includes(e.kind));
  sel.replaceChildren(h('option', { value: '' }, `Default${t && t.default_executor ? ` (${t.default_executor})` : ''}`),
    ...ok.map((e) => h('option', { value: e.name }, `${e.name} — ${e.kind}`)));
  if (ok.some((e) => e.name === cur)) sel.value = cur;
  const args = $('#s-args');
  if (t && (resetArgs || !args.value.trim())) args.value = JSON.stringify(EXAMPLE_ARGS[t.name] ?? {}, null, 2);
}

function buildSubmit() {
  $('#s-task').addEventListener('change', () => { clearErrors(); onTaskChange(true); });
  $('#submit-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    const spec = { task: $('#s-task').value };
    const ex = $('#s-executor').value;
    if (ex) spec.executor = ex;
    const raw = $('#s-args').value.trim();
    if (raw) {
      try { spec.args = JSON.parse(raw); } catch (e) {
        setFieldError('args', `Args must be JSON: ${e.message}`);
        $('#s-args').focus();
        return;
      }
    }
    for (const [k, isInt] of [['priority', true], ['max_attempts', true], ['timeout', false], ['delay', false]]) {
      const v = $(`#s-${k}`).value.trim();
      if (!v) continue;
      const n = Number(v);
      if (!Number.isFinite(n) || (isInt && !Number.isInteger(n))) {
        setFieldError(k, `${k} must be ${isInt ? 'a whole number' : 'a number'}.`);
        $(`#s-${k}`).focus();
        return;
      }
      spec[k] = n;
    }
    const btn = $('#s-submit');
    btn.disabled = true;
    try {
      const j = await api('POST', '/v1/jobs', spec);
      toast(`Submitted job ${shortId(j.id)}.`);
      location.hash = `#/jobs/${j.id}`;
    } catch (e) {
      // The API names the offending field as a JSON path (args.seconds):
      // the message goes next to the input that holds it.
      const top = e.field ? e.field.split(/[.[]/)[0] : '';
      const target = ['task', 'executor', 'args', 'priority', 'max_attempts', 'timeout', 'delay'].includes(top) ? top : 'form';
      const named = !e.field || target === 'form' || e.message.includes(e.field);
      setFieldError(target, named ? e.message : `${e.field}: ${e.message}`);
      if (target !== 'form') $(`#s-${target}`).focus();
    } finally {
      btn.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- routing

function route() {
  const hash = location.hash || '#/';
  const [path, query] = hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean);
  let view = 'overview';
  if (parts[0] === 'jobs' && parts[1]) view = 'job';
  else if (parts[0] === 'jobs') view = 'jobs';
  else if (parts[0] === 'executors') view = 'executors';
  else if (parts[0] === 'submit') view = 'submit';
  const changed = state.view !== view;
  state.view = view;
  for (const v of ['overview', 'jobs', 'job', 'executors', 'submit']) $(`#view-${v}`).hidden = v !== view;
  const navKey = view === 'job' ? 'jobs' : view;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.nav === navKey) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (view !== 'job') document.title = `${{ overview: 'Overview', jobs: 'Jobs', executors: 'Executors', submit: 'Submit' }[view]} · jobd`;
  if (view === 'overview') { renderCounts(); renderUtil(); drawCharts(); loadRecent(); }
  if (view === 'jobs') { filtersFromHash(params); syncFilterInputs(); loadJobs(''); }
  if (view === 'job') loadJob(parts[1]);
  if (view === 'executors') renderExecutors();
  if (view === 'submit') fillSubmitTasks();
  if (changed) { window.scrollTo(0, 0); $('#main').focus({ preventScroll: true }); }
}

// Everything the views show, read again (start, reconnect, resync).
async function refreshAll() {
  try {
    const t = await api('GET', '/v1/tasks');
    state.tasks = t.tasks || [];
  } catch { /* the poll reports it */ }
  await poll();
  route();
}

onEvent((type, d) => {
  if (type === 'resync') { refreshAll(); return; }
  if (type !== 'job' || !d || !d.id) return;
  nudgeCounts(d);
  if (state.view === 'jobs') jobsOnEvent(d);
  if (state.view === 'overview') refreshRecent();
  if (state.view === 'job' && d.id === jobView.id) loadJob(d.id);
});

const refreshRecent = debounce(loadRecent, 300);

// Relative times ("12s ago", running durations) move on their own.
setInterval(() => {
  if (document.hidden) return;
  if (state.view === 'jobs') for (const tr of jobsView.rows.values()) if (!TERMINAL.has(tr.dataset.status)) fillRow(tr, tr._job, 'full');
}, 1000);

async function main() {
  buildFilters();
  buildSubmit();
  window.addEventListener('hashchange', route);
  route();
  await refreshAll();
  connectEvents();
}

main();
