"""Black-box integration tests of jobd: shared helpers and fixtures.

Every test talks HTTP to the real binary, started on 127.0.0.1:0 with a
temporary database (STYLE rule 13). Nothing here sleeps to hope a race
resolves: every wait is `wait_for(condition, timeout)` with a deadline, or a
server-side long poll (`GET /v1/jobs/{id}?wait=S`).

Environment:
  JOBD_BIN         the binary (default build/jobd under the repo root); the
                   sanitizer runs set build/asan/jobd or build/tsan/jobd.
  JOBD_TEST_SCALE  multiplies every deadline (default 1, or 6 when JOBD_BIN
                   names an asan/tsan build, which run several times slower).
"""

import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def _jobd_bin() -> Path:
    p = Path(os.environ.get("JOBD_BIN", "build/jobd"))
    return p if p.is_absolute() else REPO_ROOT / p


JOBD_BIN = _jobd_bin()
_sanitized = any(s in str(JOBD_BIN) for s in ("asan", "tsan"))
SCALE = float(os.environ.get("JOBD_TEST_SCALE", "6" if _sanitized else "1"))

# Deadlines, in seconds, already scaled.
START_TIMEOUT = 15 * SCALE
STOP_TIMEOUT = 15 * SCALE
REQUEST_TIMEOUT = 30 * SCALE

TERMINAL = {"succeeded", "failed", "cancelled"}
STATUSES = {"scheduled", "queued", "running", "succeeded", "failed", "cancelled"}

# Every field of the job JSON (SPEC §2), always present.
JOB_FIELDS = {
    "id", "task", "args", "executor", "status", "priority", "attempt", "max_attempts", "timeout",
    "created_at", "scheduled_at", "started_at", "finished_at", "progress", "result", "error",
    "worker", "batch_id", "depends_on", "concurrency_key", "idempotency_key", "callback_url",
    "callback_status",
}

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def scaled(seconds: float) -> float:
    return seconds * SCALE


def parse_ts(s: str) -> datetime:
    """An RFC 3339 UTC timestamp with milliseconds, as the job JSON carries them."""
    assert isinstance(s, str) and TS_RE.match(s), f"timestamp {s!r} is not RFC 3339 UTC with milliseconds"
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def wait_for(cond, timeout, interval=0.02, message="condition"):
    """Polls cond() until it returns a truthy value, which is returned; fails
    the test when `timeout` seconds (scaled) pass first."""
    deadline = time.monotonic() + scaled(timeout)
    last = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {message} (last: {last!r})")
        time.sleep(interval)


ANY = object()  # assert_error(field=ANY): no particular field expected

