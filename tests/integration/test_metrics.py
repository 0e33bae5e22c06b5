"""GET /metrics: the Prometheus text exposition format 0.0.4 (SPEC §3).

Counts are checked exactly on a fresh server (make_server), after every job
has been long-polled to its end: the core counts an outcome before the store
commits it, so a finished job is always counted by the time a client sees it
finished. The `jobd_jobs` gauge is different: it moves when the commit's
callback runs, just after the job is visible, so it is polled (wait_for). promtool (Debian package `prometheus`, in the Makefile's DEPS_TEST)
lints the whole output.
"""

import math
import os
import re
import shutil
import subprocess

import pytest

from conftest import assert_error, run_jobd, wait_for

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_EXECUTORS = {"thread": "thread", "process": "process", "async": "async"}

# --- a tiny parser of the text format ------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text):
    """'{a="x",b="y\\"z"}' -> {"a": "x", "b": 'y"z'}, checking escapes."""
    body, out, pos = text[1:-1], {}, 0
    while pos < len(body):
        m = _LABEL.match(body, pos)
        assert m, f"bad label syntax at {body[pos:]!r} in {text!r}"
        raw = m.group(2)
        for esc in re.findall(r"\\.", raw):
            assert esc in _UNESCAPE, f"invalid escape {esc!r} in label value {raw!r}"
        out[m.group(1)] = re.sub(r"\\.", lambda e: _UNESCAPE[e.group(0)], raw)
        pos = m.end()
    return out


class Metrics:
    """The parsed exposition: types by family, samples as (name, labels, value)."""

    def __init__(self, text):
        self.text = text
        self.types, self.helps, self.samples = {}, {}, []
        for line in text.split("\n"):
            if not line:
                continue
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ", 3)
                assert name not in self.types, f"TYPE given twice for {name}"
                self.types[name] = typ
            elif line.startswith("# HELP "):
                _, _, name, help_ = line.split(" ", 3)
                self.helps[name] = help_
            elif line.startswith("#"):
                continue
            else:
                m = _SAMPLE.match(line)
                assert m, f"not a sample line: {line!r}"
                value = float(m.group(3))  # accepts +Inf/NaN spelled the Prometheus way
                self.samples.append((m.group(1), _labels(m.group(2)) if m.group(2) else {}, value))

    def find(self, name, **labels):
        """Samples of `name` whose labels include `labels`."""
        return [(l, v) for n, l, v in self.samples if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]

    def value(self, name, **labels):
        """The one sample of `name` with exactly these labels (0 when absent)."""
        hits = [v for n, l, v in self.samples if n == name and l == labels]
        assert len(hits) <= 1, f"{name}{labels} appears {len(hits)} times"
        return hits[0] if hits else 0


def scrape(client):
    r = client.get("/metrics")
    assert r.status_code == 200, f"/metrics -> {r.status_code}: {r.text[:300]!r}"
    assert r.headers.get("Content-Type") == CONTENT_TYPE, r.headers
    return Metrics(r.text)


def wait_gauge(client, name, want, **labels):
    """Scrapes until the sample equals want (gauges that follow a commit)."""
    return wait_for(lambda: (m := scrape(client)).value(name, **labels) == want and m, 10,
                    message=f"{name}{labels} == {want}")


def submit_all(client, specs):
    jobs = [client.submit(**spec) for spec in specs]
    return [client.wait_job(j["id"]) for j in jobs]


# --- tests ------------------------------------------------------------------------


def test_metrics_answer_200_in_the_text_format(client):
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE
    m = Metrics(r.text)
    assert r.text.endswith("\n")
    # The version label says what --version says (server/metrics.c keeps its own copy).
    code, out, _ = run_jobd(["--version"])
    assert code == 0 and out.startswith("jobd ")
    assert m.find("jobd_build_info") == [({"version": out.split()[1]}, 1)]
    assert m.types["jobd_start_time_seconds"] == "gauge"
    assert m.value("jobd_start_time_seconds") > 1.6e9
    # Every sample belongs to a family with a TYPE and a HELP.
    for name, _, _ in m.samples:
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in m.types else name
        assert family in m.types and family in m.helps, f"{name}: no TYPE/HELP for {family}"
    # HEAD answers the same headers without a body.
    h = client.head("/metrics")
    assert h.status_code == 200 and h.headers["Content-Type"] == CONTENT_TYPE and h.text == ""


