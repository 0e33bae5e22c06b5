"""Durability (SPEC §2 "Delivery", §6): a job acknowledged with 202 survives
kill -9 of the server, and a job that was running when the server died is
retried on restart if attempts remain, else fails with `worker_lost`."""

import threading
import time

import requests

from conftest import REQUEST_TIMEOUT, TERMINAL, assert_job_shape, body_json, scaled, wait_for

WORKERS = 4


def all_jobs(client):
    """Every job, by id, by paging through GET /v1/jobs."""
    jobs, cursor = {}, None
    while True:
        params = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text
        page = body_json(r)
        for j in page["jobs"]:
            assert j["id"] not in jobs, f"job {j['id']} listed twice"
            jobs[j["id"]] = j
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


def spec_for(i):
    if i % 10 == 0:
        return {"task": "sleep", "args": {"seconds": 0.05}}
    if i % 2 == 0:
        return {"task": "square", "args": {"n": i}}
    return {"task": "noop"}


def test_acknowledged_jobs_survive_kill_9(make_server):
    total, n_threads, kill_after = 2000, 8, 1000
    srv = make_server(args=["--executors", f"thread=thread:{WORKERS}"])

    acked = {}  # id -> index of the spec
    lock = threading.Lock()
    next_index = [0]
    stop = threading.Event()
    errors = []
    unexpected = []

    def submitter():
        s = srv.client()
        try:
            while not stop.is_set():
                with lock:
                    i = next_index[0]
                    if i >= total:
                        return
                    next_index[0] += 1
                try:
                    r = s.post("/v1/jobs", json=spec_for(i), timeout=REQUEST_TIMEOUT)
                except requests.RequestException as e:
                    errors.append(repr(e))  # the server was killed under this request
                    return
                if r.status_code == 202:
                    with lock:
                        acked[r.json()["id"]] = i
                else:
                    unexpected.append((i, r.status_code, r.text[:200]))
        finally:
            s.close()

    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= kill_after or not any(t.is_alive() for t in threads), 60,
             message=f"{kill_after} acknowledgements")
    still_flowing = any(t.is_alive() for t in threads)
    srv.kill()
    n_acked_at_kill = len(acked)
    for t in threads:
        t.join(scaled(30))
    assert not any(t.is_alive() for t in threads), "submitters hung after kill -9"
    assert not unexpected, f"submits got other than 202 before the kill: {unexpected[:5]}"
    assert still_flowing and next_index[0] < total, "all submits were done before the kill; the test proved nothing"
    with lock:
        acked_ids = dict(acked)
    assert kill_after <= len(acked_ids) < total, len(acked_ids)
    assert len(acked_ids) >= n_acked_at_kill

    srv.start()
    c = srv.client()

    def all_terminal():
        jobs = all_jobs(c)
        missing = [i for i in acked_ids if i not in jobs]
        assert not missing, f"{len(missing)} acknowledged jobs are gone after kill -9, e.g. {missing[:5]}"
        pending = [i for i in acked_ids if jobs[i]["status"] not in TERMINAL]
        return jobs if not pending else None

    jobs = wait_for(all_terminal, 60, interval=0.2, message="every acknowledged job to finish after restart")

    lost = []
    for job_id, i in acked_ids.items():
        j = jobs[job_id]
        spec = spec_for(i)
        assert j["task"] == spec["task"] and j["args"] == spec.get("args", {}), (i, j)
        if j["status"] == "succeeded":
            # Jobs that finished before the kill are not run again; queued ones run once.
            assert j["attempt"] == 1, j
            if spec["task"] == "square":
                assert j["result"] == i * i, j
        else:
            # Only a job running at the kill (max_attempts 1) may fail, and only as worker_lost.
            assert j["status"] == "failed" and j["error"]["type"] == "worker_lost", j
            lost.append(job_id)
    print(f"acknowledged {len(acked_ids)} of {next_index[0]} sent, {len(errors)} cut by the kill, "
          f"{len(jobs)} jobs after restart, {len(lost)} worker_lost")
    assert len(lost) <= WORKERS, f"{len(lost)} jobs worker_lost, more than the {WORKERS} that could run: {lost}"

    # A few by id, in full.
    for job_id in list(acked_ids)[:: max(1, len(acked_ids) // 20)]:
        r = c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200
        assert_job_shape(body_json(r))

    # Ids stay unique and ordered across the restart.
    new = c.submit("noop")
    assert new["id"] not in jobs and new["id"] > max(jobs), (new["id"], max(jobs))


def test_running_jobs_at_kill_9_are_retried_or_worker_lost(make_server):
    srv = make_server(args=["--executors", "thread=thread:2"])
    c = srv.client()
    once = c.submit("sleep", {"seconds": 5}, max_attempts=1)
    twice = c.submit("sleep", {"seconds": 5}, max_attempts=2, retry_backoff=0.1)
    for j in (once, twice):
        assert c.wait_running(j["id"])["status"] == "running"
    srv.kill()

    t0 = time.monotonic()
    srv.start()
    c = srv.client()
    d1 = c.wait_job(once["id"], timeout=10)
    assert d1["status"] == "failed", d1
    assert d1["error"] is not None and d1["error"]["type"] == "worker_lost", d1
    assert d1["attempt"] == 1, d1
    d2 = c.wait_job(twice["id"], timeout=20)
    assert d2["status"] == "succeeded", d2
    assert d2["attempt"] == 2, d2
    assert d2["result"] == {"slept": 5}, d2
    assert time.monotonic() - t0 >= 4.9  # the retry really ran the sleep again
