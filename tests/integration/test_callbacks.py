"""callback_url deliveries (SPEC §2, `future.add_done_callback`): the finished
job (or batch) is POSTed to its callback_url by the server, off the request
path; retried with back-off; signed with HMAC-SHA256 when a secret is set;
recorded on the job as callback_status; durable across a restart.

Every test runs its own receiver: an http.server on 127.0.0.1:0 in a thread
that records each POST (headers, body) before answering what the test says.
"""

import hashlib
import hmac
import json
import threading
import time

import pytest

from conftest import LocalHTTPServer, QuietHandler, assert_error, assert_job_shape, body_json, scaled, wait_for

HANG = "hang"  # a behaviour: never answer (until the receiver closes)


class Receiver:
    """A callback receiver. behave(n, req) -> the HTTP status of the n-th POST
    (1-based), HANG, or (status, {headers}); default 200."""

    def __init__(self, behave=None):
        self.behave = behave or (lambda n, req: 200)
        self.requests = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        rcv = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                req = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                       "raw": raw, "t": time.time()}
                try:
                    req["json"] = json.loads(raw)
                except ValueError:
                    req["json"] = None
                with rcv.lock:
                    rcv.requests.append(req)
                    n = len(rcv.requests)
                action = rcv.behave(n, req)
                if action == HANG:
                    rcv.closing.wait(scaled(60))
                    self.close_connection = True
                    return
                status, headers = action if isinstance(action, tuple) else (action, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = LocalHTTPServer(Handler)
        self.port = self.server.port

    def url(self, path="/hook"):
        return self.server.url(path)

    def posts(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def close(self):
        self.closing.set()
        self.server.close()


@pytest.fixture
def receiver():
    made = []

    def make(behave=None):
        r = Receiver(behave)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def wait_callback_status(client, job_id, want, timeout=15):
    return wait_for(lambda: (j := client.job(job_id))["callback_status"] == want and j, timeout,
                    message=f"job {job_id} to have callback_status {want!r}")


def barrier(client, rcv, path="/barrier"):
    """Delivers one more callback to rcv and waits for it: a duplicate POST of
    an earlier delivery, started at the latest when that one was, would be in
    by then."""
    job = client.submit("noop", callback_url=rcv.url(path))
    wait_for(lambda: rcv.posts(path), 15, message="the barrier callback")
    wait_callback_status(client, job["id"], "delivered")


def test_job_callback_delivers_the_finished_job(server, client, receiver):
    rcv = receiver()
    job = client.submit("square", {"n": 7}, callback_url=rcv.url())
    assert job["callback_url"] == rcv.url()
    final = wait_callback_status(client, job["id"], "delivered")
    assert final["status"] == "succeeded" and final["result"] == 49

    [post] = rcv.posts("/hook")
    h = post["headers"]
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("jobd/")
    assert h["jobd-event"] == "job.finished"
    assert h["jobd-attempt"] == "1"
    assert int(h["jobd-delivery"]) > 0
    assert "jobd-signature" not in h, "no secret configured: the POST must not be signed"
    body = assert_job_shape(post["json"])
    assert body["id"] == job["id"] and body["status"] == "succeeded" and body["result"] == 49
    # The body is the job as it finished; only callback_status moved on since.
    assert body["callback_status"] == "pending"
    assert {k: v for k, v in body.items() if k != "callback_status"} == \
           {k: v for k, v in final.items() if k != "callback_status"}


def test_failed_job_is_called_back_too(server, client, receiver):
    rcv = receiver()
    job = client.submit("fail", {"message": "boom"}, callback_url=rcv.url())
    wait_callback_status(client, job["id"], "delivered")
    [post] = rcv.posts("/hook")
    assert post["json"]["status"] == "failed" and post["json"]["error"]["type"] == "task_error"


def test_job_without_callback_url_has_null_callback_status(client):
    job = client.submit("noop")
    final = client.wait_job(job["id"])
    assert final["callback_url"] is None and final["callback_status"] is None


def test_signature_verifies_with_the_secret(make_server, receiver):
    secret = "s3cret-for-tests"
    srv = make_server(args=["--callback-secret", secret])
    rcv = receiver()
    with srv.client() as c:
        job = c.submit("echo", {"x": "é ü"}, callback_url=rcv.url())
        wait_callback_status(c, job["id"], "delivered")
    [post] = rcv.posts("/hook")
    sig = post["headers"]["jobd-signature"]
    parts = dict(p.split("=", 1) for p in sig.split(","))
    assert set(parts) == {"t", "v1"}, sig
    t = int(parts["t"])
    assert abs(time.time() - t) < 300, f"signature timestamp {t} is not now"
    expected = hmac.new(secret.encode(), f"{t}.".encode() + post["raw"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), f"{sig} does not verify (expected v1={expected})"
    wrong = hmac.new(b"another secret", f"{t}.".encode() + post["raw"], hashlib.sha256).hexdigest()
    assert parts["v1"] != wrong


def test_failed_attempts_are_retried_until_delivered(make_server, receiver):
    srv = make_server(args=["--callback-backoff-ms", "100"])
    rcv = receiver(lambda n, req: 500 if n <= 2 else 200)
    with srv.client() as c:
        job = c.submit("noop", callback_url=rcv.url())
        wait_callback_status(c, job["id"], "delivered")
        posts = rcv.posts("/hook")
        assert [p["headers"]["jobd-attempt"] for p in posts] == ["1", "2", "3"]
        assert len({p["headers"]["jobd-delivery"] for p in posts}) == 1, "one delivery, three attempts"
        # Back-off: >= 100 ms before the 2nd attempt, >= 200 ms before the 3rd.
        assert posts[1]["t"] - posts[0]["t"] >= 0.09 and posts[2]["t"] - posts[1]["t"] >= 0.19
    assert any("HTTP 500" in line for line in srv.all_stderr), "each failed attempt is logged with its reason"


def test_callback_status_failed_after_the_last_attempt(make_server, receiver):
    srv = make_server(args=["--callback-backoff-ms", "50", "--callback-attempts", "3"])
    rcv = receiver(lambda n, req: 503 if req["path"] == "/hook" else 200)
    with srv.client() as c:
        job = c.submit("noop", callback_url=rcv.url())
        wait_callback_status(c, job["id"], "failed")
        barrier(c, rcv)
    assert [p["headers"]["jobd-attempt"] for p in rcv.posts("/hook")] == ["1", "2", "3"]


def test_redirect_is_a_failed_attempt_not_followed(make_server, receiver):
    srv = make_server(args=["--callback-attempts", "1"])
    rcv = receiver(lambda n, req: (302, {"Location": "/elsewhere"}) if req["path"] == "/hook" else 200)
    with srv.client() as c:
        job = c.submit("noop", callback_url=rcv.url())
        wait_callback_status(c, job["id"], "failed")
        barrier(c, rcv)
    assert len(rcv.posts("/hook")) == 1 and not rcv.posts("/elsewhere")


def test_attempt_that_outlives_the_timeout_is_a_failed_attempt(make_server, receiver):
    srv = make_server(args=["--callback-timeout", "1", "--callback-backoff-ms", "100"])
    rcv = receiver(lambda n, req: HANG if n == 1 else 200)
    with srv.client() as c:
        job = c.submit("noop", callback_url=rcv.url())
        wait_callback_status(c, job["id"], "delivered", timeout=20)
    posts = rcv.posts("/hook")
    assert [p["headers"]["jobd-attempt"] for p in posts] == ["1", "2"]
    gap = posts[1]["t"] - posts[0]["t"]
    assert gap >= 0.9, f"the 2nd attempt came {gap:.2f}s after the 1st: the 1st should have had 1 s"
    assert any("timed out" in line.lower() for line in srv.all_stderr), srv.stderr_text(20)


def test_pending_delivery_survives_kill_9(make_server, receiver):
    failing = threading.Event()
    failing.set()
    rcv = receiver(lambda n, req: 503 if failing.is_set() else 200)
    srv = make_server(args=["--callback-backoff-ms", "300"])
    with srv.client() as c:
        job = c.submit("noop", callback_url=rcv.url())
        wait_for(lambda: rcv.posts("/hook"), 15, message="a first (failing) attempt")
        assert c.job(job["id"])["callback_status"] == "pending"
    srv.kill()
    failing.clear()
    srv.start()
    with srv.client() as c:
        final = wait_callback_status(c, job["id"], "delivered")
        assert final["status"] == "succeeded"
    last = rcv.posts("/hook")[-1]
    assert last["json"]["id"] == job["id"] and int(last["headers"]["jobd-attempt"]) >= 2


def test_pending_delivery_survives_a_graceful_restart(make_server, receiver):
    failing = threading.Event()
    failing.set()
    rcv = receiver(lambda n, req: 503 if failing.is_set() else 200)
    srv = make_server(args=["--callback-backoff-ms", "300"])
    with srv.client() as c:
        job = c.submit("noop", callback_url=rcv.url())
        wait_for(lambda: rcv.posts("/hook"), 15, message="a first (failing) attempt")
    assert srv.stop() == 0
    failing.clear()
    srv.start()
    with srv.client() as c:
        wait_callback_status(c, job["id"], "delivered")


def test_each_job_is_called_back_exactly_once(make_server, receiver):
    n = 30
    srv = make_server(args=["--executors", "thread=thread:4"])
    rcv = receiver()
    with srv.client() as c:
        ids = [c.submit("square", {"n": i}, callback_url=rcv.url())["id"] for i in range(n)]
        for job_id in ids:
            wait_callback_status(c, job_id, "delivered")
        barrier(c, rcv)
    posts = rcv.posts("/hook")
    counts = {}
    for p in posts:
        counts[p["json"]["id"]] = counts.get(p["json"]["id"], 0) + 1
    assert counts == {job_id: 1 for job_id in ids}


def test_hanging_receiver_does_not_hold_up_other_deliveries(make_server, receiver):
    srv = make_server(args=["--callback-timeout", "30"])
    slow = receiver(lambda n, req: HANG)
    fast = receiver()
    with srv.client() as c:
        c.submit("noop", callback_url=slow.url())
        wait_for(lambda: slow.posts(), 15, message="the hanging POST to start")
        job = c.submit("noop", callback_url=fast.url())
        wait_callback_status(c, job["id"], "delivered", timeout=10)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url", "/relative/hook", "http://", 42, ""])
def test_invalid_callback_url_is_refused(client, url):
    r = client.post("/v1/jobs", json={"task": "noop", "callback_url": url})
    assert_error(r, 400, "invalid_argument", field="callback_url")


def test_batch_callback_fires_once_when_the_batch_is_done(make_server, receiver):
    srv = make_server()
    rcv = receiver()
    with srv.client() as c:
        specs = [{"task": "sleep", "args": {"seconds": 0.05 * i}} for i in range(3)]
        r = c.post("/v1/batches", json={"jobs": specs, "callback_url": rcv.url("/batch")})
        if r.status_code in (404, 405):
            pytest.skip(f"POST /v1/batches is not served by this build ({r.status_code})")
        assert r.status_code == 202, r.text
        batch = body_json(r)
        ids = [j["id"] for j in batch["jobs"]]
        assert len(ids) == 3
        post = wait_for(lambda: rcv.posts("/batch"), 20, message="the batch callback")[0]
        # Only once all are done, and with the batch resource.
        for job_id in ids:
            assert c.job(job_id)["status"] == "succeeded"
        assert post["headers"]["jobd-event"] == "batch.finished"
        body = post["json"]
        assert body["id"] == batch["id"] and body["done"] is True and body["total"] == 3
        assert body["counts"]["succeeded"] == 3
        g = c.get(f"/v1/batches/{batch['id']}")
        if g.status_code == 200:
            wait_for(lambda: c.get(f"/v1/batches/{batch['id']}").json().get("callback_status") == "delivered", 15,
                     message="the batch's callback_status to be delivered")
        barrier(c, rcv)
    assert len(rcv.posts("/batch")) == 1, "a batch is called back exactly once"
