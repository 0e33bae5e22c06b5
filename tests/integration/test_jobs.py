"""The HTTP API of jobd (SPEC §2-§3 and this version's decisions), black-box.

Most tests share one server with default flags (`server`/`client`); tests that
need their own flags (one worker, a token, a small queue) start a fresh one
with `make_server`. Tests that occupy workers give them back (cancel) before
they end, so the shared server stays usable.
"""

import hashlib
import http.client
import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import (JOB_FIELDS, REQUEST_TIMEOUT, STATUSES, assert_error, assert_job_shape, body_json,
                      dumps, parse_ts, rfc3339, scaled, wait_for)

NCORES = os.cpu_count() or 1


def digest_of(result):
    """The hex digest in a sha256 result: SPEC §4 does not fix the shape, so
    either the string itself or an object holding it as a value."""
    if isinstance(result, dict):
        return next((v for v in result.values() if isinstance(v, str) and len(v) == 64), None)
    return result


def cancel_quietly(client, *ids):
    for job_id in ids:
        try:
            client.cancel(job_id)
        except requests.RequestException:
            pass


# --------------------------------------------------------------------------
# health


def test_healthz(server, client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert body_json(r) == {"status": "ok"}


def test_readyz_when_ready(server, client):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert body_json(r) == {"status": "ready"}


# --------------------------------------------------------------------------
# submit and get


def test_submit_returns_202_location_and_every_job_field(client):
    r = client.post("/v1/jobs", json={"task": "noop"})
    assert r.status_code == 202, r.text
    job = assert_job_shape(body_json(r))
    assert r.headers.get("Location") == f"/v1/jobs/{job['id']}"
    assert set(job) >= JOB_FIELDS
    assert job["status"] == "queued"
    assert job["task"] == "noop"
    assert job["args"] == {}
    assert job["executor"] == "thread"  # the only executor by default in this build
    assert job["priority"] == 0
    assert job["max_attempts"] == 1
    assert job["depends_on"] == []
    for k in ("started_at", "finished_at", "result", "error", "batch_id", "concurrency_key", "idempotency_key",
              "callback_url", "callback_status"):
        assert job[k] is None, f"{k} should be null on a new job: {job!r}"

    done = client.wait_job(job["id"])
    assert_job_shape(done)
    assert done["id"] == job["id"]
    assert done["status"] == "succeeded"
    assert done["attempt"] == 1
    assert done["error"] is None
    assert done["created_at"] == job["created_at"]


def test_square_result_timestamps_and_worker(client):
    job = client.submit("square", {"n": 3})
    done = client.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == 9
    created, started, finished = (parse_ts(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished, done
    assert parse_ts(done["scheduled_at"]) >= created if done["scheduled_at"] else True
    # Timestamps are UTC "now", not some other clock.
    now = datetime.now(timezone.utc)
    assert abs((now - created).total_seconds()) < scaled(60), done["created_at"]
    w = done["worker"]
    assert isinstance(w, dict) and w.get("executor") == "thread", done
    assert isinstance(w.get("pid"), int) and isinstance(w.get("thread"), str), done


def test_square_negative_and_large(client):
    a = client.submit("square", {"n": -12})
    b = client.submit("square", {"n": 1.5})
    assert client.wait_job(a["id"])["result"] == 144
    db = client.wait_job(b["id"])
    assert db["status"] == "succeeded" and db["result"] == 2.25, db


def test_echo_returns_its_args(client):
    args = {"a": 1, "b": [1, 2, {"c": "x"}], "s": "h\u00e9llo \u2603", "n": None, "t": True}
    job = client.submit("echo", args)
    assert job["args"] == args
    done = client.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == args


def test_fail_task_reports_task_error(client):
    job = client.submit("fail", {"message": "boom, as asked"})
    done = client.wait_job(job["id"])
    assert done["status"] == "failed", done
    assert done["error"] == {"type": "task_error", "message": "boom, as asked"} or (
        done["error"]["type"] == "task_error" and done["error"]["message"] == "boom, as asked"), done
    assert done["result"] is None
    assert done["attempt"] == 1


def test_sleep_crunch_sha256_results(client):
    s = client.submit("sleep", {"seconds": 0.05})
    c = client.submit("crunch", {"iterations": 1000})
    h = client.submit("sha256", {"data": "abc", "rounds": 1})
    ds = client.wait_job(s["id"])
    assert ds["status"] == "succeeded" and ds["result"] == {"slept": 0.05}, ds
    assert (parse_ts(ds["finished_at"]) - parse_ts(ds["started_at"])).total_seconds() >= 0.049, ds
    dc = client.wait_job(c["id"])
    assert dc["status"] == "succeeded", dc
    if dc["progress"] is not None:
        assert 0 <= dc["progress"]["fraction"] <= 1, dc
    dh = client.wait_job(h["id"])
    assert dh["status"] == "succeeded", dh
    assert digest_of(dh["result"]) == hashlib.sha256(b"abc").hexdigest(), dh


def test_submit_options_are_recorded(client):
    job = client.submit("noop", priority=7, timeout=12.5, max_attempts=4, retry_backoff=0.5, executor="thread")
    assert job["priority"] == 7
    assert job["timeout"] == 12.5
    assert job["max_attempts"] == 4
    assert job["executor"] == "thread"
    assert client.wait_job(job["id"])["status"] == "succeeded"


def test_max_attempts_bounds_accepted(client):
    for n in (1, 100):
        job = client.submit("noop", max_attempts=n)
        assert job["max_attempts"] == n


def test_get_unknown_and_malformed_id_is_404(client):
    assert_error(client.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "not_found")
    assert_error(client.get("/v1/jobs/not-an-id"), 404, "not_found")
    assert_error(client.get("/v1/jobs/" + "Z" * 300), 404, "not_found")


def test_ids_sort_by_creation(client):
    ids, created = [], []
    for _ in range(20):
        job = client.submit("noop")
        ids.append(job["id"])
        created.append(parse_ts(job["created_at"]))
    assert len(set(ids)) == len(ids), ids
    assert ids == sorted(ids), f"ids do not sort by creation: {ids}"
    assert created == sorted(created), created


# --------------------------------------------------------------------------
# ?wait on submit and get


def test_post_wait_returns_200_with_the_finished_job(client):
    r = client.post("/v1/jobs", params={"wait": scaled(10)}, json={"task": "square", "args": {"n": 4}},
                    timeout=REQUEST_TIMEOUT + scaled(10))
    assert r.status_code == 200, r.text
    job = assert_job_shape(body_json(r))
    assert job["status"] == "succeeded" and job["result"] == 16, job


def test_post_wait_returns_202_when_not_finished_in_time(client):
    t0 = time.monotonic()
    r = client.post("/v1/jobs", params={"wait": 1}, json={"task": "sleep", "args": {"seconds": 30}})
    elapsed = time.monotonic() - t0
    try:
        assert r.status_code == 202, r.text
        job = assert_job_shape(body_json(r))
        assert r.headers.get("Location") == f"/v1/jobs/{job['id']}"
        assert job["status"] in {"queued", "running"}, job
        assert elapsed >= 0.9, f"the reply came after {elapsed:.2f}s, before wait=1 passed"
        assert elapsed < 1 + scaled(5), elapsed
    finally:
        if r.status_code in (200, 202):
            cancel_quietly(client, r.json()["id"])


def test_get_wait_returns_as_soon_as_the_job_ends(client):
    # The poll's deadline (wait) is far past the bound on its reply, so a poll
    # that ran to its deadline instead of waking at the job's end fails.
    wait = scaled(10)
    job = client.submit("sleep", {"seconds": 0.3})
    t0 = time.monotonic()
    r = client.get(f"/v1/jobs/{job['id']}", params={"wait": wait}, timeout=REQUEST_TIMEOUT + wait)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    done = body_json(r)
    assert done["status"] == "succeeded", done
    assert elapsed < scaled(3), f"long poll took {elapsed:.2f}s for a 0.3s job (wait={wait:g})"


def test_get_wait_expires_with_the_running_job(client):
    job = client.submit("sleep", {"seconds": 30})
    try:
        client.wait_running(job["id"])
        t0 = time.monotonic()
        r = client.get(f"/v1/jobs/{job['id']}", params={"wait": 1})
        elapsed = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert body_json(r)["status"] == "running"
        assert elapsed >= 0.9, f"wait=1 returned after {elapsed:.2f}s"
        assert elapsed < 1 + scaled(5), elapsed
    finally:
        cancel_quietly(client, job["id"])


@pytest.mark.parametrize("value", ["-1", "3601", "abc"])
def test_wait_out_of_range_is_400(client, value):
    job = client.submit("noop")
    assert_error(client.get(f"/v1/jobs/{job['id']}?wait={value}"), 400, "invalid_argument", "wait")
    assert_error(client.post(f"/v1/jobs?wait={value}", json={"task": "noop"}), 400, "invalid_argument", "wait")


def test_wait_bounds_are_accepted(client):
    job = client.submit("noop")
    client.wait_job(job["id"])
    for wait in (0, 3600):
        t0 = time.monotonic()
        r = client.get(f"/v1/jobs/{job['id']}", params={"wait": wait})
        assert r.status_code == 200, r.text
        assert body_json(r)["status"] == "succeeded"
        assert time.monotonic() - t0 < scaled(2), "a long poll on a finished job must return at once"


# --------------------------------------------------------------------------
# validation errors


@pytest.mark.parametrize("spec,field", [
    ({}, "task"),
    ({"args": {}}, "task"),
    ({"task": "no_such_task"}, "task"),
    ({"task": 12}, "task"),
    ({"task": "sleep", "args": {"seconds": "x"}}, "args.seconds"),
    ({"task": "sleep", "args": {"seconds": -1}}, "args.seconds"),
    ({"task": "sleep", "args": {"seconds": 1, "bogus": 1}}, "args.bogus"),
    ({"task": "square", "args": {}}, "args.n"),
    ({"task": "square", "args": {"n": "three"}}, "args.n"),
    ({"task": "square", "args": {"n": 3, "m": 4}}, "args.m"),
    ({"task": "crunch", "args": {"iterations": "many"}}, "args.iterations"),
    ({"task": "sha256", "args": {"data": 5, "rounds": 1}}, "args.data"),
    ({"task": "fail", "args": {"message": "x", "extra": 1}}, "args.extra"),
    ({"task": "noop", "priority": "high"}, "priority"),
    ({"task": "noop", "priority": 1.5}, "priority"),
    ({"task": "noop", "timeout": 0}, "timeout"),
    ({"task": "noop", "timeout": -1}, "timeout"),
    ({"task": "noop", "timeout": "soon"}, "timeout"),
    ({"task": "noop", "max_attempts": 0}, "max_attempts"),
    ({"task": "noop", "max_attempts": 101}, "max_attempts"),
    ({"task": "noop", "max_attempts": 2.5}, "max_attempts"),
    ({"task": "noop", "retry_backoff": -1}, "retry_backoff"),
    ({"task": "noop", "delay": -1}, "delay"),
    ({"task": "noop", "delay": "later"}, "delay"),
    ({"task": "noop", "run_at": "not a date"}, "run_at"),
    ({"task": "noop", "run_at": 12}, "run_at"),
    ({"task": "noop", "executor": "nope"}, "executor"),
    ({"task": "noop", "executor": 3}, "executor"),
    ({"task": "noop", "idempotency_key": 5}, "idempotency_key"),
    ({"task": "noop", "depends_on": "x"}, "depends_on"),
    ({"task": "noop", "depends_on": ["not-an-id"]}, "depends_on[0]"),
    ({"task": "noop", "depends_on": ["01M7YGNN29753SD04HAQCB8M2S"]}, "depends_on[0]"),
    ({"task": "noop", "depends_on": [0]}, "depends_on[0]"),
    ({"task": "noop", "concurrency_key": ""}, "concurrency_key"),
    ({"task": "noop", "concurrency_key": 7}, "concurrency_key"),
    ({"task": "noop", "concurrency_limit": 2}, "concurrency_limit"),
    ({"task": "noop", "concurrency_key": "k", "concurrency_limit": 0}, "concurrency_limit"),
    ({"task": "noop", "callback_url": "ftp://127.0.0.1:9/x"}, "callback_url"),
    ({"task": "noop", "callback_url": "http://a b/"}, "callback_url"),
    ({"task": "noop", "colour": "blue"}, "colour"),
])
def test_invalid_submit_names_the_field(client, spec, field):
    assert_error(client.post("/v1/jobs", json=spec), 400, "invalid_argument", field)


def test_args_of_a_task_with_fields_must_be_an_object(client):
    for args in ([1], "x", 5):
        assert_error(client.post("/v1/jobs", json={"task": "sleep", "args": args}), 400, "invalid_argument", "args")


def test_echo_takes_any_json_value(client):
    for args in ([1, "two", {"three": 3}], "plain", 42, True):
        job = client.submit("echo", args)
        done = client.wait_job(job["id"])
        assert done["status"] == "succeeded" and done["args"] == args and done["result"] == args, done


@pytest.mark.parametrize("spec,field", [
    ({"task": "noop", "priority": 10 ** 30}, "priority"),
    ({"task": "noop", "priority": -(10 ** 30)}, "priority"),
    ({"task": "noop", "timeout": 1e300}, "timeout"),
    ({"task": "noop", "delay": 1e300}, "delay"),
    ({"task": "noop", "retry_backoff": 1e300}, "retry_backoff"),
    ({"task": "noop", "run_at": "9999-12-31T23:59:59.999Z"}, "run_at"),
    ({"task": "noop", "run_at": "2026-13-45T25:61:61Z"}, "run_at"),
    ({"task": "sleep", "args": {"seconds": 1e300}}, "args.seconds"),
    ({"task": "square", "args": {"n": 1e300}}, "args.n"),
    ({"task": "crunch", "args": {"iterations": -1}}, "args.iterations"),
    ({"task": "crunch", "args": {"iterations": 1.5}}, "args.iterations"),
    ({"task": "noop", "idempotency_key": "k" * 100_000}, "idempotency_key"),
    ({"task": "n" * 10_000}, "task"),
    ({"task": "noop", "executor": "e" * 10_000}, "executor"),
])
def test_extreme_values_are_answered_not_a_crash(server, client, spec, field):
    """Out-of-range values: refused naming the field, or accepted; never a crash."""
    r = client.post("/v1/jobs", json=spec)
    if r.status_code == 202:
        cancel_quietly(client, r.json()["id"])
    else:
        assert_error(r, 400, "invalid_argument", field)
    assert client.get("/healthz").status_code == 200


def test_out_of_range_values_are_refused(client):
    # These cannot be stored faithfully: refusing is the only right answer.
    assert_error(client.post("/v1/jobs", json={"task": "noop", "priority": 10 ** 30}), 400, "invalid_argument",
                 "priority")
    assert_error(client.post("/v1/jobs", json={"task": "noop", "run_at": "2026-13-45T25:61:61Z"}), 400,
                 "invalid_argument", "run_at")
    assert_error(client.post("/v1/jobs", json={"task": "crunch", "args": {"iterations": -1}}), 400,
                 "invalid_argument", "args.iterations")


def test_delay_and_run_at_together_are_refused(client):
    run_at = rfc3339(datetime.now(timezone.utc) + timedelta(seconds=60))
    err = assert_error(client.post("/v1/jobs", json={"task": "noop", "delay": 5, "run_at": run_at}),
                       400, "invalid_argument")
    assert err.get("field") in ("delay", "run_at"), err


@pytest.mark.parametrize("body", [b"{not json", b'{"task": "noop"', b"", b'{"task": "noop"} trailing',
                                  b'{"task": "sleep", "args": {"seconds": NaN}}', b"{'task': 'noop'}",
                                  b'{"task": "noop",}', b'\xef\xbb\xbf{"task": "noop"'])
def test_bad_json_is_400(client, body):
    assert_error(client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"}), 400, "bad_json")


@pytest.mark.parametrize("body", [b"[]", b'"noop"', b"42", b"null"])
def test_body_that_is_not_an_object_is_400(client, body):
    r = client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    code = body_json(r)["error"]["code"]
    assert code in ("bad_json", "invalid_argument"), r.text
    assert_error(r, 400, code)


def test_deeply_nested_json_is_refused_not_a_crash(server, client):
    depth = 100_000
    body = b'{"task": "echo", "args": ' + b"[" * depth + b"]" * depth + b"}"
    r = client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text[:300]
    assert_error(r, 400, body_json(r)["error"]["code"])
    assert client.get("/healthz").status_code == 200


def test_invalid_utf8_is_refused(client):
    body = b'{"task": "echo", "args": {"s": "\xff\xfe bad"}}'
    r = client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, f"invalid UTF-8 was accepted: {r.status_code} {r.content[:300]!r}"
    assert body_json(r)["error"]["code"] in ("bad_json", "invalid_argument"), r.text


# --------------------------------------------------------------------------
# content types and body size


@pytest.mark.parametrize("ctype", [None, "application/json", "application/json; charset=utf-8",
                                   "application/x-www-form-urlencoded"])
def test_accepted_content_types(client, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.post("/v1/jobs", data=dumps({"task": "noop"}).encode(), headers=headers)
    assert r.request.headers.get("Content-Type") == ctype
    assert r.status_code == 202, f"Content-Type {ctype!r}: {r.status_code} {r.text!r}"
    assert body_json(r)["task"] == "noop"


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_unsupported_media_type_is_415(client, ctype):
    r = client.post("/v1/jobs", data=dumps({"task": "noop"}).encode(), headers={"Content-Type": ctype})
    assert_error(r, 415, "unsupported_media_type")


def test_body_over_1_mib_is_413_and_the_server_keeps_serving(client):
    big = b'{"task": "echo", "args": {"s": "' + b"x" * (1 << 20) + b'"}}'
    r = client.post("/v1/jobs", data=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    # Same session: the next requests are served.
    for _ in range(3):
        job = client.submit("square", {"n": 5})
        assert client.wait_job(job["id"])["result"] == 25


def test_chunked_body_over_1_mib_is_413(client):
    def chunks():
        yield b'{"task": "echo", "args": {"s": "'
        for _ in range(40):
            yield b"z" * 65536  # 2.5 MiB in all, no Content-Length
        yield b'"}}'

    r = client.post("/v1/jobs", data=chunks(), headers={"Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(r, 413, "payload_too_large")
    assert client.get("/healthz").status_code == 200


def test_body_just_under_1_mib_is_accepted(client):
    data = "a" * 1_000_000
    r = client.post("/v1/jobs", json={"task": "sha256", "args": {"data": data, "rounds": 1}})
    assert len(r.request.body) < (1 << 20)
    assert r.status_code == 202, r.text[:500]
    done = client.wait_job(body_json(r)["id"])
    assert done["status"] == "succeeded", {k: done[k] for k in ("status", "error")}
    assert digest_of(done["result"]) == hashlib.sha256(data.encode()).hexdigest(), done["result"]


# --------------------------------------------------------------------------
# keep-alive


def test_keep_alive_session_survives_errors(client):
    """Many requests over one requests.Session, including after a 413 and a 400."""
    job = client.submit("noop")
    client.wait_job(job["id"])
    big = b'{"task": "noop", "args": {"pad": "' + b"y" * ((1 << 20) + 10) + b'"}}'
    for i in range(60):
        r = client.get(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["id"] == job["id"], (i, r.status_code, r.text[:200])
        if i % 10 == 3:
            assert_error(client.post("/v1/jobs", data=b"{oops", headers={"Content-Type": "application/json"}),
                         400, "bad_json")
        if i % 20 == 7:
            assert_error(client.post("/v1/jobs", data=big, headers={"Content-Type": "application/json"}),
                         413, "payload_too_large")
        if i % 10 == 5:
            assert_error(client.post("/v1/jobs", json={"task": "sleep", "args": {"seconds": "x"}}),
                         400, "invalid_argument", "args.seconds")


def test_keep_alive_connection_is_reused_after_errors(server):
    """Over one raw HTTP/1.1 connection: 2xx, 400 and 404 replies all keep it open."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.connect()
        sock = conn.sock
        headers = {"Content-Type": "application/json"}
        for i in range(30):
            if i % 3 == 0:
                conn.request("POST", "/v1/jobs", body=dumps({"task": "noop"}), headers=headers)
                expected = 202
            elif i % 3 == 1:
                conn.request("POST", "/v1/jobs", body="{bad", headers=headers)
                expected = 400
            else:
                conn.request("GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
                expected = 404
            resp = conn.getresponse()
            resp.read()
            assert resp.status == expected, (i, resp.status)
            assert conn.sock is sock, f"request {i}: the server closed the keep-alive connection after a {expected}"
    finally:
        conn.close()


def test_idle_and_garbage_connections_do_not_block_others(server, client):
    socks = []
    try:
        for i in range(20):
            sk = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sk.sendall(b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GARBAGE \x00\x01\r\n\r\n")
            socks.append(sk)
        t0 = time.monotonic()
        for _ in range(10):
            assert client.get("/healthz", timeout=scaled(5)).status_code == 200
        job = client.submit("square", {"n": 11})
        assert client.wait_job(job["id"])["result"] == 121
        assert time.monotonic() - t0 < scaled(5)
    finally:
        for sk in socks:
            sk.close()


# --------------------------------------------------------------------------
# routes, methods, query parameters


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/jobs/x/y/z", "/v2/jobs"])
def test_unknown_route_is_404(client, path):
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/v1/jobs", {"GET", "POST"}),
    ("DELETE", "/v1/jobs", {"GET", "POST"}),
    ("PATCH", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", {"GET", "DELETE"}),
    ("GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel", {"POST"}),
    ("GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry", {"POST"}),
    ("POST", "/v1/tasks", {"GET"}),
    ("DELETE", "/v1/executors", {"GET"}),
    ("POST", "/v1/stats", {"GET"}),
    ("POST", "/healthz", {"GET"}),
    ("POST", "/readyz", {"GET"}),
])
def test_wrong_method_is_405_with_allow(client, method, path, allowed):
    r = client.request(method, path)
    assert_error(r, 405, "method_not_allowed")
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()}
    assert allowed <= allow, f"{method} {path}: Allow is {r.headers.get('Allow')!r}, expected it to hold {allowed}"
    assert method not in allow


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/tasks?x=1"),
    ("GET", "/v1/executors?x=1"),
    ("GET", "/v1/stats?x=1"),
    ("GET", "/v1/jobs?x=1"),
    ("POST", "/v1/jobs?x=1"),
    ("GET", "/v1/jobs/{id}?x=1"),
    ("POST", "/v1/jobs/{id}/cancel?x=1"),
    ("DELETE", "/v1/jobs/{id}?x=1"),
])
def test_unknown_query_parameter_is_400(client, method, path):
    job = client.submit("noop")
    client.wait_job(job["id"])
    kwargs = {"json": {"task": "noop"}} if method == "POST" and "cancel" not in path else {}
    r = client.request(method, path.replace("{id}", job["id"]), **kwargs)
    assert_error(r, 400, "invalid_argument", "x")
    # Nothing happened: the job is still there.
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


# --------------------------------------------------------------------------
# cancel, retry, delete


def test_cancel_scheduled_job(client):
    job = client.submit("noop", delay=60)
    assert job["status"] == "scheduled"
    r = client.cancel(job["id"])
    assert r.status_code == 200, r.text
    reply = assert_job_shape(body_json(r))
    assert reply["id"] == job["id"] and reply["status"] == "cancelled", reply
    got = client.job(job["id"])
    assert got["status"] == "cancelled" and got["started_at"] is None, got
    # Cancelling again: it is finished now.
    assert_error(client.cancel(job["id"]), 409, "conflict")


def test_cancel_queued_job_and_what_a_queued_job_refuses(make_server):
    srv = make_server(args=["--executors", "t=thread:1"])
    c = srv.client()
    blocker = c.submit("sleep", {"seconds": 60})
    c.wait_running(blocker["id"])
    queued = c.submit("square", {"n": 2})
    other = c.submit("square", {"n": 3})
    assert c.job(queued["id"])["status"] == "queued"
    assert_error(c.post(f"/v1/jobs/{queued['id']}/retry"), 409, "conflict")
    assert_error(c.delete(f"/v1/jobs/{queued['id']}"), 409, "conflict")
    r = c.cancel(queued["id"])
    assert r.status_code == 200, r.text
    reply = assert_job_shape(body_json(r))
    assert reply["id"] == queued["id"] and reply["status"] == "cancelled", reply
    assert c.cancel(blocker["id"]).status_code == 200
    # The cancelled job never runs; the other queued one does.
    assert c.wait_job(other["id"])["result"] == 9
    got = c.job(queued["id"])
    assert got["status"] == "cancelled" and got["started_at"] is None and got["result"] is None, got
    ex = body_json(c.get("/v1/executors"))["executors"][0]
    assert ex["cancelled"] == 2 and ex["succeeded"] == 1, ex


def test_cancel_running_sleep_wakes_its_long_poll(server, client):
    job = client.submit("sleep", {"seconds": 60})
    client.wait_running(job["id"])
    polled = {}

    def long_poll():
        s = server.client()
        r = s.get(f"/v1/jobs/{job['id']}", params={"wait": scaled(60)}, timeout=REQUEST_TIMEOUT + scaled(60))
        polled["status"], polled["job"], polled["at"] = r.status_code, r.json(), time.monotonic()

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    t0 = time.monotonic()
    r = client.cancel(job["id"])
    assert r.status_code == 200, r.text
    reply = body_json(r)
    assert reply["id"] == job["id"] and reply["status"] in {"running", "cancelled"}, reply
    done = client.wait_job(job["id"], timeout=10)
    assert done["status"] == "cancelled", done
    assert done["error"] is not None and done["error"]["type"] == "cancelled", done
    assert time.monotonic() - t0 < scaled(5)
    # A long poll that was waiting on it returns with the cancelled job.
    poller.join(scaled(10))
    assert not poller.is_alive(), "the long poll did not return when the job was cancelled"
    assert polled["status"] == 200 and polled["job"]["status"] == "cancelled", polled
    assert polled["at"] - t0 < scaled(5)


def test_cancel_finished_job_is_409(client):
    job = client.submit("noop")
    client.wait_job(job["id"])
    assert_error(client.cancel(job["id"]), 409, "conflict")


def test_cancel_unknown_is_404(client):
    assert_error(client.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "not_found")
    assert_error(client.cancel("garbage"), 404, "not_found")


def test_retry_failed_job_makes_a_new_job(client):
    job = client.submit("fail", {"message": "again"})
    assert client.wait_job(job["id"])["status"] == "failed"
    r = client.post(f"/v1/jobs/{job['id']}/retry")
    assert r.status_code == 202, r.text
    new = assert_job_shape(body_json(r))
    assert new["id"] != job["id"] and new["id"] > job["id"]
    assert new["task"] == "fail" and new["args"] == {"message": "again"}
    assert new["status"] in {"queued", "running", "failed"}, new
    done = client.wait_job(new["id"])
    assert done["status"] == "failed" and done["error"]["message"] == "again", done
    # The original is untouched.
    assert client.job(job["id"])["status"] == "failed"


def test_retry_cancelled_job_makes_a_new_job(client):
    job = client.submit("sleep", {"seconds": 60})
    client.wait_running(job["id"])
    assert client.cancel(job["id"]).status_code == 200
    assert client.wait_job(job["id"])["status"] == "cancelled"
    r = client.post(f"/v1/jobs/{job['id']}/retry")
    try:
        assert r.status_code == 202, r.text
        new = body_json(r)
        assert new["id"] != job["id"]
        assert new["task"] == "sleep" and new["args"] == {"seconds": 60}
        assert new["status"] in {"queued", "running"}, new
    finally:
        if r.status_code == 202:
            cancel_quietly(client, r.json()["id"])


def test_retry_succeeded_running_scheduled_is_409(client):
    ok = client.submit("noop")
    client.wait_job(ok["id"])
    assert_error(client.post(f"/v1/jobs/{ok['id']}/retry"), 409, "conflict")
    running = client.submit("sleep", {"seconds": 60})
    scheduled = client.submit("noop", delay=60)
    try:
        client.wait_running(running["id"])
        assert_error(client.post(f"/v1/jobs/{running['id']}/retry"), 409, "conflict")
        assert_error(client.post(f"/v1/jobs/{scheduled['id']}/retry"), 409, "conflict")
    finally:
        cancel_quietly(client, running["id"], scheduled["id"])


def test_retry_unknown_is_404(client):
    assert_error(client.post("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry"), 404, "not_found")


def test_delete_finished_job(client):
    job = client.submit("noop")
    client.wait_job(job["id"])
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_error(client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_error(client.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")
    listed = body_json(client.get("/v1/jobs", params={"task": "noop", "limit": 1000}))["jobs"]
    assert job["id"] not in {j["id"] for j in listed}


def test_delete_unfinished_is_409_and_unknown_is_404(client):
    scheduled = client.submit("noop", delay=60)
    running = client.submit("sleep", {"seconds": 60})
    try:
        client.wait_running(running["id"])
        assert_error(client.delete(f"/v1/jobs/{scheduled['id']}"), 409, "conflict")
        assert_error(client.delete(f"/v1/jobs/{running['id']}"), 409, "conflict")
        assert client.job(scheduled["id"])["status"] == "scheduled"
    finally:
        cancel_quietly(client, running["id"], scheduled["id"])
    assert_error(client.delete("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "not_found")


# --------------------------------------------------------------------------
# scheduling: delay, run_at, priority, timeout, retries


def test_delay_schedules_then_runs(client):
    delay = scaled(1)  # the GET below must come before it passes, on a slow build too
    job = client.submit("noop", delay=delay)
    assert job["status"] == "scheduled", job
    created = parse_ts(job["created_at"])
    if job["scheduled_at"] is not None:
        assert abs((parse_ts(job["scheduled_at"]) - created).total_seconds() - delay) < 0.05, job
    assert client.job(job["id"])["status"] == "scheduled"
    done = client.wait_job(job["id"], timeout=10 + delay)
    assert done["status"] == "succeeded", done
    assert parse_ts(done["started_at"]) >= created + timedelta(seconds=delay), done


def test_run_at_schedules_then_runs(client):
    ahead = scaled(1.2)  # still ahead when the submit is served, on a slow build too
    at = datetime.now(timezone.utc) + timedelta(seconds=ahead)
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)
    job = client.submit("square", {"n": 2}, run_at=rfc3339(at))
    assert job["status"] == "scheduled", job
    assert parse_ts(job["scheduled_at"]) == at, (rfc3339(at), job)
    done = client.wait_job(job["id"], timeout=10 + ahead)
    assert done["status"] == "succeeded" and done["result"] == 4, done
    assert parse_ts(done["started_at"]) >= at, (rfc3339(at), done)


def test_run_at_accepts_rfc3339_offsets(client):
    # An hour from now, in whole seconds, written in +02:00.
    at = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    local = at.astimezone(timezone(timedelta(hours=2))).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    job = client.submit("noop", run_at=local)
    try:
        assert job["status"] == "scheduled", job
        assert parse_ts(job["scheduled_at"]) == at, (local, job["scheduled_at"])
    finally:
        cancel_quietly(client, job["id"])


def test_run_at_in_the_past_runs_now(client):
    job = client.submit("noop", run_at="2001-02-03T04:05:06.789Z")
    assert job["status"] in {"queued", "scheduled"}, job
    assert client.wait_job(job["id"])["status"] == "succeeded"


def test_priority_order_on_one_worker(make_server):
    srv = make_server(args=["--executors", "t=thread:1"])
    c = srv.client()
    blocker = c.submit("sleep", {"seconds": 60})
    c.wait_running(blocker["id"])
    low = c.submit("sleep", {"seconds": 0.05}, priority=-5)
    mid = c.submit("sleep", {"seconds": 0.05}, priority=0)
    high = c.submit("sleep", {"seconds": 0.05}, priority=5)
    for j in (low, mid, high):
        assert c.job(j["id"])["status"] == "queued"
    assert c.cancel(blocker["id"]).status_code == 200
    dl, dm, dh = (c.wait_job(j["id"]) for j in (low, mid, high))
    for d in (dl, dm, dh):
        assert d["status"] == "succeeded", d
    assert parse_ts(dh["started_at"]) < parse_ts(dm["started_at"]) < parse_ts(dl["started_at"]), (
        f"expected high, mid, low: high {dh['started_at']}, mid {dm['started_at']}, low {dl['started_at']}")


def test_timeout_stops_a_sleep(client):
    job = client.submit("sleep", {"seconds": 30}, timeout=0.5)
    assert job["timeout"] == 0.5
    t0 = time.monotonic()
    done = client.wait_job(job["id"], timeout=10)
    assert done["status"] == "failed", done
    assert done["error"] is not None and done["error"]["type"] == "timeout", done
    assert time.monotonic() - t0 < scaled(6)
    ran = (parse_ts(done["finished_at"]) - parse_ts(done["started_at"])).total_seconds()
    assert 0.45 <= ran < scaled(5), f"ran {ran:.3f}s with timeout 0.5"


def test_max_attempts_retries_a_failing_task(client):
    job = client.submit("fail", {"message": "flaky"}, max_attempts=3, retry_backoff=0.1)
    done = client.wait_job(job["id"], timeout=15)
    assert done["status"] == "failed", done
    assert done["attempt"] == 3, done
    assert done["error"]["type"] == "task_error", done


# --------------------------------------------------------------------------
# idempotency


def test_idempotency_key_in_body(client):
    key = f"body-{time.monotonic_ns()}"
    r1 = client.post("/v1/jobs", json={"task": "square", "args": {"n": 6}, "idempotency_key": key})
    assert r1.status_code == 202, r1.text
    first = body_json(r1)
    assert first["idempotency_key"] == key
    r2 = client.post("/v1/jobs", json={"task": "square", "args": {"n": 6}, "idempotency_key": key})
    assert r2.status_code == 200, r2.text
    assert body_json(r2)["id"] == first["id"]
    # Even after it finished, and even with other args: the first job comes back.
    client.wait_job(first["id"])
    r3 = client.post("/v1/jobs", json={"task": "square", "args": {"n": 7}, "idempotency_key": key})
    assert r3.status_code == 200, r3.text
    third = body_json(r3)
    assert third["id"] == first["id"] and third["result"] == 36, third


def test_idempotency_key_header(client):
    key = f"hdr-{time.monotonic_ns()}"
    r1 = client.post("/v1/jobs", json={"task": "noop"}, headers={"Idempotency-Key": key})
    assert r1.status_code == 202, r1.text
    r2 = client.post("/v1/jobs", json={"task": "noop"}, headers={"Idempotency-Key": key})
    assert r2.status_code == 200, r2.text
    assert body_json(r1)["id"] == body_json(r2)["id"]
    assert body_json(r1)["idempotency_key"] == key
    # A different key is a different job.
    r3 = client.post("/v1/jobs", json={"task": "noop"}, headers={"Idempotency-Key": key + "-other"})
    assert r3.status_code == 202 and body_json(r3)["id"] != body_json(r1)["id"]


def test_idempotency_race_of_8_threads(server):
    key = f"race-{time.monotonic_ns()}"
    n = 8
    sessions = [server.client() for _ in range(n)]
    for s in sessions:  # connect first, so the race is on the submit itself
        assert s.get("/healthz").status_code == 200
    barrier = threading.Barrier(n)
    results = [None] * n

    def go(i):
        barrier.wait()
        try:
            r = sessions[i].post("/v1/jobs", json={"task": "noop", "idempotency_key": key})
            results[i] = (r.status_code, r.json().get("id") if r.status_code in (200, 202) else r.text)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = ("exception", repr(e))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT)
    codes = sorted(str(r[0]) for r in results)
    assert codes == ["200"] * (n - 1) + ["202"], f"expected one 202 and seven 200: {results}"
    assert len({r[1] for r in results}) == 1, f"more than one job for one key: {results}"


# --------------------------------------------------------------------------
# list


def test_list_filters_and_pagination(make_server):
    srv = make_server(args=["--executors", "a=thread:2,b=thread:1"])
    c = srv.client()
    squares = [c.submit("square", {"n": i}, executor="a")["id"] for i in range(12)]
    fails = [c.submit("fail", {"message": f"f{i}"}, executor="a")["id"] for i in range(5)]
    noops = [c.submit("noop", executor="b")["id"] for _ in range(8)]
    everything = squares + fails + noops
    for job_id in everything:
        c.wait_job(job_id)

    def listing(**params):
        r = c.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text
        body = body_json(r)
        assert set(body) >= {"jobs", "next_cursor"}, body
        for j in body["jobs"]:
            assert_job_shape(j)
        return body

    all_ = listing()
    ids = [j["id"] for j in all_["jobs"]]
    assert sorted(ids) == sorted(everything)
    assert ids == sorted(ids, reverse=True), "list is not newest first"
    assert all_["next_cursor"] is None

    assert {j["id"] for j in listing(status="failed")["jobs"]} == set(fails)
    assert {j["id"] for j in listing(status="succeeded")["jobs"]} == set(squares + noops)
    assert {j["id"] for j in listing(status="succeeded,failed")["jobs"]} == set(everything)
    assert listing(status="queued,running")["jobs"] == []
    assert {j["id"] for j in listing(task="square")["jobs"]} == set(squares)
    assert {j["id"] for j in listing(executor="b")["jobs"]} == set(noops)
    assert {j["id"] for j in listing(executor="a", status="failed")["jobs"]} == set(fails)
    assert listing(task="echo")["jobs"] == []
    assert listing(batch="01ARZ3NDEKTSV4RRFFQ69G5FAV")["jobs"] == []

    # Keyset pages of 7: every job exactly once, newest first across pages.
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = listing(**params)
        pages += 1
        assert len(page["jobs"]) <= 7
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and pages < 10, page
    assert seen == ids, "paging did not visit every job exactly once, in order"
    assert pages in (4, 5), pages

    # Paging with a filter.
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "status": "failed"}
        if cursor:
            params["cursor"] = cursor
        page = listing(**params)
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(seen) <= len(fails)
    assert sorted(seen) == sorted(fails) and len(seen) == len(fails)

    assert len(listing(limit=1000)["jobs"]) == len(everything)
    assert len(listing(limit=1)["jobs"]) == 1

    # Totals per executor and counts by status.
    ex = {e["name"]: e for e in body_json(c.get("/v1/executors"))["executors"]}
    assert set(ex) == {"a", "b"}, ex
    assert (ex["a"]["size"], ex["b"]["size"]) == (2, 1)
    assert (ex["a"]["submitted"], ex["a"]["succeeded"], ex["a"]["failed"], ex["a"]["cancelled"]) == (17, 12, 5, 0), ex
    assert (ex["b"]["submitted"], ex["b"]["succeeded"], ex["b"]["failed"], ex["b"]["cancelled"]) == (8, 8, 0, 0), ex
    assert ex["a"]["busy"] == 0 and ex["a"]["queued"] == 0, ex
    # The counts move in the store's callbacks, just after the commit a
    # long poll may already have seen: wait for them, with a deadline.
    want = {"scheduled": 0, "queued": 0, "running": 0, "succeeded": 20, "failed": 5, "cancelled": 0}
    wait_for(lambda: body_json(c.get("/v1/stats"))["counts"] == want, 5, message=f"/v1/stats counts {want}")


def test_list_default_limit_is_50(client):
    for _ in range(55):
        client.submit("noop")
    page = body_json(client.get("/v1/jobs"))
    assert len(page["jobs"]) == 50
    assert isinstance(page["next_cursor"], str)


@pytest.mark.parametrize("params,field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "abc"}, "limit"), ({"limit": -3}, "limit"),
    ({"status": "bogus"}, "status"), ({"status": "queued,bogus"}, "status"),
    ({"foo": "1"}, "foo"),
])
def test_list_bad_parameters(client, params, field):
    assert_error(client.get("/v1/jobs", params=params), 400, "invalid_argument", field)


# --------------------------------------------------------------------------
# tasks, executors, stats


def test_tasks(client):
    r = client.get("/v1/tasks")
    assert r.status_code == 200
    body = body_json(r)
    assert set(body) >= {"tasks"}
    tasks = {t["name"]: t for t in body["tasks"]}
    assert {"noop", "echo", "sleep", "square", "crunch", "sha256", "fail", "http_get", "exec", "crash"} <= set(tasks), \
        sorted(tasks)
    assert tasks["crunch"]["kinds"] == ["thread", "process"] and tasks["crash"]["kinds"] == ["process"]
    assert tasks["sleep"]["default_executor"] == "async" and set(tasks["exec"]["kinds"]) == {"process", "async"}
    for t in tasks.values():
        assert isinstance(t["description"], str) and t["description"], t
        assert isinstance(t["kinds"], list) and t["kinds"], t
        assert t["default_executor"] in t["kinds"], t
        assert set(t["kinds"]) <= {"thread", "process", "async"}, t
        assert "default_executor" in t and (t["default_executor"] is None or isinstance(t["default_executor"], str))


def test_executors_default(client):
    before = {e["name"]: e for e in body_json(client.get("/v1/executors"))["executors"]}
    # SPEC §5: thread=thread:2N,process=process:N,async=async:256
    assert set(before) == {"thread", "process", "async"}, before
    assert before["process"]["kind"] == "process" and before["process"]["size"] == NCORES
    assert before["async"]["kind"] == "async" and before["async"]["size"] == 256
    e = before["thread"]
    assert e["kind"] == "thread"
    assert e["size"] == 2 * NCORES
    for k in ("size", "busy", "queued", "max_queued", "submitted", "succeeded", "failed", "cancelled"):
        assert isinstance(e[k], int) and not isinstance(e[k], bool) and e[k] >= 0, (k, e)
    assert e["max_queued"] >= 1
    job = client.submit("square", {"n": 1})
    client.wait_job(job["id"])
    after = {x["name"]: x for x in body_json(client.get("/v1/executors"))["executors"]}["thread"]
    assert after["submitted"] >= e["submitted"] + 1
    assert after["succeeded"] >= e["succeeded"] + 1


def test_stats_shape(client):
    client.wait_job(client.submit("noop")["id"])
    r = client.get("/v1/stats")
    assert r.status_code == 200
    s = body_json(r)
    assert set(s["counts"]) == STATUSES, s
    for k, v in s["counts"].items():
        assert isinstance(v, int) and v >= 0, s
    wait_for(lambda: body_json(client.get("/v1/stats"))["counts"]["succeeded"] >= 1, 5, message="a success counted")
    num = (int, float)
    assert isinstance(s["throughput_per_s"], num) and s["throughput_per_s"] >= 0, s
    for k in ("queue_wait_ms", "run_time_ms"):
        assert isinstance(s[k]["p50"], num) and isinstance(s[k]["p95"], num), s
        assert 0 <= s[k]["p50"] <= s[k]["p95"], s


# --------------------------------------------------------------------------
# queue full


def test_queue_full_is_429_with_retry_after(make_server):
    srv = make_server(args=["--executors", "t=thread:1", "--max-queued", "3"])
    c = srv.client()
    ex = body_json(c.get("/v1/executors"))["executors"]
    assert ex[0]["name"] == "t" and ex[0]["max_queued"] == 3, ex
    blocker = c.submit("sleep", {"seconds": 30})
    c.wait_running(blocker["id"])
    accepted, refused = [], None
    for _ in range(10):
        r = c.post("/v1/jobs", json={"task": "noop"})
        if r.status_code == 202:
            accepted.append(r.json()["id"])
            continue
        refused = r
        break
    assert refused is not None, "never got 429 with --max-queued 3"
    assert_error(refused, 429, "queue_full")
    retry_after = refused.headers.get("Retry-After")
    assert retry_after is not None and retry_after.strip().isdigit(), f"Retry-After: {retry_after!r}"
    assert len(accepted) == 3, f"accepted {len(accepted)} queued jobs with --max-queued 3"
    ex = body_json(c.get("/v1/executors"))["executors"][0]
    assert (ex["busy"], ex["queued"]) == (1, 3), ex
    counts = body_json(c.get("/v1/stats"))["counts"]
    assert (counts["running"], counts["queued"]) == (1, 3), counts
    # Still full, and nothing half-written: the refused job does not exist.
    assert_error(c.post("/v1/jobs", json={"task": "noop"}), 429, "queue_full")
    total = len(body_json(c.get("/v1/jobs", params={"limit": 1000}))["jobs"])
    assert total == 4, total

    # Free the worker: the queue drains and submits work again.
    assert c.cancel(blocker["id"]).status_code == 200
    for job_id in accepted:
        assert c.wait_job(job_id)["status"] == "succeeded"
    # Scheduled jobs count too.
    delayed = [c.submit("noop", delay=60)["id"] for _ in range(3)]
    assert_error(c.post("/v1/jobs", json={"task": "noop"}), 429, "queue_full")
    assert_error(c.post("/v1/jobs", json={"task": "noop", "delay": 60}), 429, "queue_full")
    for job_id in delayed:
        assert c.cancel(job_id).status_code == 200
    c.wait_job(c.submit("noop")["id"])


# --------------------------------------------------------------------------
# auth


def test_token_guards_v1_but_not_health(make_server):
    srv = make_server(token="s3cret-token")
    anon = srv.client(token=None)
    wrong = srv.client(token="wrong-token")
    good = srv.client()

    job = good.submit("noop")
    routes = [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{job['id']}"),
              ("POST", f"/v1/jobs/{job['id']}/cancel"), ("POST", f"/v1/jobs/{job['id']}/retry"),
              ("DELETE", f"/v1/jobs/{job['id']}"), ("GET", "/v1/tasks"), ("GET", "/v1/executors"),
              ("GET", "/v1/stats")]
    for method, path in routes:
        kwargs = {"json": {"task": "noop"}} if (method, path) == ("POST", "/v1/jobs") else {}
        assert_error(anon.request(method, path, **kwargs), 401, "unauthorized")
        assert_error(wrong.request(method, path, **kwargs), 401, "unauthorized")
    r = anon.get("/v1/jobs", headers={"Authorization": "s3cret-token"})
    assert_error(r, 401, "unauthorized")
    r = anon.get("/v1/jobs", headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})
    assert_error(r, 401, "unauthorized")
    r = anon.get("/v1/jobs", headers={"Authorization": "Bearer s3cret-token-and-more"})
    assert_error(r, 401, "unauthorized")

    # Nothing was submitted by the refused POSTs.
    listed = body_json(good.get("/v1/jobs"))["jobs"]
    assert [j["id"] for j in listed] == [job["id"]], listed

    assert anon.get("/healthz").status_code == 200
    assert anon.get("/readyz").status_code == 200
    assert good.get("/v1/tasks").status_code == 200
    assert good.wait_job(job["id"])["status"] == "succeeded"


# --------------------------------------------------------------------------
# many waiters


def test_200_concurrent_long_polls_return_when_their_jobs_end(make_server):
    n_jobs, per_job = 40, 5
    srv = make_server(args=["--executors", f"t=thread:{n_jobs}"])
    c = srv.client()
    # Long enough (scaled) that most polls are sent while their job runs: the
    # 40 submits, their starts and the 200 threads all come first.
    jobs = [c.submit("sleep", {"seconds": scaled(3)})["id"] for _ in range(n_jobs)]
    for job_id in jobs:
        c.wait_running(job_id)

    n = n_jobs * per_job
    barrier = threading.Barrier(n + 1)
    results = [None] * n

    def poll(i):
        job_id = jobs[i % n_jobs]
        s = srv.client()
        try:
            barrier.wait(scaled(30))
            sent = datetime.now(timezone.utc)
            r = s.get(f"/v1/jobs/{job_id}", params={"wait": scaled(60)}, timeout=REQUEST_TIMEOUT + scaled(60))
            got = datetime.now(timezone.utc)
            results[i] = (r.status_code, r.json() if r.status_code == 200 else r.text, sent, got)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = ("exception", repr(e), None, None)
        finally:
            s.close()

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait(scaled(30))
    t0 = time.monotonic()
    for t in threads:
        t.join(max(0.1, scaled(60) - (time.monotonic() - t0)))
    stuck = sum(t.is_alive() for t in threads)
    assert stuck == 0, f"{stuck} of {n} long polls had not returned after {scaled(60):.0f}s"
    bad = [r for r in results if r[0] != 200 or r[1]["status"] != "succeeded"]
    assert not bad, f"{len(bad)} of {n} long polls did not return the succeeded job: {bad[:5]}"
    # Each returned promptly after its job ended, not at the wait deadline.
    late = []
    waited_on_running = 0
    for code, job, sent, got in results:
        finished = parse_ts(job["finished_at"])
        if sent < finished:
            waited_on_running += 1
        if (got - finished).total_seconds() > scaled(3):
            late.append((job["id"], job["finished_at"], got.isoformat()))
    assert not late, f"{len(late)} long polls returned more than {scaled(3):.0f}s after their job ended: {late[:5]}"
    assert waited_on_running >= n // 2, f"only {waited_on_running} polls were sent before their job ended"


# --------------------------------------------------------------------------
# shutdown


def test_sigterm_exits_0_with_a_running_job(make_server):
    # A grace ten times the job's length (scaled): the 0.5 s job ends well
    # within it even on a slow, loaded machine.
    grace = int(scaled(5))
    srv = make_server(args=["--executors", "t=thread:2"], grace=grace)
    c = srv.client()
    job = c.submit("sleep", {"seconds": 0.5})
    c.wait_running(job["id"])
    t0 = time.monotonic()
    code = srv.stop()
    assert code == 0, f"exit status {code}\n{srv.stderr_text()}"
    assert time.monotonic() - t0 < scaled(15)
    # It finished within the grace period, and that was recorded.
    srv.start()
    done = srv.client().job(job["id"])
    assert done["status"] == "succeeded", done


def test_sigterm_with_a_long_poll_and_a_job_longer_than_the_grace(make_server):
    srv = make_server(args=["--executors", "t=thread:2"])  # --grace 2
    c = srv.client()
    job = c.submit("sleep", {"seconds": 60})
    c.wait_running(job["id"])
    outcome = {}

    def long_poll():
        try:
            r = srv.client().get(f"/v1/jobs/{job['id']}", params={"wait": scaled(120)},
                                 timeout=REQUEST_TIMEOUT + scaled(120))
            outcome["reply"] = r.status_code
        except requests.RequestException as e:
            outcome["reply"] = repr(e)
        outcome["at"] = time.monotonic()

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    wait_for(lambda: poller.is_alive(), 5, message="the long poll to start")
    t0 = time.monotonic()
    code = srv.stop()
    elapsed = time.monotonic() - t0
    assert code == 0, f"exit status {code}\n{srv.stderr_text()}"
    assert elapsed < scaled(15), f"took {elapsed:.1f}s to exit with --grace 2"
    poller.join(scaled(10))
    assert not poller.is_alive(), "the long poll hung after the server exited"
    # The acknowledged job is not lost.
    srv.start()
    got = srv.client().job(job["id"])
    assert got["task"] == "sleep" and got["args"] == {"seconds": 60}, got
    cancel_quietly(srv.client(), job["id"])


def test_duplicate_top_level_field_is_refused(client):
    """Regression: {"task":"noop","task":"echo"} was accepted with the first value winning."""
    r = client.post("/v1/jobs", data=b'{"task": "noop", "task": "echo"}',
                    headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_argument", "task")


def test_run_at_beyond_a_year_is_refused(client):
    """Regression: run_at in year 9999 was accepted while delay is capped at 366 days."""
    assert_error(client.post("/v1/jobs", json={"task": "noop", "run_at": "9999-12-31T23:59:59.999Z"}),
                 400, "invalid_argument", "run_at")
    soon = rfc3339(datetime.now(timezone.utc) + timedelta(days=30))
    job = client.submit("noop", run_at=soon)
    assert job["status"] == "scheduled"
    assert client.cancel(job["id"]).status_code == 200


def test_large_headers_fit_and_oversized_ones_are_refused_cleanly(server):
    """The per-connection pool is 16 KiB (it is zeroed per request, so its size
    costs CPU on every request): 8 KiB of headers must still be served, and
    48 KiB must be refused with 431 (libmicrohttpd's own reply: 0.9.75 offers no
    hook for its body, so it is HTML, not our JSON error) while the server keeps
    serving everyone else."""
    c = server.client()
    r = c.get("/healthz", headers={"X-Big": "a" * 8192})
    assert r.status_code == 200, r.text
    job = c.submit("square", {"n": 4}, )
    r = c.request("GET", f"/v1/jobs/{job['id']}", headers={"X-Big": "b" * 8192})
    assert r.status_code == 200 and body_json(r)["id"] == job["id"]
    s = socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"c" * 48 * 1024 + b"\r\n\r\n")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    finally:
        s.close()
    assert server.client().get("/healthz").status_code == 200
