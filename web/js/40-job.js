// 40-job.js - the job page. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

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
