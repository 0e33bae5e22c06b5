// 50-executors.js - the executors view. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

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
