"""The docker runtime for ComfyUI servers (`DockerServer`): build the image, start/stop/inspect one
container per worker.

Docker is reached only through `orchestrator.engine`; what to run comes from the pure
`orchestrator.comfy.serverspec`. Containers carry labels (role=comfyui, project, config hash,
worker, URL), so every command finds "our" servers again without any state file.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from orchestrator import images
from orchestrator.comfy import health
from orchestrator.comfy.serverspec import LABEL_CONFIG, LABEL_GPU, LABEL_PROJECT_DIR, LABEL_SETTINGS, LABEL_URL, \
    LABEL_WORKER, ROLE, ServerOptions, WorkerPlan, changed_settings, plan, writable_dirs
from orchestrator.containers import LABEL_PROJECT, LABEL_ROLE, BuildLine, Container, invoking_user, project_id
from orchestrator.engine import Engine, connect
from orchestrator.errors import DockerError, OrchestratorError, UsageError
from orchestrator.layout import Layout
from orchestrator.progress import Event, NullSink, Sink
from orchestrator.runtimes.base import LogLine, RuntimeEnv, ServerInfo, ServerRequest, ServerUp


@dataclass(frozen=True)
class WorkerContainer:
    """One of our ComfyUI containers as Docker sees it."""

    index: int
    name: str
    url: str
    gpu: str
    state: str                      # running | exited | created | ...
    started_at: datetime | None
    config_hash: str
    exit_code: int | None = None

    def uptime(self, now: datetime | None = None) -> float | None:
        """Seconds since start when running, else None."""
        if self.state != "running" or self.started_at is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.started_at).total_seconds()


@dataclass(frozen=True)
class UpResult:
    """What `up` did: every worker's state, and which ones it started now (vs. found running)."""

    servers: tuple[WorkerContainer, ...]
    started: tuple[int, ...]
    image: str

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]


def our_labels(layout: Layout) -> dict[str, str]:
    """Labels every ComfyUI container of this project carries."""
    return {LABEL_ROLE: ROLE, LABEL_PROJECT: project_id(layout.root)}


def containers(engine: Engine, layout: Layout, *, running_only: bool = False) -> list[Container]:
    """Our ComfyUI containers for this project, by worker index."""
    for attempt in range(3):
        try:
            found = engine.find(our_labels(layout), all=not running_only)
            break
        except DockerError as e:  # one was removed between docker's list and its inspect: list again
            if "No such container" not in e.message or attempt == 2:
                raise
    return sorted(found, key=lambda c: int(c.labels.get(LABEL_WORKER, "0") or 0))


def state_of(container: Container) -> WorkerContainer:
    """A WorkerContainer from what the engine reported of the container."""
    labels = container.labels
    return WorkerContainer(
        index=int(labels.get(LABEL_WORKER, "0") or 0),
        name=container.name,
        url=labels.get(LABEL_URL, "?"),
        gpu=labels.get(LABEL_GPU, "?"),
        state=container.state,
        started_at=_parse_time(container.started_at),
        config_hash=labels.get(LABEL_CONFIG, ""),
        exit_code=container.exit_code,
    )


def discover_servers(engine: Engine, layout: Layout) -> list[str]:
    """URLs of our running ComfyUI containers for this project (worker order)."""
    return [state_of(c).url for c in containers(engine, layout, running_only=True)]


def status(engine: Engine, layout: Layout) -> list[WorkerContainer]:
    """Every ComfyUI container of this project, running or not."""
    return [state_of(c) for c in containers(engine, layout)]


def down(engine: Engine, layout: Layout, *, grace: float = 20.0) -> list[WorkerContainer]:
    """Stop (SIGINT, then kill after `grace`) and remove every ComfyUI container of this project;
    workers stop in parallel."""
    cs = containers(engine, layout)
    gone = [state_of(c) for c in cs]

    def stop(c: Container) -> None:
        engine.stop(c, signal="SIGINT", grace=grace)
        engine.remove(c)

    if cs:
        with ThreadPoolExecutor(max_workers=min(8, len(cs))) as pool:
            list(pool.map(stop, cs))
    return gone


# -- the image -----------------------------------------------------------------------------------

