"""The Docker seam: the ONLY module that imports docker-py.

`Engine` wraps a `docker.DockerClient`: it takes our pure types (`orchestrator.containers`) and
returns them (`Container`, log byte iterators, exit codes), never docker-py objects, and turns
docker-py's exceptions into ours, keeping the evidence (exit code, last log lines, build output).
docker-py is imported inside the functions that call it: `import docker` costs ~0.3 s, kept off
`--help` and the plan-only commands.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.containers import NVIDIA_HINT, BuildLine, Container, ContainerSpec, gpu_request
from orchestrator.errors import DockerError, DockerUnavailable

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


def run_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for docker-py's `containers.run/create(**kwargs)` (detached, not auto-removed)."""
    from docker.types import DeviceRequest, Ulimit

    kw: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command) or None,
        "detach": True,
        "labels": dict(spec.labels),
        "volumes": {str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                    for m in spec.mounts},
        "environment": dict(spec.environment),
    }
    optional = {
        "name": spec.name,
        "user": spec.user,
        "working_dir": spec.working_dir,
        "shm_size": spec.shm_size,
        "stop_signal": spec.stop_signal,
        "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
    }
    kw.update({k: v for k, v in optional.items() if v is not None})
    if spec.gpus is not None:
        kw["device_requests"] = [DeviceRequest(capabilities=[["gpu"]], **gpu_request(spec.gpus))]
    if spec.ports:
        kw["ports"] = {f"{cport}/tcp": (ip, hport) for cport, (ip, hport) in spec.ports.items()}
    if spec.ipc_host:
        kw["ipc_mode"] = "host"
    if spec.ulimits:
        kw["ulimits"] = [Ulimit(name=n, soft=s, hard=h) for n, (s, h) in spec.ulimits.items()]
    return kw


def container_of(raw: Any) -> Container:
    """Our `Container` from a docker-py Container's attrs (as last loaded)."""
    attrs = getattr(raw, "attrs", None) or {}
    st = attrs.get("State") or {}
    status = st.get("Status") or getattr(raw, "status", "?")
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    ports = tuple(str(b.get("HostPort")) for bs in bindings.values() for b in bs or [] if b.get("HostPort"))
    return Container(id=raw.id, name=str(attrs.get("Name") or raw.name or raw.id[:12]).lstrip("/"), state=status,
                     labels=dict(raw.labels or {}), exit_code=st.get("ExitCode") if status == "exited" else None,
                     started_at=st.get("StartedAt"), image_id=attrs.get("Image"), host_ports=ports)


