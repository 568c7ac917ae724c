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
GRAMMAR_HINT = ("--gpus all, a count like --gpus 2 (the first two GPUs), ids like --gpus 0,1 or --gpus 2,3, "
                "--gpus device=1 (GPU 1 alone), or --gpus none")
ACCELERATE_PORT = 29500           # accelerate's default --main_process_port
LOCAL_PORT_RANGE = 1000           # local runs pick a port in 29500..30499 from their run id


@dataclass(frozen=True)
class GpuSelection:
    """`--gpus` parsed: no GPU, every GPU, the first N, or named devices."""

    kind: str                      # none | all | count | ids
    count: int | None = None       # devices selected; None for all (known once the host is counted)
    ids: tuple[str, ...] = ()      # for ids: as the user wrote them (indices or GPU-<uuid>)

    @property
    def text(self) -> str:
        """The selection in `--gpus` grammar (a lone id as device=N)."""
        if self.kind == IDS:
            return ",".join(self.ids) if len(self.ids) > 1 else f"device={self.ids[0]}"
        return str(self.count) if self.kind == COUNT else self.kind

    def engine_value(self) -> str | None:
        """Docker's --gpus value: None (no GPU), 'all', '2' (a count), '0,1' or '3,' (ids; a lone id keeps
        its comma so the engine reads it as a device, not a count)."""
        if self.kind == NONE:
            return None
        if self.kind == IDS:
            return ",".join(self.ids) + ("," if len(self.ids) == 1 else "")
        return ALL if self.kind == ALL else str(self.count)

    def devices(self, available: int | None, inherited: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
        """The host devices this selects (as CUDA_VISIBLE_DEVICES names them). `inherited` is the caller's own
        CUDA_VISIBLE_DEVICES (a scheduler's allocation): counts and `all` choose from it. None when unknown
        (`all` on a host whose GPUs cannot be counted)."""
        if self.kind == NONE:
            return ()
        if self.kind == IDS:
            return self.ids
        pool = inherited if inherited is not None else (
            tuple(str(i) for i in range(available)) if available is not None else None)
        if self.kind == ALL:
            return pool
        n = int(self.count or 0)
        if pool is None:
            return tuple(str(i) for i in range(n))
        return pool[:n] if n <= len(pool) else pool + tuple(str(i) for i in range(len(pool), n))

    def processes(self, available: int | None, inherited: tuple[str, ...] | None = None) -> int:
        """Data-parallel trainer processes: one per selected GPU (1 when none, or `all` on an uncounted host)."""
        devices = self.devices(available, inherited)
        return max(1, len(devices)) if devices is not None else 1


def parse_gpus(value: str | None, *, default: str = "1", option: str = "--gpus") -> GpuSelection:
    """Parse `--gpus`; UsageError naming the option for anything else."""
    text = (default if value is None else value).strip()
    if text in (NONE, ALL):
        return GpuSelection(text, 0 if text == NONE else None)
    single = text.startswith("device=")
    body = text[len("device="):] if single else text
    if not single and body.isdigit():
        if int(body) < 1:
            raise UsageError(f"{option} {value!r}: a count must be at least 1", hint=f"use {GRAMMAR_HINT}")
        return GpuSelection(COUNT, int(body))
    listed = single or "," in body or body.startswith("GPU-")
    ids = tuple(p.strip() for p in (body[:-1] if body.endswith(",") else body).split(","))   # '3,': the engine's lone id
    if listed and ids and all(_is_id(i) for i in ids):
        if len(set(ids)) != len(ids):
            raise UsageError(f"{option} {value!r} names a GPU twice", hint="list each id once, e.g. --gpus 0,1")
        return GpuSelection(IDS, len(ids), ids)
    raise UsageError(f"{option} {value!r}: not a GPU selection", hint=f"use {GRAMMAR_HINT}")


def _is_id(text: str) -> bool:
    return text.isdigit() or (text.startswith("GPU-") and len(text) > 4)


def parse_visible(env_value: str | None) -> tuple[str, ...] | None:
    """CUDA_VISIBLE_DEVICES as a tuple of device names (None when unset; () when set empty: no GPU)."""
    if env_value is None:
        return None
    return tuple(p.strip() for p in env_value.split(",") if p.strip())


@dataclass(frozen=True)
class GpuInventory:
    """What the host says about its GPUs (counted by `gpuprobe`)."""

    count: int | None                  # None: could not be counted
    source: str = "unknown"            # nvml | nvidia-smi | docker | unknown
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
    if selection.kind == NONE:
        return None
    pool = len(inherited) if inherited is not None else inventory.count
    where = (f"CUDA_VISIBLE_DEVICES={','.join(inherited)!r} allows {len(inherited)}" if inherited is not None else
             inventory.describe() if inventory.count is not None else "")
    if pool is None:
        return None
    if pool == 0:
        return f"{option} {selection.text}: this host has no GPU ({where})"
    want = needed if needed is not None else (selection.count if selection.kind != ALL else None)
    if want is not None and want > pool:
        return f"{option} {selection.text}: {want} GPU(s) needed, {where}"
    if selection.kind == IDS and inherited is None:
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
    if selection.kind == IDS:
        return f"use ids between 0 and {pool - 1} (`nvidia-smi -L` lists them), or a count like --gpus {pool}"
    return f"use --gpus {pool} or fewer (`nvidia-smi -L` lists the GPUs)"


@dataclass(frozen=True)
class Worker:
    """One ComfyUI worker: its GPU (as CUDA_VISIBLE_DEVICES names it) and its port."""

    index: int
    port: int
    device: str | None              # None: CPU; "all"; a count "2" (one worker); ids "0" / "0,1"
    cuda_visible_devices: str | None  # what the local process gets (None: leave the environment as is)


def worker_layout(selection: GpuSelection, workers: int, port: int) -> list[Worker]:
    """One worker per GPU when workers > 1 (GPU i on port+i); one worker on the whole selection otherwise."""
    if workers < 1:
        raise UsageError(f"--workers {workers} must be at least 1")
    if selection.kind == NONE:
        return [Worker(i, port + i, None, "") for i in range(workers)]
    if workers == 1:
        if selection.kind == ALL:
            return [Worker(0, port, ALL, None)]
        devices = selection.devices(None)
        joined = ",".join(devices or ())
        return [Worker(0, port, joined if selection.kind == IDS else str(selection.count), joined)]
    if selection.kind == ALL:
        devices: tuple[str, ...] | None = tuple(str(i) for i in range(workers))
    else:
        devices = selection.devices(None)
    if devices is None or len(devices) != workers:
        raise UsageError(f"--workers {workers} needs {workers} GPUs (one each), got --gpus {selection.text}",
                         hint=f"leave --gpus out to use GPUs 0..{workers - 1}, or list {workers} ids like "
                              f"--gpus {','.join(str(i) for i in range(0, 2 * workers, 2))}")
    return [Worker(i, port + i, d, d) for i, d in enumerate(devices)]


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
