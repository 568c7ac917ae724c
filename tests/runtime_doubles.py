"""Runtime test doubles: they implement the product's runtime interfaces (orchestrator.runtimes.base),
so the use cases run against them exactly as against `docker` or `local`.

`DoubleServer` is a `ServerRuntime` whose "servers" are in-process ComfyUI doubles (tests/comfy_double.py):
real HTTP + websocket on 127.0.0.1, so clients, `generate` and `batch` can use their URLs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from orchestrator.runtimes.base import LogLine, RuntimeEnv, ServerInfo, ServerRequest, ServerUp
from tests.comfy_double import ComfyDouble


class DoubleServer:
    """`ServerRuntime` backed by ComfyUI doubles, one per worker (state lives in the object: one process)."""

    name: ClassVar[str] = "double"

    def __init__(self, env: RuntimeEnv, settings: Mapping[str, Any]) -> None:
        self.env = env
        self.settings = dict(settings)
        self.doubles: list[ComfyDouble] = []
        self.started_at = 0.0
        self.log: list[LogLine] = []

    def up(self, request: ServerRequest) -> ServerUp:
        """Start `workers` doubles unless they run."""
        request.options.validate()
        if self.doubles:
            return ServerUp(tuple(self.status()), ())
        self.doubles = [ComfyDouble(models=self.settings.get("models")).start()
                        for _ in range(request.options.workers)]
        self.started_at = time.time()
        self.log = [LogLine(i, f"To see the GUI go to: {d.url}") for i, d in enumerate(self.doubles)]
        return ServerUp(tuple(self.status()), tuple(range(len(self.doubles))), detail="in-process doubles")

    def status(self) -> list[ServerInfo]:
        """The running doubles."""
        return [ServerInfo(self.name, i, f"double {i}", d.url, "running", "none", time.time() - self.started_at)
                for i, d in enumerate(self.doubles)]

    def endpoints(self) -> list[str]:
        """Their URLs."""
        return [d.url for d in self.doubles]

    def logs(self, *, follow: bool = False, tail: int | None = None,
             worker: int | None = None) -> Iterator[LogLine]:
        """What they 'printed' at start."""
        lines = [ln for ln in self.log if worker is None or ln.worker == worker]
        yield from lines[-tail:] if tail else lines

    def has_run(self) -> bool:
        """True once started."""
        return bool(self.log)

    def down(self, *, grace: float = 20.0) -> list[ServerInfo]:
        """Stop every double."""
        gone = self.status()
        for d in self.doubles:
            d.close()
        self.doubles = []
        return gone
