"""The futures features of jobd, black-box over HTTP (SPEC §1-§3):
POST /v1/wait (concurrent.futures.wait), POST/GET /v1/batches (map/gather),
depends_on, concurrency_key/concurrency_limit, retries with back-off,
scheduling (delay, run_at, priority), what survives a restart in the middle,
and a few races (idempotency, cancel while finishing).

Nothing sleeps to hope a race resolves: waits are `wait_for` with a deadline,
`?wait=` long polls or POST /v1/wait itself. Nothing counts on a job lasting
"long enough" on a loaded machine either: a job that must still be running
(or a dependency still unfinished) while the test acts is a 60 s sleep that
the test cancels, or an http_get held by a `Gate` until the test opens it;
windows that must be timed (a delay, a retry back-off) are scaled.
"""

import http.client
import json
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import (REQUEST_TIMEOUT, TERMINAL, LocalHTTPServer, QuietHandler, assert_error, assert_job_shape,
                      body_json, parse_ts, rfc3339, scaled, wait_for)

MS = 0.0011  # timestamps carry milliseconds: allow one of rounding
# A client-side elapsed time that must cover a server-side timer (a sleep, a
# delay, a back-off): allow the timer's millisecond rounding.
EARLY = 0.02
MAX_WAIT = 3600  # the server's --max-wait (default): the longest ?wait= or POST /v1/wait timeout
# How long a state the test must see, and act in (a poll then a cancel, a
# submit or a kill), lasts: a few requests, with room for 4 test workers on 2
# cores, and the sanitizers' slowdown.
WINDOW = scaled(0.5)


# --------------------------------------------------------------------------
# helpers


def post_wait(client, ids, return_when=None, timeout=None, http_timeout=None):
    body = {"ids": ids}
    if return_when is not None:
        body["return_when"] = return_when
    if timeout is not None:
        body["timeout"] = timeout
    extra = timeout if isinstance(timeout, (int, float)) and timeout > 0 else 0
    return client.post("/v1/wait", json=body, timeout=http_timeout or REQUEST_TIMEOUT + extra)


def ok_wait(client, ids, return_when=None, timeout=None):
    """POST /v1/wait, asserting 200 and the shape; returns (done, not_done, seconds it took)."""
    t0 = time.monotonic()
    r = post_wait(client, ids, return_when, timeout)
    took = time.monotonic() - t0
    assert r.status_code == 200, f"POST /v1/wait: {r.status_code} {r.text[:500]!r}"
    body = body_json(r)
    assert set(body) >= {"done", "not_done"}, body
    for j in body["done"]:
        assert_job_shape(j)
        assert j["status"] in TERMINAL, f"a job in done is not finished: {j!r}"
    for j in body["not_done"]:
        assert_job_shape(j)
        assert j["status"] not in TERMINAL, f"a finished job in not_done: {j!r}"
    return body["done"], body["not_done"], took


def submit_batch(client, jobs, expect=202, headers=None, **extra):
    body = {"jobs": jobs}
    body.update(extra)
    r = client.post("/v1/batches", json=body, headers=headers or {})
    assert r.status_code == expect, f"POST /v1/batches: expected {expect}, got {r.status_code}: {r.text[:500]!r}"
    return r, body_json(r)


def get_batch(client, batch_id, wait=None):
    params = {"wait": wait} if wait is not None else None
    r = client.get(f"/v1/batches/{batch_id}", params=params, timeout=REQUEST_TIMEOUT + (wait or 0))
    assert r.status_code == 200, f"GET batch {batch_id}: {r.status_code} {r.text[:500]!r}"
    return body_json(r)