def test_job_counters_are_exact_after_jobs_end(make_server):
    srv = make_server()
    c = srv.client()
    done = submit_all(c, [{"task": "noop"}] * 5 + [{"task": "fail", "args": {"message": "boom"}}] * 3
                      + [{"task": "noop", "executor": "async"}] * 2)
    assert [j["status"] for j in done] == ["succeeded"] * 5 + ["failed"] * 3 + ["succeeded"] * 2
    wait_gauge(c, "jobd_jobs", 3, status="failed")
    m = wait_gauge(c, "jobd_jobs", 7, status="succeeded")

    assert m.types["jobd_jobs_submitted_total"] == "counter"
    assert m.types["jobd_jobs_finished_total"] == "counter"
    assert m.value("jobd_jobs_submitted_total", task="noop", executor="thread") == 5
    assert m.value("jobd_jobs_submitted_total", task="noop", executor="async") == 2
    assert m.value("jobd_jobs_submitted_total", task="fail", executor="thread") == 3
    assert m.value("jobd_jobs_finished_total", task="noop", executor="thread", status="succeeded") == 5
    assert m.value("jobd_jobs_finished_total", task="noop", executor="async", status="succeeded") == 2
    assert m.value("jobd_jobs_finished_total", task="fail", executor="thread", status="failed") == 3
    assert m.value("jobd_jobs_finished_total", task="fail", executor="thread", status="succeeded") == 0
    assert sum(v for _, v in m.find("jobd_jobs_submitted_total")) == 10
    finished = {s: sum(v for _, v in m.find("jobd_jobs_finished_total", status=s))
                for s in ("succeeded", "failed", "cancelled")}
    assert finished == {"succeeded": 7, "failed": 3, "cancelled": 0}
    # Series exist before anything happens, for the pairs that can run.
    assert m.find("jobd_jobs_submitted_total", task="sleep", executor="process") == [
        ({"task": "sleep", "executor": "process"}, 0)]

    assert m.types["jobd_jobs"] == "gauge"
    assert m.value("jobd_jobs", status="succeeded") == 7
    assert m.value("jobd_jobs", status="failed") == 3
    assert m.value("jobd_jobs", status="queued") == 0

    # Every job started, so each has a queue wait and a run time.
    assert m.value("jobd_job_queue_wait_seconds_count", executor="thread") == 8
    assert m.value("jobd_job_run_seconds_count", executor="thread") == 8
    assert m.value("jobd_job_queue_wait_seconds_count", executor="async") == 2
    assert m.value("jobd_job_run_seconds_count", executor="process") == 0

    # Each job's insert, start and end went through the store.
    assert m.value("jobd_store_commit_batch_size_count") >= 1
    assert m.value("jobd_store_commit_batch_size_sum") >= 10
    assert m.value("jobd_store_commit_seconds_count") == m.value("jobd_store_commit_batch_size_count")
    assert m.value("jobd_store_ops_total", result="committed") >= 10
    assert m.types["jobd_store_queue_depth"] == "gauge"

    assert m.value("jobd_http_requests_total", route="/v1/jobs", method="POST", status="202") == 10
    assert m.value("jobd_http_requests_total", route="/v1/jobs/{id}", method="GET", status="200") >= 10
    c.close()


def test_a_cancelled_scheduled_job_is_counted_once(make_server):
    srv = make_server()
    c = srv.client()
    job = c.submit("noop", delay=60)
    r = c.cancel(job["id"])
    assert r.status_code == 200, r.text
    assert c.wait_job(job["id"])["status"] == "cancelled"
    m = wait_gauge(c, "jobd_jobs", 1, status="cancelled")
    assert m.value("jobd_jobs_finished_total", task="noop", executor="thread", status="cancelled") == 1
    assert m.value("jobd_jobs", status="scheduled") == 0
    # It never started: no latency observed.
    assert m.value("jobd_job_queue_wait_seconds_count", executor="thread") == 0
    c.close()


def test_http_counter_increments_per_request(client):
    before = scrape(client)
    key = dict(route="/v1/jobs", method="POST", status="202")
    client.submit("noop")
    client.get("/no/such/route")
    client.put("/v1/jobs")
    client.post("/v1/jobs", data="{", headers={"Content-Type": "application/json"})
    after = scrape(client)
    assert after.value("jobd_http_requests_total", **key) == before.value("jobd_http_requests_total", **key) + 1
    for labels in (dict(route="unmatched", method="GET", status="404"),
                   dict(route="/v1/jobs", method="PUT", status="405"),
                   dict(route="/v1/jobs", method="POST", status="400"),
                   dict(route="/metrics", method="GET", status="200")):
        assert after.value("jobd_http_requests_total", **labels) == \
            before.value("jobd_http_requests_total", **labels) + 1, labels


