"""`--notify URL`: the key events POSTed as JSON to a real local HTTP server, in the background."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.errors import UsageError
from orchestrator.notify import Webhook, check_url
from orchestrator.progress import Event
from tests.comfy_double import ComfyDouble
from tests.test_comfy_server import free_ports


class Receiver:
    """A webhook endpoint on 127.0.0.1: records each POST; answers `status`, or hangs while `hang` is set."""

    def __init__(self, status: int = 204) -> None:
        self.status, self.posts, self.hang = status, [], threading.Event()
        self.release, self.auth = threading.Event(), None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.headers.get("Content-Type"), json.loads(body)))
                receiver.auth = self.headers.get("Authorization")
                if receiver.hang.is_set():
                    receiver.release.wait(30)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def phases(self) -> list[str]:
        return [body["phase"] for _, body in self.posts]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_generate_posts_start_each_image_and_end(run_cli, receiver):
    with ComfyDouble(steps=3) as d:
        r = run_cli("generate", "a red fox", "--count", "2", "--seed", "1", "--server", d.url,
                    "--notify", receiver.url)
    assert r.code == 0, r.err
    assert receiver.phases() == ["start", "image", "image", "end"]     # no live steps, no log lines
    assert all(ctype == "application/json" for ctype, _ in receiver.posts)
    bodies = [b for _, b in receiver.posts]
    assert all(b["kind"] == "generate" and set(b) >= {"time", "step", "total", "files", "message"} for b in bodies)
    assert [f for b in bodies[1:3] for f in b["files"]] == r.out.split() == bodies[-1]["files"]
    assert "warning" not in r.err


def test_a_failure_is_posted(run_cli, receiver):
    r = run_cli("generate", "a red fox", "--server", f"http://127.0.0.1:{free_ports()}", "--notify", receiver.url)
    assert r.code == 1 and r.err.startswith("error: ")            # the human error is unchanged
    [(_, body)] = receiver.posts
    assert body["phase"] == "failed" and body["message"] == r.err.strip()


def test_a_failing_endpoint_warns_once_and_the_job_succeeds(run_cli):
    broken = Receiver(status=500)
    try:
        url = broken.url.replace("http://", "http://user:s3cret@")
        with ComfyDouble(steps=2) as d:
            r = run_cli("generate", "a red fox", "--count", "3", "--seed", "1", "--server", d.url, "--notify", url)
    finally:
        broken.close()
    assert r.code == 0, r.err
    assert len(r.out.split()) == 3 and len(broken.posts) == 5        # start, 3 images, end: all tried
    assert r.err.count("warning: --notify") == 1 and "3 POSTs in a row failed (last: HTTP 500)" in r.err
    assert "s3cret" not in r.err and broken.auth == "Basic dXNlcjpzM2NyZXQ="   # user:s3cret, as a header


def test_a_hanging_endpoint_never_holds_the_job():
    slow = Receiver()
    slow.hang.set()
    warnings: list[str] = []
    try:
        hook = Webhook(slow.url, timeout=0.2, queue_size=2, on_warning=warnings.append, secrets=())
        for i in range(20):   # the queue holds 2: the rest is dropped at once, never waited for
            hook.emit(Event("batch", "image", step=i))
        hook.close(grace=0.5)
    finally:
        slow.close()
    assert hook.dropped >= 17 and hook.sent == 0
    assert any("event(s) not delivered" in w for w in warnings)


def test_only_key_events_are_posted_and_secrets_are_blanked(receiver):
    hook = Webhook(receiver.url, timeout=5, secrets=("hf_abcdef123456",))
    for e in (Event("train", "start", "run r1"), Event("train", "training", "step 3", step=3, live=True),
              Event("train", "log", "a log line"), Event("train", "checkpoint", "saved with hf_abcdef123456"),
              Event("train", "end", "done")):
        hook.emit(e)
    hook.close()
    assert receiver.phases() == ["start", "checkpoint", "end"] and hook.sent == 3
    assert receiver.posts[1][1]["message"] == "saved with ***"


@pytest.mark.parametrize("value, why", [("ftp://h/x", "not ftp://"), ("hooks.example.com/x", "give the scheme"),
                                        ("http:///x", "no host name"), ("http://h:99999/x", "port")])
def test_bad_urls_are_usage_errors(run_cli, value, why):
    with pytest.raises(UsageError, match=why):
        check_url(value)
    r = run_cli("generate", "a red fox", "--notify", value)
    assert r.code == 2 and r.err.startswith("error: --notify") and why in r.err
