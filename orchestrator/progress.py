"""Progress as typed events: one `Event` type, one `Sink` protocol.

Use cases (training, downloads, batch, generate, server start) report what they do by calling
`sink.emit(Event(...))`; they never print. The CLI chooses how events are shown (a live line on a
terminal, milestone lines in a log, JSON lines for scripts, webhooks) in `orchestrator/cli/render.py`
and `orchestrator/notify.py`; tests pass a `RecordingSink`.

An event is either *live* (a transient status: the terminal redraws it, logs skip it) or a
*milestone* (a line worth keeping in any log). The schema is documented in the README
("Progress for scripts"); `Event.to_json` is the one place that shapes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

KINDS = ("train", "download", "batch", "generate", "server", "dataset")
# phases every command may emit; the per-command ones are listed in the README
COMMON_PHASES = ("start", "log", "warning", "end", "failed", "interrupted")


@dataclass(frozen=True)
class Event:
    """One progress report: which work (kind), where it is (phase), how far, and what it made."""

    kind: str                        # one of KINDS: the work that reports
    phase: str                       # what it is doing now ("start", "training", "image", "end", ...)
    message: str = ""                # the human line, as the plain log shows it
    step: float | None = None        # how far: steps, bytes, images (see unit)
    total: float | None = None       # of how many (None: unknown)
    unit: str | None = None          # what step/total/rate count: "step", "byte", "image"
    rate: float | None = None        # units per second
    eta: float | None = None         # seconds left (None: unknown)
    files: tuple[str, ...] = ()      # files this event made or names (a checkpoint, an image, the result)
    live: bool = False               # a transient status (redrawn on a terminal, skipped by logs)
    time: float = field(default_factory=time.time)   # seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        """The event as one JSON object (every key always present; unknown values are null)."""
        return {
            "time": datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds"),
            "kind": self.kind, "phase": self.phase, "live": self.live, "message": self.message,
            "step": _number(self.step), "total": _number(self.total), "unit": self.unit,
            "rate": None if self.rate is None else round(self.rate, 4),
            "eta": None if self.eta is None else round(self.eta, 1),
            "files": list(self.files),
        }


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 4)


class Sink(Protocol):
    """Where use cases send their events."""

    def emit(self, event: Event) -> None:
        """Take one event; never raises for display trouble and never blocks for long."""


class NullSink:
    """Drops every event."""

    def emit(self, event: Event) -> None:
        pass


class RecordingSink:
    """Keeps every event, for tests and scripts; `milestones` / `updates` are the lines a log / a terminal shows."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    @property
    def milestones(self) -> list[str]:
        return [e.message for e in self.events if not e.live and e.message]

    @property
    def updates(self) -> list[str]:
        return [e.message for e in self.events if e.live]

    def phases(self) -> list[str]:
        """The phases in order, repeats of the same phase collapsed."""
        out: list[str] = []
        for e in self.events:
            if not out or out[-1] != e.phase:
                out.append(e.phase)
        return out


class Tee:
    """Sends each event to several sinks."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = tuple(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)


def format_duration(seconds: float | None) -> str:
    """12.3 -> '12s', 754 -> '12m34s', 7384 -> '2h03m'; None -> '?'."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'; None -> '?'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
