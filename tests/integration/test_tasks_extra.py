"""The tasks beyond the basic built-ins, black-box: exec, crash, http_get,
command tasks from the config file, and plugins (SPEC §4).

One server per module runs `--allow-exec --executors
t=thread:2,p=process:2,a=async:64`. A test that needs the process or async
executor is skipped, naming the kind, when this build does not offer it yet.
HTTP goes to servers of the test's own on 127.0.0.1: an http.server thread
with a few routes, and a socket that listens but never answers.
"""

import json
import os
import socket
import time
from pathlib import Path

import pytest

from conftest import (JOBD_BIN, REPO_ROOT, LocalHTTPServer, QuietHandler, Server, assert_error, assert_job_shape,
                      finish_server, run_jobd, scaled, wait_for)

MIB = 1 << 20


def _variant():
    v = os.environ.get("JOBD_VARIANT")
    if v:
        return v
    return next((s for s in ("asan", "tsan", "debug") if s in str(JOBD_BIN)), "release")


HELLO_SO = REPO_ROOT / "build" / _variant() / "examples" / "hello.so"


def kind_available(kind):
    """Whether this build runs executors of `kind` (config refuses unknown ones)."""
    code, _, err = run_jobd(["--executors", f"x={kind}:1", "--max-body", "1"])
    return "not available in this build" not in err


# --------------------------------------------------------------------------
# helpers: a local HTTP server and a silent socket


class _Handler(QuietHandler):
    def do_GET(self):
        if self.path == "/hello":
            body = "hello, wörld".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        elif self.path == "/missing":
            body = b"nope"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        else:
            body = b"?"
            self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def web():
    srv = LocalHTTPServer(_Handler)
    yield srv.url()
    srv.close()


