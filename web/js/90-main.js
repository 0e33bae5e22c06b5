// 90-main.js - routing and start-up. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

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
