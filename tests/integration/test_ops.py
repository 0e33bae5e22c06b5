"""Operations: authentication at start-up and over HTTP (SPEC §3), graceful
shutdown on SIGTERM for thread and process executors (SPEC §5), retention of
finished jobs under load (SPEC §6), and the logs (JSON lines, access log).

Every wait has a deadline (wait_for, long polls, proc.wait(timeout)); the one
fixed duration is the retention test's load, which is the thing measured.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import requests

from conftest import (JOBD_BIN, REQUEST_TIMEOUT, START_TIMEOUT, STOP_TIMEOUT, TERMINAL, Client, assert_error,
                      body_json, run_jobd, scaled, wait_for)

ANY_LISTEN_RE = re.compile(r"listening on http://(?:\[[^\]]+\]|[^:/]+):(\d+)")


# --------------------------------------------------------------------------
# helpers


class RawServer:
    """jobd started with exactly the given arguments (no --listen added), for
    the listen addresses conftest.Server does not speak to. Reached through
    127.0.0.1 on the port it logs."""

    def __init__(self, args, env=None, cwd=None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
        full_env.update(env or {})
        self.lines = []
        self.port = None
        self.proc = subprocess.Popen([str(JOBD_BIN), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=full_env, cwd=cwd)
        found = threading.Event()

        def reader():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                m = ANY_LISTEN_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        self._reader = threading.Thread(target=reader, daemon=True)
        self._reader.start()
        if not found.wait(START_TIMEOUT) or self.port is None:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"jobd {args} did not start (exit {self.proc.returncode}):\n" + "\n".join(self.lines))
        self.base_url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_TIMEOUT)
        self._reader.join(5)
        return code

    def text(self):
        return "\n".join(self.lines)


def db_files_size(db):
    """Bytes of the database and its WAL."""
    return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))


def list_ids(client, statuses):
    """Ids of every job with one of `statuses`, through keyset pagination."""
    ids, cursor = [], None
    while True:
        params = {"status": ",".join(statuses), "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text[:300]
        page = body_json(r)
        ids += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def counts(client):
    r = client.get("/v1/stats")
    assert r.status_code == 200, r.text[:300]
    return body_json(r)["counts"]


EXECUTORS = {"thread": "t=thread:2", "process": "p=process:2"}


# --------------------------------------------------------------------------
# authentication


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "10.255.255.1:0"])
def test_non_loopback_listen_without_token_refuses_to_start(tmp_path, listen):
    code, out, err = run_jobd(["--listen", listen, "--db", str(tmp_path / "jobd.db")], cwd=tmp_path)
    assert code == 2, f"expected exit status 2, got {code}\nstderr: {err}"
    for word in ("--listen", "--token", "--token-file", "JOBD_TOKEN", "--insecure-no-auth"):
        assert word in err, f"the refusal should mention {word}: {err!r}"
    assert not (tmp_path / "jobd.db").exists(), "refused, yet it created a database"


def test_non_loopback_from_environment_is_refused_too(tmp_path):
    code, _, err = run_jobd(["--db", str(tmp_path / "jobd.db")], env={"JOBD_LISTEN": "0.0.0.0:0"}, cwd=tmp_path)
    assert code == 2 and "--insecure-no-auth" in err, (code, err)


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_insecure_no_auth_starts_and_warns(tmp_path, how):
    args = ["--listen", "0.0.0.0:0", "--db", str(tmp_path / "jobd.db"), "--executors", "t=thread:1"]
    env = {}
    if how == "flag":
        args.append("--insecure-no-auth")
    elif how == "env":
        env["JOBD_INSECURE_NO_AUTH"] = "1"
    else:
        cfg = tmp_path / "jobd.json"
        cfg.write_text(json.dumps({"insecure_no_auth": True}))
        args += ["--config", str(cfg)]
    srv = RawServer(args, env=env, cwd=tmp_path)
    try:
        warn = [l for l in srv.lines if "no token" in l and "0.0.0.0" in l]
        assert warn and ("warn" in warn[0].lower()), f"expected a warning about serving without a token:\n{srv.text()}"
        r = requests.post(srv.base_url + "/v1/jobs", json={"task": "noop"}, timeout=REQUEST_TIMEOUT)
        assert r.status_code == 202, r.text  # no token needed: the operator said so
    finally:
        assert srv.stop() == 0, srv.text()


def test_loopback_without_token_says_so(make_server):
    srv = make_server(args=["--executors", "t=thread:1"])
    assert any("loopback only" in l for l in srv.stderr_lines), srv.stderr_text()


def test_token_wrong_right_and_health_open(make_server):
    srv = make_server(token="right-token", args=["--executors", "t=thread:1"])
    anon, wrong, good = srv.client(token=None), srv.client(token="wrong-token"), srv.client()
    for c in (anon, wrong):
        assert_error(c.get("/v1/jobs"), 401, "unauthorized")
        assert_error(c.post("/v1/jobs", json={"task": "noop"}), 401, "unauthorized")
        assert_error(c.get("/v1/stats"), 401, "unauthorized")
        assert_error(c.get("/metrics"), 401, "unauthorized")
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
    r = wrong.get("/v1/stats")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
    assert good.get("/v1/jobs").status_code == 200
    assert good.get("/metrics").status_code == 200
    job = good.submit("noop")
    assert good.wait_job(job["id"])["status"] == "succeeded"
    # the refused requests created nothing
    assert list_ids(good, ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]) == [job["id"]]


def test_token_file_and_a_non_loopback_listen(tmp_path):
    tf = tmp_path / "token"
    tf.write_text("from-a-file\n")
    srv = RawServer(["--listen", "0.0.0.0:0", "--db", str(tmp_path / "jobd.db"), "--token-file", str(tf),
                     "--executors", "t=thread:1"], cwd=tmp_path)
    try:
        assert not any("no token" in l for l in srv.lines), srv.text()
        r = requests.get(srv.base_url + "/v1/tasks", timeout=REQUEST_TIMEOUT)
        assert_error(r, 401, "unauthorized")
        r = requests.get(srv.base_url + "/v1/tasks", headers={"Authorization": "Bearer from-a-file"},
                         timeout=REQUEST_TIMEOUT)
        assert r.status_code == 200, r.text
        assert "from-a-file" not in srv.text(), "the token must never be logged"
    finally:
        assert srv.stop() == 0, srv.text()


# --------------------------------------------------------------------------
# graceful shutdown


def sigterm(srv):
    srv.expected_exit = True
    srv.proc.send_signal(signal.SIGTERM)


def wait_exit(srv, timeout):
    try:
        code = srv.proc.wait(scaled(timeout))
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait()
        pytest.fail(f"jobd did not exit within {scaled(timeout):.0f}s\nstderr:\n{srv.stderr_text()}")
    srv._join_reader()
    return code


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_sigterm_lets_a_running_job_finish_within_grace(make_server, kind):
    srv = make_server(args=["--executors", EXECUTORS[kind]], grace=10)
    c = srv.client()
    ex = EXECUTORS[kind].split("=")[0]
    job = c.submit("sleep", {"seconds": 3}, executor=ex)
    c.wait_running(job["id"])
    t0 = time.monotonic()
    sigterm(srv)
    # While it drains: not ready, and no new work accepted.
    probe = Client(srv.base_url)
    wait_for(lambda: probe.get("/readyz").status_code == 503, 2, message="/readyz to turn 503 while draining")
    assert_error(probe.post("/v1/jobs", json={"task": "noop"}), 503, "unavailable")
    assert probe.get("/healthz").status_code == 200  # alive, just not ready
    assert probe.job(job["id"])["status"] == "running"
    probe.close()
    code = wait_exit(srv, 15)
    assert code == 0, f"exit status {code}\n{srv.stderr_text()}"
    assert time.monotonic() - t0 < scaled(9), "waited for the whole grace instead of the job"
    assert any("stopped cleanly" in l for l in srv.stderr_lines), srv.stderr_text()

    srv.start()
    done = srv.client().job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1 and done["result"] == {"slept": 3}, done


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_sigterm_past_grace_requeues_without_counting_the_attempt(make_server, kind):
    srv = make_server(args=["--executors", EXECUTORS[kind]], grace=1)
    c = srv.client()
    ex = EXECUTORS[kind].split("=")[0]
    job = c.submit("sleep", {"seconds": 30}, executor=ex)  # max_attempts 1: no attempt to spare
    assert c.wait_running(job["id"])["attempt"] == 1
    t0 = time.monotonic()
    sigterm(srv)
    code = wait_exit(srv, 10)
    assert code == 0, f"exit status {code}\n{srv.stderr_text()}"
    assert time.monotonic() - t0 < scaled(8)
    assert any("stopped cleanly" in l for l in srv.stderr_lines), srv.stderr_text()

    srv.start()
    c = srv.client()
    again = c.job(job["id"])
    assert again["status"] in ("queued", "running"), f"not re-queued: {again}"
    assert again["error"] is None, again
    again = c.wait_running(job["id"])
    assert again["status"] == "running" and again["attempt"] == 1, f"the stopped attempt was counted: {again}"
    r = c.cancel(job["id"])
    assert r.status_code == 200, r.text
    assert c.wait_job(job["id"])["status"] == "cancelled"


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_second_sigterm_exits_at_once_and_the_database_is_intact(make_server, kind):
    srv = make_server(args=["--executors", EXECUTORS[kind]], grace=30)
    c = srv.client()
    ex = EXECUTORS[kind].split("=")[0]
    finished = [c.submit("square", {"n": i}, executor=ex) for i in range(20)]
    for j in finished:
        c.wait_job(j["id"])
    running = c.submit("sleep", {"seconds": 30}, executor=ex, max_attempts=2)
    c.wait_running(running["id"])
    sigterm(srv)
    wait_for(lambda: any("draining" in l for l in srv.stderr_lines), 5, message="the drain to begin")
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = wait_exit(srv, 5)
    assert code != 0, "a second signal exits without finishing the drain"
    assert time.monotonic() - t0 < scaled(3), "the second signal did not exit at once"
    assert any("second signal" in l for l in srv.stderr_lines), srv.stderr_text()

    with sqlite3.connect(srv.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    srv.start()
    c = srv.client()
    for j in finished:
        got = c.job(j["id"])
        assert got["status"] == "succeeded" and got["result"] == j["args"]["n"] ** 2, got
    again = c.wait_running(running["id"])
    assert again["status"] == "running" and again["attempt"] == 2, again  # recovered: an attempt was left
    assert c.cancel(running["id"]).status_code == 200
    assert c.wait_job(running["id"])["status"] == "cancelled"


# --------------------------------------------------------------------------
# retention


def test_retention_keeps_the_database_from_growing_under_load(make_server):
    # The event log is bounded by count, not retention: keep it small here so
    # that the database's steady state is reached within the test.
    srv = make_server(args=["--retention", "2s", "--retention-failed", "2s", "--prune-interval", "1",
                            "--event-log", "1000",
                            "--executors", "thread=thread:4"])
    load_s, warm_s, threads = 15.0, 8.0, 4
    stop = threading.Event()
    submitted = []  # (monotonic time, id), appended by the load threads
    lock = threading.Lock()
    errors = []

    def load(n):
        c = srv.client()
        i = 0
        try:
            while not stop.is_set():
                # one job in 10 fails, so both retention settings are exercised
                spec = {"task": "fail", "args": {"message": "planned"}} if i % 10 == n else {"task": "noop"}
                r = c.post("/v1/jobs", json=spec)
                if r.status_code != 202:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                with lock:
                    submitted.append((time.monotonic(), body_json(r)["id"]))
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            errors.append(repr(e))
        finally:
            c.close()

    workers = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    samples = []  # (seconds since start, bytes of db + wal)
    while time.monotonic() - t0 < load_s and not errors:
        time.sleep(1.0)  # the sampling period of the measurement, not a wait for a condition
        samples.append((round(time.monotonic() - t0, 1), db_files_size(srv.db)))
    stop.set()
    # The newest jobs (submitted in the last half second, at most 30) are
    # still there: checked at once, before anything else, as the retention
    # (2 s, unscaled: it is what the load is measured against) runs on.
    c = srv.client()
    with lock:
        now = time.monotonic()
        newest = [i for t, i in submitted if t >= now - 0.5][-30:] or [i for _, i in submitted[-1:]]
    for i in newest:
        assert c.get(f"/v1/jobs/{i}").status_code == 200, "a job younger than the retention was deleted"
    for w in workers:
        w.join(REQUEST_TIMEOUT)
    assert not errors, errors[:3]
    series = ", ".join(f"{t:.0f}s={b / 1024:.0f}K" for t, b in samples)
    print(f"\nretention: {len(submitted)} jobs in {load_s:.0f}s; db+wal: {series}")

    at_warm = [b for t, b in samples if t >= warm_s][0]
    last = max(b for _, b in samples[-5:])
    assert last <= 1.2 * at_warm, f"the database kept growing under load: {series}"
    assert len(submitted) > 500, f"too little load to measure anything ({len(submitted)} jobs)"

    # The oldest jobs are gone (the newest were there, above).
    oldest = [i for t, i in submitted if t - t0 < 1.0][:30]
    for i in oldest:
        assert_error(c.get(f"/v1/jobs/{i}"), 404, "not_found")

    # Counts stay true: quiet (nothing live), the terminal counts match what is stored.
    wait_for(lambda: sum(counts(c)[s] for s in ("scheduled", "queued", "running")) == 0, 10,
             message="every job to finish")
    terminal = ["succeeded", "failed", "cancelled"]
    before = counts(c)
    stored = len(list_ids(c, terminal))
    after = counts(c)
    # Pruning only deletes, and the counts drop right after each batch commits
    # (by at most one batch of 500 in between).
    assert stored <= sum(before[s] for s in terminal), (before, stored)
    assert sum(after[s] for s in terminal) <= stored + 500, (after, stored)
    # Once everything has aged out, nothing is stored and nothing is counted.
    wait_for(lambda: not list_ids(c, terminal), 10, message="every finished job to be pruned")
    wait_for(lambda: all(counts(c)[s] == 0 for s in terminal), 2, message="the counts to reach 0")
    assert any("retention: deleted" in l for l in srv.stderr_lines), srv.stderr_text()


def test_retention_zero_keeps_jobs_forever(make_server):
    srv = make_server(args=["--retention", "0", "--retention-failed", "0", "--prune-interval", "1",
                            "--executors", "t=thread:1"])
    assert any("retention: off" in l for l in srv.stderr_lines), srv.stderr_text()
    c = srv.client()
    ok, bad = c.submit("noop"), c.submit("fail", {"message": "kept"})
    c.wait_job(ok["id"])
    c.wait_job(bad["id"])
    srv.restart()  # a restart does not change that either
    c = srv.client()
    assert c.job(ok["id"])["status"] == "succeeded"
    assert c.job(bad["id"])["status"] == "failed"


def test_failed_jobs_are_kept_longer_than_succeeded(make_server):
    srv = make_server(args=["--retention", "1s", "--retention-failed", "1h", "--prune-interval", "1",
                            "--executors", "t=thread:2"])
    c = srv.client()
    ok, bad = c.submit("noop"), c.submit("fail", {"message": "kept for an hour"})
    cancelled = c.submit("noop", delay=60)
    assert c.cancel(cancelled["id"]).status_code == 200
    for j in (ok, bad, cancelled):
        c.wait_job(j["id"])
    wait_for(lambda: c.get(f"/v1/jobs/{ok['id']}").status_code == 404, 10, message="the succeeded job to go")
    assert c.job(bad["id"])["status"] == "failed"
    assert c.job(cancelled["id"])["status"] == "cancelled"
    # The retention thread takes deleted jobs off the counts once its batch
    # has committed, just after the 404 can be seen: wait for it.
    wait_for(lambda: (lambda n: (n["succeeded"], n["failed"], n["cancelled"]))(counts(c)) == (0, 1, 1), 5,
             message="counts (succeeded, failed, cancelled) == (0, 1, 1)")


@pytest.mark.parametrize("value", ["7x", "-1", "1.5h", "d", "3651d"])
def test_bad_retention_values_are_refused(tmp_path, value):
    code, _, err = run_jobd(["--retention", value, "--db", str(tmp_path / "jobd.db")], cwd=tmp_path)
    assert code == 2 and "--retention" in err, (code, err)


def test_help_lists_the_operations_settings(tmp_path):
    code, out, _ = run_jobd(["--help"], cwd=tmp_path)
    assert code == 0
    for word in ("--insecure-no-auth", "JOBD_INSECURE_NO_AUTH", "--retention ", "JOBD_RETENTION",
                 "--retention-failed", "JOBD_RETENTION_FAILED", "--prune-interval", "JOBD_PRUNE_INTERVAL", "7d", "30d"):
        assert word in out, f"--help lacks {word!r}"


# --------------------------------------------------------------------------
# logs


def test_json_log_lines_and_the_access_log(make_server):
    srv = make_server(args=["--log-format", "json", "--log-level", "debug", "--executors", "t=thread:1"])
    c = srv.client()
    job = c.submit("noop")
    c.wait_job(job["id"])
    assert c.get("/v1/jobs/01BADBADBADBADBADBADBADBAD").status_code == 404
    assert c.get("/nowhere/\u00e9t\u00e9").status_code == 404  # non-ASCII bytes in the path
    assert c.delete("/v1/stats").status_code == 405
    assert srv.stop() == 0
    records = []
    for line in srv.stderr_lines:
        try:
            rec = json.loads(line)
        except ValueError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
        assert isinstance(rec, dict) and {"ts", "level", "src", "msg"} <= set(rec), rec
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", rec["ts"]), rec
        assert rec["level"] in ("debug", "info", "warn", "error"), rec
        assert re.match(r"^[\w./-]+\.c:\d+$", rec["src"]), rec
        records.append(rec)
    msgs = [r["msg"] for r in records]
    assert any("stopped cleanly" in m for m in msgs), msgs[-5:]

    def access(method, path, status):
        pat = re.compile(rf"\b{method} {re.escape(path)}(\?\S*)? -> {status} \(\d+\.\d ms\)")
        hits = [r for r in records if pat.search(r["msg"])]
        assert hits, f"no access-log line for {method} {path} -> {status} in:\n" + "\n".join(msgs)
        assert all(r["level"] == "debug" for r in hits), hits

    access("POST", "/v1/jobs", 202)
    access("GET", f"/v1/jobs/{job['id']}", 200)
    access("GET", "/v1/jobs/01BADBADBADBADBADBADBADBAD", 404)
    access("GET", "/readyz", 200)
    access("DELETE", "/v1/stats", 405)
    access("GET", "/nowhere/%C3%A9t%C3%A9", 404)


def test_access_log_is_off_at_info(make_server):
    srv = make_server(args=["--executors", "t=thread:1"])
    c = srv.client()
    c.get("/v1/stats")
    assert srv.stop() == 0
    assert not any("GET /v1/stats ->" in l for l in srv.stderr_lines), srv.stderr_text()


def test_drain_grace_is_shared_by_every_executor(make_server):
    """Regression: executors were drained one after another, each with the
    whole grace, so shutdown took executors x grace (and a later executor kept
    starting jobs meanwhile)."""
    grace = int(scaled(3))
    srv = make_server(args=["--executors", "t=thread:1,p=process:1,a=async:4"], grace=grace)
    c = srv.client()
    jobs = [c.submit("sleep", {"seconds": 10 * grace}, executor=ex) for ex in ("t", "p", "a")]
    for j in jobs:
        c.wait_running(j["id"])
    t0 = time.monotonic()
    sigterm(srv)
    code = wait_exit(srv, 20)
    took = time.monotonic() - t0
    assert code == 0, srv.stderr_text()
    # Shared: the grace, the process executor's 0.8 s SIGTERM-to-SIGKILL, and
    # slack - and less than two graces, where one executor after another would
    # take three.
    limit = grace + 0.8 + scaled(1.5)
    assert limit < 2 * grace
    assert took < limit, f"shutdown took {took:.1f}s with --grace {grace}"
    srv.start()
    c = srv.client()
    for j in jobs:
        again = c.wait_running(j["id"])
        assert again["attempt"] == 1, again
        assert c.cancel(j["id"]).status_code == 200
        assert c.wait_job(j["id"])["status"] == "cancelled"