def list_jobs(client, **params):
    """Every job matching the filters, paging through GET /v1/jobs."""
    jobs, cursor = [], None
    while True:
        p = dict(params, limit=1000)
        if cursor:
            p["cursor"] = cursor
        r = client.get("/v1/jobs", params=p)
        assert r.status_code == 200, r.text[:500]
        page = body_json(r)
        jobs.extend(page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


def total_jobs(client):
    r = client.get("/v1/stats")
    assert r.status_code == 200, r.text
    return sum(body_json(r)["counts"].values())


def interval(job):
    return parse_ts(job["started_at"]), parse_ts(job["finished_at"])


def max_overlap(intervals):
    """Most intervals open at once; an interval ending when another starts does not overlap it."""
    events = []
    for s, f in intervals:
        events.append((s, 1))
        events.append((f, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends (-1) before starts (+1) at the same instant
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def cancel_quietly(client, *ids):
    for job_id in ids:
        try:
            client.cancel(job_id)
        except requests.RequestException:
            pass


def in_backoff(client, job_id, attempt=1):
    """The job when it waits for its retry after `attempt` attempts, else None."""
    j = client.job(job_id)
    return j if j["status"] == "scheduled" and j["attempt"] == attempt and j["error"] is not None else None


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def server_wait(seconds):
    """A server-side wait (`?wait=`, POST /v1/wait `timeout`) of `seconds`,
    scaled like every deadline, within what the server accepts."""
    return min(scaled(seconds), MAX_WAIT)


GATE_HOLD = min(scaled(60), 600)  # 600: the most an http_get may wait (its `timeout`)


class Gate:
    """A local HTTP server that holds every GET until open(): an http_get job
    on it runs until the test lets it succeed. A dependency that must not be
    done yet, or a job that must still be running at a kill -9, then lasts
    exactly as long as the test needs, at no cost in time."""

    def __init__(self):
        self.opened = threading.Event()
        opened = self.opened

        class Handler(QuietHandler):
            def do_GET(self):
                opened.wait(GATE_HOLD)
                body = b"open"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = LocalHTTPServer(Handler)
        self.url = self.server.url("/gate")

    def spec(self, **opts):
        """A job spec: an http_get that succeeds once the gate is open."""
        return dict({"task": "http_get", "args": {"url": self.url, "timeout": GATE_HOLD}}, **opts)

    def submit(self, client, **opts):
        spec = self.spec(**opts)
        return client.submit(spec.pop("task"), spec.pop("args"), **spec)

    def open(self):
        self.opened.set()

    def close(self):
        self.opened.set()
        self.server.close()


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.close()  # opens it first: a job still held finishes


# ==========================================================================
# 1. POST /v1/wait


def test_wait_all_completed_returns_every_job_in_request_order_deduplicated(client):
    t0 = time.monotonic()  # before the sleep can start
    a = client.submit("sleep", {"seconds": 0.3})
    b = client.submit("sleep", {"seconds": 0.1})
    c = client.submit("square", {"n": 4})
    ids = [a["id"], b["id"], a["id"], c["id"], b["id"]]
    done, not_done, _ = ok_wait(client, ids, "ALL_COMPLETED", server_wait(10))
    took = time.monotonic() - t0
    assert not_done == []
    assert [j["id"] for j in done] == [a["id"], b["id"], c["id"]], "request order kept, duplicates dropped"
    assert all(j["status"] == "succeeded" for j in done), done
    assert done[0]["result"] == {"slept": 0.3} and done[2]["result"] == 16, done
    assert took >= 0.3 - EARLY, f"ALL_COMPLETED returned {took:.3f}s after the 0.3 s sleep was submitted"


def test_wait_default_return_when_is_all_completed(client):
    a = client.submit("sleep", {"seconds": 0.2})
    b = client.submit("noop")
    done, not_done, _ = ok_wait(client, [a["id"], b["id"]], timeout=server_wait(10))
    assert not_done == [] and [j["id"] for j in done] == [a["id"], b["id"]], (done, not_done)


def test_wait_first_completed(client):
    slow = client.submit("sleep", {"seconds": 30})
    fast = client.submit("sleep", {"seconds": 0.1})
    try:
        done, not_done, took = ok_wait(client, [slow["id"], fast["id"]], "FIRST_COMPLETED", server_wait(20))
        assert [j["id"] for j in done] == [fast["id"]], done
        assert [j["id"] for j in not_done] == [slow["id"]], not_done
        assert done[0]["status"] == "succeeded"
        assert took < scaled(5), f"FIRST_COMPLETED took {took:.2f}s for a 0.1 s job"
    finally:
        cancel_quietly(client, slow["id"])


def test_wait_first_exception_returns_on_a_failure(client):
    t0 = time.monotonic()  # before the failing job's delay starts
    slow = client.submit("sleep", {"seconds": 30})
    ok = client.submit("noop")
    bad = client.submit("fail", {"message": "expected"}, delay=0.2)
    try:
        done, not_done, took = ok_wait(client, [slow["id"], ok["id"], bad["id"]], "FIRST_EXCEPTION",
                                       server_wait(20))
        since_submit = time.monotonic() - t0
        assert since_submit >= 0.2 - EARLY, \
            f"returned {since_submit:.3f}s after submitting, before the failing job (delay 0.2) could fail"
        assert took < scaled(5), took
        assert {j["id"] for j in done} == {ok["id"], bad["id"]}, done
        assert [j["id"] for j in not_done] == [slow["id"]], not_done
        failed = next(j for j in done if j["id"] == bad["id"])
        assert failed["status"] == "failed" and failed["error"]["type"] == "task_error", failed
    finally:
        cancel_quietly(client, slow["id"])


def test_wait_first_exception_ignores_successes_and_cancellations(client):
    """As in Python, a cancelled future is not an exception: FIRST_EXCEPTION
    waits for all when nothing fails."""
    cancelled = client.submit("sleep", {"seconds": 30})
    r = client.cancel(cancelled["id"])
    assert r.status_code == 200, r.text
    assert client.wait_job(cancelled["id"])["status"] == "cancelled"
    quick = client.submit("noop")
    client.wait_job(quick["id"])
    t0 = time.monotonic()  # before the sleep can start
    slow = client.submit("sleep", {"seconds": 0.4})
    done, not_done, _ = ok_wait(client, [cancelled["id"], quick["id"], slow["id"]], "FIRST_EXCEPTION",
                                server_wait(20))
    took = time.monotonic() - t0
    assert not_done == [], f"FIRST_EXCEPTION returned early on a cancelled/succeeded job: {not_done!r}"
    assert [j["status"] for j in done] == ["cancelled", "succeeded", "succeeded"], done
    assert took >= 0.4 - EARLY, f"returned {took:.3f}s after the 0.4 s sleep was submitted"


def test_wait_first_exception_with_an_already_failed_job_returns_at_once(client):
    bad = client.submit("fail")
    assert client.wait_job(bad["id"])["status"] == "failed"
    slow = client.submit("sleep", {"seconds": 30})
    try:
        done, not_done, took = ok_wait(client, [slow["id"], bad["id"]], "FIRST_EXCEPTION", server_wait(20))
        assert took < scaled(2), took
        assert [j["id"] for j in done] == [bad["id"]] and [j["id"] for j in not_done] == [slow["id"]]
    finally:
        cancel_quietly(client, slow["id"])


def test_wait_timeout_returns_what_is_done(client):
    fast = client.submit("sleep", {"seconds": 0.05})
    slow = client.submit("sleep", {"seconds": 30})
    try:
        # The 0.5 s wait must find fast done and slow running, however slow the machine.
        assert client.wait_job(fast["id"])["status"] == "succeeded"
        assert client.wait_running(slow["id"])["status"] == "running"
        done, not_done, took = ok_wait(client, [fast["id"], slow["id"]], "ALL_COMPLETED", 0.5)
        assert 0.45 <= took < scaled(3), f"a 0.5 s timeout returned after {took:.3f}s"
        assert [j["id"] for j in done] == [fast["id"]], done
        assert [j["id"] for j in not_done] == [slow["id"]], not_done
        assert not_done[0]["status"] == "running", not_done

        # timeout 0: an immediate answer.
        done, not_done, took = ok_wait(client, [fast["id"], slow["id"]], "ALL_COMPLETED", 0)
        assert took < scaled(1), took
        assert [j["id"] for j in done] == [fast["id"]] and [j["id"] for j in not_done] == [slow["id"]]
    finally:
        cancel_quietly(client, slow["id"])


def test_wait_on_finished_jobs_returns_at_once(client):
    jobs = [client.submit("noop"), client.submit("fail"), client.submit("square", {"n": 2})]
    for j in jobs:
        client.wait_job(j["id"])
    ids = [j["id"] for j in jobs]
    for when in ("ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"):
        done, not_done, took = ok_wait(client, ids, when, server_wait(60))
        assert took < scaled(2), f"{when} over finished jobs took {took:.2f}s"
        assert [j["id"] for j in done] == ids and not_done == [], (when, done, not_done)


def test_wait_errors(client):
    real = client.submit("noop")
    rid = real["id"]
    ghost = "01AAAAAAAAAAAAAAAAAAAAAAAA"
    r = post_wait(client, [rid, ghost])
    assert_error(r, 404, "not_found", field="ids[1]")
    r = post_wait(client, [rid, "not-an-id"])
    assert_error(r, 400, "invalid_argument", field="ids[1]")
    r = post_wait(client, [rid, 42])
    assert_error(r, 400, "invalid_argument", field="ids[1]")
    r = post_wait(client, [])
    assert_error(r, 400, "invalid_argument", field="ids")
    r = post_wait(client, [rid] * 10001)
    assert_error(r, 400, "invalid_argument", field="ids")
    r = client.post("/v1/wait", json={"ids": rid})
    assert_error(r, 400, "invalid_argument", field="ids")
    r = client.post("/v1/wait", json={"return_when": "ALL_COMPLETED"})
    assert_error(r, 400, "invalid_argument", field="ids")
    for bad in ("FIRST", "all_completed", 1, ""):
        r = post_wait(client, [rid], bad)
        assert_error(r, 400, "invalid_argument", field="return_when")
    for bad in (-1, -0.001, "5", True):
        r = post_wait(client, [rid], "ALL_COMPLETED", bad)
        assert_error(r, 400, "invalid_argument", field="timeout")
    r = client.post("/v1/wait", json={"ids": [rid], "bogus": 1})
    assert_error(r, 400, "invalid_argument")
    r = client.post("/v1/wait", data="{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_json")
    r = client.post("/v1/wait", json=[rid])
    assert_error(r, 400, "invalid_argument")
    # Exactly 10000 (duplicates) is accepted.
    done, not_done, _ = ok_wait(client, [rid] * 10000, "ALL_COMPLETED", server_wait(10))
    assert [j["id"] for j in done] == [rid] and not_done == []


def test_wait_unknown_id_field_is_its_index_in_the_request(client):
    """The field of an unknown id is its JSON path in the request body, even
    when duplicates come before it (ids are deduplicated for the reply only)."""
    a = client.submit("noop")["id"]
    ghost = "01AAAAAAAAAAAAAAAAAAAAAAAA"
    assert_error(post_wait(client, [ghost, a]), 404, "not_found", field="ids[0]")
    assert_error(post_wait(client, [a, ghost, ghost]), 404, "not_found", field="ids[1]")
    assert_error(post_wait(client, [a, a, ghost]), 404, "not_found", field="ids[2]")


def test_wait_1000_jobs_all_completed(client):
    """1000 jobs on the async executor (sleep 0.05) and 1000 noops, each set
    waited for with one ALL_COMPLETED request."""
    for task, args in (("sleep", {"seconds": 0.05}), ("noop", None)):
        ids = [None] * 1000
        lock = threading.Lock()
        nxt = [0]

        def submitter():
            s = requests.Session()
            try:
                while True:
                    with lock:
                        i = nxt[0]
                        if i >= 1000:
                            return
                        nxt[0] += 1
                    spec = {"task": task}
                    if args is not None:
                        spec["args"] = args
                    r = s.post(client.base_url + "/v1/jobs", json=spec, timeout=REQUEST_TIMEOUT)
                    assert r.status_code == 202, r.text
                    ids[i] = r.json()["id"]
            finally:
                s.close()

        t0 = time.monotonic()
        threads = [threading.Thread(target=submitter) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(60))
        submit_took = time.monotonic() - t0
        assert all(ids), "some submits failed"
        done, not_done, took = ok_wait(client, ids, "ALL_COMPLETED", server_wait(60))
        assert not_done == [], f"{len(not_done)} of 1000 not done"
        assert [j["id"] for j in done] == ids
        assert all(j["status"] == "succeeded" for j in done)
        print(f"\nBENCH POST /v1/wait ALL_COMPLETED over 1000 {task} jobs: {took * 1000:.1f} ms "
              f"(submitting them took {submit_took * 1000:.0f} ms)")
        # Once all are finished, the same wait is an immediate read of 1000 jobs.
        done, not_done, took2 = ok_wait(client, ids, "ALL_COMPLETED", server_wait(60))
        assert len(done) == 1000 and not_done == []
        print(f"BENCH POST /v1/wait over 1000 finished {task} jobs: {took2 * 1000:.1f} ms")


def test_many_concurrent_waits_on_the_same_jobs_all_return(client):
    jobs = [client.submit("sleep", {"seconds": 0.3}) for _ in range(5)]
    ids = [j["id"] for j in jobs]
    results = [None] * 50
    gate = threading.Barrier(50)

    def waiter(i):
        s = requests.Session()
        try:
            gate.wait(scaled(10))
            r = s.post(client.base_url + "/v1/wait",
                       json={"ids": ids, "return_when": "ALL_COMPLETED" if i % 2 else "FIRST_COMPLETED",
                             "timeout": server_wait(30)}, timeout=REQUEST_TIMEOUT + server_wait(30))
            results[i] = (r.status_code, r.json())
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = ("error", repr(e))
        finally:
            s.close()

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(40))
    assert not any(t.is_alive() for t in threads), "some POST /v1/wait never returned"
    for i, (code, body) in enumerate(results):
        assert code == 200, (i, code, body)
        if i % 2:
            assert [j["id"] for j in body["done"]] == ids and body["not_done"] == [], body
        else:
            assert len(body["done"]) >= 1 and len(body["done"]) + len(body["not_done"]) == 5, body


# ==========================================================================
# 2. batches


def test_batch_create_get_and_list(client):
    specs = [{"task": "square", "args": {"n": i}} for i in range(5)] + [{"task": "sleep", "args": {"seconds": 0.1}}]
    r, b = submit_batch(client, specs)
    assert r.headers.get("Location") == f"/v1/batches/{b['id']}"
    assert set(b) >= {"id", "total", "jobs"}, b
    assert b["total"] == 6 and len(b["jobs"]) == 6
    for i, j in enumerate(b["jobs"]):
        assert_job_shape(j)
        assert j["batch_id"] == b["id"], j
        assert j["task"] == specs[i]["task"] and j["args"] == specs[i]["args"], (i, j)
        assert j["status"] in ("queued", "scheduled", "running", "succeeded"), j

    got = get_batch(client, b["id"], wait=server_wait(10))
    assert set(got) >= {"id", "total", "counts", "done", "created_at", "finished_at", "callback_url",
                        "callback_status", "idempotency_key"}, got
    assert got["id"] == b["id"] and got["total"] == 6 and got["done"] is True, got
    assert got["counts"].get("succeeded") == 6, got
    assert sum(got["counts"].values()) == 6, got
    assert got["callback_url"] is None and got["idempotency_key"] is None, got
    created, finished = parse_ts(got["created_at"]), parse_ts(got["finished_at"])
    assert created <= finished

    listed = list_jobs(client, batch=b["id"])
    assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in b["jobs"])
    for j in listed:
        assert j["batch_id"] == b["id"] and j["status"] == "succeeded", j
    by_id = {j["id"]: j for j in listed}
    assert [by_id[j["id"]]["result"] for j in b["jobs"][:5]] == [i * i for i in range(5)]
    # Every job finished before the batch was marked finished.
    assert all(parse_ts(j["finished_at"]) <= finished for j in listed), (got, listed)


def test_batch_get_wait_long_polls_until_done(client):
    # The sleep outlasts the next request (WINDOW), so the batch is not done yet.
    r, b = submit_batch(client, [{"task": "sleep", "args": {"seconds": WINDOW}}, {"task": "noop"}])
    now = get_batch(client, b["id"])
    assert now["done"] is False and now["finished_at"] is None, now
    t0 = time.monotonic()
    got = get_batch(client, b["id"], wait=server_wait(10))
    took = time.monotonic() - t0
    assert got["done"] is True and got["counts"]["succeeded"] == 2, got
    assert took < scaled(5), took
    # wait on a done batch: at once
    t0 = time.monotonic()
    assert get_batch(client, b["id"], wait=server_wait(30))["done"] is True
    assert time.monotonic() - t0 < scaled(2)


def test_batch_get_wait_expires_when_not_done(client):
    r, b = submit_batch(client, [{"task": "sleep", "args": {"seconds": 30}}])
    try:
        t0 = time.monotonic()
        got = get_batch(client, b["id"], wait=0.5)
        took = time.monotonic() - t0
        assert got["done"] is False, got
        assert 0.4 <= took < scaled(3), took
    finally:
        cancel_quietly(client, b["jobs"][0]["id"])
    got = get_batch(client, b["id"], wait=server_wait(10))
    assert got["done"] is True and got["counts"]["cancelled"] == 1, got


def test_batch_unknown_and_bad_id_are_404(client):
    assert_error(client.get("/v1/batches/01AAAAAAAAAAAAAAAAAAAAAAAA"), 404, "not_found")
    assert_error(client.get("/v1/batches/nope"), 404, "not_found")
    assert_error(client.get("/v1/batches/01AAAAAAAAAAAAAAAAAAAAAAAA?wait=1"), 404, "not_found")


def test_batch_depends_on_indexes(client):
    specs = [{"task": "sleep", "args": {"seconds": 0.2}}, {"task": "echo", "args": {"x": 1}, "depends_on": [0]},
             {"task": "noop", "depends_on": [0, 1, 0]}]
    _, b = submit_batch(client, specs)
    j0, j1, j2 = b["jobs"]
    assert j1["depends_on"] == [j0["id"]], j1
    assert j2["depends_on"] == [j0["id"], j1["id"]], j2
    assert j1["status"] == "scheduled" and j2["status"] == "scheduled", b["jobs"]
    assert get_batch(client, b["id"], wait=server_wait(10))["counts"]["succeeded"] == 3
    d0, d1, d2 = (client.job(j["id"]) for j in (j0, j1, j2))
    assert parse_ts(d1["started_at"]) >= parse_ts(d0["finished_at"]), (d0, d1)
    assert parse_ts(d2["started_at"]) >= parse_ts(d1["finished_at"]), (d1, d2)
    assert d1["result"] == {"x": 1}


def test_batch_forward_dependency_and_failure_inside(client):
    """A job may depend on a later one; a failing one cancels its dependents in the batch."""
    specs = [{"task": "noop", "depends_on": [2]}, {"task": "fail", "args": {"message": "x"}},
             {"task": "noop"}, {"task": "echo", "depends_on": [1]}, {"task": "noop", "depends_on": [3]}]
    _, b = submit_batch(client, specs)
    got = get_batch(client, b["id"], wait=server_wait(10))
    assert got["done"] is True, got
    assert got["counts"]["succeeded"] == 2 and got["counts"]["failed"] == 1 and got["counts"]["cancelled"] == 2, got
    d = [client.job(j["id"]) for j in b["jobs"]]
    assert d[0]["status"] == "succeeded" and parse_ts(d[0]["started_at"]) >= parse_ts(d[2]["finished_at"])
    for k in (3, 4):
        assert d[k]["status"] == "cancelled" and d[k]["error"]["type"] == "dependency_failed", d[k]


def test_batch_is_all_or_nothing(client):
    before = total_jobs(client)
    specs = [{"task": "noop"}] * 3 + [{"task": "no-such-task"}] + [{"task": "noop"}] * 2
    r = client.post("/v1/batches", json={"jobs": specs})
    assert_error(r, 400, "invalid_argument", field="jobs[3].task")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "sleep", "args": {"seconds": -1}}]})
    err = assert_error(r, 400, "invalid_argument")
    assert err["field"].startswith("jobs[1].args"), err
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "noop", "priority": "high"}]})
    assert_error(r, 400, "invalid_argument", field="jobs[1].priority")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "noop", "bogus": 1}]})
    assert_error(r, 400, "invalid_argument", field="jobs[1].bogus")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, 7]})
    assert_error(r, 400, "invalid_argument", field="jobs[1]")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "noop", "idempotency_key": "k"}]})
    assert_error(r, 400, "invalid_argument", field="jobs[1].idempotency_key")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "noop", "concurrency_limit": 2}]})
    assert_error(r, 400, "invalid_argument", field="jobs[1].concurrency_limit")
    r = client.post("/v1/batches", json={"jobs": []})
    assert_error(r, 400, "invalid_argument", field="jobs")
    r = client.post("/v1/batches", json={"jobs": {"task": "noop"}})
    assert_error(r, 400, "invalid_argument", field="jobs")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}] * 10001})
    assert r.status_code in (400, 413), r.text[:300]
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}], "bogus": True})
    assert_error(r, 400, "invalid_argument")
    r = client.post("/v1/batches", data="[{", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_json")
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}], "callback_url": "ftp://x"})
    assert_error(r, 400, "invalid_argument", field="callback_url")
    assert total_jobs(client) == before, "a refused batch created jobs"


