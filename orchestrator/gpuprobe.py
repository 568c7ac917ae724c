"""Count the host's NVIDIA GPUs: NVML when `nvidia-ml-py` is installed, else nvidia-smi, else the Docker
engine's info (CDI devices, swarm generic resources). Each source that fails quietly hands over to the next.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.gpus import GpuInventory, check_selection, fit_hint, parse_gpus

SMI_TIMEOUT = 10.0


def probe_gpus(*, nvml: Callable[[], GpuInventory | None] | None = None,
               smi: Callable[[], GpuInventory | None] | None = None,
               docker_info: Callable[[], dict[str, Any] | None] | None = None) -> GpuInventory:
    """The first source that answers; GpuInventory(None) when none does. Sources are injectable for tests."""
    for source in (nvml or from_nvml, smi or from_nvidia_smi):
        found = source()
        if found is not None:
            return found
    info = (docker_info or _docker_info)()
    found = from_docker_info(info) if info is not None else None
    return found or GpuInventory(None)


def from_nvml() -> GpuInventory | None:
    """NVML through nvidia-ml-py (optional: `pip install nvidia-ml-py`)."""
    try:
        import pynvml  # optional dependency, imported only here
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        n = pynvml.nvmlDeviceGetCount()
        names, mem = [], []
        for i in range(n):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            names.append(name.decode() if isinstance(name, bytes) else str(name))
            mem.append(int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1024 * 1024))
        return GpuInventory(n, "nvml", tuple(names), tuple(mem))
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def from_nvidia_smi(exe: str = "nvidia-smi") -> GpuInventory | None:
    """`nvidia-smi --query-gpu=index,name,memory.total`; None when it is missing or fails."""
    path = shutil.which(exe)
    if path is None:
        return None
    try:
        r = subprocess.run([path, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=SMI_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return parse_smi(r.stdout)


def parse_smi(text: str) -> GpuInventory:
    """nvidia-smi's CSV lines (`0, NVIDIA H200, 143771`) as an inventory."""
    names, mem = [], []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit():
            names.append(parts[1])
            mem.append(int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0)
    return GpuInventory(len(names), "nvidia-smi", tuple(names), tuple(mem))


def from_docker_info(info: dict[str, Any]) -> GpuInventory | None:
    """GPUs the engine reports: CDI devices `nvidia.com/gpu=N` (Docker 28+) or swarm `NVIDIA-GPU` resources."""
    cdi = {str(d.get("ID", "")) for d in info.get("DiscoveredDevices") or [] if isinstance(d, dict)}
    gpus = {i for i in cdi if i.startswith("nvidia.com/gpu=") and i.split("=", 1)[1] != "all"
            and not i.split("=", 1)[1].startswith("GPU-")}
    if gpus:
        return GpuInventory(len(gpus), "docker info")
    generic = 0
    for res in info.get("GenericResources") or []:
        spec = (res or {}).get("DiscreteResourceSpec") or (res or {}).get("NamedResourceSpec") or {}
        if "GPU" in str(spec.get("Kind", "")).upper():
            generic += int(spec.get("Value", 1)) if "DiscreteResourceSpec" in res else 1
    return GpuInventory(generic, "docker info") if generic else None


def _docker_info() -> dict[str, Any] | None:
    from orchestrator.engine import quick_info

    return quick_info()


def require_gpus(gpus: str, workers: int, *, inherited: tuple[str, ...] | None = None,
                 inventory: GpuInventory | None = None) -> None:
    """UsageError when `comfyui up --gpus G --workers N` needs more GPUs than this host has (or ids it lacks);
    `inherited` is the caller's CUDA_VISIBLE_DEVICES for processes that share this host's GPU numbering."""
    selection = parse_gpus(gpus, default="all")
    needed = workers if workers > 1 else None
    if selection.none or (needed is None and selection.all):
        return
    inventory = inventory or probe_gpus()
    problem = check_selection(selection, inventory, needed=needed, inherited=inherited)
    if problem:
        what = f"--workers {workers} (one GPU each)" if needed else f"--gpus {selection.text}"
        hint = fit_hint(selection, inventory, inherited)
        raise UsageError(f"{what}: {problem.split(': ', 1)[-1]}", hint=hint.replace("--gpus", "--workers")
                         if needed else hint)
