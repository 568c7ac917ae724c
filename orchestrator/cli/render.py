"""How the CLI shows progress events: a live line on a terminal, milestone lines in a log, JSON lines.

- `LiveLine` (a terminal): live events redraw one line (a tqdm bar when the event has a total),
  milestones are printed above it.
- `PlainLog` (not a terminal): milestones only, one line each; live events are dropped.
- `JsonLines` (`--json`): every milestone and the live events (at most `fps` a second) as one JSON
  object per line.
Events without a message are for scripts and webhooks only: the two human renderers skip them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from orchestrator.progress import Event, Sink

# the commands whose --json means progress events on stderr (see the README's "Progress for scripts")
JSON_HELP = "progress as JSON lines on stderr (one object per event, see the README); results stay on stdout"


def add_event_options(parser: argparse.ArgumentParser, *, json_help: str = JSON_HELP) -> None:
    """`--json` (events as JSON lines on stderr) and `--notify URL` (webhook) for a long-running command."""
    if "--json" not in parser._option_string_actions:
        parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--notify", metavar="URL", action="append", default=[],
                        help="POST the key events (start, each image or checkpoint, failure, end) as JSON to "
                             "this http(s) URL; repeatable; never blocks or fails the job")
    parser.set_defaults(emits_events=True)


class PlainLog:
    """Milestones as lines (logs, pipes, CI)."""

    tty = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        if event.live or not event.message:
            return
        self.stream.write(event.message + "\n")
        self.stream.flush()

    def pause(self) -> None:
        pass

    def close(self) -> None:
        pass


class LiveLine:
    """One live line redrawn in place (at most `fps` times a second); milestones printed above it."""

    tty = True

    def __init__(self, stream: TextIO, *, fps: float = 10.0) -> None:
        self.stream = stream
        self._min_interval = 1.0 / fps
        self._last_draw = float("-inf")
        self._bar: Any = None
        self._latest: Event | None = None   # the newest live event, also when the throttle skipped drawing it

    def emit(self, event: Event) -> None:
        if event.live:
            self._latest = event
            now = time.monotonic()
            if now - self._last_draw < self._min_interval:
                return
            self._last_draw = now
            self._draw(event)
            return
        if not event.message:
            return
        if self._bar is None:
            self.stream.write(event.message + "\n")
        else:
            self._show(self._latest)   # not the last drawn one: it may be stale (e.g. the phase before)
            self._bar.write(event.message, file=self.stream)
        self._last_draw = float("-inf")   # the update that usually follows a milestone is drawn at once
        self.stream.flush()

    def pause(self) -> None:
        """Erase the live line (before results are printed); the next live event draws it again."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._latest = None
        self.stream.flush()

    close = pause

    def _draw(self, event: Event) -> None:
        self._show(event)
        self._bar.refresh()

    def _show(self, event: Event | None) -> None:
        """Put `event` into the bar without drawing it."""
        if self._bar is None:
            # deferred on purpose: tqdm costs ~40 ms of import, and only a terminal needs it
            from tqdm import tqdm

            self._bar = tqdm(file=self.stream, total=None, bar_format="{desc}", leave=False, dynamic_ncols=True,
                             mininterval=0, miniters=0, delay=0)
        if event is None:
            return
        bar = self._bar
        if event.total and event.step is not None:
            bar.bar_format = "{bar:16} {desc}"
            bar.total = event.total
            bar.n = min(max(event.step, 0), event.total)
        else:
            bar.bar_format = "{desc}"
            bar.total = None
            bar.n = 0
        bar.set_description_str(event.message, refresh=False)


class JsonLines:
    """One JSON object per event and line; live events at most `fps` a second (milestones always)."""

    tty = False

    def __init__(self, stream: TextIO, *, fps: float = 4.0) -> None:
        self.stream = stream
        self._min_interval = 1.0 / fps
        self._last_live = float("-inf")

    def emit(self, event: Event) -> None:
        if event.live:
            now = time.monotonic()
            if now - self._last_live < self._min_interval:
                return
            self._last_live = now
        else:
            self._last_live = float("-inf")   # the status right after a milestone is shown
        self.stream.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
        self.stream.flush()

    def pause(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_display(stream: TextIO, *, json_lines: bool = False, tty: bool | None = None) -> Sink:
    """JSON lines when asked, else a live line on a terminal, else plain milestones."""
    if json_lines:
        return JsonLines(stream)
    is_tty = stream.isatty() if tty is None else tty
    return LiveLine(stream) if is_tty else PlainLog(stream)