def test_batch_dependency_errors(client):
    before = total_jobs(client)
    # a cycle
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop", "depends_on": [1]},
                                                   {"task": "noop", "depends_on": [2]},
                                                   {"task": "noop", "depends_on": [0]}]})
    err = assert_error(r, 400, "invalid_argument")
    assert err["field"] in {f"jobs[{i}].depends_on" for i in range(3)}, err
    # self
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "noop", "depends_on": [1]}]})
    err = assert_error(r, 400, "invalid_argument")
    assert err["field"] is not None and err["field"].startswith("jobs[1].depends_on"), err
    # out of range, negative, fractional
    for bad in (2, -1, 0.5, 99):
        r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "noop", "depends_on": [bad]}]})
        err = assert_error(r, 400, "invalid_argument")
        assert err["field"] is not None and err["field"].startswith("jobs[1].depends_on"), (bad, err)
    # unknown id
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"},
                                                  {"task": "noop", "depends_on": ["01AAAAAAAAAAAAAAAAAAAAAAAA"]}]})
    assert_error(r, 400, "invalid_argument", field="jobs[1].depends_on[0]")
    assert total_jobs(client) == before, "a refused batch created jobs"

    # An id of an existing job mixes with indexes.
    ext = client.submit("noop")
    _, b = submit_batch(client, [{"task": "noop"}, {"task": "noop", "depends_on": [ext["id"], 0]}])
    assert b["jobs"][1]["depends_on"] == [ext["id"], b["jobs"][0]["id"]], b["jobs"][1]
    assert get_batch(client, b["id"], wait=server_wait(10))["counts"]["succeeded"] == 2


