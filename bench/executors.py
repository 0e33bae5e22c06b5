#!/usr/bin/python3
"""Executor figures for bench/run.sh, printed as one JSON line.

  executors.py makespan PORT LOADGEN N SECONDS EXECUTOR
      N `sleep SECONDS` jobs submitted with one run_at a little in the future
      (by loadgen, 64 keep-alive connections), so that they all become eligible
      at the same moment; makespan = last finished_at - run_at (ideal: SECONDS).
  executors.py crunch PORT N ITERATIONS EXECUTOR
      N `crunch` jobs submitted at once; makespan = last finished_at - first
      created_at, read from the jobs themselves.
Loopback only.
"""
import http.client
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone


def conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=120)


def call(c, method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")


def ts(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def wait_counts(c, total, deadline):
    while time.time() < deadline:
        _, st = call(c, "GET", "/v1/stats")
        counts = st["counts"]
        done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        if done >= total:
            return counts
        time.sleep(0.02)
    return None


def all_jobs(c):
    jobs, cursor = [], None
    while True:
        path = "/v1/jobs?limit=1000" + ("&cursor=" + cursor if cursor else "")
        _, page = call(c, "GET", path)
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if not cursor:
            return jobs


def makespan(port, loadgen, n, seconds, executor):
    lead = 2.0 + n / 10000.0  # time to submit them all before run_at
    run_at = datetime.now(timezone.utc) + timedelta(seconds=lead)
    run_at_s = run_at.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (run_at.microsecond // 1000)
    body = json.dumps({"task": "sleep", "args": {"seconds": seconds}, "executor": executor, "run_at": run_at_s})
    out = subprocess.run([loadgen, "--host", "127.0.0.1", "--port", str(port), "--connections", "64",
                          "--requests", str(n), "--method", "POST", "--path", "/v1/jobs", "--body", body],
                         capture_output=True, text=True, timeout=120)
    sub = json.loads(out.stdout)
    c = conn(port)
    if time.time() > run_at.timestamp():
        return {"ok": False, "error": "submitting took longer than the lead of %.1f s" % lead, "submit": sub}
    counts = wait_counts(c, n, run_at.timestamp() + 60 + seconds)
    if counts is None:
        return {"ok": False, "error": "not all jobs finished within 60 s", "submit": sub}
    jobs = all_jobs(c)
    fin = [ts(j["finished_at"]) for j in jobs if j["finished_at"]]
    start = [ts(j["started_at"]) for j in jobs if j["started_at"]]
    threads = sorted({(j["worker"] or {}).get("thread") for j in jobs})
    return {"ok": counts["succeeded"] == n, "jobs": n, "counts": counts,
            "makespan_s": max(fin) - run_at.timestamp(), "first_start_s": min(start) - run_at.timestamp(),
            "last_start_s": max(start) - run_at.timestamp(), "threads": threads[:8], "submit": sub}


def crunch(port, n, iterations, executor):
    c = conn(port)
    ids = []
    for _ in range(n):
        status, job = call(c, "POST", "/v1/jobs", {"task": "crunch", "args": {"iterations": iterations},
                                                  "executor": executor})
        if status != 202:
            return {"ok": False, "error": "submit answered %d: %s" % (status, job)}
        ids.append(job["id"])
    jobs = []
    for i in ids:
        _, job = call(c, "GET", "/v1/jobs/%s?wait=120" % i)
        jobs.append(job)
    ok = all(j["status"] == "succeeded" for j in jobs)
    created = min(ts(j["created_at"]) for j in jobs)
    finished = max(ts(j["finished_at"]) for j in jobs if j["finished_at"])
    return {"ok": ok, "jobs": n, "iterations": iterations, "executor": executor, "makespan_s": finished - created,
            "statuses": sorted({j["status"] for j in jobs})}


if __name__ == "__main__":
    what, port = sys.argv[1], int(sys.argv[2])
    if what == "makespan":
        r = makespan(port, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    else:
        r = crunch(port, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    print(json.dumps(r))
