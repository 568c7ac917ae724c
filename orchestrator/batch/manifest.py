"""The batch manifest: one JSON object per line, appended and fsynced, readable after a crash.

Each job (identified by `Job.key`) moves through a small state machine:

    pending --> queued(server, prompt_id) --> done(files)
       ^  \\                 |        \\----> failed(error)
       |   \\--> failed      v
       +------------ pending (server died, cancelled by Ctrl+C, files gone) <-- failed (retry)

The last record of a key is its state. A torn last line (power cut mid-write) is ignored.
Other lines carry batch events (`{"event": "run", ...}`) and are skipped by the job reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

STATES = ("pending", "queued", "done", "failed")
ALLOWED = {
    None: {"pending"},
    "pending": {"pending", "queued", "failed"},
    "queued": {"done", "failed", "pending"},
    "failed": {"pending", "queued", "failed"},
    "done": {"pending"},              # only when its files went missing
}
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class JobRecord:
    """The latest known state of one job."""

    key: str
    name: str
    state: str
    server: str | None = None
    prompt_id: str | None = None
    files: tuple[str, ...] = ()
    error: str | None = None
    reason: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    seconds: float | None = None


class ManifestError(ConfigError):
    """The manifest is unreadable or a transition would break its state machine."""


def _apply(prev: JobRecord | None, rec: dict[str, Any]) -> JobRecord:
    state = rec["state"]
    base = prev or JobRecord(key=rec["key"], name=rec.get("name", ""), state=state)
    attempts = base.attempts + (1 if state == "queued" else 0)
    return JobRecord(
        key=base.key,
        name=rec.get("name") or base.name,
        state=state,
        server=rec.get("server") if state in ("queued", "done", "failed") else None,
        prompt_id=rec.get("prompt_id") if state in ("queued", "done", "failed") else None,
        files=tuple(rec.get("files", ())) if state == "done" else (),
        error=rec.get("error") if state == "failed" else None,
        reason=rec.get("reason"),
        settings=rec.get("settings") or base.settings,
        attempts=attempts,
        seconds=rec.get("seconds") if state == "done" else None,
    )


def read_manifest(path: Path) -> tuple[dict[str, JobRecord], list[dict[str, Any]]]:
    """Fold the manifest into {key: latest record} plus its batch events; tolerates a torn last line."""
    jobs: dict[str, JobRecord] = {}
    events: list[dict[str, Any]] = []
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return jobs, events
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # torn final write: the record never happened
            raise ManifestError(f"{path}:{i + 1}: manifest line is not JSON",
                                hint="the manifest was edited by hand; restore it or use a new --out folder") from None
        if "event" in rec:
            events.append(rec)
        elif rec.get("state") in STATES and isinstance(rec.get("key"), str):
            jobs[rec["key"]] = _apply(jobs.get(rec["key"]), rec)
    return jobs, events


class Manifest:
    """Append-only, fsynced, thread-safe writer that enforces the state machine."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.jobs, self.events = read_manifest(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._defer = False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ManifestError(f"another `batch run` is writing to {self.path.parent}",
                                hint="wait for it to finish (or stop it), or use another --out folder") from None
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # drop a torn last record: it never happened
            os.ftruncate(self._fd, raw.rfind(b"\n") + 1)

    def get(self, key: str) -> JobRecord | None:
        """The latest record of `key`, or None."""
        return self.jobs.get(key)

    def record(self, key: str, state: str, **fields: Any) -> JobRecord:
        """Move `key` to `state` (checked against the state machine) and persist it before returning."""
        with self._lock:
            prev = self.jobs.get(key)
            if state not in ALLOWED.get(prev.state if prev else None, set()):
                raise ManifestError(f"job {key}: cannot go from {prev.state if prev else 'unknown'} to {state}")
            rec = {"t": round(time.time(), 3), "key": key, "state": state,
                   **{k: v for k, v in fields.items() if v is not None}}
            self._append(rec)
            new = _apply(prev, rec)
            self.jobs[key] = new
            return new

    def event(self, name: str, **fields: Any) -> None:
        """Append a batch-level event (run start, interrupt, summary)."""
        with self._lock:
            rec = {"t": round(time.time(), 3), "event": name, **fields}
            self._append(rec)
            self.events.append(rec)

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Many records, one fsync at the end (for the initial `pending` records of a big batch)."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
            os.fsync(self._fd)

    def _append(self, rec: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(rec, sort_keys=False, default=str) + "\n").encode())
        if not self._defer:
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
