"""Start-up configuration (SPEC §5): flags, JOBD_* environment, a JSON config
file, their precedence (flags > environment > file > defaults), --help, and
start-up failures (exit status 2 with a message naming the setting)."""

import json

import pytest
import requests

from conftest import assert_error, body_json, run_jobd

SPEC_FLAGS = ["--listen", "--db", "--config", "--token", "--token-file", "--executors", "--allow-exec",
              "--log-level"]


def base_args(tmp_path):
    return ["--listen", "127.0.0.1:0", "--db", str(tmp_path / "jobd.db")]


def assert_start_fails(tmp_path, args, names, env=None):
    """jobd exits 2 at start, and stderr names the setting (one of `names`)."""
    code, out, err = run_jobd(args, env=env, cwd=tmp_path)
    assert code == 2, f"jobd {args} env={env}: expected exit status 2, got {code}\nstderr:\n{err[-2000:]}"
    assert "listening on" not in err, err
    assert any(n in err for n in names), f"jobd {args} env={env}: stderr does not name {names}:\n{err[-2000:]}"
    return err


def executors_of(srv):
    c = srv.client()
    return {e["name"]: e for e in body_json(c.get("/v1/executors"))["executors"]}


# --------------------------------------------------------------------------
# --help


def test_help_lists_the_flags(tmp_path):
    code, out, err = run_jobd(["--help"], cwd=tmp_path)
    assert code == 0, f"--help exited {code}\n{err}"
    missing = [f for f in SPEC_FLAGS if f not in out]
    assert not missing, f"--help (stdout) does not list {missing}:\n{out}"
    for env in ("JOBD_LISTEN", "JOBD_DB", "JOBD_EXECUTORS", "JOBD_TOKEN", "JOBD_LOG_LEVEL"):
        assert env in out, f"--help does not mention {env}"
    assert not (tmp_path / "data").exists(), "--help created a database"


# --------------------------------------------------------------------------
# start-up failures


@pytest.mark.parametrize("listen", ["nope", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:", "127.0.0.1:http"])
def test_bad_listen(tmp_path, listen):
    assert_start_fails(tmp_path, ["--listen", listen, "--db", str(tmp_path / "jobd.db")], ["--listen"])


@pytest.mark.parametrize("executors", ["x=process:0", "x=process:5000", "x=async:1000001", "x=thread:0", "x=thread", "garbage",
                                       "a=thread:2,a=thread:1", "=thread:1", "x=fiber:2", "x=thread:two"])
def test_bad_executors(tmp_path, executors):
    assert_start_fails(tmp_path, base_args(tmp_path) + ["--executors", executors], ["--executors"])


@pytest.mark.parametrize("flag,value", [
    ("--log-level", "loud"),
    ("--max-queued", "-1"),
    ("--max-queued", "lots"),
    ("--grace", "x"),
    ("--max-body", "abc"),
])
def test_bad_flag_value(tmp_path, flag, value):
    assert_start_fails(tmp_path, base_args(tmp_path) + [flag, value], [flag])


def test_flag_without_its_value(tmp_path):
    assert_start_fails(tmp_path, base_args(tmp_path) + ["--executors"], ["--executors"])


def test_unknown_flag(tmp_path):
    assert_start_fails(tmp_path, base_args(tmp_path) + ["--frobnicate", "7"], ["--frobnicate"])


@pytest.mark.parametrize("name,value", [
    ("JOBD_EXECUTORS", "x=fiber:2"),
    ("JOBD_LOG_LEVEL", "loud"),
    ("JOBD_LISTEN", "nope"),
    ("JOBD_MAX_QUEUED", "zero"),
])
def test_bad_environment_value(tmp_path, name, value):
    args = ["--db", str(tmp_path / "jobd.db")]
    if name != "JOBD_LISTEN":
        args = ["--listen", "127.0.0.1:0"] + args
    assert_start_fails(tmp_path, args, [name], env={name: value})


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"executors": ')
    assert_start_fails(tmp_path, base_args(tmp_path) + ["--config", str(bad)], ["--config", str(bad)])
    missing = tmp_path / "missing.json"
    assert_start_fails(tmp_path, base_args(tmp_path) + ["--config", str(missing)], ["--config", str(missing)])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"executors": [{"name": "x", "kind": "thread", "size": 2, "memory_mb": 64}]}))
    assert_start_fails(tmp_path, base_args(tmp_path) + ["--config", str(wrong)], ["executors"])


# --------------------------------------------------------------------------
# flags, environment, file


