"""Container value types, pure: what to start (`ContainerSpec`, `Mount`), what is running (`Container`),
the labels that find our containers again, and the small functions that compute them.

No docker-py here: `orchestrator.engine` turns these into API calls and API answers into these.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.gpus import parse_gpus

LABEL_PREFIX = "io.flux-orchestrator."
LABEL_ROLE = LABEL_PREFIX + "role"          # "train" | "comfyui" | ...
LABEL_PROJECT = LABEL_PREFIX + "project"    # project_id(layout.root)
LABEL_RUN = LABEL_PREFIX + "run"            # run id (training)
LABEL_CONFIG = LABEL_PREFIX + "config-hash"  # config_hash(...) of what the container was started with

NVIDIA_HINT = ("install the NVIDIA Container Toolkit and register its runtime with Docker "
               "(`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`)")


def project_id(root: Path) -> str:
    """A short stable id of a project folder, used in labels and container names."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:12]


def config_hash(obj: Any) -> str:
    """SHA-256 (16 hex) of a JSON-able value, key order ignored: tells whether a container still matches."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def invoking_user() -> str:
    """`uid:gid` of the caller (the real user behind sudo), so container outputs are not root-owned."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.getuid() == 0 and uid and gid:
        return f"{uid}:{gid}"
    return f"{os.getuid()}:{os.getgid()}"


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one container; pure data."""

    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: str | None = None
    gpus: str | None = None          # None: no GPU; "all"; "2" (a count); "0,1" (device ids)
    ports: Mapping[int, tuple[str, int]] = field(default_factory=dict)  # container port -> (host ip, host port)
    ipc_host: bool = False
    ulimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # name -> (soft, hard)
    shm_size: str | None = None
    entrypoint: tuple[str, ...] | None = None
    stop_signal: str | None = None


def gpu_request(gpus: str) -> dict[str, Any]:
    """`--gpus` value -> DeviceRequest fields: 'all' -> count -1, '2' -> count 2, '0,1' -> device ids."""
    if gpus.strip() == "none":
        raise ValueError("invalid GPU selection 'none' for a device request (leave gpus out instead)")
    return parse_gpus(gpus).device_request()


@dataclass(frozen=True)
class BuildLine:
    """One line of `docker build` output, with the classic builder's step counter when present."""

    text: str
    step: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Container:
    """One container as the engine last reported it (our type: nothing of docker-py leaks out)."""

    id: str
    name: str
    state: str                                   # "created" | "running" | "exited" | "restarting" | ...
    labels: Mapping[str, str] = field(default_factory=dict)
    exit_code: int | None = None                 # set once it has exited
    started_at: str | None = None                # the engine's ISO time ("0001-..." when never started)
    image_id: str | None = None                  # sha256:... of the image it runs
    host_ports: tuple[str, ...] = ()             # published host ports

    @property
    def running(self) -> bool:
        """True while the container runs (or is about to)."""
        return self.state in ("running", "created", "restarting")