def test_executor_gauges_for_the_default_executors(client):
    m = scrape(client)
    for family in ("jobd_executor_size", "jobd_executor_busy", "jobd_executor_queued", "jobd_executor_max_queued"):
        assert m.types[family] == "gauge", family
        got = {l["executor"]: l["kind"] for l, _ in m.find(family)}
        assert got == DEFAULT_EXECUTORS, (family, got)
    for name in DEFAULT_EXECUTORS:
        assert m.value("jobd_executor_size", executor=name, kind=name) >= 1
        assert m.value("jobd_executor_max_queued", executor=name, kind=name) >= 1


def test_busy_and_queued_gauges_follow_running_jobs(make_server):
    srv = make_server(args=["--executors", "one=thread:1"])
    c = srv.client()
    running = c.submit("sleep", args={"seconds": 30})
    waiting = c.submit("noop")
    c.wait_running(running["id"])
    m = wait_gauge(c, "jobd_jobs", 1, status="running")
    assert m.value("jobd_executor_size", executor="one", kind="thread") == 1
    assert m.value("jobd_executor_busy", executor="one", kind="thread") == 1
    assert m.value("jobd_executor_queued", executor="one", kind="thread") == 1
    assert c.cancel(running["id"]).status_code == 200
    assert c.wait_job(waiting["id"])["status"] == "succeeded"
    # The worker counts itself idle only after it handed the job's end over
    # (executors/thread.c), so busy may lag the commit wait_job saw.
    m = wait_gauge(c, "jobd_executor_busy", 0, executor="one", kind="thread")
    assert m.value("jobd_jobs_finished_total", task="sleep", executor="one", status="cancelled") == 1
    assert m.value("jobd_job_run_seconds_count", executor="one") == 2
    c.close()


def _histograms(m):
    """{(family, series labels without le): [(le, count), ...]} plus sums and counts."""
    series = {}
    for family, typ in m.types.items():
        if typ != "histogram":
            continue
        for labels, v in m.find(family + "_bucket"):
            key = (family, tuple(sorted((k, x) for k, x in labels.items() if k != "le")))
            series.setdefault(key, []).append((labels["le"], v))
    return series


def test_histograms_are_cumulative_and_end_with_inf(client):
    client.submit("sleep", args={"seconds": 0.01})
    for _ in range(3):
        client.wait_job(client.submit("noop")["id"])
    m = scrape(client)
    series = _histograms(m)
    families = {f for f, _ in series}
    assert families == {"jobd_job_queue_wait_seconds", "jobd_job_run_seconds", "jobd_store_commit_batch_size",
                        "jobd_store_commit_seconds"}, families
    for (family, labels), buckets in series.items():
        les = [le for le, _ in buckets]
        assert les[-1] == "+Inf", (family, labels, les)
        bounds = [float(le) for le in les]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), (family, les)
        counts = [v for _, v in buckets]
        assert all(a <= b for a, b in zip(counts, counts[1:])), (family, labels, counts)
        lab = dict(labels)
        count = m.value(family + "_count", **lab)
        assert counts[-1] == count, (family, labels, counts[-1], count)
        total = m.value(family + "_sum", **lab)
        assert total >= 0 and math.isfinite(total)
        if count == 0:
            assert total == 0
    assert m.value("jobd_job_run_seconds_count", executor="thread") >= 3
    assert m.value("jobd_store_commit_batch_size_count") >= 1


def test_metrics_need_the_token_when_one_is_set(make_server):
    srv = make_server(token="metrics-secret")
    anon = srv.client(token=None)
    assert_error(anon.get("/metrics"), 401, "unauthorized")
    assert_error(srv.client(token="wrong").get("/metrics"), 401, "unauthorized")
    authed = srv.client()
    m = scrape(authed)
    # The refused scrapes were counted too.
    assert m.value("jobd_http_requests_total", route="/metrics", method="GET", status="401") == 2
    anon.close()
    authed.close()


def _promtool():
    return shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)


def test_promtool_accepts_the_output_without_lint_warnings(client):
    tool = _promtool()
    if not tool:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; `make deps-test` installs it)")
    # Something in every family: a finished job, a failure, a 404.
    client.wait_job(client.submit("noop")["id"])
    client.wait_job(client.submit("fail")["id"])
    client.get("/nope")
    text = client.get("/metrics").text
    p = subprocess.run([tool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace").strip()
    assert p.returncode == 0 and not out, f"promtool check metrics: exit {p.returncode}:\n{out}"