def test_batch_idempotency_header_and_body(client):
    for how in ("header", "body"):
        key = unique("batch")
        specs = [{"task": "square", "args": {"n": 3}}, {"task": "noop"}]
        kw = {"headers": {"Idempotency-Key": key}} if how == "header" else {"idempotency_key": key}
        r1, b1 = submit_batch(client, specs, **kw)
        r2, b2 = submit_batch(client, specs, expect=200, **kw)
        assert b2["id"] == b1["id"], (how, b1["id"], b2["id"])
        assert [j["id"] for j in b2["jobs"]] == [j["id"] for j in b1["jobs"]], how
        assert len(list_jobs(client, batch=b1["id"])) == 2
        assert get_batch(client, b1["id"])["idempotency_key"] == key
    # header and body disagreeing
    r = client.post("/v1/batches", json={"jobs": [{"task": "noop"}], "idempotency_key": "a"},
                    headers={"Idempotency-Key": "b"})
    assert_error(r, 400, "invalid_argument", field="idempotency_key")


def test_batch_idempotency_race_makes_one_batch(client):
    key = unique("race")
    before = total_jobs(client)
    n = 12
    gate = threading.Barrier(n)
    answers = [None] * n

    def go(i):
        s = requests.Session()
        try:
            gate.wait(scaled(10))
            r = s.post(client.base_url + "/v1/batches", json={"jobs": [{"task": "noop"}] * 3},
                       headers={"Idempotency-Key": key}, timeout=REQUEST_TIMEOUT)
            answers[i] = (r.status_code, r.json())
        except Exception as e:  # noqa: BLE001
            answers[i] = ("error", repr(e))
        finally:
            s.close()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(30))
    codes = sorted(a[0] for a in answers)
    assert codes == [200] * (n - 1) + [202], answers
    ids = {a[1]["id"] for a in answers}
    assert len(ids) == 1, f"racing submits with one key made {len(ids)} batches"
    (bid,) = ids
    assert len(list_jobs(client, batch=bid)) == 3
    job_sets = {tuple(j["id"] for j in a[1]["jobs"]) for a in answers}
    assert len(job_sets) == 1, job_sets
    assert total_jobs(client) == before + 3, "racing batches created extra jobs"


def test_batch_of_10000_noops(make_server):
    srv = make_server(args=["--max-body", "4194304", "--max-queued", "200000"])
    c = srv.client()
    t0 = time.monotonic()
    r = c.post("/v1/batches", json={"jobs": [{"task": "noop"}] * 10000}, timeout=REQUEST_TIMEOUT * 2)
    took = time.monotonic() - t0
    assert r.status_code == 202, r.text[:500]
    b = body_json(r)
    assert b["total"] == 10000 and len(b["jobs"]) == 10000
    assert len({j["id"] for j in b["jobs"]}) == 10000
    t1 = time.monotonic()
    got = get_batch(c, b["id"], wait=server_wait(60))
    ran = time.monotonic() - t1
    assert got["done"] is True, got
    assert got["counts"]["succeeded"] == 10000, got
    print(f"\nBENCH batch of 10000 noops: accepted in {took * 1000:.0f} ms, all done {ran * 1000:.0f} ms later")
    listed = list_jobs(c, batch=b["id"])
    assert len(listed) == 10000 and all(j["status"] == "succeeded" for j in listed)
    ids = [j["id"] for j in b["jobs"]]
    done, not_done, took = ok_wait(c, ids, "ALL_COMPLETED", server_wait(30))
    assert len(done) == 10000 and not not_done
    assert [j["id"] for j in done] == ids
    print(f"BENCH POST /v1/wait over the 10000 finished jobs: {took * 1000:.0f} ms")


def test_largest_dependency_lists_and_waits_are_deduplicated_quickly(make_server):
    """The largest lists the API takes: a batch whose 270 jobs each list 1,000
    dependencies (with duplicates), and a wait on 10,000 ids (1,000 distinct).
    Duplicates are dropped through sets (they were found by comparing each
    entry with every earlier one: quadratic; this batch took 381 ms to
    validate then, 228 ms now) and the result keeps the request's order."""
    srv = make_server(args=["--max-body", "4194304", "--max-queued", "200000"])
    c = srv.client()
    first = body_json(c.post("/v1/batches", json={"jobs": [{"task": "noop"}] * 1000}, timeout=REQUEST_TIMEOUT * 2))
    ids = [j["id"] for j in first["jobs"]]
    # 30 jobs that each depend on 500 of them (each id given twice), and
    # 240 that each list 1,000 batch indexes with duplicates.
    jobs = [{"task": "noop", "depends_on": ids[:500] * 2} for _ in range(30)]
    jobs += [{"task": "noop", "depends_on": [k % 30 for k in range(1000)]} for _ in range(240)]
    t0 = time.monotonic()
    r = c.post("/v1/batches", json={"jobs": jobs}, timeout=REQUEST_TIMEOUT * 4)
    took = time.monotonic() - t0
    assert r.status_code == 202, r.text[:300]
    b = body_json(r)
    assert b["jobs"][0]["depends_on"] == ids[:500]
    assert len(b["jobs"][30]["depends_on"]) == 30
    assert took < scaled(10), f"validating the batch took {took:.1f} s"
    got = get_batch(c, b["id"], wait=server_wait(60))
    assert got["done"] and got["counts"]["succeeded"] == 270, got
    t0 = time.monotonic()
    done, not_done, _ = ok_wait(c, (ids * 10)[:10000], "ALL_COMPLETED", server_wait(30))
    assert [j["id"] for j in done] == ids and not not_done
    assert time.monotonic() - t0 < scaled(10)
    print(f"\nbatch of 270 x 1000 dependencies validated in {took * 1000:.0f} ms")


def test_batch_with_a_long_dependency_chain(client):
    n = 200
    specs = [{"task": "echo", "args": {"i": 0}}] + \
            [{"task": "echo", "args": {"i": i}, "depends_on": [i - 1]} for i in range(1, n)]
    _, b = submit_batch(client, specs)
    got = get_batch(client, b["id"], wait=server_wait(30))
    assert got["done"] and got["counts"]["succeeded"] == n, got
    jobs = {j["id"]: j for j in list_jobs(client, batch=b["id"])}
    chain = [jobs[j["id"]] for j in b["jobs"]]
    for prev, cur in zip(chain, chain[1:]):
        assert parse_ts(cur["started_at"]) >= parse_ts(prev["finished_at"]), (prev, cur)


# ==========================================================================
# 3. depends_on


def test_depends_on_waits_for_all_dependencies(client, gate):
    a = client.submit("sleep", {"seconds": 0.2})
    b = gate.submit(client)  # runs until the gate opens
    d = client.submit("echo", {"v": 1}, depends_on=[a["id"], b["id"]])
    assert d["status"] == "scheduled", d
    assert d["depends_on"] == [a["id"], b["id"]], d
    # While a dependency runs, the dependent stays scheduled, also once the other one succeeded.
    assert client.job(d["id"])["status"] == "scheduled"
    assert client.wait_job(a["id"])["status"] == "succeeded"
    assert client.wait_running(b["id"])["status"] == "running"
    assert client.job(d["id"])["status"] == "scheduled", "the dependent ran before all its dependencies succeeded"
    gate.open()
    dd = client.wait_job(d["id"])
    assert dd["status"] == "succeeded" and dd["result"] == {"v": 1}, dd
    da, db = client.job(a["id"]), client.job(b["id"])
    start = parse_ts(dd["started_at"])
    assert start >= parse_ts(da["finished_at"]) and start >= parse_ts(db["finished_at"]), (da, db, dd)


def test_depends_on_failure_cancels_transitively(client, gate):
    # a fails only once the gate opens: after b, c and d were submitted.
    a = client.submit("fail", {"message": "root"}, depends_on=[gate.submit(client)["id"]])
    b = client.submit("noop", depends_on=[a["id"]])
    c = client.submit("noop", depends_on=[b["id"]])
    other = client.submit("noop")
    d = client.submit("noop", depends_on=[c["id"], other["id"]])
    for j in (b, c, d):
        assert j["status"] == "scheduled", j
    gate.open()
    assert client.wait_job(a["id"])["status"] == "failed"
    for j in (b, c, d):
        dj = client.wait_job(j["id"])
        assert dj["status"] == "cancelled", dj
        assert dj["error"]["type"] == "dependency_failed", dj
        assert dj["started_at"] is None and dj["result"] is None, dj
    assert client.job(other["id"])["status"] == "succeeded"


def test_depends_on_cancelled_dependency_cancels_dependent(client):
    a = client.submit("sleep", {"seconds": 30})
    b = client.submit("noop", depends_on=[a["id"]])
    client.wait_running(a["id"])
    assert client.cancel(a["id"]).status_code == 200
    db = client.wait_job(b["id"])
    assert db["status"] == "cancelled" and db["error"]["type"] == "dependency_failed", db


