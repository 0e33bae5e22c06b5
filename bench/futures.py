#!/usr/bin/env python3
"""POST /v1/wait over many jobs, against a running jobd.

    bench/futures.py PORT [JOBS]

Submits JOBS (default 1000) `sleep 0.05` jobs on the async executor as one
batch, then times POST /v1/wait ALL_COMPLETED on all of them (from the
request to the reply, jobs still running when it is sent), then the same
wait again once all are finished (the read-back cost alone). Prints one JSON
line: {"jobs", "batch_s", "wait_running_s", "wait_finished_s", "ok"}.
"""

import json
import sys
import time
import urllib.request


def post(port, path, body, timeout=120):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    t0 = time.monotonic()
    status, batch = post(port, "/v1/batches",
                         {"jobs": [{"task": "sleep", "args": {"seconds": 0.05}, "executor": "async"}] * n})
    t1 = time.monotonic()
    ids = [j["id"] for j in batch["jobs"]]
    status, res = post(port, "/v1/wait", {"ids": ids, "return_when": "ALL_COMPLETED", "timeout": 60})
    t2 = time.monotonic()
    ok = status == 200 and len(res["done"]) == n and not res["not_done"]
    status, res = post(port, "/v1/wait", {"ids": ids, "timeout": 60})
    t3 = time.monotonic()
    ok = ok and status == 200 and len(res["done"]) == n
    print(json.dumps({"jobs": n, "batch_s": t1 - t0, "wait_running_s": t2 - t1, "wait_finished_s": t3 - t2,
                      "ok": ok}))


if __name__ == "__main__":
    main()
