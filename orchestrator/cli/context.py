"""What every command handler gets: the project layout, the output streams and the flags."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any, TextIO

from orchestrator.cli.render import make_display
from orchestrator.layout import Layout
from orchestrator.progress import Event, Sink, Tee

# the event kind of each command's own lines (log lines, warnings, the failure)
KIND_OF_COMMAND = {"comfyui": "server"}


@dataclass
class Context:
    """Per-invocation state of the CLI. Results go to `stdout`; logs, warnings, progress to `stderr`."""

    layout: Layout
    stdout: TextIO
    stderr: TextIO
    verbose: bool = False
    debug: bool = False
    json_events: bool = False          # --json of a long-running command: stderr carries only JSON lines
    notify: tuple[str, ...] = ()       # --notify URLs
    kind: str = "cli"
    _display: Any = field(default=None, repr=False)
    _hooks: list[Any] = field(default_factory=list, repr=False)
    _status: Sink | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO) -> "Context":
        events = bool(getattr(args, "emits_events", False))
        command = getattr(args, "command", None) or "cli"
        urls = tuple(getattr(args, "notify", None) or ()) if events else ()
        if urls:
            from orchestrator.notify import check_url   # urllib.request: only when a webhook is asked for

            urls = tuple(check_url(u) for u in urls)
        return cls(
            layout=Layout.at(args.project_dir),
            stdout=stdout,
            stderr=stderr,
            verbose=bool(args.verbose or args.debug),
            debug=bool(args.debug),
            json_events=events and bool(getattr(args, "json", False)),
            notify=urls,
            kind=KIND_OF_COMMAND.get(command, command),
        )

    @property
    def status(self) -> Sink:
        """Where use cases send their progress events: the display on stderr, plus any --notify webhooks."""
        if self._status is None:
            self._display = make_display(self.stderr, json_lines=self.json_events)
            if self.notify:
                from orchestrator.notify import Webhook

                self._hooks = [Webhook(url, on_warning=self.warn) for url in self.notify]
            self._status = Tee([self._display, *self._hooks]) if self._hooks else self._display
        return self._status

    @property
    def tty(self) -> bool:
        """Whether progress is drawn live on a terminal."""
        self.status  # noqa: B018  (creates the display)
        return bool(getattr(self._display, "tty", False))

    def emit(self, phase: str, message: str = "", **fields: Any) -> None:
        """An event of this command (kind from the command name)."""
        self.status.emit(Event(self.kind, phase, message, **fields))

    def out(self, text: str = "") -> None:
        """Print a result line on stdout."""
        if self._display is not None:
            self._display.pause()
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def out_json(self, obj: Any) -> None:
        """Print one JSON document on stdout."""
        self.out(json.dumps(obj, indent=2, sort_keys=False, default=str))

    def log(self, text: str, *, phase: str = "log") -> None:
        """A log line on stderr (an event of `phase` with --json)."""
        if self._status is not None or self.json_events:
            self.status.emit(Event(self.kind, phase, text))
        else:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def warn(self, text: str) -> None:
        """`warning: ...` on stderr."""
        self.log(f"warning: {text}", phase="warning")

    def fail(self, text: str, *, interrupted: bool = False) -> None:
        """The command failed (`text`: the rendered error) or was interrupted: say so on stderr and to webhooks."""
        phase = "interrupted" if interrupted else "failed"
        if self.notify:
            self.status  # noqa: B018  (starts the webhooks when nothing was reported yet)
        if self.json_events:
            self.status.emit(Event(self.kind, phase, text.strip("\n")))
            return
        if self._display is not None:
            self._display.pause()
        self.stderr.write(text)
        self.stderr.flush()
        for hook in self._hooks:
            hook.emit(Event(self.kind, phase, text.strip("\n")))

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook.close()
