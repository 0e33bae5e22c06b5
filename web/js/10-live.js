// 10-live.js - the event stream (SSE read with fetch) and the polling of stats and executors. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

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
