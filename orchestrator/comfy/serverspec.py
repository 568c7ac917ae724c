"""The ComfyUI server plan, pure: options -> container specs (mounts, ports, GPUs, labels, command).

Nothing here touches Docker or the disk; `orchestrator.runtimes.docker_comfyui` runs what this describes.
Container layout (see Dockerfile.inference): ComfyUI in /opt/ComfyUI, started with
`--base-directory /comfy`, so models, user data, outputs and inputs are mounts under /comfy.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.containers import (LABEL_CONFIG, LABEL_PREFIX, LABEL_PROJECT, LABEL_ROLE, ContainerSpec, Mount,
                                     config_hash, project_id)
from orchestrator.errors import UsageError
from orchestrator.gpus import HINT as GPU_HINT
from orchestrator.gpus import parse_gpus
from orchestrator.layout import Layout

ROLE = "comfyui"
CONTAINER_PORT = 8188
COMFY_ROOT = "/opt/ComfyUI"
BASE = "/comfy"
DB_URL = f"sqlite:///{BASE}/user/comfyui.db"
LABEL_URL = LABEL_PREFIX + "comfyui.url"
LABEL_WORKER = LABEL_PREFIX + "comfyui.worker"
LABEL_GPU = LABEL_PREFIX + "comfyui.gpu"
LABEL_SETTINGS = LABEL_PREFIX + "comfyui.settings"  # the JSON the config hash is computed from
LABEL_PROJECT_DIR = LABEL_PREFIX + "comfyui.project-dir"  # to name the owner of a busy port
LOOPBACK = "127.0.0.1"


# `comfyui up --speed`: ComfyUI flags per speed mode, each measured on an H200 with the GPU kit
# (bench/inference_gpu.py, bench/results/inference-h200.json; 1024x1024, 28 steps, random weights):
# - standard: bf16 weights and compute, 4.96 s per image.
# - fast: FLUX weights stored in fp8 (e4m3fn) and fp8 matrix products through comfy-kitchen,
#   4.46 s per image (-10 %); the image differs from bf16 at the same seed (PSNR 28.7 dB measured on
#   random weights), so it is opt-in.
SPEED_FLAGS: dict[str, tuple[str, ...]] = {
    "standard": (),
    "fast": ("--fast", "fp8_matrix_mult", "--fp8_e4m3fn-unet"),
}


@dataclass(frozen=True)
class ServerOptions:
    """What the user asked for with `comfyui up`."""

    listen: str = LOOPBACK       # host address the port is published on
    port: int = 8188             # host port of worker 0; worker i gets port + i
    gpus: str = "all"            # "all" | "none" | a count "2" | ids "0,1" | "device=0"
    workers: int = 1             # one container per GPU when > 1
    extra_args: tuple[str, ...] = ()  # more main.py flags (e.g. --lowvram)

    def validate(self) -> None:
        """Raise UsageError for values that cannot work, naming the option."""
        if not 1 <= self.port <= 65535 or self.port + self.workers - 1 > 65535:
            raise UsageError(f"--port {self.port} is out of range", hint="use a port between 1024 and 65535")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers} must be at least 1")
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            raise UsageError(f"--listen {self.listen!r} is not an IP address",
                             hint="use 127.0.0.1 (this machine only, the default), 0.0.0.0 (every interface) "
                                  "or one of this machine's addresses") from None
        try:
            parse_gpus(self.gpus)
        except ValueError as e:
            raise UsageError(f"--gpus: {e}", hint=GPU_HINT) from None
        if self.workers > 1 and self.gpus not in ("all", "none") and len(self.worker_gpus()) != self.workers:
            raise UsageError(f"--workers {self.workers} needs {self.workers} GPU ids, got --gpus {self.gpus}",
                             hint=f"leave --gpus out to use GPUs 0..{self.workers - 1}, "
                                  f"or list {self.workers} ids like --gpus 0,2")

    @property
    def exposed(self) -> bool:
        """True when the server is reachable from other machines (no authentication!)."""
        return not ipaddress.ip_address(self.listen).is_loopback

    def gpu_ids(self) -> list[str] | None:
        """Device ids when --gpus names devices ('0,1', 'device=0', 'GPU-uuid'); None for all/none/a count."""
        ids = parse_gpus(self.gpus).ids
        return list(ids) if ids else None

    def worker_gpus(self) -> list[str | None]:
        """Each worker's GPUs: None (CPU), 'all', a count ('2'), or device ids ('0' / '0,1')."""
        selection = parse_gpus(self.gpus)
        if selection.none:
            return [None] * self.workers
        if self.workers == 1:
            return [",".join(selection.ids) if selection.ids else self.gpus]
        if selection.ids:
            return list(selection.ids)
        return [str(i) for i in range(self.workers if selection.all else selection.processes(None))]


@dataclass(frozen=True)
class WorkerPlan:
    """One ComfyUI container: its spec and where it answers."""

    index: int
    spec: ContainerSpec
    url: str          # what a browser / client on this machine opens
    host_port: int
    gpu: str | None


