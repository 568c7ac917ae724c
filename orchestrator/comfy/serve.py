"""The `comfyui up | status | logs | down` use cases: typed options in, typed results out, any runtime.

Callable from Python (see the README's "Use from Python"); the CLI only parses, calls and renders.
Which runtime runs the servers comes from `orchestrator.runtimes` (one registry); `status`, `logs`,
`down` and `endpoints` look through every registered runtime, as a server may have been started with
any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.comfy import health
from orchestrator.comfy.builtin import ensure_builtin_workflows
from orchestrator.comfy.serverspec import ServerOptions
from orchestrator.errors import OrchestratorError, RuntimeUnavailable
from orchestrator.runtimes import DEFAULT, server_runtime, server_runtimes
from orchestrator.runtimes.base import LogLine, RuntimeEnv, ServerInfo, ServerRequest, ServerRuntime, ServerUp

T = TypeVar("T")


@dataclass(frozen=True)
class UpOptions:
    """What `comfyui up` asks for."""

    server: ServerOptions = field(default_factory=ServerOptions)
    runtime: str = DEFAULT
    settings: Mapping[str, Any] = field(default_factory=dict)   # the runtime's own options (image, comfyui, ...)
    timeout: float = 300.0
    recreate: bool = False


@dataclass(frozen=True)
class UpOutcome:
    """What `up` did, and the runtime that runs the servers (to follow their logs or stop them)."""

    result: ServerUp
    runtime: ServerRuntime
    workflows_written: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ServerStatus:
    """A server and what it answered just now."""

    info: ServerInfo
    responding: bool = False
    devices: tuple[str, ...] = ()
    queue_running: int | None = None
    queue_pending: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """One row of `comfyui status --json`."""
        i = self.info
        return {"worker": i.worker, "runtime": i.runtime, "name": i.name, "url": i.url, "state": i.state,
                "gpu": i.gpu, "uptime_s": i.uptime_s, "exit_code": i.exit_code, "responding": self.responding,
                "devices": list(self.devices), "queue_running": self.queue_running,
                "queue_pending": self.queue_pending}


@dataclass(frozen=True)
class Logs:
    """The log of the servers of one runtime: the lines, and how many servers they come from."""

    lines: Iterator[LogLine]
    servers: int
    runtime: str


def up(env: RuntimeEnv, options: UpOptions, *, runtime: ServerRuntime | None = None) -> UpOutcome:
    """Start ComfyUI with the chosen runtime (`runtime`: an instance to use instead of the registry's); our
    workflows are put into workflows/ first, so the browser's sidebar lists them. Returns once every
    started server answers."""
    options.server.validate()
    runtime = runtime or server_runtime(options.runtime, env, options.settings)
    written = tuple(ensure_builtin_workflows(env.layout.workflows))
    result = runtime.up(ServerRequest(options.server, timeout=options.timeout, recreate=options.recreate))
    return UpOutcome(result, runtime, written)


def status(env: RuntimeEnv, *, probe: bool = True, runtimes: Sequence[ServerRuntime] | None = None,
           ) -> list[ServerStatus]:
    """Every server of the project (every runtime, or `runtimes`), with its devices and queue when `probe`
    and running.

    A runtime whose servers are not reached by URL from here (Ray workers listen on their own nodes)
    answers the probe itself: it has `describe()` -> [(ServerInfo, (running, pending) | None)].
    """
    def one(rt: ServerRuntime) -> list[ServerStatus]:
        describe = getattr(rt, "describe", None)
        if describe is None:
            return [_probe(s) if probe and s.state == "running" else ServerStatus(s) for s in rt.status()]
        return [ServerStatus(info, queue is not None, (), *(queue or (None, None))) for info, queue in describe()]

    return _through_all(env, runtimes, one)


def dispatchers(env: RuntimeEnv, *, timeout: float = 30.0,
                runtimes: Sequence[ServerRuntime] | None = None) -> list[Any]:
    """Batch `Server`s of the runtimes whose servers are reached through the runtime, not a URL (Ray
    workers): those with `batch_servers(timeout=)`. Where `batch run` finds them without --server."""
    return _through_all(env, runtimes,
                        lambda rt: list(getattr(rt, "batch_servers", lambda **_: [])(timeout=timeout)))


def down(env: RuntimeEnv, *, grace: float = 20.0, runtimes: Sequence[ServerRuntime] | None = None,
         ) -> list[ServerInfo]:
    """Stop and remove every server of the project (every runtime, or `runtimes`); returns what was stopped."""
    return _through_all(env, runtimes, lambda rt: rt.down(grace=grace))


def endpoints(env: RuntimeEnv, *, runtimes: Sequence[ServerRuntime] | None = None) -> list[str]:
    """URLs of the project's running servers (every runtime, or `runtimes`): where `generate` and `batch`
    connect."""
    return _through_all(env, runtimes, lambda rt: rt.endpoints())


def logs(env: RuntimeEnv, *, follow: bool = False, tail: int | None = None, worker: int | None = None,
         runtimes: Sequence[ServerRuntime] | None = None) -> Logs:
    """The log of the runtime whose servers run (else of the first that ran here); OrchestratorError when
    ComfyUI never ran in this project."""
    seen = _through_all(env, runtimes, lambda rt: [(rt, rt.status())])
    chosen = next(((rt, ss) for rt, ss in seen if any(s.state == "running" for s in ss)), None) \
        or next(((rt, ss) for rt, ss in seen if rt.has_run()), None)
    if chosen is None:
        raise OrchestratorError("ComfyUI has not run in this project (no container, no local log)",
                                hint="start it with `comfyui up`")
    rt, servers = chosen
    return Logs(rt.logs(follow=follow, tail=tail, worker=worker), max(1, len(servers)), rt.name)


def _probe(info: ServerInfo) -> ServerStatus:
    try:
        devices = tuple(health.device_names(health.system_stats(info.url)))
        queue_running, queue_pending = health.queue_length(info.url)
    except health.NotReady:
        return ServerStatus(info)
    return ServerStatus(info, True, devices, queue_running, queue_pending)


def _through_all(env: RuntimeEnv, runtimes: Sequence[ServerRuntime] | None,
                 call: Callable[[ServerRuntime], list[T]]) -> list[T]:
    """`call` on every runtime, concatenated; an unreachable backend is skipped when another runtime
    found something (a local ComfyUI on a machine without Docker), else its error is raised."""
    out: list[T] = []
    first: RuntimeUnavailable | None = None
    for rt in server_runtimes(env) if runtimes is None else runtimes:
        try:
            out += call(rt)
        except RuntimeUnavailable as e:
            first = first or e
    if first is not None and not out:
        raise first
    return out
