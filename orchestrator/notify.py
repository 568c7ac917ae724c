"""Webhooks (`--notify URL`): POST the job's key events as JSON, from a background thread.

The job never waits for a webhook and never fails because of one: events go into a bounded queue
(dropped when it is full), one sender thread POSTs them with a timeout, and after repeated failures
a single warning is handed back to the caller's thread. Only the key events are posted (NOTIFY_PHASES);
the payload is `Event.to_json()`, with the HF token's value blanked out should it ever appear.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from orchestrator import __version__
from orchestrator.errors import UsageError
from orchestrator.progress import Event

NOTIFY_PHASES = frozenset({"start", "image", "checkpoint", "failed", "interrupted", "end"})
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
WARN_AFTER = 3   # consecutive failed POSTs before the one warning


def check_url(value: str, source: str = "--notify") -> str:
    """The webhook URL as given, when it is http(s)://host[:port]/...; UsageError naming `source` otherwise."""
    example = "e.g. --notify https://hooks.example.com/flux or http://127.0.0.1:9000/events"
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"not {parts.scheme}://" if parts.scheme and "://" in url else "give the scheme"
        raise UsageError(f"{source} {value!r}: a webhook is an http:// or https:// URL ({shown})", hint=example)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0:
        what = "no host name" if not parts.hostname else "the port must be a number from 1 to 65535"
        raise UsageError(f"{source} {_safe(value)!r}: not a webhook URL ({what})", hint=example)
    return url


def _safe(url: str) -> str:
    """The URL without user:password@ (for messages)."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class Webhook:
    """A sink that POSTs NOTIFY_PHASES events to `url` in the background."""

    def __init__(self, url: str, *, timeout: float = 5.0, queue_size: int = 256,
                 on_warning: Callable[[str], None] | None = None, secrets: tuple[str, ...] | None = None) -> None:
        self.url, self.timeout, self.on_warning = url, timeout, on_warning
        self._target, self._headers = _safe(url), {"Content-Type": "application/json",
                                                   "User-Agent": f"flux-orchestrator/{__version__}"}
        parts = urlsplit(url)
        if parts.username is not None:   # urllib does not send user:password@ itself
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(login).decode()
        self.secrets = tuple(s for s in (secrets if secrets is not None else _env_secrets()) if s)
        self.sent = self.failed = self.dropped = 0
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self._warnings: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        self._pass_warnings()
        if event.phase not in NOTIFY_PHASES:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:   # a stuck endpoint must not hold the job: drop, and say so at the end
            self.dropped += 1

    def close(self, grace: float | None = None) -> None:
        """Give the sender up to `grace` seconds (default: the timeout) to deliver what is queued."""
        wait = self.timeout if grace is None else grace
        deadline = time.monotonic() + wait
        try:
            self._queue.put(None, timeout=wait)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive() or self.dropped:
            left = self._queue.qsize() + self.dropped
            with self._lock:
                self._warnings.append(f"--notify {_safe(self.url)}: {left} event(s) not delivered")
        self._pass_warnings()

    def _pass_warnings(self) -> None:
        with self._lock:
            warnings, self._warnings = self._warnings, []
        for text in warnings:
            if self.on_warning is not None:
                self.on_warning(text)

    def _run(self) -> None:
        streak = 0
        while True:
            event = self._queue.get()
            if event is None:
                return
            problem = self._post(event)
            if problem is None:
                self.sent += 1
                streak = 0
                continue
            self.failed += 1
            streak += 1
            if streak == WARN_AFTER:
                with self._lock:
                    self._warnings.append(f"--notify {_safe(self.url)}: {WARN_AFTER} POSTs in a row failed "
                                          f"(last: {problem}); the job goes on, events may be lost")

    def _post(self, event: Event) -> str | None:
        body = json.dumps(event.to_json(), ensure_ascii=False)
        for secret in self.secrets:
            body = body.replace(secret, "***")
        request = urllib.request.Request(self._target, data=body.encode(), method="POST", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(1024)
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        except (OSError, ValueError) as e:   # refused, timed out, DNS, TLS: the job goes on
            reason = getattr(e, "reason", e)
            return f"{type(e).__name__}: {reason}"
        return None


def _env_secrets() -> tuple[str, ...]:
    return tuple(os.environ.get(name, "") for name in SECRET_VARS)