def ensure_image(engine: Engine, *, image: str | None = None, build: bool = True, rebuild: bool = False,
                 on_line: Callable[[BuildLine], None] | None = None, dockerfile: Path | None = None,
                 repo: str = images.COMFY_REPO) -> str:
    """The image tag to run: `image` as given (must exist), or ours (`repo:<hash of dockerfile>`,
    default Dockerfile.inference), built when missing or when `rebuild`."""
    if image is not None:
        if not engine.image_exists(image):
            raise DockerError(f"image {image} is not on this machine",
                              hint="build or load it first, or leave out --image to use ours "
                                   "(built from Dockerfile.inference)")
        return image
    dockerfile = dockerfile or images.SOURCE_ROOT / images.COMFY_DOCKERFILE
    if not dockerfile.is_file():
        raise DockerError(f"{dockerfile} is missing, so the ComfyUI image cannot be built",
                          hint=f"restore it from git (`git checkout -- {dockerfile.name}`)")
    tag = images.image_tag(repo, dockerfile)
    if engine.image_exists(tag) and not rebuild:
        return tag
    if not build:
        raise DockerError(f"the ComfyUI image {tag} is not built yet",
                          hint="run `comfyui up` without --no-build to build it (downloads several GB once)")
    with tempfile.TemporaryDirectory(prefix="flux-comfyui-build-") as d:
        # a context holding only the Dockerfile: never send models/ or datasets to the daemon
        shutil.copy2(dockerfile, Path(d) / dockerfile.name)
        engine.build(Path(d), dockerfile.name, tag, on_line=on_line,
                     labels={"io.flux-orchestrator.image": repo})
    return tag


# -- up --------------------------------------------------------------------------------------------

def up(engine: Engine, layout: Layout, options: ServerOptions, *, image: str | None = None, build: bool = True,
       rebuild: bool = False, recreate: bool = False, timeout: float = 180.0, user: str | None = None,
       reporter: Sink | None = None, on_build_line: Callable[[BuildLine], None] | None = None) -> UpResult:
    """Start ComfyUI (one container per worker) unless it already runs with the same settings;
    wait until every started server answers /system_stats."""
    reporter = reporter or NullSink()
    options.validate()
    reporter.emit(Event("server", "start", total=options.workers, unit="worker"))   # no line: the CLI says more
    if any(g is not None for g in options.worker_gpus()):
        engine.require_gpu_support()  # before a long build, not after
    tag = ensure_image(engine, image=image, build=build, rebuild=rebuild, on_line=on_build_line)
    plans = plan(layout, options, tag, user or invoking_user())
    existing = {state_of(c).index: c for c in containers(engine, layout)}
    _check_config(existing, plans, recreate)
    to_start = _clear_outdated(engine, existing, plans, reporter)
    for p in to_start:
        _check_port(engine, options.listen, p.host_port)
    prepare_dirs(layout, user or invoking_user())
    started = _start(engine, to_start, options.listen, timeout, reporter)
    servers = tuple(state_of(c) for c in containers(engine, layout))
    reporter.emit(Event("server", "end", step=len(servers), total=options.workers, unit="worker"))
    return UpResult(servers, tuple(p.index for p in started), tag)


def _clear_outdated(engine: Engine, existing: dict[int, Container], plans: list[WorkerPlan],
                    reporter: Sink) -> list[WorkerPlan]:
    """Remove stopped containers, ones with other settings and extra workers; return the plans to start."""
    to_start: list[WorkerPlan] = []
    existing = dict(existing)
    for p in plans:
        c = existing.pop(p.index, None)
        if c is not None:
            st = state_of(c)
            if st.state == "running" and st.config_hash == p.spec.labels[LABEL_CONFIG]:
                continue
            if st.state != "running":
                _say(reporter, "starting", f"removing the stopped ComfyUI container {st.name} "
                     f"({st.state}{'' if st.exit_code is None else f', exit code {st.exit_code}'})")
            else:
                _say(reporter, "starting", f"recreating {st.name} with the new settings")
            engine.stop(c, grace=20)
            engine.remove(c)
        to_start.append(p)
    for c in existing.values():  # workers beyond the new count (only reached with recreate)
        _say(reporter, "starting", f"removing extra worker {c.name}")
        engine.stop(c, grace=20)
        engine.remove(c)
    return to_start


def _start(engine: Engine, to_start: list[WorkerPlan], listen: str, timeout: float,
           reporter: Sink) -> list[WorkerPlan]:
    """Start the containers, then wait until each answers; on any failure (Ctrl+C included) remove them all."""
    started: list[tuple[WorkerPlan, Container]] = []
    try:
        for p in to_start:
            _say(reporter, "starting", f"starting ComfyUI worker {p.index} ({p.spec.name}) on {p.url}"
                 + ("" if p.gpu is None else f", GPU {p.gpu}"))
            try:
                started.append((p, engine.run(p.spec)))
            except DockerError as e:
                if "port" in e.message and "in use" in e.message:
                    raise _port_error(engine, listen, p.host_port, e.message) from e
                raise
        for p, c in started:
            _wait_ready(engine, p, c, timeout, reporter)
    except BaseException:
        # nothing half-started is left behind, including a container created by a run() that a
        # Ctrl+C cut short before it returned
        for p in to_start:
            c = next((c for q, c in started if q is p), None) or engine.get(p.spec.name)
            if c is not None:
                engine.stop(c, grace=5)
                engine.remove(c)
        raise
    return [p for p, _ in started]


