"""GPU selection, pure: `--gpus` text -> which devices, how many processes or workers, and the checks.

One grammar for `train --gpus`, `comfyui up --gpus` and the engine's device requests:
`all`, `none`, a count `2` (the first two GPUs), ids `0,1` / `GPU-<uuid>,...`, `device=1` (GPU 1 alone;
a bare `1` is a count). The probes that count the host's GPUs live in `gpuprobe.py`; everything here
takes their answer as an argument.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from orchestrator.errors import UsageError

NONE, ALL, COUNT, IDS = "none", "all", "count", "ids"
HINT = ("e.g. --gpus all, --gpus 0,1, --gpus device=0 (GPU 0 alone), a count like --gpus 2 (the first two), "
        "or --gpus none (no GPU)")
ACCELERATE_PORT = 29500           # accelerate's default --main_process_port
LOCAL_PORT_RANGE = 1000           # local runs pick a port in 29500..30499 from their run id
_ID_PREFIXES = ("GPU-", "MIG-")


@dataclass(frozen=True)
class GpuSelection:
    """A parsed `--gpus` value: exactly one of all / none / count (the first N) / ids."""

    all: bool = False
    none: bool = False
    count: int | None = None
    ids: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """none | all | count | ids."""
        return NONE if self.none else ALL if self.all else COUNT if self.count is not None else IDS

    @property
    def text(self) -> str:
        """The selection in `--gpus` grammar (a lone id as device=N)."""
        if self.ids:
            return ",".join(self.ids) if len(self.ids) > 1 else f"device={self.ids[0]}"
        return str(self.count) if self.count is not None else self.kind

    @property
    def engine_value(self) -> str | None:
        """The selection in the engine's grammar: 'all', '2', '0,1', '3,' (a lone id keeps its comma, so the
        engine reads it as a device, not a count); None for none."""
        if self.none:
            return None
        if self.all:
            return ALL
        if self.count is not None:
            return str(self.count)
        return ",".join(self.ids) + ("," if len(self.ids) == 1 else "")

    def device_request(self) -> dict[str, object]:
        """Docker DeviceRequest fields: count -1 (all), count N, or device_ids."""
        if self.all:
            return {"count": -1}
        if self.count is not None:
            return {"count": self.count}
        if self.ids:
            return {"device_ids": list(self.ids)}
        raise ValueError("--gpus none requests no device")

    def devices(self, visible: int | None, inherited: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
        """The host devices this selects (as CUDA_VISIBLE_DEVICES names them). `inherited` is the caller's own
        CUDA_VISIBLE_DEVICES (a scheduler's allocation): counts and `all` choose from it. None when unknown
        (`all` on a host whose GPUs cannot be counted)."""
        if self.none:
            return ()
        if self.ids:
            return self.ids
        pool = inherited if inherited is not None else (
            tuple(str(i) for i in range(visible)) if visible is not None else None)
        if self.all:
            return pool
        n = int(self.count or 0)
        if pool is None:
            return tuple(str(i) for i in range(n))
        return pool[:n] if n <= len(pool) else pool + tuple(str(i) for i in range(len(pool), n))

    def processes(self, visible: int | None, inherited: tuple[str, ...] | None = None) -> int:
        """Data-parallel trainer processes: one per selected GPU (1 for none, or `all` on an uncounted host)."""
        devices = self.devices(visible, inherited)
        return max(1, len(devices)) if devices is not None else 1


def parse_gpus(value: str | None, *, default: str = "1") -> GpuSelection:
    """Parse a `--gpus` value (None: `default`); ValueError saying what is accepted for anything else."""
    text = (default if value is None else value).strip()
    if text == ALL:
        return GpuSelection(all=True)
    if text == NONE:
        return GpuSelection(none=True)
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"invalid GPU selection {text!r}: a count is at least 1 (no GPU: none)")
        return GpuSelection(count=int(text))
    device = text.startswith("device=")
    body = text[len("device="):] if device else text
    if not (device or "," in body or body.startswith(_ID_PREFIXES)):
        raise ValueError(f"invalid GPU selection {text!r}: use 'all', a count like 2, ids like 0,1 "
                         "(one id: device=1), or 'none'")
    ids = tuple(g.strip() for g in body.split(",") if g.strip())   # '3,' is the engine's lone id
    bad = [g for g in ids if not (g.isdigit() or (g.startswith(_ID_PREFIXES) and len(g) > 4))]
    if not ids or bad:
        raise ValueError(f"invalid GPU selection {text!r}: ids are numbers like 0,1 (or GPU-<uuid>)")
    if len(set(ids)) != len(ids):
        raise ValueError(f"invalid GPU selection {text!r}: a GPU is named twice (one process per GPU)")
    return GpuSelection(ids=ids)


def parse_option(value: str | None, *, option: str = "--gpus", default: str = "1") -> GpuSelection:
    """parse_gpus for a command-line option: UsageError naming the option and the accepted forms."""
    try:
        return parse_gpus(value, default=default)
    except ValueError as e:
        raise UsageError(f"{option} {value!r} is not a GPU selection: {str(e).split(': ', 1)[-1]}",
                         hint=HINT) from None


def parse_visible(env_value: str | None) -> tuple[str, ...] | None:
    """CUDA_VISIBLE_DEVICES as a tuple of device names (None when unset; () when set empty: no GPU)."""
    if env_value is None:
        return None
    return tuple(p.strip() for p in env_value.split(",") if p.strip())


@dataclass(frozen=True)
class GpuInventory:
    """What the host says about its GPUs (counted by `gpuprobe`)."""

    count: int | None                  # None: could not be counted
    source: str = "unknown"            # nvml | nvidia-smi | docker info | unknown
    names: tuple[str, ...] = ()        # per index, when the source gives them
    memory_mib: tuple[int, ...] = ()

    def describe(self) -> str:
        """'2 GPUs (NVML): NVIDIA H200, NVIDIA H200'."""
        if self.count is None:
            return "GPUs not counted (no NVML, no nvidia-smi, no GPU in the Docker engine's info)"
        names = f": {', '.join(self.names)}" if self.names else ""
        return f"{self.count} GPU{'s' if self.count != 1 else ''} ({self.source}){names}"


def check_selection(selection: GpuSelection, inventory: GpuInventory, *, needed: int | None = None,
                    inherited: tuple[str, ...] | None = None, option: str = "--gpus") -> str | None:
    """Why the selection cannot work on this host (None when it can, or when the host cannot be counted).
    `needed` is how many GPUs the command needs (processes, workers)."""
    if selection.none:
        return None
    pool = len(inherited) if inherited is not None else inventory.count
    where = (f"CUDA_VISIBLE_DEVICES={','.join(inherited)!r} allows {len(inherited)}" if inherited is not None else
             inventory.describe() if inventory.count is not None else "")
    if pool is None:
        return None
    if pool == 0:
        return f"{option} {selection.text}: this host has no GPU ({where})"
    want = needed if needed is not None else (None if selection.all else len(selection.ids) or selection.count)
    if want is not None and want > pool:
        return f"{option} {selection.text}: {want} GPU(s) needed, {where}"
    if selection.ids and inherited is None:
        bad = [i for i in selection.ids if i.isdigit() and int(i) >= pool]
        if bad:
            return (f"{option} {selection.text}: no GPU {', '.join(bad)} on this host ({where}; ids are "
                    f"0..{pool - 1})")
    return None


def fit_hint(selection: GpuSelection, inventory: GpuInventory, inherited: tuple[str, ...] | None = None) -> str:
    """The next step after check_selection failed."""
    pool = len(inherited) if inherited is not None else inventory.count
    if not pool:
        if inherited is not None:
            return "CUDA_VISIBLE_DEVICES is empty in this shell: unset it (or list GPUs in it), or use --gpus none"
        return "check the driver with `nvidia-smi`, or use --gpus none (CPU; stand-ins only)"
    if selection.ids and pool == 1:
        return "this host has one GPU: --gpus device=0 (`nvidia-smi -L` lists it)"
    if selection.ids:
        return f"use ids between 0 and {pool - 1} (`nvidia-smi -L` lists them), or a count like --gpus {pool}"
    return f"use --gpus {pool} or fewer (`nvidia-smi -L` lists the GPUs)"


@dataclass(frozen=True)
class Worker:
    """One ComfyUI worker: its GPU (as CUDA_VISIBLE_DEVICES names it) and its port."""

    index: int
    port: int
    device: str | None              # None: CPU; "all"; a count "2" (one worker); ids "0" / "0,1"
    cuda_visible_devices: str | None  # what the local process gets (None: leave the environment as is)


def worker_layout(selection: GpuSelection, workers: int, port: int,
                  inherited: tuple[str, ...] | None = None) -> list[Worker]:
    """One worker per GPU when workers > 1 (GPU i on port+i); one worker on the whole selection otherwise.
    `inherited` (local processes: the caller's CUDA_VISIBLE_DEVICES) is the pool `all` and counts choose from."""
    if workers < 1:
        raise UsageError(f"--workers {workers} must be at least 1")
    if selection.none:
        return [Worker(i, port + i, None, "") for i in range(workers)]
    if workers == 1:
        if selection.all:
            return [Worker(0, port, ALL, None)]
        joined = ",".join(selection.devices(None, inherited) or ())
        return [Worker(0, port, joined if selection.ids else str(selection.count), joined)]
    if selection.all:
        devices = inherited[:workers] if inherited is not None else tuple(str(i) for i in range(workers))
    else:
        devices = selection.devices(None, inherited)
    if devices is None or len(devices) != workers:
        raise UsageError(f"--workers {workers} needs {workers} GPUs (one each), got --gpus {selection.text}",
                         hint=f"leave --gpus out to use GPUs 0..{workers - 1}, or list {workers} ids like "
                              f"--gpus {','.join(str(i) for i in range(0, 2 * workers, 2))}")
    return [Worker(i, port + i, d, d) for i, d in enumerate(devices)]


@dataclass(frozen=True)
class Launch:
    """How the trainer processes get their GPUs: accelerate's options and the environment."""

    processes: int
    devices: tuple[str, ...] | None          # host GPUs (None: `all` on an uncounted host)
    gpu_ids: str | None                      # accelerate --gpu_ids (several processes only)
    main_process_port: int | None            # accelerate --main_process_port (several processes only)
    cuda_visible_devices: str | None         # the trainer's CUDA_VISIBLE_DEVICES (None: leave it as is)


def trainer_launch(selection: GpuSelection, *, container: bool, run_id: str, visible: int | None,
                   inherited: tuple[str, ...] | None = None) -> Launch:
    """GPUs of a training run. In a container the engine exposes only the chosen GPUs, renumbered 0..N-1; a
    local process gets the host ids in CUDA_VISIBLE_DEVICES and the same ids in --gpu_ids (accelerate copies
    --gpu_ids into CUDA_VISIBLE_DEVICES, so any other value would pick other GPUs)."""
    inherited = None if container else inherited
    devices = selection.devices(visible, inherited)
    processes = selection.processes(visible, inherited)
    if selection.none:
        return Launch(1, (), None, None, None if container else "")
    env = None
    if not container and not selection.all and devices is not None:
        env = ",".join(devices)
    if processes <= 1:
        return Launch(processes, devices, None, None, env)
    ids = ",".join(str(i) for i in range(processes)) if container else ",".join(devices or ())
    return Launch(processes, devices, ids, main_process_port(run_id, shared_host=not container), env)


def main_process_port(key: str, *, shared_host: bool) -> int:
    """accelerate's rendezvous port: the default inside a container (its own network); on a shared host one
    derived from the run id, so two local runs on different GPUs do not collide on 29500."""
    if not shared_host:
        return ACCELERATE_PORT
    return ACCELERATE_PORT + int(hashlib.sha256(key.encode()).hexdigest(), 16) % LOCAL_PORT_RANGE


ADAPTIVE = ("prodigy", "dadapt")          # optimizers that estimate their own step size
LINEAR = ("sgd",)


@dataclass(frozen=True)
class LrScaling:
    """What happens to the learning rate with several GPUs, and why (shown in the plan)."""

    rule: str                # none | sqrt | linear
    learning_rate: float | None
    suggested: float | None  # what the rule would give (never applied by us)
    note: str


def lr_scaling(optimizer_type: str | None, learning_rate: float | None, processes: int, accumulation: int = 1,
               batch_size: int = 1) -> LrScaling:
    """The stated learning-rate policy: we never rescale it (sd-scripts does not either, so the command line is
    what the config says); for non-adaptive optimizers the plan names the rule a user may apply."""
    opt = (optimizer_type or "AdamW").lower()
    lr = float(learning_rate) if learning_rate is not None else None
    effective = batch_size * accumulation * processes
    if processes <= 1:
        return LrScaling("none", lr, None, "one GPU: learning_rate as configured")
    if opt.startswith(ADAPTIVE):
        return LrScaling("none", lr, None, f"{optimizer_type} estimates its own step size from the gradients, so "
                         f"learning_rate {lr:g} stays as it is for the effective batch of {effective}"
                         if lr is not None else f"{optimizer_type} estimates its own step size")
    rule = "linear" if opt.startswith(LINEAR) else "sqrt"
    factor = processes if rule == "linear" else math.sqrt(processes)
    suggested = float(f"{lr * factor:.3g}") if lr is not None else None
    why = ("SGD: the linear rule (Goyal et al. 2017)" if rule == "linear" else
           "Adam-type optimizers: the square-root rule (Malladi et al. 2022)")
    note = (f"not scaled: learning_rate {lr:g} is used as configured (sd-scripts applies no scaling) while the "
            f"effective batch grows {processes}x to {effective} and each epoch has 1/{processes} of the steps; "
            f"{why} suggests {suggested:g}: --set learning_rate={suggested:g}" if lr is not None else
            "not scaled (no learning_rate set)")
    return LrScaling(rule, lr, suggested, note)
