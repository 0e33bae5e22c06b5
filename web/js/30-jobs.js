// 30-jobs.js - the jobs view: filters, search, keyset paging, live rows, progress. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

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