# Codes that are about the request as a whole, never one value in it: their
# `field` must be absent or null.
NO_FIELD_CODES = {"unauthorized", "not_found", "method_not_allowed", "conflict", "payload_too_large",
                  "unsupported_media_type", "queue_full"}


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps no access log."""

    def log_message(self, *args):
        pass


class LocalHTTPServer:
    """A threading HTTP server on 127.0.0.1 and a kernel-chosen port, served
    from a daemon thread, for tasks and webhooks to talk to. A client that
    went away (a jobd killed mid-request) costs no traceback."""

    def __init__(self, handler):
        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def body_json(resp):
    """The JSON body of a response, after checking it says it is JSON."""
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), (
        f"{resp.request.method} {resp.url} -> {resp.status_code} with Content-Type {ctype!r}: {resp.text[:300]!r}")
    try:
        return resp.json()
    except ValueError as e:
        raise AssertionError(f"{resp.request.method} {resp.url}: body is not JSON: {resp.text[:300]!r}") from e


def assert_error(resp, status, code, field=ANY):
    """Asserts the error reply of SPEC §3: `status`, and a body that is exactly
    {"error": {"code", "message", "field"}}. `field` is the expected JSON path;
    None demands no field (absent or null); ANY accepts any path, or none, except
    for NO_FIELD_CODES, which must have none."""
    what = f"{resp.request.method} {resp.url}"
    assert resp.status_code == status, f"{what}: expected {status} {code}, got {resp.status_code}: {resp.text[:500]!r}"
    body = body_json(resp)
    assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: error body must be {{'error': ...}}: {body!r}"
    err = body["error"]
    assert isinstance(err, dict), f"{what}: {body!r}"
    assert set(err) <= {"code", "message", "field"} and {"code", "message"} <= set(err), (
        f"{what}: error must hold exactly code, message, field: {err!r}")
    assert err["code"] == code, f"{what}: expected code {code!r}, got {err!r}"
    assert isinstance(err["message"], str) and err["message"].strip(), f"{what}: empty message: {err!r}"
    got_field = err.get("field")
    assert got_field is None or (isinstance(got_field, str) and got_field), (
        f"{what}: field must be a JSON path or absent/null: {err!r}")
    if field is ANY and code in NO_FIELD_CODES:
        field = None
    if field is None:
        assert got_field is None, f"{what}: expected no field (absent or null), got {got_field!r}"
    elif field is not ANY:
        assert got_field == field, f"{what}: expected field {field!r}, got {got_field!r} ({err['message']!r})"
    return err


def assert_job_shape(job):
    """Checks the job JSON of SPEC §2: every field present, types, timestamps."""
    assert isinstance(job, dict), job
    missing = JOB_FIELDS - set(job)
    assert not missing, f"job JSON lacks {sorted(missing)}: {job!r}"
    assert isinstance(job["id"], str) and job["id"], job
    assert job["status"] in STATUSES, job
    assert isinstance(job["priority"], int) and not isinstance(job["priority"], bool), job
    assert isinstance(job["attempt"], int) and isinstance(job["max_attempts"], int), job
    assert job["timeout"] is None or isinstance(job["timeout"], (int, float)), job
    for k in ("created_at", "scheduled_at", "started_at", "finished_at"):
        if job[k] is not None:
            parse_ts(job[k])
    assert job["created_at"] is not None, job
    assert isinstance(job["depends_on"], list), job
    if job["error"] is not None:
        assert set(job["error"]) >= {"type", "message"}, job
        assert job["error"]["type"] in {"task_error", "timeout", "cancelled", "worker_lost", "exit_status", "signal",
                                        "dependency_failed", "invalid_result"}, job
    if job["status"] in TERMINAL:
        assert job["finished_at"] is not None, f"terminal job without finished_at: {job!r}"
    return job


class Client(requests.Session):
    """A keep-alive session bound to one server: paths are relative to its base
    URL, every request has a timeout, and the token (if any) is sent."""

    def __init__(self, base_url, token=None):
        super().__init__()
        self.base_url = base_url
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, url, *args, **kwargs):
        if url.startswith("/"):
            url = self.base_url + url
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return super().request(method, url, *args, **kwargs)

    # --- jobs ---

    def submit(self, task, args=None, expect=202, **opts):
        """Submits a job and returns the job JSON, asserting the status."""
        spec = {"task": task}
        if args is not None:
            spec["args"] = args
        spec.update(opts)
        r = self.post("/v1/jobs", json=spec)
        assert r.status_code == expect, f"submit {spec!r}: expected {expect}, got {r.status_code}: {r.text[:500]!r}"
        return body_json(r)

    def job(self, job_id, wait=None):
        params = {"wait": wait} if wait is not None else None
        r = self.get(f"/v1/jobs/{job_id}", params=params,
                     timeout=REQUEST_TIMEOUT + (wait or 0))
        assert r.status_code == 200, f"GET job {job_id}: {r.status_code} {r.text[:500]!r}"
        return body_json(r)

    def wait_job(self, job_id, timeout=10.0, until=TERMINAL):
        """Long-polls job_id until its status is in `until`; fails after
        `timeout` seconds (scaled)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            remaining = deadline - time.monotonic()
            wait = max(0, min(5, int(remaining))) if until == TERMINAL else 0
            job = self.job(job_id, wait=wait)
            if job["status"] in until:
                return job
            if time.monotonic() >= deadline:
                raise AssertionError(f"job {job_id} not {sorted(until)} within {scaled(timeout):.1f}s: {job!r}")
            if wait == 0:
                time.sleep(0.02)

    def wait_running(self, job_id, timeout=10.0):
        return self.wait_job(job_id, timeout, until={"running"} | TERMINAL)

    def cancel(self, job_id):
        return self.post(f"/v1/jobs/{job_id}/cancel")