def test_depends_on_already_finished(client):
    ok = client.submit("noop")
    bad = client.submit("fail")
    client.wait_job(ok["id"])
    client.wait_job(bad["id"])
    t0 = time.monotonic()
    runs = client.submit("square", {"n": 5}, depends_on=[ok["id"]])
    dr = client.wait_job(runs["id"], timeout=5)
    assert dr["status"] == "succeeded" and dr["result"] == 25, dr
    never = client.submit("noop", depends_on=[ok["id"], bad["id"]])
    dn = client.wait_job(never["id"], timeout=5)
    assert dn["status"] == "cancelled" and dn["error"]["type"] == "dependency_failed", dn
    assert time.monotonic() - t0 < scaled(3)


def test_depends_on_errors(client):
    before = total_jobs(client)
    ghost = "01AAAAAAAAAAAAAAAAAAAAAAAA"
    r = client.post("/v1/jobs", json={"task": "noop", "depends_on": [ghost]})
    assert_error(r, 400, "invalid_argument", field="depends_on[0]")
    real = client.submit("noop")
    before += 1
    r = client.post("/v1/jobs", json={"task": "noop", "depends_on": [real["id"], "bad"]})
    assert_error(r, 400, "invalid_argument", field="depends_on[1]")
    r = client.post("/v1/jobs", json={"task": "noop", "depends_on": [0]})
    assert_error(r, 400, "invalid_argument", field="depends_on[0]")
    r = client.post("/v1/jobs", json={"task": "noop", "depends_on": real["id"]})
    assert_error(r, 400, "invalid_argument", field="depends_on")
    assert total_jobs(client) == before


def test_cancel_a_waiting_dependent(client):
    a = client.submit("sleep", {"seconds": 30})
    b = client.submit("noop", depends_on=[a["id"]])
    try:
        r = client.cancel(b["id"])
        assert r.status_code == 200, r.text
        db = client.wait_job(b["id"], timeout=5)
        assert db["status"] == "cancelled", db
        assert db["started_at"] is None
        # The dependency itself is untouched.
        assert client.job(a["id"])["status"] in ("queued", "running"), client.job(a["id"])
    finally:
        cancel_quietly(client, a["id"])
    assert client.wait_job(a["id"])["status"] == "cancelled"
    assert client.job(b["id"])["status"] == "cancelled"


def test_depends_on_race_with_a_finishing_dependency(client):
    dependents = []
    for _ in range(50):
        dep = client.submit("sleep", {"seconds": 0.01})
        dependents.append(client.submit("noop", depends_on=[dep["id"]])["id"])
    done, not_done, _ = ok_wait(client, dependents, "ALL_COMPLETED", server_wait(20))
    stuck = [(j["id"], j["status"]) for j in not_done]
    assert not stuck, f"dependents stuck after their dependency finished: {stuck}"
    bad = [(j["id"], j["status"], j["error"]) for j in done if j["status"] != "succeeded"]
    assert not bad, bad


# ==========================================================================
# 4. concurrency_key / concurrency_limit


def run_keyed(client, key, n, seconds, limit, executors=("thread", "async"), poll=True):
    """Submits n sleeps sharing `key`, alternating executors; polls the running
    list until all finish; returns (finished jobs, most running at once seen)."""
    ids = [client.submit("sleep", {"seconds": seconds}, executor=executors[i % len(executors)],
                         concurrency_key=key, concurrency_limit=limit)["id"] for i in range(n)]
    seen_max = 0
    deadline = time.monotonic() + scaled(30)
    while poll:
        r = client.get("/v1/jobs", params={"status": "running", "limit": 1000})
        assert r.status_code == 200
        running = [j for j in body_json(r)["jobs"] if j["concurrency_key"] == key]
        seen_max = max(seen_max, len(running))
        st = client.post("/v1/wait", json={"ids": ids, "timeout": 0}).json()
        if not st["not_done"]:
            break
        assert time.monotonic() < deadline, "keyed jobs did not finish"
        time.sleep(0.01)
    done, not_done, _ = ok_wait(client, ids, "ALL_COMPLETED", server_wait(30))
    assert not not_done
    return done, seen_max


def test_concurrency_limit_2_across_two_executors(client):
    key = unique("k")
    t0 = time.monotonic()
    done, seen = run_keyed(client, key, 6, 0.3, 2)
    took = time.monotonic() - t0
    assert all(j["status"] == "succeeded" for j in done), done
    assert {j["executor"] for j in done} == {"thread", "async"}
    assert all(j["concurrency_key"] == key for j in done)
    assert seen <= 2, f"{seen} jobs with key {key} were running at once (limit 2)"
    assert seen >= 1
    overlap = max_overlap([interval(j) for j in done])
    assert overlap <= 2, f"{overlap} intervals overlap (limit 2)"
    assert overlap == 2, "the limit 2 was never used: jobs ran one by one"
    assert took >= 0.85, f"6 jobs of 0.3 s two at a time ended after {took:.2f}s"


def test_concurrency_limit_1_is_a_lock(client):
    key = unique("lock")
    done, seen = run_keyed(client, key, 5, 0.1, 1)
    assert all(j["status"] == "succeeded" for j in done), done
    assert seen <= 1, seen
    assert max_overlap([interval(j) for j in done]) == 1


def test_concurrency_key_without_limit_defaults_to_one(client):
    key = unique("deflock")
    ids = [client.submit("sleep", {"seconds": 0.1}, concurrency_key=key)["id"] for _ in range(3)]
    done, _, _ = ok_wait(client, ids, "ALL_COMPLETED", server_wait(10))
    assert max_overlap([interval(j) for j in done]) == 1


def test_concurrency_limit_without_key_is_400(client):
    r = client.post("/v1/jobs", json={"task": "noop", "concurrency_limit": 2})
    assert_error(r, 400, "invalid_argument", field="concurrency_limit")
    for bad in (0, -1, 1.5, "2"):
        r = client.post("/v1/jobs", json={"task": "noop", "concurrency_key": "x", "concurrency_limit": bad})
        assert_error(r, 400, "invalid_argument", field="concurrency_limit")


def test_priority_among_jobs_held_by_their_key(client):
    key = unique("prio")
    # The key's holder runs until the three others are submitted (then it is cancelled).
    first = client.submit("sleep", {"seconds": 60}, concurrency_key=key, concurrency_limit=1)
    assert client.wait_running(first["id"])["status"] == "running"
    try:
        low = client.submit("sleep", {"seconds": 0.05}, concurrency_key=key, concurrency_limit=1, priority=1,
                            executor="thread")
        mid = client.submit("sleep", {"seconds": 0.05}, concurrency_key=key, concurrency_limit=1, priority=5)
        high = client.submit("sleep", {"seconds": 0.05}, concurrency_key=key, concurrency_limit=1, priority=10)
        for j in (low, mid, high):
            st = client.job(j["id"])["status"]
            assert st in ("queued", "scheduled"), f"a job held by its key is {st}"
    finally:
        cancel_quietly(client, first["id"])
    done, _, _ = ok_wait(client, [first["id"], low["id"], mid["id"], high["id"]], "ALL_COMPLETED", server_wait(10))
    assert [j["status"] for j in done] == ["cancelled", "succeeded", "succeeded", "succeeded"], done
    order = [j["id"] for j in sorted(done, key=lambda j: parse_ts(j["started_at"]))]
    assert order == [first["id"], high["id"], mid["id"], low["id"]], \
        [(j["priority"], j["started_at"]) for j in done]


def test_cancel_a_job_held_by_its_key(client):
    key = unique("held")
    holder = client.submit("sleep", {"seconds": 30}, concurrency_key=key, concurrency_limit=1)
    client.wait_running(holder["id"])
    held = client.submit("noop", concurrency_key=key, concurrency_limit=1)
    try:
        j = client.job(held["id"])
        assert j["status"] in ("queued", "scheduled"), f"a job held by its key is {j['status']}: {j!r}"
        r = client.cancel(held["id"])
        assert r.status_code == 200, r.text
        dj = client.wait_job(held["id"], timeout=5)
        assert dj["status"] == "cancelled" and dj["started_at"] is None, dj
    finally:
        cancel_quietly(client, holder["id"])
    assert client.wait_job(holder["id"])["status"] == "cancelled"
    # The key is free again: a later job with it runs.
    after = client.submit("noop", concurrency_key=key, concurrency_limit=1)
    assert client.wait_job(after["id"], timeout=5)["status"] == "succeeded"


# ==========================================================================
# 5. retries


def test_retries_exhausted_record_every_attempt(client):
    job = client.submit("fail", {"message": "again"}, max_attempts=3, retry_backoff=0.05)
    d = client.wait_job(job["id"])
    assert d["status"] == "failed" and d["attempt"] == 3 and d["max_attempts"] == 3, d
    assert d["error"]["type"] == "task_error" and d["error"]["message"] == "again", d
    att = d["attempts"]
    assert isinstance(att, list) and len(att) == 3, att
    for i, a in enumerate(att):
        assert a["error"]["type"] == "task_error" and a["error"]["message"] == "again", a
        assert parse_ts(a["started_at"]) <= parse_ts(a["finished_at"]), a
        if "attempt" in a:
            assert a["attempt"] == i + 1, a
    # Back-off: 0.05 s before attempt 2, doubled (0.1 s) before attempt 3.
    gap1 = (parse_ts(att[1]["started_at"]) - parse_ts(att[0]["finished_at"])).total_seconds()
    gap2 = (parse_ts(att[2]["started_at"]) - parse_ts(att[1]["finished_at"])).total_seconds()
    assert gap1 >= 0.05 - MS, f"attempt 2 started {gap1:.3f}s after attempt 1 (back-off 0.05)"
    assert gap2 >= 0.1 - MS, f"attempt 3 started {gap2:.3f}s after attempt 2 (back-off doubled to 0.1)"
    assert gap1 < scaled(2) and gap2 < scaled(2), (gap1, gap2)
    assert d["started_at"] == att[2]["started_at"] and d["finished_at"] == att[2]["finished_at"], d