def test_executors_flag(make_server):
    srv = make_server(args=["--executors", "a=thread:2,b=thread:1"])
    ex = executors_of(srv)
    assert set(ex) == {"a", "b"}, ex
    assert (ex["a"]["kind"], ex["a"]["size"], ex["b"]["kind"], ex["b"]["size"]) == ("thread", 2, "thread", 1), ex
    c = srv.client()
    job = c.submit("square", {"n": 3}, executor="b")
    done = c.wait_job(job["id"])
    assert done["executor"] == "b" and done["result"] == 9, done


def test_environment_is_used(make_server):
    srv = make_server(env={"JOBD_EXECUTORS": "envx=thread:3", "JOBD_MAX_QUEUED": "7"})
    ex = executors_of(srv)
    assert set(ex) == {"envx"}, ex
    assert ex["envx"]["size"] == 3 and ex["envx"]["max_queued"] == 7, ex


def test_flag_wins_over_environment(make_server):
    # A bad JOBD_LISTEN is not even looked at when --listen is given.
    srv = make_server(env={"JOBD_LISTEN": "not-an-address", "JOBD_EXECUTORS": "envx=thread:1"},
                      args=["--executors", "flagx=thread:2"])
    ex = executors_of(srv)
    assert set(ex) == {"flagx"}, ex


def test_token_from_environment(make_server):
    srv = make_server(env={"JOBD_TOKEN": "env-token"})
    assert_error(requests.get(srv.url("/v1/tasks"), timeout=10), 401, "unauthorized")
    r = requests.get(srv.url("/v1/tasks"), headers={"Authorization": "Bearer env-token"}, timeout=10)
    assert r.status_code == 200, r.text


def test_token_file(make_server, tmp_path):
    tf = tmp_path / "token"
    tf.write_text("file-token\n")
    srv = make_server(args=["--token-file", str(tf)])
    assert_error(requests.get(srv.url("/v1/stats"), timeout=10), 401, "unauthorized")
    r = requests.get(srv.url("/v1/stats"), headers={"Authorization": "Bearer file-token"}, timeout=10)
    assert r.status_code == 200, r.text


def test_config_file(make_server, tmp_path):
    cfg = tmp_path / "jobd.json"
    cfg.write_text(json.dumps({
        "executors": [{"name": "filed", "kind": "thread", "size": 1, "max_queued": 5},
                      {"name": "other", "kind": "thread", "size": 2}],
        "token": "from-file",
        "listen": "127.0.0.1:1",  # the --listen flag wins
    }))
    srv = make_server(args=["--config", str(cfg)], token=None)
    assert_error(requests.get(srv.url("/v1/executors"), timeout=10), 401, "unauthorized")
    r = requests.get(srv.url("/v1/executors"), headers={"Authorization": "Bearer from-file"}, timeout=10)
    assert r.status_code == 200, r.text
    ex = {e["name"]: e for e in body_json(r)["executors"]}
    assert set(ex) == {"filed", "other"}, ex
    assert ex["filed"]["size"] == 1 and ex["filed"]["max_queued"] == 5, ex
    assert ex["other"]["size"] == 2, ex


def test_config_file_from_environment_and_precedence(make_server, tmp_path):
    cfg = tmp_path / "jobd.json"
    cfg.write_text(json.dumps({"executors": "filed=thread:1", "max_queued": 9}))
    # JOBD_CONFIG names the file; the file's executors are used.
    srv = make_server(env={"JOBD_CONFIG": str(cfg)})
    ex = executors_of(srv)
    assert set(ex) == {"filed"} and ex["filed"]["max_queued"] == 9, ex
    assert srv.stop() == 0
    # Environment beats the file.
    srv = make_server(env={"JOBD_CONFIG": str(cfg), "JOBD_EXECUTORS": "envx=thread:1"})
    assert set(executors_of(srv)) == {"envx"}
    assert srv.stop() == 0
    # The flag beats both.
    srv = make_server(env={"JOBD_CONFIG": str(cfg), "JOBD_EXECUTORS": "envx=thread:1"},
                      args=["--executors", "flagx=thread:1"])
    assert set(executors_of(srv)) == {"flagx"}


def test_max_body_flag(make_server):
    srv = make_server(args=["--max-body", "2048"])
    c = srv.client()
    small = json.dumps({"task": "echo", "args": {"s": "x" * 1500}}).encode()
    big = json.dumps({"task": "echo", "args": {"s": "x" * 3000}}).encode()
    assert c.post("/v1/jobs", data=small, headers={"Content-Type": "application/json"}).status_code == 202
    assert_error(c.post("/v1/jobs", data=big, headers={"Content-Type": "application/json"}), 413,
                 "payload_too_large")
    assert c.get("/healthz").status_code == 200