@pytest.fixture(scope="module")
def silent():
    """A URL whose server accepts connections (the backlog does) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}/"
    s.close()


# --------------------------------------------------------------------------
# the module's server


@pytest.fixture(scope="module")
def kinds():
    return {k: kind_available(k) for k in ("process", "async")}


@pytest.fixture(scope="module")
def xsrv(tmp_path_factory, kinds):
    execs = "t=thread:2" + (",p=process:2" if kinds["process"] else "") + (",a=async:64" if kinds["async"] else "")
    srv = Server(tmp_path_factory.mktemp("jobd-extra"), args=["--allow-exec", "--executors", execs]).start()
    yield srv
    finish_server(srv)


@pytest.fixture
def xc(xsrv):
    if not xsrv.alive():
        xsrv.start()
    c = xsrv.client()
    yield c
    c.close()
    assert xsrv.alive(), f"jobd died during this test\nstderr:\n{xsrv.stderr_text()}"


EXECUTOR_KIND = {"t": "thread", "p": "process", "a": "async"}


def need(kinds, executor):
    kind = EXECUTOR_KIND[executor]
    if kind != "thread" and not kinds[kind]:
        pytest.skip(f"the {kind} executor is not available in this build yet")


def run(client, task, args, executor, timeout=20, **opts):
    job = client.submit(task, args, executor=executor, **opts)
    return assert_job_shape(client.wait_job(job["id"], timeout=timeout))


# --------------------------------------------------------------------------
# exec


@pytest.mark.parametrize("executor", ["p", "a"])
def test_exec_succeeds_with_output(xc, kinds, executor):
    need(kinds, executor)
    job = run(xc, "exec", {"argv": ["sh", "-c", "cat; echo err >&2"], "stdin": "in put", "env": {"X": "1"}},
              executor)
    assert job["status"] == "succeeded", job
    r = job["result"]
    assert r["exit_code"] == 0 and r["signal"] is None
    assert r["stdout"] == "in put" and r["stderr"] == "err\n"
    assert r["stdout_truncated"] is False and r["stderr_truncated"] is False
    assert job["worker"]["executor"] == executor


@pytest.mark.parametrize("executor", ["p", "a"])
def test_exec_nonzero_exit_fails_and_keeps_the_result(xc, kinds, executor):
    need(kinds, executor)
    job = run(xc, "exec", {"argv": ["sh", "-c", "echo partial; exit 3"]}, executor)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "exit_status"
    assert "exited with status 3" in job["error"]["message"]
    assert job["result"]["exit_code"] == 3 and job["result"]["stdout"] == "partial\n"


@pytest.mark.parametrize("executor", ["p", "a"])
def test_exec_output_is_truncated_at_1mib(xc, kinds, executor):
    need(kinds, executor)
    job = run(xc, "exec", {"argv": ["sh", "-c", "head -c 10485760 /dev/zero | tr '\\0' a"]}, executor)
    assert job["status"] == "succeeded", job
    assert len(job["result"]["stdout"]) == MIB and job["result"]["stdout_truncated"] is True


def processes_running(argv):
    """Pids of live (not zombie) processes whose command line is exactly argv."""
    want = ("\0".join(argv) + "\0").encode()
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes() == want and \
                    (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


@pytest.mark.parametrize("executor", ["p", "a"])
def test_exec_cancel_kills_the_program(xc, kinds, executor):
    need(kinds, executor)
    argv = ["sleep", f"{30 + os.getpid() % 1000 / 1000 + (executor == 'a') / 10000:.4f}"]  # unique to this test
    job = xc.submit("exec", {"argv": argv}, executor=executor)
    xc.wait_running(job["id"])
    wait_for(lambda: processes_running(argv), 10, message=f"{argv} to run")
    started = time.monotonic()
    assert xc.cancel(job["id"]).status_code == 200
    done = xc.wait_job(job["id"], timeout=10)
    assert done["status"] == "cancelled", done
    assert time.monotonic() - started < scaled(5)
    # The program goes with its job, even when the process executor kills its worker.
    wait_for(lambda: not processes_running(argv), 5, message=f"{argv} to be gone")


def test_exec_refused_on_a_thread_executor(xc):
    r = xc.post("/v1/jobs", json={"task": "exec", "args": {"argv": ["true"]}, "executor": "t"})
    err = assert_error(r, 400, "invalid_argument", field="executor")
    assert "process" in err["message"] and "async" in err["message"]


def test_exec_refused_without_allow_exec(make_server):
    srv = make_server(args=["--executors", "t=thread:1"])
    c = srv.client()
    r = c.post("/v1/jobs", json={"task": "exec", "args": {"argv": ["true"]}})
    err = assert_error(r, 400, "invalid_argument", field="task")
    assert "--allow-exec" in err["message"]
    tasks = {t["name"]: t for t in c.get("/v1/tasks").json()["tasks"]}
    assert tasks["exec"]["kinds"] == ["process", "async"]


def test_exec_bad_args_are_refused(xc):
    r = xc.post("/v1/jobs", json={"task": "exec", "args": {"argv": "ls -l"}})
    assert_error(r, 400, "invalid_argument", field="args.argv")
    r = xc.post("/v1/jobs", json={"task": "exec", "args": {"argv": ["ls"], "env": {"1A": "x"}}})
    assert_error(r, 400, "invalid_argument", field="args.env.1A")


# --------------------------------------------------------------------------
# crash


def test_crash_fails_one_job_and_the_next_one_runs(xc, kinds):
    need(kinds, "p")
    for sig, num in (("SEGV", 11), ("KILL", 9)):
        job = run(xc, "crash", {"signal": sig}, "p")
        assert job["status"] == "failed", job
        assert job["error"]["type"] == "signal", job
        assert f"signal {num}" in job["error"]["message"], job
    after = run(xc, "echo", {"x": 1}, "p")
    assert after["status"] == "succeeded" and after["result"] == {"x": 1}


@pytest.mark.parametrize("executor", ["t", "a"])
def test_crash_refused_elsewhere(xc, kinds, executor):
    need(kinds, executor)
    r = xc.post("/v1/jobs", json={"task": "crash", "args": {}, "executor": executor})
    err = assert_error(r, 400, "invalid_argument", field="executor")
    assert "process" in err["message"]


# --------------------------------------------------------------------------
# http_get


@pytest.mark.parametrize("executor", ["t", "p", "a"])
def test_http_get_on_every_kind(xc, kinds, web, executor):
    need(kinds, executor)
    job = run(xc, "http_get", {"url": web + "/hello"}, executor)
    assert job["status"] == "succeeded", job
    r = job["result"]
    assert r["status"] == 200 and r["body"] == "hello, wörld" and r["truncated"] is False
    assert r["bytes"] == len("hello, wörld".encode())
    assert r["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert isinstance(r["elapsed_ms"], (int, float))
    missing = run(xc, "http_get", {"url": web + "/missing"}, executor)
    assert missing["status"] == "succeeded" and missing["result"]["status"] == 404


@pytest.mark.parametrize("executor", ["t", "a"])
def test_http_get_times_out_on_a_silent_server(xc, kinds, silent, executor):
    need(kinds, executor)
    started = time.monotonic()
    job = run(xc, "http_get", {"url": silent, "timeout": 0.5}, executor)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "timeout", job
    assert time.monotonic() - started < scaled(5)


def test_http_get_refuses_other_schemes(xc):
    r = xc.post("/v1/jobs", json={"task": "http_get", "args": {"url": "file:///etc/passwd"}})
    assert_error(r, 400, "invalid_argument", field="args.url")


# --------------------------------------------------------------------------
# command tasks and plugins


def test_command_task_from_the_config_file(make_server, tmp_path, kinds):
    config = {"commands": [
        {"name": "greet", "description": "Greets someone.", "argv": ["/bin/echo", "hello", "{who}", "n={n}"],
         "args": {"who": "string", "n": "integer"}},
        {"name": "slow", "argv": ["sleep", "30"], "timeout": 0.5},
    ]}
    path = tmp_path / "jobd.json"
    path.write_text(json.dumps(config))
    execs = "t=thread:1" + (",p=process:1" if kinds["process"] else "") + (",a=async:4" if kinds["async"] else "")
    if execs == "t=thread:1":
        pytest.skip("the process and async executors are not available in this build yet")
    srv = make_server(args=["--config", str(path), "--executors", execs])
    c = srv.client()
    tasks = {t["name"]: t for t in c.get("/v1/tasks").json()["tasks"]}
    assert tasks["greet"]["description"] == "Greets someone."
    assert tasks["greet"]["kinds"] == ["process", "async"]
    for executor in [e for e in ("p", "a") if kinds[EXECUTOR_KIND[e]]]:
        job = run(c, "greet", {"who": "bob; rm -rf /", "n": 2}, executor)
        assert job["status"] == "succeeded", job
        assert job["result"]["stdout"] == "hello bob; rm -rf / n=2\n"
        slow = run(c, "slow", {}, executor)
        assert slow["status"] == "failed" and slow["error"]["type"] == "timeout", slow
    r = c.post("/v1/jobs", json={"task": "greet", "args": {"who": "x"}})
    assert_error(r, 400, "invalid_argument", field="args.n")
    r = c.post("/v1/jobs", json={"task": "greet", "args": {"who": "x", "n": 1, "extra": 1}})
    assert_error(r, 400, "invalid_argument", field="args.extra")


def test_command_config_errors_stop_the_start(tmp_path):
    path = tmp_path / "jobd.json"
    path.write_text(json.dumps({"commands": [{"name": "c", "argv": ["/bin/echo", "{nope}"]}]}))
    code, _, err = run_jobd(["--config", str(path), "--db", str(tmp_path / "db"), "--listen", "127.0.0.1:0"])
    assert code == 2, err
    assert "commands[0]" in err and "{nope}" in err and str(path) in err


def test_plugin_task_runs(make_server, kinds):
    if not HELLO_SO.exists():
        pytest.fail(f"{HELLO_SO} is missing: `make unit` builds it")
    execs = "t=thread:1" + (",p=process:1" if kinds["process"] else "")
    srv = make_server(args=["--plugin", str(HELLO_SO), "--executors", execs])
    c = srv.client()
    names = [t["name"] for t in c.get("/v1/tasks").json()["tasks"]]
    assert "hello" in names
    for executor in ["t"] + (["p"] if kinds["process"] else []):  # the worker loads plugins too
        job = run(c, "hello", {"name": "world"}, executor)
        assert job["status"] == "succeeded", job
        assert job["result"] == {"greeting": "hello, world"}


def test_plugin_from_the_environment(make_server):
    if not HELLO_SO.exists():
        pytest.fail(f"{HELLO_SO} is missing: `make unit` builds it")
    srv = make_server(args=["--executors", "t=thread:1"], env={"JOBD_PLUGINS": str(HELLO_SO)})
    job = run(srv.client(), "hello", {"name": "env"}, "t")
    assert job["result"] == {"greeting": "hello, env"}


def test_plugins_from_the_config_file_and_flags_win(make_server, tmp_path):
    if not HELLO_SO.exists():
        pytest.fail(f"{HELLO_SO} is missing: `make unit` builds it")
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"plugins": [str(HELLO_SO)]}))
    bad.write_text(json.dumps({"plugins": ["/no/such/plugin.so"]}))
    srv = make_server(args=["--config", str(good), "--executors", "t=thread:1"])
    assert run(srv.client(), "hello", {"name": "file"}, "t")["result"] == {"greeting": "hello, file"}
    # --plugin replaces the file's list: the missing file is never loaded.
    srv = make_server(args=["--config", str(bad), "--plugin", str(HELLO_SO), "--executors", "t=thread:1"])
    assert run(srv.client(), "hello", {"name": "flag"}, "t")["result"] == {"greeting": "hello, flag"}


def test_bad_plugin_stops_the_start(tmp_path):
    code, _, err = run_jobd(["--plugin", "/no/such/plugin.so", "--db", str(tmp_path / "db"),
                             "--listen", "127.0.0.1:0"])
    assert code == 2, err
    assert "--plugin /no/such/plugin.so" in err and "cannot load" in err