class Engine:
    """A connected Docker engine. Create with `connect()`; pass a client in tests if needed."""

    def __init__(self, client: Any) -> None:
        self.client = client

    # -- engine facts -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._call(self.client.info)

    def has_nvidia_runtime(self) -> bool:
        """True when the engine knows the `nvidia` runtime (what `--gpus` needs)."""
        runtimes = self.info().get("Runtimes") or {}
        return "nvidia" in runtimes

    def require_gpu_support(self) -> None:
        """Raise a clear DockerError when GPUs cannot be given to containers on this engine."""
        if not self.has_nvidia_runtime():
            raise DockerError(
                "this Docker engine has no NVIDIA runtime, so containers cannot use a GPU",
                hint=NVIDIA_HINT + "; `python -m orchestrator doctor` checks it",
            )

    # -- images -------------------------------------------------------------------------------
    def image_exists(self, tag: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.DockerException as e:
            raise _translate(e) from e

    def image_labels(self, tag: str) -> dict[str, str]:
        """Labels of a local image ({} when missing)."""
        import docker.errors

        try:
            return dict(self.client.images.get(tag).labels or {})
        except docker.errors.ImageNotFound:
            return {}
        except docker.errors.DockerException as e:
            raise _translate(e) from e

    def build(self, context: Path, dockerfile: str, tag: str, *, buildargs: Mapping[str, str] | None = None,
              labels: Mapping[str, str] | None = None, on_line: Callable[[BuildLine], None] | None = None,
              pull: bool = False, nocache: bool = False) -> None:
        """Build `tag` from `context/dockerfile`, streaming each output line to `on_line` (nocache: no layer cache)."""
        import docker.errors

        tail: list[str] = []
        try:
            stream = self.client.api.build(
                path=str(context), dockerfile=dockerfile, tag=tag, buildargs=dict(buildargs or {}),
                labels=dict(labels or {}), rm=True, forcerm=True, decode=True, pull=pull, nocache=nocache,
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    msg = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "build failed")
                    raise DockerError(f"building image {tag} failed: {msg.strip()}", details=tail[-20:],
                                      hint=f"fix {dockerfile} or the build context and run again")
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    tail = (tail + [line])[-40:]
                    m = _STEP.match(line)
                    if on_line:
                        on_line(BuildLine(line, int(m.group(1)), int(m.group(2))) if m else BuildLine(line))
        except docker.errors.DockerException as e:
            raise _translate(e, details=tail[-20:]) from e

    # -- containers ---------------------------------------------------------------------------
    def run(self, spec: ContainerSpec) -> Container:
        """Start a detached container from `spec` (never pulls)."""
        import docker.errors

        kw = run_kwargs(spec)
        kw.pop("detach")
        try:
            raw = self.client.containers.create(**kw)
        except docker.errors.ImageNotFound as e:
            raise DockerError(f"image {spec.image} is not on this machine",
                              hint="build it first (the command that needs it builds it when missing)") from e
        except docker.errors.DockerException as e:
            raise _translate(e) from e
        try:
            raw.start()
        except docker.errors.DockerException as e:
            self.remove(raw.id)  # a container that never started is not left behind
            raise _translate(e) from e
        return self.inspect(raw.id) or container_of(raw)

    def find(self, labels: Mapping[str, str], *, all: bool = True) -> list[Container]:
        """Containers carrying every given label (running and stopped unless all=False)."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return [container_of(c) for c in self._call(self.client.containers.list, all=all, filters=filters)]

    def get(self, name_or_id: str) -> Container | None:
        """The container named so (None when there is none)."""
        raw = self._raw(name_or_id)
        return None if raw is None else container_of(raw)

    def inspect(self, container: Container | str) -> Container | None:
        """The container's current state (None when it is gone)."""
        return self.get(_id(container))

    def stop(self, container: Container | str, *, signal: str = "SIGINT", grace: float = 20.0) -> None:
        """Send `signal`, wait up to `grace` seconds, then kill. Never raises for a gone container."""
        import docker.errors

        try:
            raw = self._raw(_id(container))
            if raw is None or raw.status not in ("running", "restarting", "paused"):
                return
            raw.kill(signal=signal)
            try:
                raw.wait(timeout=grace)
            except Exception:  # requests' ReadTimeout / ConnectionError: the grace period is over
                raw.kill()
                raw.wait(timeout=30)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as e:
            if e.status_code in (404, 409):  # gone, or not running any more
                return
            raise _translate(e) from e

    def remove(self, container: Container | str) -> None:
        """Force-remove a container; a container already gone is fine."""
        import docker.errors

        try:
            self.client.api.remove_container(_id(container), force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code not in (404, 409):
                raise _translate(e) from e

    def logs(self, container: Container | str, *, follow: bool = False, tail: int | str = "all",
             since: int | None = None) -> Iterator[bytes]:
        """Raw log bytes (stdout and stderr interleaved) as chunks; with follow, until the container stops."""
        kw: dict[str, Any] = {"stream": follow, "follow": follow, "tail": tail}
        if since is not None:
            kw["since"] = since
        out = self._call(self.client.api.logs, _id(container), **kw)
        return iter([out]) if isinstance(out, bytes) else out

    def tail(self, container: Container | str, n: int = 30) -> list[str]:
        """The last `n` log lines of a container, decoded; [] when unavailable."""
        try:
            raw = self.client.api.logs(_id(container), tail=n)
        except Exception:
            return []
        text = raw.decode("utf-8", "replace").replace("\r", "\n")
        return [line for line in text.splitlines() if line.strip()][-n:]

    def wait(self, container: Container | str, timeout: float | None = None) -> int:
        """Wait for the container to exit; returns its exit code."""
        result = self._call(self.client.api.wait, _id(container), timeout=timeout)
        return int(result.get("StatusCode", -1))

    def _raw(self, name_or_id: str) -> Any | None:
        import docker.errors

        try:
            return self.client.containers.get(name_or_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as e:
            raise _translate(e) from e

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import docker.errors

        try:
            return fn(*args, **kwargs)
        except docker.errors.DockerException as e:
            raise _translate(e) from e
        except Exception as e:  # requests errors when the engine goes away mid-call
            if type(e).__module__.startswith(("requests", "urllib3")):
                raise DockerUnavailable(f"lost the connection to the Docker engine: {e}",
                                        hint="is the Docker daemon still running? `docker info` tells") from e
            raise


def _id(container: Container | str | Any) -> str:
    return container if isinstance(container, str) else container.id


def connect(timeout: float = 10.0) -> Engine:
    """Connect to the engine named by DOCKER_HOST (or the default socket) and check it answers."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise DockerUnavailable("the Python package 'docker' is not installed",
                                hint="pip install -e .") from e
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as e:
        raise _unavailable(e) from e
    except Exception as e:
        raise _unavailable(e) from e
    return Engine(client)


def _unavailable(e: Exception) -> DockerUnavailable:
    text = str(e)
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if "Permission denied" in text or "PermissionError" in text:
        return DockerUnavailable(
            f"permission denied on the Docker socket ({where})",
            hint="add yourself to the docker group: `sudo usermod -aG docker $USER`, then log out and in "
                 "(or run `newgrp docker`)",
        )
    if "FileNotFoundError" in text or "No such file" in text or "Connection refused" in text \
            or "ConnectionRefused" in text:
        return DockerUnavailable(
            f"the Docker engine is not running ({where} does not answer)",
            hint="start it: `sudo systemctl start docker` (or open Docker Desktop); "
                 "check DOCKER_HOST if you use a remote engine",
        )
    hint = "check that Docker is installed and running: `docker info`"
    if os.environ.get("DOCKER_HOST"):
        hint += f"; and that DOCKER_HOST={where} is right (unset it to use the local engine)"
    return DockerUnavailable(f"cannot reach the Docker engine at {where}: {_short(text)}", hint=hint)


def _translate(e: Exception, details: Sequence[str] = ()) -> DockerError:
    import docker.errors

    if isinstance(e, docker.errors.APIError):
        explanation = str(getattr(e, "explanation", "") or e)
        if "could not select device driver" in explanation or "nvidia" in explanation.lower() \
                and "runtime" in explanation.lower():
            return DockerError("the Docker engine cannot give this container a GPU: " + _short(explanation),
                               hint=NVIDIA_HINT, details=details)
        if "port is already allocated" in explanation or "address already in use" in explanation:
            return DockerError("the port is already in use: " + _short(explanation),
                               hint="stop what uses it, or choose another port with --port", details=details)
        if "Conflict" in explanation and "name" in explanation:
            return DockerError("a container with that name already exists: " + _short(explanation),
                               hint="remove it with `docker rm -f NAME`", details=details)
        return DockerError(f"Docker refused the request: {_short(explanation)}", details=details)
    if isinstance(e, docker.errors.DockerException) and ("Connection" in str(e) or "socket" in str(e)):
        return _unavailable(e)
    return DockerError(f"Docker failed: {_short(str(e))}", details=details)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quick_facts(image: str | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
    """Engine facts for fast preflights without importing docker-py (~0.3 s of imports): two HTTP/1.0 GETs
    on the local unix socket. Returns {"runtimes": [...], "image_present": bool}, or None when DOCKER_HOST
    is not a unix socket (use `connect()` then). Raises DockerUnavailable."""

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return None

    def get(url: str) -> tuple[int, bytes]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(host[len("unix://"):])
            s.sendall(f"GET {url} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    try:
        status, body = get("/info")
        if status != 200:
            raise DockerUnavailable(f"the Docker engine at {host} answered HTTP {status}",
                                    hint="check that Docker is installed and running: `docker info`")
        runtimes = sorted((json.loads(body).get("Runtimes") or {}).keys())
        present = bool(image) and get(f"/images/{urllib.parse.quote(str(image), safe='')}/json")[0] == 200
    except DockerUnavailable:
        raise
    except (OSError, ValueError, IndexError) as e:
        raise _unavailable(e) from e
    return {"runtimes": runtimes, "image_present": present}
