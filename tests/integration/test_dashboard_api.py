"""What the dashboard reads (issue #5), black-box: the search text of
GET /v1/jobs (`q`), the `workers` of GET /v1/executors and the `history` of
GET /v1/stats.

Each test starts its own server (make_server), so the jobs a search or a
count sees are exactly the ones the test made. Running jobs are held with a
long `sleep` and cancelled at the end; every wait is a condition with a
deadline.
"""

from datetime import datetime, timedelta, timezone

from conftest import assert_error, body_json, parse_ts, scaled, wait_for

EXECUTORS = ["--executors", "thread=thread:2,process=process:1,async=async:4"]


def search(client, q, **params):
    """Every page of GET /v1/jobs?q=..., newest first; returns the ids."""
    ids, cursor = [], None
    for _ in range(100):
        p = {"q": q, **params}
        if cursor:
            p["cursor"] = cursor
        r = client.get("/v1/jobs", params=p)
        assert r.status_code == 200, r.text
        page = body_json(r)
        ids += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids == sorted(ids, reverse=True), "not newest first"
    assert len(set(ids)) == len(ids), "a job on two pages"
    return ids


def ended(client, job):
    return client.wait_job(job["id"])


def test_q_finds_jobs_by_id_args_result_and_error_text(make_server):
    c = make_server(EXECUTORS).client()
    by_args = ended(c, c.submit("echo", {"note": "Marmalade-77"}))
    by_result = ended(c, c.submit("sleep", {"seconds": 0.01}, executor="thread"))
    by_error = ended(c, c.submit("sleep", {"seconds": 30}, executor="thread", timeout=0.05))
    other = ended(c, c.submit("square", {"n": 3}))
    assert by_error["status"] == "failed" and by_error["error"]["type"] == "timeout"

    assert search(c, "marmalade-77") == [by_args["id"]]  # ASCII case-insensitive, in args (and result)
    assert search(c, "MARMALADE") == [by_args["id"]]
    assert search(c, "slept") == [by_result["id"]]  # only its result says so
    assert search(c, "timed out") == [by_error["id"]]  # only its error message says so
    assert search(c, other["id"]) == [other["id"]]  # the id itself
    assert search(c, "no job says this") == []


def test_q_combines_with_status_and_pages_with_the_cursor(make_server):
    c = make_server(EXECUTORS).client()
    ok = [ended(c, c.submit("echo", {"tag": f"zebra-{i}"}))["id"] for i in range(5)]
    bad = [ended(c, c.submit("fail", {"message": f"zebra {i} fell"}))["id"] for i in range(2)]
    ended(c, c.submit("echo", {"tag": "giraffe"}))

    assert search(c, "zebra", limit=2) == sorted(ok + bad, reverse=True)
    assert search(c, "zebra", status="failed") == sorted(bad, reverse=True)
    assert search(c, "zebra", status="succeeded,failed", limit=3) == sorted(ok + bad, reverse=True)
    assert search(c, "zebra", task="fail", limit=1) == sorted(bad, reverse=True)
    assert search(c, "zebra", status="running") == []
    assert search(c, "giraffe", status="succeeded") != []


def test_q_takes_percent_underscore_and_backslash_literally(make_server):
    c = make_server(EXECUTORS).client()
    pct = ended(c, c.submit("echo", {"t": "50%off"}))["id"]
    ended(c, c.submit("echo", {"t": "50xoff"}))
    und = ended(c, c.submit("echo", {"t": "a_b"}))["id"]
    ended(c, c.submit("echo", {"t": "aXb"}))
    bsl = ended(c, c.submit("echo", {"t": "c\\d"}))["id"]  # its JSON text holds c\\d

    assert search(c, "50%off") == [pct]
    assert search(c, "%") == [pct]
    assert search(c, "a_b") == [und]
    assert search(c, "_") == [und]
    assert search(c, "\\") == [bsl]
    assert search(c, "' OR 1=1 --") == []


def test_q_is_validated(make_server):
    c = make_server(EXECUTORS).client()
    assert_error(c.get("/v1/jobs", params={"q": ""}), 400, "invalid_argument", "q")
    assert_error(c.get("/v1/jobs", params={"q": "x" * 201}), 400, "invalid_argument", "q")
    assert_error(c.get("/v1/jobs?q=%FF%FE"), 400, "invalid_argument", "q")  # not UTF-8
    assert c.get("/v1/jobs", params={"q": "x" * 200}).status_code == 200
    assert c.get("/v1/jobs", params={"q": "żółw 🐢"}).status_code == 200