def test_retry_waits_scheduled_between_attempts(client):
    job = client.submit("fail", max_attempts=2, retry_backoff=WINDOW)
    seen = wait_for(lambda: in_backoff(client, job["id"]), 5, interval=0.01,
                    message="the job scheduled for its retry")
    assert len(seen["attempts"]) == 1 and seen["attempts"][0]["error"]["type"] == "task_error", seen
    d = client.wait_job(job["id"])
    assert d["status"] == "failed" and d["attempt"] == 2 and len(d["attempts"]) == 2, d


def test_succeeded_job_has_one_attempt(client):
    d = client.wait_job(client.submit("square", {"n": 9}, max_attempts=3)["id"])
    assert d["status"] == "succeeded" and d["attempt"] == 1, d
    assert len(d["attempts"]) == 1 and d["attempts"][0]["error"] is None, d


# ==========================================================================
# 6. scheduling


def test_delay_runs_on_time(client):
    delay = WINDOW  # long enough for the next request to find the job still scheduled
    job = client.submit("noop", delay=delay)
    assert job["status"] == "scheduled", job
    assert client.job(job["id"])["status"] == "scheduled"
    d = client.wait_job(job["id"])
    assert d["status"] == "succeeded", d
    late = (parse_ts(d["started_at"]) - parse_ts(d["created_at"])).total_seconds()
    assert late >= delay - MS, f"a job with delay {delay} started {late:.3f}s after it was created"
    assert late <= delay + scaled(1), f"a job with delay {delay} started {late:.3f}s after it was created"


def test_run_at_in_the_past_runs_at_once(client):
    past = rfc3339(datetime.now(timezone.utc) - timedelta(hours=1))
    job = client.submit("noop", run_at=past)
    assert job["status"] != "scheduled", job
    d = client.wait_job(job["id"], timeout=3)
    assert d["status"] == "succeeded", d
    assert (parse_ts(d["started_at"]) - parse_ts(d["created_at"])).total_seconds() < scaled(1)
    soon = rfc3339(datetime.now(timezone.utc) + timedelta(seconds=WINDOW))  # still ahead when the submit lands
    j2 = client.submit("noop", run_at=soon)
    assert j2["status"] == "scheduled", j2
    d2 = client.wait_job(j2["id"])
    assert parse_ts(d2["started_at"]) >= parse_ts(soon), d2


def test_priority_order_within_an_executor(make_server):
    srv = make_server(args=["--executors", "one=thread:1"])
    c = srv.client()
    # The only worker is busy until every job is queued (then the blocker is cancelled).
    blocker = c.submit("sleep", {"seconds": 60})
    assert c.wait_running(blocker["id"])["status"] == "running"
    jobs = {p: c.submit("sleep", {"seconds": 0.02}, priority=p) for p in (1, 5, 3, -2, 5)}
    for j in jobs.values():
        assert c.job(j["id"])["status"] == "queued", c.job(j["id"])
    assert c.cancel(blocker["id"]).status_code == 200
    ids = [blocker["id"]] + [j["id"] for j in jobs.values()]
    done, _, _ = ok_wait(c, ids, "ALL_COMPLETED", server_wait(10))
    assert [j["status"] for j in done] == ["cancelled"] + ["succeeded"] * 4, done
    by_start = sorted(done[1:], key=lambda j: parse_ts(j["started_at"]))
    assert [j["priority"] for j in by_start] == [5, 3, 1, -2], [(j["priority"], j["started_at"]) for j in by_start]
    assert max_overlap([interval(j) for j in done]) == 1


def test_priority_ties_run_in_submission_order(make_server):
    srv = make_server(args=["--executors", "one=thread:1"])
    c = srv.client()
    blocker = c.submit("sleep", {"seconds": 60})  # cancelled once the others are queued
    assert c.wait_running(blocker["id"])["status"] == "running"
    ids = [c.submit("sleep", {"seconds": 0.01}, priority=p)["id"] for p in (2, 2, 7, 2)]
    for i in ids:
        assert c.job(i)["status"] == "queued", c.job(i)
    assert c.cancel(blocker["id"]).status_code == 200
    done, _, _ = ok_wait(c, ids, "ALL_COMPLETED", server_wait(10))
    order = [j["id"] for j in sorted(done, key=lambda j: parse_ts(j["started_at"]))]
    assert order == [ids[2], ids[0], ids[1], ids[3]], order


# ==========================================================================
# 7. restart in the middle


def test_restart_keeps_a_delayed_job_on_time(make_server):
    srv = make_server()
    c = srv.client()
    # Still ahead after a kill -9 and a start (up to about 1 s under TSan, when
    # the killed server's workers take their time to go).
    delay = scaled(1.5)
    job = c.submit("noop", delay=delay)
    assert job["status"] == "scheduled"
    srv.kill()
    srv.start()
    c = srv.client()
    assert c.job(job["id"])["status"] == "scheduled"
    d = c.wait_job(job["id"], timeout=10)
    assert d["status"] == "succeeded", d
    late = (parse_ts(d["started_at"]) - parse_ts(d["created_at"])).total_seconds()
    assert delay - MS <= late <= delay + scaled(1), f"delay {delay} job started {late:.3f}s after it was created"


def test_restart_with_a_dependent_waiting_on_a_running_dependency(make_server, gate):
    srv = make_server()
    c = srv.client()
    # Both run until the kill: retried waits at the gate (its second attempt,
    # after the restart, goes through), lost sleeps far longer than the test.
    retried = gate.submit(c, max_attempts=2, retry_backoff=0.05)
    lost = c.submit("sleep", {"seconds": 60}, max_attempts=1)
    after_retried = c.submit("echo", {"ok": 1}, depends_on=[retried["id"]])
    after_lost = c.submit("echo", {"ok": 2}, depends_on=[lost["id"]])
    chain = c.submit("noop", depends_on=[after_lost["id"]])
    for j in (retried, lost):
        assert c.wait_running(j["id"])["status"] == "running"
    srv.kill()
    srv.start()
    c = srv.client()
    gate.open()
    dr = c.wait_job(retried["id"], timeout=10)
    assert dr["status"] == "succeeded" and dr["attempt"] == 2, dr
    da = c.wait_job(after_retried["id"], timeout=10)
    assert da["status"] == "succeeded" and da["result"] == {"ok": 1}, da
    assert parse_ts(da["started_at"]) >= parse_ts(dr["finished_at"]), (dr, da)
    dl = c.wait_job(lost["id"], timeout=10)
    assert dl["status"] == "failed" and dl["error"]["type"] == "worker_lost", dl
    for j in (after_lost, chain):
        dj = c.wait_job(j["id"], timeout=10)
        assert dj["status"] == "cancelled" and dj["error"]["type"] == "dependency_failed", dj


def test_restart_with_a_half_done_batch(make_server, gate):
    srv = make_server()
    c = srv.client()
    # Jobs 4-8 run until the kill: 4-6 sleep far longer than the test (one
    # attempt: lost), 7-8 wait at the gate, opened after the restart for their
    # second attempt.
    specs = [{"task": "noop"}] * 4 + [{"task": "sleep", "args": {"seconds": 60}}] * 3 + \
            [gate.spec(max_attempts=2, retry_backoff=0.05)] * 2 + \
            [{"task": "noop", "depends_on": [4]}]
    _, b = submit_batch(c, specs)
    ids = [j["id"] for j in b["jobs"]]
    for i in range(4):
        c.wait_job(ids[i])
    for i in range(4, 9):
        c.wait_running(ids[i])
    mid = get_batch(c, b["id"])
    assert mid["done"] is False and mid["counts"]["succeeded"] == 4, mid
    srv.kill()
    srv.start()
    c = srv.client()
    gate.open()
    got = get_batch(c, b["id"], wait=server_wait(15))
    assert got["done"] is True, got
    assert got["total"] == 10 and sum(got["counts"].values()) == 10, got
    for s in ("scheduled", "queued", "running"):
        assert got["counts"].get(s, 0) == 0, got
    assert got["counts"]["succeeded"] == 6 and got["counts"]["failed"] == 3 and got["counts"]["cancelled"] == 1, got
    listed = {j["id"]: j for j in list_jobs(c, batch=b["id"])}
    assert set(listed) == set(ids)
    assert all(listed[i]["status"] == "failed" and listed[i]["error"]["type"] == "worker_lost" for i in ids[4:7])
    assert all(listed[i]["status"] == "succeeded" and listed[i]["attempt"] == 2 for i in ids[7:9])
    assert listed[ids[9]]["error"]["type"] == "dependency_failed", listed[ids[9]]