class Server:
    """One jobd process on 127.0.0.1:0 with a database under `workdir`.

    start() waits for the "listening on http://127.0.0.1:PORT" line on stderr
    and for /readyz; stop() sends SIGTERM and returns the exit status; kill()
    sends SIGKILL; start() again reuses the same database."""

    def __init__(self, workdir, args=(), env=None, token=None, db=None, listen="127.0.0.1:0", grace=2):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = str(db or self.workdir / "jobd.db")
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.token = token
        self.listen = listen
        self.grace = grace
        self.proc = None
        self.port = None
        self.stderr_lines = []
        self.all_stderr = []  # kept across restarts, for failure messages
        self._reader = None
        self.expected_exit = False  # set by stop()/kill(): an exit the test asked for

    # --- process ---

    def command(self):
        cmd = [str(JOBD_BIN), "--listen", self.listen, "--db", self.db, "--log-level", "info"]
        if self.grace is not None:
            cmd += ["--grace", str(self.grace)]
        if self.token:
            cmd += ["--token", self.token]
        return cmd + self.args

    def environment(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
        env.update(self.extra_env)
        return env

    def start(self, timeout=START_TIMEOUT):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not JOBD_BIN.exists():
            pytest.fail(f"{JOBD_BIN} does not exist: build it with `make build/jobd` (or set JOBD_BIN)")
        self.stderr_lines = []
        self.port = None
        self.expected_exit = False
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.environment(), cwd=self.workdir)
        found = threading.Event()

        def reader(proc, lines):
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                self.all_stderr.append(line)
                m = LISTEN_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()
            found.set()  # EOF: the process is gone

        self._reader = threading.Thread(target=reader, args=(self.proc, self.stderr_lines), daemon=True)
        self._reader.start()
        if not found.wait(timeout) or self.port is None:
            code = self.proc.poll()
            if code is None:
                self.kill()
            pytest.fail(f"jobd did not print 'listening on http://127.0.0.1:PORT' within {timeout:.0f}s "
                        f"(exit status {code}); command {self.command()}\nstderr:\n{self.stderr_text()}")
        self.base_url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for(lambda: self._ready(), START_TIMEOUT / SCALE, interval=0.05, message="/readyz to answer 200")
        except AssertionError as e:
            pytest.fail(f"{e}\nstderr:\n{self.stderr_text()}")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            pytest.fail(f"jobd exited with {self.proc.returncode} during start-up\nstderr:\n{self.stderr_text()}")
        try:
            return requests.get(self.base_url + "/readyz", timeout=5 * SCALE).status_code == 200
        except requests.ConnectionError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns the exit status (fails the test if it does not exit)."""
        self.expected_exit = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._join_reader()
                pytest.fail(f"jobd did not exit within {timeout:.0f}s of SIGTERM\nstderr:\n{self.stderr_text()}")
        self._join_reader()
        return self.proc.returncode

    def kill(self):
        """SIGKILL (kill -9) and reap."""
        self.expected_exit = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_reader()
        return self.proc.returncode if self.proc else None

    def restart(self):
        if self.alive():
            code = self.stop()
            assert code == 0, f"jobd exited with {code} on SIGTERM\nstderr:\n{self.stderr_text()}"
        return self.start()

    def _join_reader(self):
        if self._reader is not None:
            self._reader.join(5)

    def stderr_text(self, last=80):
        return "\n".join(self.all_stderr[-last:])

    # --- HTTP ---

    def url(self, path):
        return self.base_url + path

    def client(self, token=ANY):
        """A new keep-alive session (the server's token unless told otherwise)."""
        return Client(self.base_url, self.token if token is ANY else token)


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer", "runtime error:")


def server_problem(srv: Server):
    """Teardown check: a server still running must exit 0 on SIGTERM, and one
    that is gone must have been stopped or killed by the test. Returns a
    failure message or None."""
    if srv.proc is None:
        return None
    reports = [l for l in srv.all_stderr if any(m in l for m in SANITIZER_MARKS)]
    if reports:
        srv.kill()
        return f"sanitizer report in jobd's stderr: {reports[0]}\nstderr:\n{srv.stderr_text(200)}"
    if srv.alive():
        code = srv.stop()
        if code != 0:
            return f"jobd exited with status {code} on SIGTERM (expected 0)\nstderr:\n{srv.stderr_text()}"
    elif not srv.expected_exit:
        return f"jobd died during the test (exit status {srv.proc.returncode})\nstderr:\n{srv.stderr_text()}"
    return None


def finish_server(srv: Server):
    problem = server_problem(srv)
    if problem:
        pytest.fail(problem)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("jobd")).start()
    yield srv
    finish_server(srv)


@pytest.fixture
def server(module_server):
    """The module's shared server (default flags), checked alive around each test."""
    srv = module_server
    if not srv.alive():
        # An earlier test crashed it; that test already failed. Start another.
        srv.start()
    yield srv
    if not srv.alive():
        pytest.fail(f"jobd died during this test (exit status {srv.proc.returncode})\nstderr:\n{srv.stderr_text()}")


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def make_server(tmp_path):
    """Factory for a fresh server with its own flags: make_server(args=[...], env={...}, token=...)."""
    servers = []

    def make(args=(), env=None, token=None, start=True, **kw):
        srv = Server(tmp_path / f"srv{len(servers)}", args=args, env=env, token=token, **kw)
        servers.append(srv)
        return srv.start() if start else srv

    yield make
    failures = [p for p in map(server_problem, servers) if p]
    if failures:
        pytest.fail("\n\n".join(failures))


def run_jobd(args, env=None, timeout=10, cwd=None):
    """Runs jobd expecting it to exit by itself (start-up failures, --help).
    Returns (exit status, stdout, stderr)."""
    if not JOBD_BIN.exists():
        pytest.fail(f"{JOBD_BIN} does not exist: build it with `make build/jobd` (or set JOBD_BIN)")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    full_env.update(env or {})
    proc = subprocess.Popen([str(JOBD_BIN), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full_env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"jobd {args} did not exit within {scaled(timeout):.0f}s (it should have):\n"
                    f"stderr:\n{err.decode(errors='replace')[-3000:]}")
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))