def _say(reporter: Sink, phase: str, message: str) -> None:
    reporter.emit(Event("server", phase, message))


def prepare_dirs(layout: Layout, user: str) -> list[Path]:
    """Create the host folders the container writes to (dockerd would create missing mount
    sources as root); under sudo, hand the new ones to the invoking user. Returns those created."""
    created: list[Path] = []
    for d in writable_dirs(layout):
        missing = []
        p = d
        while not p.exists() and p != layout.root.parent:
            missing.append(p)
            p = p.parent
        d.mkdir(parents=True, exist_ok=True)
        created += reversed(missing)
    if os.geteuid() == 0 and user != "0:0":
        uid, _, gid = user.partition(":")
        for p in created:
            os.chown(p, int(uid), int(gid or uid))
    return created


def _check_config(existing: dict[int, Container], plans: list[WorkerPlan], recreate: bool) -> None:
    if recreate:
        return
    wanted = {p.index: p for p in plans}
    problems: list[str] = []
    for index, c in sorted(existing.items()):
        st = state_of(c)
        if st.state != "running":
            continue
        p = wanted.get(index)
        if p is None:
            problems.append(f"worker {index} ({st.url}) runs but --workers {len(plans)} would not start it")
        elif st.config_hash != p.spec.labels[LABEL_CONFIG]:
            changed = changed_settings(c.labels.get(LABEL_SETTINGS), json.loads(p.spec.labels[LABEL_SETTINGS]))
            problems.append(f"worker {index} ({st.url}) runs with other settings: {', '.join(changed) or 'config'}")
    if problems:
        raise UsageError("ComfyUI is already running with a different configuration", details=problems,
                         hint="`comfyui up --recreate` restarts it with the new settings "
                              "(or `comfyui down` first)")


def _check_port(engine: Engine, listen: str, port: int) -> None:
    if health.port_in_use(listen, port):
        raise _port_error(engine, listen, port)


def _port_error(engine: Engine, listen: str, port: int, evidence: str | None = None) -> OrchestratorError:
    owner = _comfyui_on_port(engine, port)
    if owner is not None:
        name, folder = owner
        return OrchestratorError(
            f"port {port} is already used by the ComfyUI of another project ({name}, project folder {folder})",
            hint=f"stop that one with `python -m orchestrator --project-dir {folder} comfyui down`, "
                 f"or use another port: `comfyui up --port {port + 1}`")
    return OrchestratorError(
        f"port {port} on {listen} is already in use by another program, so ComfyUI cannot listen there",
        details=[evidence] if evidence else [],
        hint=f"choose another port with `comfyui up --port {port + 1}`, or find and stop what holds it: "
             f"`ss -ltnp 'sport = :{port}'`",
    )


def _comfyui_on_port(engine: Engine, port: int) -> tuple[str, str] | None:
    """(container name, project folder) of a running ComfyUI container of ours publishing `port`."""
    try:
        found = engine.find({LABEL_ROLE: ROLE}, all=False)
    except DockerError:
        return None
    for c in found:
        if str(port) in c.host_ports:
            return c.name, c.labels.get(LABEL_PROJECT_DIR, "?")
    return None


def _wait_ready(engine: Engine, p: WorkerPlan, c: Container, timeout: float, reporter: Sink) -> None:
    def alive() -> bool:
        return _reload(engine, c).running

    def waiting(elapsed: float) -> None:
        reporter.emit(Event("server", "waiting", f"waiting for ComfyUI worker {p.index} at {p.url} "
                            f"({elapsed:.0f}s)", step=round(elapsed, 1), total=timeout, unit="second", live=True))

    try:
        health.wait_until_ready(p.url, timeout=timeout, alive=alive, evidence=lambda: engine.tail(c, 30),
                                on_wait=waiting, what=f"ComfyUI ({p.spec.name})")
    except OrchestratorError as e:
        code = None if alive() else _reload(engine, c).exit_code
        suffix = "" if code is None else f" (exit code {code})"
        raise OrchestratorError(e.message + suffix, details=e.details,
                                hint="the container was removed; fix the cause shown above and run `comfyui up` "
                                     "again (a slow first start may need a larger --timeout)") from e
    _say(reporter, "ready", f"ComfyUI worker {p.index} is ready at {p.url}")


def _reload(engine: Engine, c: Container) -> Container:
    """The container's current state (the last known one when it is gone)."""
    try:
        return engine.inspect(c) or c
    except DockerError:
        return c


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    base, _, frac = value.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(base + ("." + frac[:6] if frac else "")).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


