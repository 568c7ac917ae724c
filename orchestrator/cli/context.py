"""What every command handler gets: the project layout, the output streams and the flags."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any, TextIO

from orchestrator.layout import Layout
from orchestrator.progress import StatusLine


@dataclass
class Context:
    """Per-invocation state of the CLI. Results go to `stdout`; logs, warnings, progress to `stderr`."""

    layout: Layout
    stdout: TextIO
    stderr: TextIO
    verbose: bool = False
    debug: bool = False
    _status: StatusLine | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO) -> "Context":
        return cls(
            layout=Layout.at(args.project_dir),
            stdout=stdout,
            stderr=stderr,
            verbose=bool(args.verbose or args.debug),
            debug=bool(args.debug),
        )

    @property
    def status(self) -> StatusLine:
        """The live status line on stderr (created on first use)."""
        if self._status is None:
            self._status = StatusLine(self.stderr)
        return self._status

    def out(self, text: str = "") -> None:
        """Print a result line on stdout."""
        if self._status is not None:
            self._status.close()
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def out_json(self, obj: Any) -> None:
        """Print one JSON document on stdout."""
        self.out(json.dumps(obj, indent=2, sort_keys=False, default=str))

    def log(self, text: str) -> None:
        """A log line on stderr."""
        if self._status is not None:
            self._status.milestone(text)
        else:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def warn(self, text: str) -> None:
        """`warning: ...` on stderr."""
        self.log(f"warning: {text}")

    def close(self) -> None:
        if self._status is not None:
            self._status.close()
