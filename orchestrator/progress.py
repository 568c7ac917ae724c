"""Progress for long work: one live line on a TTY, milestone lines otherwise. Always on stderr.

Use cases report progress through a `Reporter` (a callable taking a status line or a milestone);
the CLI builds a `StatusLine` for humans, tests pass a recording reporter.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import Protocol, TextIO


class Reporter(Protocol):
    """What use cases call to report progress; never prints results (those go to stdout)."""

    def update(self, text: str) -> None:
        """Replace the live status line (dropped when not on a TTY)."""

    def milestone(self, text: str) -> None:
        """A line worth keeping in any log (phase changes, saves, warnings)."""


class NullReporter:
    """Reports nothing."""

    def update(self, text: str) -> None:
        pass

    def milestone(self, text: str) -> None:
        pass


class RecordingReporter:
    """Keeps what was reported, for tests and scripts."""

    def __init__(self) -> None:
        self.updates: list[str] = []
        self.milestones: list[str] = []

    def update(self, text: str) -> None:
        self.updates.append(text)

    def milestone(self, text: str) -> None:
        self.milestones.append(text)


class StatusLine:
    """A live line redrawn in place on a TTY (at most `fps` times a second); milestones as lines."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, fps: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._min_interval = 1.0 / fps
        self._last_draw = -math.inf   # never: 0.0 would throttle the first draw on a machine up for < 1/fps s
        self._shown = ""
        self._latest = ""   # the newest text, also when the throttle skipped drawing it

    def update(self, text: str) -> None:
        if not self.tty:
            return
        self._latest = text
        now = time.monotonic()
        if now - self._last_draw < self._min_interval:
            return
        self._last_draw = now
        self._draw(text)

    def milestone(self, text: str) -> None:
        live = bool(self._shown)
        self._clear()
        self.stream.write(text + "\n")
        if live:
            self._draw(self._latest)   # not the last drawn text: it may be stale (e.g. the phase before)
        self._last_draw = -math.inf    # the update that usually follows a milestone is drawn at once
        self.stream.flush()

    def close(self) -> None:
        """Erase the live line (call before printing results)."""
        self._clear()
        self.stream.flush()

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        line = text if len(text) <= width else text[: max(0, width - 1)] + "…"
        self.stream.write("\r" + line + " " * max(0, len(self._shown) - len(line)))
        self.stream.flush()
        self._shown = line

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * len(self._shown) + "\r")
            self._shown = ""


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
