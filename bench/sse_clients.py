#!/usr/bin/env python3
"""GET /v1/events with many open clients: memory, threads, fan-out time.

Starts jobd (build/jobd, or JOBD_BIN) on 127.0.0.1:0 with a temporary
database, reads VmRSS and Threads from /proc/PID/status, opens N SSE
streams (raw sockets), reads them again once every stream has its headers,
then submits one job and times how long its first event takes to reach
every client (submit -> last client got it), several rounds.

    bench/sse_clients.py [--clients 1000] [--rounds 5]
"""

import argparse
import json
import os
import re
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status_of(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = v.strip()
    return out


def start(binary, workdir, extra):
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--db", os.path.join(workdir, "jobd.db"),
                             "--log-level", "warn", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = None
    deadline = time.monotonic() + 15
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    if port is None:
        proc.kill()
        sys.exit("jobd did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, port


def submit(port, spec):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/jobs", data=json.dumps(spec).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    binary = os.environ.get("JOBD_BIN", os.path.join(ROOT, "build", "jobd"))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(binary, tmp, [])
        try:
            time.sleep(0.5)  # let start-up settle before the baseline reading
            before = status_of(proc.pid)
            socks = []
            t0 = time.monotonic()
            for _ in range(args.clients):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                socks.append(s)
            bufs = {s.fileno(): b"" for s in socks}
            by_fd = {s.fileno(): s for s in socks}
            waiting = set(bufs)
            while waiting:
                r, _, _ = select.select([by_fd[f] for f in waiting], [], [], 10)
                if not r:
                    sys.exit(f"{len(waiting)} clients got no headers")
                for s in r:
                    bufs[s.fileno()] += s.recv(65536)
                    if b"\r\n\r\n" in bufs[s.fileno()]:
                        waiting.discard(s.fileno())
            t_open = time.monotonic() - t0
            time.sleep(0.5)
            after = status_of(proc.pid)
            fanout = []
            for _ in range(args.rounds):
                for f in bufs:
                    bufs[f] = b""
                job = submit(port, {"task": "noop"})
                t1 = time.monotonic()
                marker = job["id"].encode()
                waiting = set(bufs)
                while waiting:
                    r, _, _ = select.select([by_fd[f] for f in waiting], [], [], 10)
                    if not r:
                        sys.exit(f"{len(waiting)} clients did not get the event")
                    for s in r:
                        bufs[s.fileno()] += s.recv(65536)
                        if marker in bufs[s.fileno()]:
                            waiting.discard(s.fileno())
                fanout.append((time.monotonic() - t1) * 1000)
                time.sleep(0.2)  # let every stream go idle (suspended) again
            during = status_of(proc.pid)
            print(f"clients: {args.clients} (all opened and got headers in {t_open * 1000:.0f} ms)")
            print(f"jobd before:  VmRSS {before['VmRSS']}, Threads {before['Threads']}")
            print(f"jobd open:    VmRSS {after['VmRSS']}, Threads {after['Threads']}")
            print(f"jobd after {args.rounds} events: VmRSS {during['VmRSS']}, Threads {during['Threads']}")
            print("fan-out, submit -> event at the last of %d clients (ms): %s (median %.1f)" % (
                args.clients, ", ".join(f"{x:.1f}" for x in fanout), sorted(fanout)[len(fanout) // 2]))
            for s in socks:
                s.close()
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