def probe_host(listen: str) -> str:
    """The address to reach a server published on `listen` from this machine."""
    ip = ipaddress.ip_address(listen)
    if ip.is_unspecified:
        return LOOPBACK if ip.version == 4 else "::1"
    return listen


def server_url(listen: str, port: int) -> str:
    """http://host:port as seen from this machine (IPv6 in brackets)."""
    host = probe_host(listen)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def user_dir(layout: Layout) -> Path:
    """The persistent ComfyUI user folder of the project (settings, sqlite db, workflows mount point)."""
    return layout.root / ".comfyui" / "user"


def writable_dirs(layout: Layout) -> list[Path]:
    """Host folders that must exist (owned by the user) before the container starts."""
    return [user_dir(layout) / "default" / "workflows", layout.workflows, layout.comfy_outputs, layout.inputs,
            *layout.model_dirs().values()]


def mounts(layout: Layout) -> tuple[Mount, ...]:
    """Models read-only; user data, workflows, outputs, inputs writable."""
    models = tuple(Mount(path, f"{BASE}/models/{name}", read_only=True)
                   for name, path in layout.model_dirs().items())
    return models + (
        Mount(user_dir(layout), f"{BASE}/user", read_only=False),
        # nested inside the user mount: the browser lists and saves these as "Workflows"
        Mount(layout.workflows, f"{BASE}/user/default/workflows", read_only=False),
        Mount(layout.comfy_outputs, f"{BASE}/output", read_only=False),
        Mount(layout.inputs, f"{BASE}/input", read_only=False),
    )


def command(gpu: str | None, extra_args: tuple[str, ...] = ()) -> tuple[str, ...]:
    """main.py's argv inside the container (it always listens on 0.0.0.0:8188 there)."""
    argv = ("python", "main.py", "--listen", "0.0.0.0", "--port", str(CONTAINER_PORT),
            "--base-directory", BASE, "--database-url", DB_URL, "--disable-auto-launch")
    if gpu is None:
        argv += ("--cpu",)
    return argv + tuple(extra_args)


def container_name(layout: Layout, index: int) -> str:
    """flux-comfyui-<project id>-<worker index>."""
    return f"flux-comfyui-{project_id(layout.root)}-{index}"


def settings(layout: Layout, options: ServerOptions, image: str, index: int) -> dict[str, object]:
    """What determines a worker container; its hash tells whether a running one still matches."""
    gpu = options.worker_gpus()[index]
    return {
        "image": image,
        "listen": options.listen,
        "port": options.port + index,
        "gpu": gpu,
        "extra_args": list(options.extra_args),
        "mounts": [[str(m.source), m.target, m.read_only] for m in mounts(layout)],
    }


def plan(layout: Layout, options: ServerOptions, image: str, user: str) -> list[WorkerPlan]:
    """One WorkerPlan per worker, in index order (pure)."""
    options.validate()
    pid = project_id(layout.root)
    plans = []
    for index, gpu in enumerate(options.worker_gpus()):
        host_port = options.port + index
        url = server_url(options.listen, host_port)
        cfg = settings(layout, options, image, index)
        labels = {
            LABEL_ROLE: ROLE,
            LABEL_PROJECT: pid,
            LABEL_CONFIG: config_hash(cfg),
            LABEL_SETTINGS: json.dumps(cfg, sort_keys=True),
            LABEL_URL: url,
            LABEL_WORKER: str(index),
            LABEL_GPU: gpu or "none",
            LABEL_PROJECT_DIR: str(layout.root),
        }
        spec = ContainerSpec(
            image=image,
            command=command(gpu, options.extra_args),
            name=container_name(layout, index),
            labels=labels,
            mounts=mounts(layout),
            environment={"PYTHONUNBUFFERED": "1", "HOME": f"{BASE}/home", "USER": "comfy", "LOGNAME": "comfy"},
            user=user,
            working_dir=COMFY_ROOT,
            gpus=_docker_gpus(gpu, options),
            ports={CONTAINER_PORT: (options.listen, host_port)},
            ipc_host=gpu is not None,  # PyTorch shares tensors through /dev/shm; docker's 64 MB is too small
            ulimits={"memlock": (-1, -1), "stack": (67108864, 67108864)} if gpu is not None else {},
            stop_signal="SIGINT",      # ComfyUI exits cleanly on KeyboardInterrupt
        )
        plans.append(WorkerPlan(index, spec, url, host_port, gpu))
    return plans


def _docker_gpus(gpu: str | None, options: ServerOptions) -> str | None:
    """The engine's --gpus grammar for a worker: a lone id is written '3,' so it means device 3, not a count."""
    if gpu is None or (options.workers == 1 and options.gpu_ids() is None):
        return gpu  # 'all' or a count
    return gpu if "," in gpu else gpu + ","


def changed_settings(old_json: str | None, new: Mapping[str, object]) -> list[str]:
    """Names of the settings that differ between a running container and a new plan."""
    try:
        old = json.loads(old_json or "{}")
    except ValueError:
        old = {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def options_dict(options: ServerOptions) -> dict[str, object]:
    """The options as plain data (for manifests and --json)."""
    return asdict(options)
