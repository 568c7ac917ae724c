"""The `ray` runtime: ComfyUI workers as detached, named Ray actors on a Ray cluster.

`comfyui up --runtime ray --address ADDR --workers N` creates actors `comfyui-0..N-1` in a Ray
namespace (default `flux-orchestrator`), each asking for `--worker-gpus` GPUs (default 1) and starting
ComfyUI on its node the way the local runtime does (orchestrator.runtimes.local_comfyui), from the same
`--comfyui` checkout path on every node, with the models folder of `--models` (a path every node sees:
a shared file system; nothing is copied per node). ComfyUI listens on 127.0.0.1 of its node (it has no
authentication): everything the driver needs goes through the actor, images included (`fetch` returns
the bytes through Ray's object store), so the driver needs no network route to the workers' ports.

A worker that dies is replaced by Ray itself (`max_restarts=-1`): on the same node when only its
process died, elsewhere when its node is gone; its ComfyUI starts again in the actor's constructor.
`batch run` talks to the workers through `RayServer`, the batch scheduler's `Server` protocol over an
actor handle, so ordering, depth, retries and the manifest are the one-machine engine's (batch/).
Ray errors (a dead actor, a lost node, a timeout) become `ComfyUnavailable`: the scheduler then hands
that worker's jobs to the others and records why in the manifest, exactly as for a dead HTTP server.

Where things are found again: `up` records the address and namespace in `.comfyui/ray.json` of the
project, so `status`, `logs`, `down` and `batch run` find the workers without flags.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.batch.protocol import ImageRef, Outcome, Payload
from orchestrator.errors import (ComfyError, ComfyRejected, ComfyUnavailable, ConfigError, OrchestratorError,
                                 RuntimeUnavailable, UsageError)
from orchestrator.layout import Layout, atomic_write_text
from orchestrator.progress import Event, NullSink
from orchestrator.runtimes.base import LogLine, RuntimeEnv, ServerInfo, ServerRequest, ServerUp

NAMESPACE = "flux-orchestrator"
PREFIX = "comfyui-"
WORK_DIR = "/tmp/flux-orchestrator-ray"
INSTALL_HINT = "install the extra: pip install -e '.[ray]'   (from a checkout; or pip install 'flux-orchestrator[ray]')"


class RayNotInstalled(UsageError, RuntimeUnavailable):
    """The `ray` extra is missing (exit 2); `comfyui status` / `down` skip this runtime then."""


def import_ray() -> Any:
    """The ray module; RayNotInstalled naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalled("--runtime ray / --ray need Ray, which is not installed in this Python",
                         hint=INSTALL_HINT) from None
    return ray


def record_file(layout: Layout) -> Path:
    """Where `up` records the cluster address and namespace of this project's workers."""
    return layout.root / ".comfyui" / "ray.json"


@dataclass(frozen=True)
class Target:
    """Which cluster and namespace hold the workers."""

    address: str
    namespace: str = NAMESPACE


_connected: list[Target] = []   # the cluster this process is a driver of (ray.init is once per process)