# -- logs ------------------------------------------------------------------------------------------

def log_lines(engine: Engine, layout: Layout, *, follow: bool = False, tail: int | str = "all",
              worker: int | None = None) -> Iterator[tuple[int, str]]:
    """(worker index, line) from our containers' logs; with follow, until they stop (or Ctrl+C)."""
    cs = [c for c in containers(engine, layout) if worker is None or state_of(c).index == worker]
    if not cs:
        return
    if not follow or len(cs) == 1:
        for c in cs:
            yield from ((state_of(c).index, line) for line in _split_lines(engine.logs(c, follow=follow, tail=tail)))
        return
    yield from _merged(engine, cs, tail)


def _split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = ""
    for chunk in chunks:
        pending += chunk.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        *lines, pending = pending.split("\n")
        yield from lines
    if pending:
        yield pending


def _merged(engine: Engine, cs: list[Container], tail: int | str) -> Iterator[tuple[int, str]]:
    q: queue.Queue[tuple[int, str] | None] = queue.Queue()

    def pump(c: Container) -> None:
        try:
            for line in _split_lines(engine.logs(c, follow=True, tail=tail)):
                q.put((state_of(c).index, line))
        except Exception:  # a container that disappears ends its stream
            pass
        finally:
            q.put(None)

    for c in cs:
        threading.Thread(target=pump, args=(c,), daemon=True).start()
    remaining = len(cs)
    while remaining:
        item = q.get()
        if item is None:
            remaining -= 1
        else:
            yield item


# -- the ServerRuntime ---------------------------------------------------------------------------------

class DockerServer:
    """`ServerRuntime` on this machine's Docker engine: one labelled container per worker."""

    name: ClassVar[str] = "docker"

    def __init__(self, env: RuntimeEnv, settings: Mapping[str, Any]) -> None:
        self.env = env
        self.settings = dict(settings)
        self._engine: Engine | None = env.seams.get("engine")

    @property
    def engine(self) -> Engine:
        """The engine, connected on first use (DockerUnavailable when there is none)."""
        if self._engine is None:
            self._engine = connect()
        return self._engine

    def up(self, request: ServerRequest) -> ServerUp:
        """Build the image when missing, start the workers that do not run yet, wait until they answer."""
        result = up(self.engine, self.env.layout, request.options, image=self.settings.get("image"),
                    build=not self.settings.get("no_build"), rebuild=bool(self.settings.get("rebuild")),
                    recreate=request.recreate, timeout=request.timeout, reporter=self.env.reporter,
                    on_build_line=_build_reporter(self.env))
        return ServerUp(tuple(self._info(s) for s in result.servers), result.started, detail=result.image)

    def status(self) -> list[ServerInfo]:
        """Every ComfyUI container of the project, running or not."""
        return [self._info(s) for s in status(self.engine, self.env.layout)]

    def endpoints(self) -> list[str]:
        """URLs of the running containers."""
        return discover_servers(self.engine, self.env.layout)

    def logs(self, *, follow: bool = False, tail: int | None = None,
             worker: int | None = None) -> Iterator[LogLine]:
        """The containers' logs (merged by line when following several)."""
        for index, line in log_lines(self.engine, self.env.layout, follow=follow,
                                     tail="all" if tail is None else tail, worker=worker):
            yield LogLine(index, line)

    def has_run(self) -> bool:
        """True when a ComfyUI container of the project exists (running or exited)."""
        return bool(containers(self.engine, self.env.layout))

    def down(self, *, grace: float = 20.0) -> list[ServerInfo]:
        """Stop and remove every container (in parallel)."""
        return [self._info(s) for s in down(self.engine, self.env.layout, grace=grace)]

    def _info(self, s: WorkerContainer) -> ServerInfo:
        return ServerInfo(runtime=self.name, worker=s.index, name=s.name, url=s.url, state=s.state, gpu=s.gpu,
                          uptime_s=s.uptime(), exit_code=s.exit_code)


def _build_reporter(env: RuntimeEnv) -> Callable[[BuildLine], None]:
    """Image build output as progress: steps as milestones, other lines on the live line (all with -v)."""
    reporter = env.reporter or NullSink()
    step = {"text": ""}

    def on_line(line: BuildLine) -> None:
        if line.step is not None:
            step["text"] = f"step {line.step}/{line.total}"
            reporter.emit(Event("server", "build", f"[build] {line.text[:160]}", step=line.step, total=line.total))
        elif env.verbose:
            _say(reporter, "build", f"[build] {line.text}")
        else:
            reporter.emit(Event("server", "build", f"building the ComfyUI image ({step['text'] or 'starting'}): "
                                f"{line.text[:100]}", live=True))

    return on_line
