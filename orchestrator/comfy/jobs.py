"""Following one ComfyUI prompt: what its events say, and its result from /history (pure code).

`JobTracker.apply(event)` folds the prompt's websocket events (outputs, cached nodes, start time)
and raises ComfyFailed / ComfyInterrupted on `execution_error` / `execution_interrupted`; it
returns True on the done marker `executing{node: null}`. `JobTracker.result(entry)` turns the
/history entry into a JobResult (cached re-runs keep their old files as outputs), or raises the
failure the history records when the websocket missed it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.comfy import events as ev
from orchestrator.comfy.problems import LOGS_HINT, failed_error, interrupted_error
from orchestrator.errors import ComfyError


@dataclass(frozen=True)
class JobResult:
    """A finished prompt: its images by output node, cached nodes, timings (seconds), the /history entry."""

    prompt_id: str
    outputs: Mapping[str, tuple[ev.OutputImage, ...]]
    cached_nodes: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    history: Mapping[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> tuple[ev.OutputImage, ...]:
        """Every output image, output nodes in order."""
        return tuple(img for imgs in self.outputs.values() for img in imgs)

    @property
    def cached(self) -> bool:
        """True when every output came from ComfyUI's cache (nothing was recomputed)."""
        return bool(self.outputs) and set(self.outputs) <= set(self.cached_nodes)


@dataclass
class JobTracker:
    """The state of one prompt while we follow it."""

    url: str
    prompt_id: str
    prompt: Mapping[str, Any] | None = None
    submitted: float | None = None          # time.monotonic() at submit
    outputs: dict[str, tuple[ev.OutputImage, ...]] = field(default_factory=dict)
    cached: tuple[str, ...] = ()
    started: float | None = None
    success: bool = False

    def apply(self, event: ev.Event) -> bool:
        """Fold one of this prompt's events in; True when the prompt is done."""
        if isinstance(event, ev.ExecutionStart):
            self.started = time.monotonic()
        elif isinstance(event, ev.ExecutionCached):
            self.cached = event.nodes
        elif isinstance(event, ev.Executed):
            if event.images:
                self.outputs[event.node] = event.images
        elif isinstance(event, ev.ExecutionSuccess):
            self.success = True
        elif isinstance(event, ev.ExecutionError):
            raise failed_error(self.url, event, self.prompt)
        elif isinstance(event, ev.ExecutionInterrupted):
            raise interrupted_error(self.url, self.prompt_id, event, self.prompt)
        elif isinstance(event, ev.Executing) and event.node is None:
            return True
        return False

    def result(self, entry: Mapping[str, Any]) -> JobResult:
        """The JobResult from the /history entry ({} when the server had none: the events decide)."""
        status = entry.get("status") or {}
        if entry and status.get("status_str") != "success":
            for kind, data in status.get("messages") or ():
                if kind in ("execution_error", "execution_interrupted"):
                    self.apply(ev.parse_message({"type": kind, "data": data}))   # raises the recorded failure
            raise ComfyError(f"prompt {self.prompt_id} did not complete on ComfyUI at {self.url}", hint=LOGS_HINT)
        outputs = dict(self.outputs)
        for node, out in (entry.get("outputs") or {}).items():
            images = tuple(ev.OutputImage.from_json(i) for i in (out or {}).get("images") or ())
            if images:
                outputs[str(node)] = images
        for kind, data in status.get("messages") or ():
            if kind == "execution_cached" and not self.cached:
                self.cached = tuple(str(n) for n in (data or {}).get("nodes") or ())
        now = time.monotonic()
        timings: dict[str, float] = {}
        if self.submitted is not None:
            timings["total"] = now - self.submitted
            if self.started is not None:
                timings["queued"] = self.started - self.submitted
        if self.started is not None:
            timings["execution"] = now - self.started
        return JobResult(self.prompt_id, outputs, self.cached, timings, dict(entry))