def connect(target: Target) -> Any:
    """ray, initialised as a driver of `target` (again only when the address or namespace changed)."""
    ray = import_ray()
    if ray.is_initialized():
        if _connected == [target]:
            return ray
        ray.shutdown()
    _connected.clear()
    _check_reachable(target.address)  # ray.init would retry an unreachable head for minutes, logging noise
    try:
        ray.init(address=target.address, namespace=target.namespace, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RuntimeUnavailable(f"cannot reach the Ray cluster at {target.address}: {str(e).splitlines()[0][:300]}",
                                 hint="start one with `ray start --head` (see the README), or pass its address "
                                      "with --address HOST:6379 (--ray HOST:6379 for batch run)") from None
    _connected.append(target)
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """RuntimeUnavailable unless HOST:PORT accepts a TCP connection ('auto' and ray:// are left to Ray)."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address {address!r} is not HOST:PORT", hint="e.g. --address 10.0.0.5:6379 (the head's "
                                                                         "`ray start --head --port`)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RuntimeUnavailable(f"cannot reach the Ray cluster at {address}: {e.strerror or e}",
                                 hint="start one with `ray start --head --port 6379` (see the README), or pass "
                                      "its address with --address HOST:6379 (--ray HOST:6379 for batch run)") from None


def disconnect() -> None:
    """End this process's Ray driver (the workers, detached, go on running)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
    _connected.clear()


# -- the actor: one ComfyUI on one node -----------------------------------------------------------

class ComfyWorker:
    """A Ray actor running one ComfyUI on its node (local runtime) and relaying the batch calls to it."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        import ray

        from orchestrator.batch.comfy_server import ComfyServer
        from orchestrator.runtimes import local_comfyui as localserver
        from orchestrator.comfy.serverspec import ServerOptions

        self.name, self.config = name, config
        self.lock = threading.Lock()
        self.started = time.time()
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.restarted = bool(ctx.was_current_actor_reconstructed)
        self.failure: tuple[str, str | None, list[str]] | None = None
        self.layout = Layout.at(Path(config["work_dir"]) / config["namespace"] / name)
        self.server = None
        self.comfy = None
        try:
            self.layout.root.mkdir(parents=True, exist_ok=True)
            _link(self.layout.models, Path(config["models"]))
            options = ServerOptions(listen=config["listen"], port=_free_port(config["listen"]),
                                    gpus="all" if self.gpu_ids else "none", extra_args=tuple(config["extra_args"]))
            self.server, _ = localserver.up(self.layout, options, Path(config["comfyui"]), python=config["python"],
                                            timeout=config["timeout"])
            self.comfy = ComfyServer.connect(self.server.url, timeout=config["http_timeout"])
        except OrchestratorError as e:  # reported by ready(); raising here would make Ray restart us forever
            self.failure = (e.message, e.hint, list(e.details))

    def ready(self) -> dict[str, Any]:
        """This worker's info, or the error that stopped its ComfyUI from starting."""
        if self.failure is not None:
            return {"error": self.failure}
        return self.info()

    def info(self) -> dict[str, Any]:
        """Node, GPUs, the ComfyUI URL on the node, and its queue (None when it does not answer)."""
        from orchestrator.comfy import health

        queue: tuple[int, int] | None = None
        if self.server is not None:
            try:
                queue = health.queue_length(self.server.url)
            except health.NotReady:
                pass
        return {"name": self.name, "node_id": self.node_id, "node_ip": self.node_ip, "gpus": self.gpu_ids,
                "url": self.server.url if self.server else None, "pid": self.server.pid if self.server else None,
                "started": self.started, "restarted": self.restarted, "queue": queue}

    def submit(self, payload: Payload, prompt_id: str) -> Any:
        return self._guard(lambda: self.comfy.submit(payload, prompt_id))

    def queue_ids(self) -> Any:
        return self._guard(self.comfy.queue_ids)

    def result(self, prompt_id: str) -> Any:
        """The outcome and, when it succeeded, its images' bytes (one round trip instead of two)."""
        def collect() -> tuple[Outcome | None, list[bytes]]:
            outcome = self.comfy.result(prompt_id)
            images = [self.comfy.fetch(ref) for ref in outcome.images] if outcome is not None and outcome.ok else []
            return outcome, images

        return self._guard(collect)

    def fetch(self, ref: ImageRef) -> Any:
        return self._guard(lambda: self.comfy.fetch(ref))

    def delete_pending(self, prompt_ids: Sequence[str]) -> Any:
        return self._guard(lambda: self.comfy.delete_pending(prompt_ids))

    def idle(self, poll: float, quiet: float) -> Any:
        return self._guard(lambda: self.comfy.idle(poll, quiet))

    def relay(self, target: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Any other call of the batch code on this worker's ComfyServer ("server") or its ComfyClient
        ("client"), e.g. client.object_info(); an optional method it lacks answers None."""
        obj = self.comfy if target == "server" else getattr(self.comfy, "client", None)
        fn = getattr(obj, method, None)
        if fn is None:
            return ("ok", None) if self.comfy is not None else self._guard(lambda: None)
        return self._guard(lambda: fn(*args, **kwargs))

    def log_tail(self, n: int) -> list[str]:
        from orchestrator.runtimes import local_comfyui as localserver

        return localserver.tail(self.layout, n)

    def log_from(self, offset: int) -> tuple[list[str], int]:
        """Complete log lines after byte `offset`, and the offset to ask from next time (for --follow)."""
        from orchestrator.runtimes import local_comfyui as localserver

        try:
            with open(localserver.log_file(self.layout), "rb") as f:
                if os.fstat(f.fileno()).st_size < offset:
                    offset = 0  # a new log: this worker was restarted on another node
                f.seek(offset)
                data = f.read(1 << 20)
        except OSError:
            return [], offset
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8", "replace").replace("\r", "\n").splitlines()
        return [line for line in lines if line.strip()], offset + end

    def stop(self, grace: float) -> None:
        """Stop this worker's ComfyUI (before the actor is killed)."""
        from orchestrator.runtimes import local_comfyui as localserver

        if self.comfy is not None:
            self.comfy.close()
        localserver.down(self.layout, grace=grace)

    def _guard(self, call: Any) -> tuple[Any, ...]:
        """("ok", value) or ("err", kind, message, hint, details): our errors cross Ray as plain values."""
        if self.comfy is None:
            return ("err", "ComfyUnavailable", f"{self.name}: ComfyUI did not start", None, [])
        with self.lock:  # one batch thread drives a worker; `comfyui status` may ask at the same time
            try:
                return ("ok", call())
            except ComfyError as e:
                if isinstance(e, ComfyUnavailable) and not self._comfy_alive():
                    # ComfyUI died under us: let Ray restart this actor, which starts a fresh ComfyUI
                    threading.Timer(0.2, os._exit, args=(1,)).start()
                kind = type(e).__name__ if isinstance(e, (ComfyRejected, ComfyUnavailable)) else "ComfyError"
                return ("err", kind, e.message, e.hint, list(e.details))

    def _comfy_alive(self) -> bool:
        from orchestrator.runtimes import local_comfyui as localserver

        return localserver.running(self.layout) is not None


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise ConfigError(f"{link} exists and is not our link to the models folder", hint=f"remove {link}")
    link.symlink_to(target, target_is_directory=True)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- the batch scheduler's Server over an actor -----------------------------------------------------

class RayServer:
    """One worker as the batch scheduler sees it (batch.protocol.Server), every call through Ray."""

    ERRORS: ClassVar[dict[str, type[ComfyError]]] = {"ComfyRejected": ComfyRejected,
                                                     "ComfyUnavailable": ComfyUnavailable, "ComfyError": ComfyError}

    def __init__(self, target: Target, name: str, handle: Any, *, timeout: float = 30.0) -> None:
        self.target, self.name, self.handle, self.timeout = target, name, handle, timeout
        self.url = f"ray:{name}"
        self.client = _ClientRelay(self)  # PromptBuilder asks `server.client.object_info()` and the like
        self.fetched: dict[ImageRef, bytes] = {}  # images that came with their result, until saved

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        ray = import_ray()
        try:
            reply = ray.get(getattr(self.handle, method).remote(*args), timeout=timeout or self.timeout)
        except ray.exceptions.RayError as e:
            self._refresh(ray)
            raise ComfyUnavailable(f"{self.url}: the Ray worker is unreachable ({type(e).__name__})",
                                   hint="`comfyui status --runtime ray` shows the workers; Ray restarts dead ones") from None
        if reply[0] == "ok":
            return reply[1]
        _, kind, message, hint, details = reply
        raise self.ERRORS.get(kind, ComfyError)(message, hint=hint, details=details)

    def _refresh(self, ray: Any) -> None:
        """Look the actor up again by name: `comfyui up` may have made a new one since."""
        try:
            self.handle = ray.get_actor(self.name, namespace=self.target.namespace)
        except (ValueError, ray.exceptions.RayError):
            pass

    def submit(self, payload: Payload, prompt_id: str) -> None:
        self._call("submit", payload, prompt_id)

    def queue_ids(self) -> tuple[set[str], set[str]]:
        return self._call("queue_ids")

    def result(self, prompt_id: str) -> Outcome | None:
        outcome, images = self._call("result", prompt_id)
        if outcome is not None:
            self.fetched.update(zip(outcome.images, images))
        return outcome

    def fetch(self, ref: ImageRef) -> bytes:
        """The image `result` brought along (the saver asks right after), else ask the worker."""
        data = self.fetched.pop(ref, None)
        return data if data is not None else self._call("fetch", ref)

    def delete_pending(self, prompt_ids: Sequence[str]) -> None:
        self._call("delete_pending", list(prompt_ids))

    def idle(self, poll: float, quiet: float | None = None) -> None:
        """The worker waits on its ComfyUI's websocket (its doorbell) for us, draining it; never raises
        (like ComfyServer.idle): a lost worker is noticed by the next queue_ids."""
        try:
            self._call("idle", poll, quiet if quiet is not None else poll, timeout=self.timeout + (quiet or poll))
        except ComfyError:
            time.sleep(poll)

    def server_log(self) -> Any:
        """The worker's ComfyUI's recent log lines (None when it has no such route or method)."""
        return self._call("relay", "server", "server_log", (), {})

    def close(self) -> None:
        pass


class _ClientRelay:
    """`server.client.X(...)` of a RayServer: ComfyClient calls made by the worker on its node."""

    def __init__(self, server: RayServer) -> None:
        self._server = server

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._server._call("relay", "client", name, args, kwargs)


# -- the runtime --------------------------------------------------------------------------------------

class RayServerRuntime:
    """ComfyUI workers as Ray actors; see the module docstring."""

    name: ClassVar[str] = "ray"
    # its options (--address, --namespace, --worker-gpus, ...) are declared in its registry Entry

    def __init__(self, env: RuntimeEnv, settings: Mapping[str, Any]) -> None:
        self.env = env
        self.settings = {k: v for k, v in settings.items() if v is not None}

    # ---- where the workers are -----------------------------------------------------------------
    def target(self) -> Target | None:
        """--address / $RAY_ADDRESS / the recorded cluster; None when nothing says where."""
        recorded = self._recorded()
        address = self.settings.get("address") or os.environ.get("RAY_ADDRESS") or (recorded or {}).get("address")
        if not address:
            return None
        namespace = self.settings.get("namespace") or (
            recorded.get("namespace") if recorded and recorded.get("address") == address else None) or NAMESPACE
        return Target(str(address), str(namespace))

    def _recorded(self) -> dict[str, Any] | None:
        try:
            data = json.loads(record_file(self.env.layout).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _workers(self, ray: Any) -> list[tuple[int, str, Any]]:
        """(index, name, handle) of every worker actor in the namespace, by index."""
        found = []
        for name in ray.util.list_named_actors():
            if name.startswith(PREFIX) and name[len(PREFIX):].isdigit():
                try:
                    found.append((int(name[len(PREFIX):]), name, ray.get_actor(name)))
                except ValueError:
                    continue  # killed between the listing and the lookup
        return sorted(found, key=lambda w: w[0])

    # ---- ServerRuntime ------------------------------------------------------------------------
    def up(self, request: ServerRequest) -> ServerUp:
        target = self.target()
        if target is None:
            raise UsageError("--runtime ray needs the cluster's address: --address HOST:6379",
                             hint="start a cluster with `ray start --head` (README: several machines)")
        config = self._config(request)
        gpus, cpus = self._resources()
        reporter = self.env.reporter or NullSink()
        reporter.emit(Event("server", "start", total=request.options.workers, unit="worker"))  # the CLI says more
        ray = connect(target)
        existing = {i for i, _, _ in self._workers(ray)}
        actor = ray.remote(ComfyWorker)
        handles = []
        for i in range(request.options.workers):
            handles.append((i, actor.options(
                name=f"{PREFIX}{i}", namespace=target.namespace, lifetime="detached", get_if_exists=True,
                num_gpus=gpus, num_cpus=cpus, max_restarts=-1, max_task_retries=0, max_concurrency=4,
                scheduling_strategy="SPREAD").remote(f"{PREFIX}{i}", config)))
        self._write_record(target)
        reporter.emit(Event("server", "starting", f"placing {len(handles)} ComfyUI worker(s) on the Ray cluster at "
                            f"{target.address} ({gpus:g} GPU each); waiting for them to answer"))
        infos, errors = [], []
        for i, handle in handles:
            try:
                info = ray.get(handle.ready.remote(), timeout=request.timeout)
            except ray.exceptions.GetTimeoutError:
                errors.append(f"{PREFIX}{i}: not placed or not answering after {request.timeout:.0f}s "
                              f"(the cluster may lack {gpus:g} free GPU(s) / {cpus:g} CPU(s) per worker)")
                continue
            except ray.exceptions.RayError as e:
                errors.append(f"{PREFIX}{i}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                continue
            if "error" in info:
                message, hint, details = info["error"]
                errors.append(f"{PREFIX}{i}: {message}" + (f" ({hint})" if hint else ""))
                errors.extend(f"  {d}" for d in details[:5])
                continue
            infos.append(self._info(i, info))
        if errors:
            for i, handle in handles:
                if i not in existing:  # leave nothing half-started behind: only the workers we made now
                    _kill(ray, handle, grace=5)
            raise OrchestratorError(f"{len(errors)} of {len(handles)} Ray worker(s) did not start", details=errors,
                                    hint="fix the cause and run `comfyui up --runtime ray` again")
        started = tuple(i for i, _ in handles if i not in existing)
        reporter.emit(Event("server", "end", step=len(infos), total=request.options.workers, unit="worker"))
        return ServerUp(tuple(infos), started, detail=f"Ray cluster {target.address}, namespace {target.namespace}")

    def status(self) -> list[ServerInfo]:
        return [info for info, _ in self.describe()]

    def describe(self) -> list[tuple[ServerInfo, tuple[int, int] | None]]:
        """Every worker with its queue (running, pending), None when it does not answer now."""
        target = self.target()
        if target is None:
            return []
        ray = connect(target)
        out = []
        for i, name, handle in self._workers(ray):
            try:
                info = ray.get(handle.info.remote(), timeout=10)
            except ray.exceptions.RayError as e:
                state = "restarting" if isinstance(e, ray.exceptions.GetTimeoutError) else "dead"
                out.append((ServerInfo("ray", i, name, f"ray:{name}", state), None))
                continue
            out.append((self._info(i, info), info["queue"]))
        return out

    def endpoints(self) -> list[str]:
        """None: the workers' ComfyUI listen on their own nodes; `batch run` reaches them via batch_servers()."""
        return []

    def batch_servers(self, *, timeout: float = 30.0) -> list[RayServer]:
        """The workers as batch `Server`s (empty when no cluster is known or none runs)."""
        target = self.target()
        if target is None:
            return []
        ray = connect(target)
        return [RayServer(target, name, handle, timeout=timeout) for _, name, handle in self._workers(ray)]

    def logs(self, *, follow: bool = False, tail: int | None = None, worker: int | None = None) -> Iterator[LogLine]:
        target = self.target()
        if target is None:
            return
        ray = connect(target)
        offsets: dict[str, int] = {}
        for i, name, handle in self._workers(ray):
            if worker is not None and i != worker:
                continue
            try:
                lines = ray.get(handle.log_tail.remote(tail if tail is not None else 10_000), timeout=30)
                if follow:
                    offsets[name] = ray.get(handle.log_from.remote(0), timeout=30)[1]
            except ray.exceptions.RayError:
                continue
            for line in lines:
                yield LogLine(i, line)
        while follow:  # until no worker is left (`comfyui down` from elsewhere); Ctrl+C ends it too
            workers = [w for w in self._workers(ray) if worker is None or w[0] == worker]
            if not workers:
                return
            for i, name, handle in workers:
                try:
                    lines, offsets[name] = ray.get(handle.log_from.remote(offsets.get(name, 0)), timeout=30)
                except ray.exceptions.RayError:
                    continue  # restarting: its new log is read from where we were
                for line in lines:
                    yield LogLine(i, line)
            time.sleep(1.0)

    def has_run(self) -> bool:
        return record_file(self.env.layout).exists()

    def down(self, *, grace: float = 20.0) -> list[ServerInfo]:
        target = self.target()
        if target is None:
            return []
        ray = connect(target)
        gone = []
        for i, name, handle in self._workers(ray):
            gone.append(ServerInfo("ray", i, name, f"ray:{name}", "removed"))
            _kill(ray, handle, grace=grace)
        record_file(self.env.layout).unlink(missing_ok=True)
        return gone

    # ---- helpers -------------------------------------------------------------------------------
    def _resources(self) -> tuple[float, float]:
        def number(key: str, default: float) -> float:
            raw = self.settings.get(key, default)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise UsageError(f"--{key.replace('_', '-')} {raw!r} is not a number", hint="e.g. 1, or 0") from None
            if value < 0:
                raise UsageError(f"--{key.replace('_', '-')} {raw!r} must be 0 or more")
            return value

        return number("worker_gpus", 1), number("worker_cpus", 1)

    def _config(self, request: ServerRequest) -> dict[str, Any]:
        options = request.options
        comfyui = self.settings.get("comfyui")
        if not comfyui:
            raise UsageError("--runtime ray needs --comfyui DIR: the ComfyUI checkout, at the same path on every node")
        if options.gpus not in ("all", "none"):
            raise UsageError("--gpus does not apply to --runtime ray: Ray gives each worker its GPUs",
                             hint="use --worker-gpus N (0 for CPU workers)")
        models = Path(self.settings.get("models") or self.env.layout.models).expanduser().resolve()
        return {"comfyui": str(Path(comfyui).expanduser().resolve()), "python": self.settings.get("python"),
                "models": str(models), "work_dir": str(Path(self.settings.get("work_dir") or WORK_DIR).expanduser()),
                "namespace": self.target().namespace if self.target() else NAMESPACE,  # type: ignore[union-attr]
                "listen": options.listen, "extra_args": list(options.extra_args), "timeout": request.timeout,
                "http_timeout": 30.0}

    def _info(self, index: int, info: dict[str, Any]) -> ServerInfo:
        gpu = ",".join(info["gpus"]) or "none"
        local = (info["url"] or "").split("//", 1)[-1]
        where = f"{info['name']} on node {info['node_ip']} {info['node_id'][:8]}, ComfyUI {local} there"
        return ServerInfo("ray", index, where + (" (restarted by Ray)" if info.get("restarted") else ""),
                          f"ray:{info['name']}", "running", gpu, time.time() - info["started"])

    def _write_record(self, target: Target) -> None:
        path = record_file(self.env.layout)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"address": target.address, "namespace": target.namespace}, indent=2) + "\n")


def batch_workers(env: RuntimeEnv, address: str, namespace: str | None = None, *,
                  timeout: float = 30.0) -> list[RayServer]:
    """`batch run --ray ADDR`: the workers on that cluster as batch Servers; ComfyUnavailable when none runs."""
    workers = RayServerRuntime(env, {"address": address, "namespace": namespace}).batch_servers(timeout=timeout)
    if not workers:
        raise ComfyUnavailable(f"no ComfyUI worker runs on the Ray cluster at {address}",
                               hint=f"start them: `comfyui up --runtime ray --address {address} --workers N "
                                    "--comfyui DIR`")
    return workers


def _kill(ray: Any, handle: Any, *, grace: float) -> None:
    """Stop the worker's ComfyUI, then the actor for good (no restart)."""
    try:
        ray.get(handle.stop.remote(grace), timeout=grace + 10)
    except ray.exceptions.RayError:
        pass  # dead already, or its node is gone: nothing left to stop there
    try:
        ray.kill(handle, no_restart=True)
    except ray.exceptions.RayError:
        pass