def test_restart_keeps_the_concurrency_limit(make_server):
    srv = make_server()
    c = srv.client()
    key = unique("rl")
    ids = [c.submit("sleep", {"seconds": 0.15}, executor=("thread", "async")[i % 2], concurrency_key=key,
                    concurrency_limit=1, max_attempts=2, retry_backoff=0.01)["id"] for i in range(8)]
    c.wait_running(ids[0])
    srv.kill()
    srv.start()
    c = srv.client()
    # Poll the running list while they drain, and check intervals after.
    seen = 0
    deadline = time.monotonic() + scaled(20)
    while True:
        r = c.get("/v1/jobs", params={"status": "running", "limit": 1000})
        seen = max(seen, sum(1 for j in body_json(r)["jobs"] if j["concurrency_key"] == key))
        if not c.post("/v1/wait", json={"ids": ids, "timeout": 0}).json()["not_done"]:
            break
        assert time.monotonic() < deadline, "keyed jobs did not finish after restart"
        time.sleep(0.01)
    done, not_done, _ = ok_wait(c, ids, "ALL_COMPLETED", server_wait(10))
    assert not not_done and all(j["status"] == "succeeded" for j in done), done
    assert seen <= 1, f"{seen} jobs of a limit-1 key running at once after restart"
    assert max_overlap([interval(j) for j in done]) == 1, [(j["started_at"], j["finished_at"]) for j in done]


def test_wait_in_progress_returns_when_the_server_drains(make_server):
    """Parked waits (several POST /v1/wait, and a GET ?wait= for comparison)
    are answered 200 with what is done when SIGTERM drains the server, and it
    exits 0. Several at once, since a lost reply is a race at shutdown."""
    srv = make_server()  # grace 2 s (conftest)
    c = srv.client()
    slow = c.submit("sleep", {"seconds": 60})  # still running at SIGTERM: stopped after the grace
    # `sent` below only means the requests were written: fast lasts long enough
    # for the server to have read and parked them all before it ends.
    fast = c.submit("sleep", {"seconds": scaled(1)})
    n_waits = 6
    results = [dict() for _ in range(n_waits + 1)]

    def waiter(i):
        res = results[i]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=REQUEST_TIMEOUT + server_wait(30))
            if i < n_waits:
                conn.request("POST", "/v1/wait",
                             body=json.dumps({"ids": [slow["id"], fast["id"]], "timeout": server_wait(30)}),
                             headers={"Content-Type": "application/json"})
            else:
                conn.request("GET", f"/v1/jobs/{slow['id']}?wait={server_wait(30)}")
            res["sent"] = True
            resp = conn.getresponse()
            res["status"] = resp.status
            res["body"] = resp.read()
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported below
            res["error"] = repr(e)

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(n_waits + 1)]
    for t in threads:
        t.start()
    wait_for(lambda: all(r.get("sent") for r in results), 5, message="the wait requests sent")
    # When the fast job ends the waits are parked, and must still be.
    assert c.wait_job(fast["id"])["status"] == "succeeded"
    assert all(t.is_alive() for t in threads) and not any("status" in r for r in results), \
        f"a wait returned before the slow job ended: {results}"
    t0 = time.monotonic()
    srv.expected_exit = True
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(scaled(15))
    assert not any(t.is_alive() for t in threads), "a wait is still open after SIGTERM"
    try:
        srv.proc.wait(scaled(15))  # one SIGTERM only: a second one means "exit now"
    except subprocess.TimeoutExpired:
        raise AssertionError(f"jobd did not exit after SIGTERM\n{srv.stderr_text()}")
    code = srv.stop()  # already gone: just reaps it
    assert code == 0, f"exit {code} after drain\n{srv.stderr_text()}"
    assert time.monotonic() - t0 < scaled(10)
    lost = [(i, r.get("error")) for i, r in enumerate(results) if r.get("status") != 200]
    assert not lost, (f"{len(lost)} of {len(results)} parked waits got no 200 when the server drained "
                      f"(index {n_waits} is GET ?wait=, the others POST /v1/wait): {lost}")
    for r in results[:n_waits]:
        body = json.loads(r["body"])
        assert fast["id"] in [j["id"] for j in body["done"]], body
        assert {j["id"] for j in body["done"] + body["not_done"]} == {slow["id"], fast["id"]}, body


# ==========================================================================
# 8. idempotency race on POST /v1/jobs


def test_idempotency_race_on_submit(client):
    key = unique("idem")
    n = 20
    gate = threading.Barrier(n)
    answers = [None] * n

    def go(i):
        s = requests.Session()
        try:
            gate.wait(scaled(10))
            r = s.post(client.base_url + "/v1/jobs", json={"task": "square", "args": {"n": 11}},
                       headers={"Idempotency-Key": key}, timeout=REQUEST_TIMEOUT)
            answers[i] = (r.status_code, r.json())
        except Exception as e:  # noqa: BLE001
            answers[i] = ("error", repr(e))
        finally:
            s.close()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(30))
    ids = {a[1].get("id") for a in answers if isinstance(a[1], dict)}
    assert len(ids) == 1, f"{len(ids)} jobs for one Idempotency-Key: {answers}"
    codes = sorted(a[0] for a in answers)
    assert codes == [200] * (n - 1) + [202], codes
    (jid,) = ids
    assert client.wait_job(jid)["result"] == 121


# ==========================================================================
# 9. cancel while a job is finishing


def test_cancel_while_finishing(server, client):
    outcomes = {200: 0, 409: 0}
    final = {}
    # Durations around the time a cancel takes to arrive, so both sides of the race are hit.
    for i in range(60):
        job = client.submit("sleep", {"seconds": (0.01, 0.003, 0.001, 0)[i % 4]})
        r = client.cancel(job["id"])
        assert r.status_code in (200, 409), r.text
        if r.status_code == 409:
            assert_error(r, 409, "conflict")
        d = client.wait_job(job["id"], timeout=5)
        assert d["status"] in TERMINAL, d
        if r.status_code == 409:
            assert d["status"] == "succeeded", f"cancel said 409 (finished) but the job is {d['status']}: {d!r}"
        else:
            body = body_json(r)
            assert body["id"] == job["id"]
            if d["status"] == "succeeded":
                assert d["result"] == {"slept": job["args"]["seconds"]} and d["error"] is None, d
            else:
                assert d["status"] == "cancelled" and d["error"]["type"] == "cancelled", d
        # Terminal is terminal: a second look, and a second cancel, change nothing.
        r2 = client.cancel(job["id"])
        assert_error(r2, 409, "conflict")
        assert client.job(job["id"])["status"] == d["status"]
        outcomes[r.status_code] += 1
        final[d["status"]] = final.get(d["status"], 0) + 1
    print(f"\ncancel while finishing: answers {outcomes}, final {final}")
    assert client.get("/healthz").status_code == 200
    assert client.wait_job(client.submit("square", {"n": 3})["id"])["result"] == 9


# ==========================================================================
# interplay: retries, scheduling and the gates


def test_wait_counts_a_retrying_job_only_when_its_last_attempt_ends(client):
    """A failed attempt with attempts left is not an exception yet: FIRST_EXCEPTION
    and ALL_COMPLETED both wait for the final outcome."""
    t0 = time.monotonic()  # before the first attempt
    flaky = client.submit("fail", {"message": "again"}, max_attempts=3, retry_backoff=0.2)
    slow = client.submit("sleep", {"seconds": 30})
    try:
        done, not_done, _ = ok_wait(client, [slow["id"], flaky["id"]], "FIRST_EXCEPTION", server_wait(20))
        took = time.monotonic() - t0
        assert [j["id"] for j in done] == [flaky["id"]], (done, not_done)
        assert done[0]["status"] == "failed" and done[0]["attempt"] == 3, done[0]
        assert took >= 0.6 - EARLY, f"returned {took:.3f}s after the submit, before back-offs 0.2 + 0.4 had passed"
        t0 = time.monotonic()
        again = client.submit("fail", max_attempts=2, retry_backoff=0.3)
        done, not_done, _ = ok_wait(client, [again["id"]], "ALL_COMPLETED", server_wait(20))
        took = time.monotonic() - t0
        assert not not_done and done[0]["attempt"] == 2 and took >= 0.3 - EARLY, (done, took)
    finally:
        cancel_quietly(client, slow["id"])


def test_dependent_waits_for_the_last_attempt_of_its_dependency(client):
    dep = client.submit("fail", max_attempts=2, retry_backoff=0.3)
    child = client.submit("noop", depends_on=[dep["id"]])
    dc = client.wait_job(child["id"])
    dd = client.job(dep["id"])
    assert dd["status"] == "failed" and dd["attempt"] == 2, dd
    assert dc["status"] == "cancelled" and dc["error"]["type"] == "dependency_failed", dc
    assert parse_ts(dc["finished_at"]) >= parse_ts(dd["finished_at"]), \
        f"the dependent was cancelled at {dc['finished_at']}, before its dependency's last attempt " \
        f"ended at {dd['finished_at']}"


