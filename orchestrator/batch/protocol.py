"""What the scheduler exchanges with servers and reports: the Server protocol and small value types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ImageRef:
    """An output file on a server, as /history lists it."""

    filename: str
    subfolder: str = ""
    type: str = "output"


@dataclass(frozen=True)
class Outcome:
    """What /history says about a finished prompt."""

    ok: bool
    images: tuple[ImageRef, ...] = ()
    error: str | None = None
    window: tuple[float, float] | None = None   # execution start, end (epoch ms, the server's clock)
    cached: tuple[str, ...] = ()                # node ids ComfyUI served from its cache
    values: Mapping[str, Any] = field(default_factory=dict)   # the knobs the prompt ran with (sidecar keys)


@dataclass(frozen=True)
class Payload:
    """What to queue for a job: the API prompt, and the UI workflow to embed in the PNGs (optional)."""

    prompt: dict[str, Any]
    workflow: dict[str, Any] | None = None


class Server(Protocol):
    """The four things the scheduler needs from a ComfyUI server (see comfy_server.ComfyServer)."""

    url: str

    def submit(self, payload: Payload, prompt_id: str) -> None:
        """Queue a prompt; ComfyRejected when the server refuses it, ComfyUnavailable when it is gone."""

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running ids, pending ids) in the server's queue."""

    def result(self, prompt_id: str) -> Outcome | None:
        """The finished prompt's outcome from /history, None while unknown."""

    def fetch(self, ref: ImageRef) -> bytes:
        """The bytes of one output file (/view)."""

    def delete_pending(self, prompt_ids: Sequence[str]) -> None:
        """Drop these prompts from the pending queue (running ones are left alone)."""

    # optional: `server_log()` -> orchestrator.comfy.serverlog.ServerLog | None (the server's recent log lines)
    # optional: `idle(poll, quiet)` waits for news: up to `quiet` s while a doorbell (websocket) is up,
    # else `poll` s; returns early when one of our prompts ends


@dataclass(frozen=True)
class ServerState:
    """One server's line in the progress display."""

    url: str
    up: bool
    outstanding: int
    done: int
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of the batch, given to the progress callback."""

    total: int
    done: int
    failed: int
    skipped: int
    elapsed: float
    servers: tuple[ServerState, ...]
    busy: float = 0.0             # seconds our workers spent building, submitting, polling, saving
    cpu: float = 0.0              # CPU seconds of that work (busy minus waiting on I/O and the GIL)

    @property
    def per_minute(self) -> float:
        return self.done / self.elapsed * 60 if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        left = self.total - self.done - self.failed - self.skipped
        return left / (self.done / self.elapsed) if self.done and self.elapsed > 0 else None


@dataclass(frozen=True)
class Settings:
    """Scheduler knobs."""

    depth: int = 2                 # our jobs outstanding per server (1 running + depth-1 waiting)
    poll: float = 0.1              # seconds between /queue polls per server
    quiet: float = 1.0             # ... while the server's websocket doorbell is up (it rings when ours end)
    fail_fast: bool = False
    max_attempts: int = 3          # a job lost this many times (server died) is failed
    down_timeout: float = 120.0    # give up when every server has been down this long
    retry_down: float = 2.0        # seconds between probes of a down server