def executors(c):
    r = c.get("/v1/executors")
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in body_json(r)["executors"]}


def test_workers_show_a_running_sleep_on_each_executor_kind(make_server):
    srv = make_server(EXECUTORS)
    c = srv.client()
    idle = executors(c)
    assert [w["slot"] for w in idle["thread"]["workers"]] == [0, 1]
    assert all(w["job_id"] is None and w["task"] is None and w["started_at"] is None
               for w in idle["thread"]["workers"] + idle["process"]["workers"])
    assert all(w["pid"] == srv.proc.pid for w in idle["thread"]["workers"])
    assert [w["thread"] for w in idle["thread"]["workers"]] == ["thread-0", "thread-1"]
    assert len(idle["process"]["workers"]) == 1
    assert idle["async"]["workers"] == []  # one entry per running job

    jobs = {name: c.submit("sleep", {"seconds": 30}, executor=name) for name in ("thread", "process", "async")}
    try:
        for name, job in jobs.items():
            running = c.wait_running(job["id"])
            assert running["status"] == "running", running
            ex = executors(c)[name]
            mine = [w for w in ex["workers"] if w["job_id"] == job["id"]]
            assert len(mine) == 1, f"{name}: {ex['workers']!r}"
            w = mine[0]
            assert w["task"] == "sleep"
            assert w["pid"] == running["worker"]["pid"] and w["thread"] == running["worker"]["thread"]
            assert parse_ts(w["started_at"]) == parse_ts(running["started_at"])
            if name == "process":
                assert w["pid"] not in (0, srv.proc.pid)
            else:
                assert w["pid"] == srv.proc.pid
        assert len(executors(c)["async"]["workers"]) == 1
    finally:
        for job in jobs.values():
            c.cancel(job["id"])
    for job in jobs.values():
        assert c.wait_job(job["id"])["status"] == "cancelled"

    def all_idle():
        ex = executors(c)
        return (ex["async"]["workers"] == [] and
                all(w["job_id"] is None for w in ex["thread"]["workers"] + ex["process"]["workers"]) and
                all(w["pid"] > 0 for w in ex["process"]["workers"]))  # the killed worker was replaced
    wait_for(all_idle, 10, message="every worker idle again")


def test_history_counts_finished_jobs_by_status_in_the_current_bucket(make_server):
    c = make_server(EXECUTORS).client()
    before = datetime.now(timezone.utc)
    for _ in range(3):
        ended(c, c.submit("noop"))
    for _ in range(2):
        ended(c, c.submit("fail"))
    later = c.submit("noop", delay=60)
    assert c.cancel(later["id"]).status_code == 200
    assert c.wait_job(later["id"])["status"] == "cancelled"
    after = datetime.now(timezone.utc)

    r = c.get("/v1/stats")
    assert r.status_code == 200, r.text
    h = body_json(r)["history"]
    assert h["interval_s"] == 10
    pts = h["points"]
    assert len(pts) == 60
    starts = [parse_ts(p["at"]) for p in pts]
    assert all(b - a == timedelta(seconds=10) for a, b in zip(starts, starts[1:])), "10 s apart, oldest first"
    assert all(s.timestamp() % 10 == 0 for s in starts), "aligned on the wall clock"
    now = datetime.now(timezone.utc)
    assert starts[-1] <= now < starts[-1] + timedelta(seconds=10 + scaled(0.5)), "the last bucket is now's"

    # The jobs finished between `before` and `after`: in the current bucket, or
    # the one before it when a boundary fell in between.
    recent = [p for p, s in zip(pts, starts) if s + timedelta(seconds=10) > before and s <= after]
    assert 1 <= len(recent) <= 2
    assert sum(p["succeeded"] for p in recent) == 3
    assert sum(p["failed"] for p in recent) == 2
    assert sum(p["cancelled"] for p in recent) == 1
    assert sum(p["succeeded"] + p["failed"] + p["cancelled"] for p in pts) == 6, "nothing else finished"
    for p in pts:
        for key in ("queue_wait_ms", "run_time_ms"):
            q = p[key]
            assert isinstance(q["p50"], (int, float)) and isinstance(q["p95"], (int, float))
            assert 0 <= q["p50"] <= q["p95"]
        if p["succeeded"] + p["failed"] + p["cancelled"] == 0:
            assert p["queue_wait_ms"] == {"p50": 0, "p95": 0} and p["run_time_ms"] == {"p50": 0, "p95": 0}
