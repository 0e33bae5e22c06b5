// 60-submit.js - the submit form. Part of app.js: web/js/*.js are joined in name order
// into one script at build time (Makefile), so they share one scope.

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
