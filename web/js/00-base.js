// jobd dashboard, 00-base.js: constants, DOM and format helpers, the API and
// its token, shared state. web/js/*.js are joined in name order into one
// script, app.js, at build time (Makefile), so they share one scope. Plain
// modern JavaScript, no framework, no network but this origin. Fed by the API
// (/v1/...) and the event stream (/v1/events), read with fetch() so that the
// token can travel in an Authorization header.
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
