"""Pending jobs kept cold (--resident-jobs, docs/DESIGN.md "Memory of pending
jobs"): past the limit a queued or scheduled job waits without its record in
memory and is read back from the database when its turn comes. With a limit
of 2, on each executor kind, nothing a client sees changes: order, args,
results, cancel, restarts after SIGTERM and kill -9."""

import pytest

from conftest import body_json

KINDS = ["thread", "process", "async"]


def blocker(client):
    """A one-slot executor kept busy by a sleep, so what follows queues."""
    job = client.submit("sleep", {"seconds": 30})
    client.wait_running(job["id"])
    return job["id"]


def queued_count(client):
    r = client.get("/v1/executors")
    assert r.status_code == 200, r.text
    return {e["name"]: e["queued"] for e in body_json(r)["executors"]}["one"]


@pytest.mark.parametrize("kind", KINDS)
def test_cold_queued_jobs_keep_order_args_and_cancel(make_server, kind):
    srv = make_server(args=["--executors", f"one={kind}:1", "--resident-jobs", "2"])
    c = srv.client()
    first = blocker(c)
    prios = [(i * 7) % 5 for i in range(25)]
    ids = [c.submit("echo", {"i": i, "pad": "x" * i}, priority=p)["id"] for i, p in enumerate(prios)]
    assert queued_count(c) == 25
    assert c.cancel(ids[20]).status_code == 200  # cold: read back to be cancelled
    assert c.wait_job(ids[20])["status"] == "cancelled"
    assert c.cancel(first).status_code == 200
    jobs = [c.wait_job(i) for i in ids]
    for i, j in enumerate(jobs):
        if i == 20:
            continue
        assert j["status"] == "succeeded", j
        assert j["result"] == {"i": i, "pad": "x" * i}
        assert j["executor"] == "one" and j["attempt"] == 1
    ran = sorted((j["started_at"], -prios[i], i) for i, j in enumerate(jobs) if i != 20)
    # One slot: each started no earlier than every job that goes before it.
    for i, j in enumerate(jobs):
        for k, other in enumerate(jobs):
            if 20 in (i, k):
                continue
            if prios[i] > prios[k] or (prios[i] == prios[k] and i < k):
                assert j["started_at"] <= other["started_at"], (i, k, ran)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_cold_jobs_survive_restarts(make_server, how):
    srv = make_server(args=["--executors", "one=thread:1", "--resident-jobs", "2"])
    c = srv.client()
    first = blocker(c)
    queued = [c.submit("square", {"n": i})["id"] for i in range(20)]
    later = [c.submit("square", {"n": i}, delay=1.5)["id"] for i in range(20)]
    if how == "kill9":
        srv.kill()
    else:
        assert srv.stop() == 0
    srv.start()
    c = srv.client()
    # After SIGTERM the sleep is queued again; after kill -9 it failed (worker_lost).
    assert c.cancel(first).status_code == (200 if how == "sigterm" else 409)
    for i, jid in enumerate(queued + later):
        j = c.wait_job(jid, timeout=20)
        assert j["status"] == "succeeded" and j["result"] == (i % 20) ** 2, j