def test_cancel_during_retry_backoff_sticks(client):
    backoff = WINDOW  # the poll, then the cancel, land within it
    job = client.submit("fail", max_attempts=3, retry_backoff=backoff)
    wait_for(lambda: in_backoff(client, job["id"]), 5, interval=0.01, message="the job waiting for its retry")
    r = client.cancel(job["id"])
    assert r.status_code == 200, r.text
    d = client.wait_job(job["id"])
    assert d["status"] == "cancelled" and d["attempt"] == 1 and len(d["attempts"]) == 1, d
    # Past the back-off (a job due just after the retry was), no second attempt ran.
    retry_due = parse_ts(d["attempts"][0]["finished_at"]) + timedelta(seconds=backoff)
    probe = client.submit("noop", run_at=rfc3339(retry_due + timedelta(seconds=0.2)))
    ok_wait(client, [probe["id"]], "ALL_COMPLETED", server_wait(10))
    d2 = client.job(job["id"])
    assert d2["status"] == "cancelled" and d2["attempt"] == 1 and len(d2["attempts"]) == 1, d2


def test_cancel_a_delayed_job_before_its_time(client):
    delay = WINDOW  # the cancel lands well before it
    job = client.submit("noop", delay=delay)
    r = client.cancel(job["id"])
    assert r.status_code == 200, r.text
    assert client.wait_job(job["id"], timeout=3)["status"] == "cancelled"
    # Once a job due just after it has run, the cancelled one still never started.
    due = parse_ts(job["created_at"]) + timedelta(seconds=delay)
    probe = client.submit("noop", run_at=rfc3339(due + timedelta(seconds=0.2)))
    ok_wait(client, [probe["id"]], "ALL_COMPLETED", server_wait(10))
    d = client.job(job["id"])
    assert d["status"] == "cancelled" and d["started_at"] is None, d


def test_a_job_in_retry_backoff_does_not_hold_its_key(client):
    key = unique("backoff")
    # A back-off far longer than the test: the other job runs, and ends, within it.
    flaky = client.submit("fail", max_attempts=2, retry_backoff=60, concurrency_key=key, concurrency_limit=1)
    try:
        wait_for(lambda: in_backoff(client, flaky["id"]), 5, interval=0.01, message="the job waiting for its retry")
        other = client.submit("noop", concurrency_key=key, concurrency_limit=1)
        d = client.wait_job(other["id"], timeout=5)
        assert d["status"] == "succeeded", d
        assert in_backoff(client, flaky["id"]), \
            f"the other job ran only after the back-off: {client.job(flaky['id'])!r}"
    finally:
        cancel_quietly(client, flaky["id"])
    df = client.wait_job(flaky["id"])
    assert df["status"] == "cancelled" and df["attempt"] == 1, df


def test_a_delayed_or_dependent_job_does_not_hold_its_key(client):
    key = unique("sched")
    # Both wait far longer than the test (then are cancelled): `now`, with the
    # same key, runs meanwhile.
    later = client.submit("noop", delay=60, concurrency_key=key)
    blocker = client.submit("sleep", {"seconds": 60})
    dependent = client.submit("noop", depends_on=[blocker["id"]], concurrency_key=key)
    try:
        now = client.submit("square", {"n": 2}, concurrency_key=key)
        d = client.wait_job(now["id"], timeout=5)
        assert d["status"] == "succeeded", d
        for j in (later, dependent):
            assert client.job(j["id"])["status"] == "scheduled", client.job(j["id"])
    finally:
        cancel_quietly(client, blocker["id"], later["id"])
    assert client.wait_job(later["id"])["status"] == "cancelled"
    assert client.wait_job(dependent["id"])["status"] == "cancelled"


def test_restart_during_retry_backoff(make_server):
    srv = make_server()
    c = srv.client()
    # Back-offs of B, then 2B = WINDOW: the kill lands in the second one, found by polling.
    job = c.submit("fail", {"message": "m"}, max_attempts=3, retry_backoff=WINDOW / 2)
    wait_for(lambda: in_backoff(c, job["id"], attempt=2), 5, interval=0.01,
             message="the job waiting for its third attempt")
    srv.kill()
    srv.start()
    c = srv.client()
    d = c.wait_job(job["id"], timeout=10)
    assert d["status"] == "failed" and d["attempt"] == 3, d
    assert len(d["attempts"]) == 3, d["attempts"]
    assert all(a["error"]["type"] == "task_error" for a in d["attempts"]), d["attempts"]


def test_batch_wait_and_list_validation(client):
    _, b = submit_batch(client, [{"task": "noop"}])
    r = client.get(f"/v1/batches/{b['id']}", params={"wait": -1})
    assert_error(r, 400, "invalid_argument", field="wait")
    r = client.get(f"/v1/batches/{b['id']}", params={"wait": "x"})
    assert_error(r, 400, "invalid_argument", field="wait")
    r = client.post(f"/v1/batches/{b['id']}")
    assert r.status_code in (404, 405), r.text
    assert list_jobs(client, batch="01AAAAAAAAAAAAAAAAAAAAAAAA") == []


def test_batch_past_max_queued_is_429_and_creates_nothing(make_server):
    srv = make_server(args=["--executors", "one=thread:1", "--max-queued", "5"])
    c = srv.client()
    r = c.post("/v1/batches", json={"jobs": [{"task": "noop"}] * 6})
    assert_error(r, 429, "queue_full")
    assert r.headers.get("Retry-After"), r.headers
    assert total_jobs(c) == 0, "a refused batch created jobs"
    _, b = submit_batch(c, [{"task": "noop"}] * 5)
    assert get_batch(c, b["id"], wait=server_wait(10))["counts"]["succeeded"] == 5


def test_restart_keeps_idempotency_and_dependency_gates(make_server):
    srv = make_server()
    c = srv.client()
    key = unique("bk")
    _, b = submit_batch(c, [{"task": "noop"}, {"task": "echo", "args": {"a": 1}, "depends_on": [0]}],
                        headers={"Idempotency-Key": key})
    get_batch(c, b["id"], wait=server_wait(10))
    jkey = unique("jk")
    first = c.submit("square", {"n": 4}, idempotency_key=jkey)
    c.wait_job(first["id"])
    finished = c.submit("noop")
    c.wait_job(finished["id"])
    delayed = c.submit("square", {"n": 6}, delay=0.8)
    on_delayed = c.submit("echo", {"d": 1}, depends_on=[delayed["id"], finished["id"]])
    on_finished_later = c.submit("echo", {"d": 2}, depends_on=[finished["id"]], delay=0.5)
    srv.kill()
    srv.start()
    c = srv.client()
    _, b2 = submit_batch(c, [{"task": "noop"}, {"task": "echo", "args": {"a": 1}, "depends_on": [0]}],
                         expect=200, headers={"Idempotency-Key": key})
    assert b2["id"] == b["id"] and [j["id"] for j in b2["jobs"]] == [j["id"] for j in b["jobs"]]
    again = c.submit("square", {"n": 4}, expect=200, idempotency_key=jkey)
    assert again["id"] == first["id"]
    done, not_done, _ = ok_wait(c, [delayed["id"], on_delayed["id"], on_finished_later["id"]], "ALL_COMPLETED",
                                server_wait(10))
    assert not not_done, not_done
    assert [j["status"] for j in done] == ["succeeded"] * 3, done
    assert parse_ts(done[1]["started_at"]) >= parse_ts(done[0]["finished_at"]), done
    assert done[1]["result"] == {"d": 1} and done[2]["result"] == {"d": 2}


def test_batch_jobs_respect_keys_and_priorities(make_server):
    srv = make_server(args=["--executors", "one=thread:1,a=async:50"])
    c = srv.client()
    key = unique("bk")
    _, b = submit_batch(c, [{"task": "sleep", "args": {"seconds": 0.1}, "executor": "a", "concurrency_key": key,
                             "concurrency_limit": 2}] * 6)
    done, not_done, _ = ok_wait(c, [j["id"] for j in b["jobs"]], "ALL_COMPLETED", server_wait(10))
    assert not not_done and max_overlap([interval(j) for j in done]) == 2
    blocker = c.submit("sleep", {"seconds": 60}, executor="one")  # cancelled once the batch is queued
    assert c.wait_running(blocker["id"])["status"] == "running"
    _, b = submit_batch(c, [{"task": "sleep", "args": {"seconds": 0.02}, "priority": p, "executor": "one"}
                            for p in (1, 5, 3)])
    for j in b["jobs"]:
        assert c.job(j["id"])["status"] == "queued", c.job(j["id"])
    assert c.cancel(blocker["id"]).status_code == 200
    done, _, _ = ok_wait(c, [j["id"] for j in b["jobs"]], "ALL_COMPLETED", server_wait(10))
    assert [j["priority"] for j in sorted(done, key=lambda j: parse_ts(j["started_at"]))] == [5, 3, 1]
