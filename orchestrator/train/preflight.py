"""Preflight: every check a run needs, before any container starts (well under a second).

Models present and complete, tokenizers cached, the dataset check, the argument rules, output
name collisions, free disk, GPUs, and the runtime's own checks (`TrainRuntime.checks`: the Docker
engine and image, or the local checkout). The slow or external parts (the runtime's backend, GPU count,
disk usage) come in as arguments.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.layout import Layout
from orchestrator.models import local_status, model_set, read_manifest
from orchestrator.progress import format_bytes
from orchestrator.train import arith, rules
from orchestrator.train.checks import ERROR, OK, WARN, Check
from orchestrator.train.plan import TrainPlan

if TYPE_CHECKING:
    from orchestrator.dataset import DatasetReport
    from orchestrator.runtimes.base import TrainRuntime

TOKENIZER_DIRS = ("openai_clip-vit-large-patch14", "google_t5-v1_1-xxl")
CACHE_BYTES_PER_IMAGE = 5 * 1024 * 1024      # latents (~0.5 MB) + T5/CLIP outputs (~4.2 MB) at 1024 px
HOST_RAM_PER_PROCESS = 35 * 1024 ** 3         # FLUX + T5 + CLIP + AE loaded per process (README §3)
OPTIMIZER_STATE_FACTOR = {"prodigy": 5, "adamw": 3, "adamw8bit": 2, "adafactor": 2}  # x LoRA params, fp32


def count_gpus() -> int | None:
    """NVIDIA GPUs the driver exposes on this host (None when unknown: no driver, not Linux)."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return None


def host_memory() -> int | None:
    """Total host RAM in bytes (None when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def preflight(plan: TrainPlan, layout: Layout, dataset: "DatasetReport", *, processes: int,
              visible_gpus: int | None, runtime: "TrainRuntime", probe: Callable[[], Any] | None = None,
              disk_free: Callable[[Path], int] | None = None, memory: int | None = None) -> list[Check]:
    """All checks, passing ones included (status ok), in the order a person reads them; the runtime's
    own checks get `probe` (its backend facts, asked in the background; None: not checked)."""
    values = plan.config
    checks = [*model_checks(layout, str(values["t5xxl"])), tokenizer_check(layout), *dataset_checks(dataset),
              *cache_dir_checks(plan, dataset)]
    problems = rules.check_rules(rules.RuleInput(values, processes, plan.trainer_args))
    checks += problems or [Check("arguments", OK, "sd-scripts arguments pass every rule")]
    checks.append(collision_check(plan))
    checks.append(disk_check(plan, layout, dataset, disk_free or (lambda p: shutil.disk_usage(p).free)))
    checks += gpu_checks(plan, processes, visible_gpus, memory)
    checks += runtime.checks(plan, probe)
    if plan.resume_from is not None:
        checks.append(resume_check(plan))
    return checks


def model_checks(layout: Layout, t5xxl: str) -> list[Check]:
    """Each model file present and of the size `download` recorded."""
    manifest = read_manifest(layout)
    out = []
    for m in model_set(t5xxl):
        st = local_status(layout, m, manifest)
        rel = st.path.relative_to(layout.root) if st.path.is_relative_to(layout.root) else st.path
        if not st.present:
            out.append(Check(f"model:{m.name}", ERROR, f"{rel} is missing",
                             f"python -m orchestrator download{' --variant fp8' if t5xxl == 'fp8' else ''}"))
        elif not st.complete:
            out.append(Check(f"model:{m.name}", ERROR, f"{rel} is incomplete ({format_bytes(st.size or 0)} of "
                             f"{format_bytes(st.expected or 0)})", "run `python -m orchestrator download` again"))
        else:
            verified = "size verified" if st.recorded else "size not recorded by download"
            out.append(Check(f"model:{m.name}", OK, f"{rel} ({format_bytes(st.size or 0)}, {verified})"))
    return out


def tokenizer_check(layout: Layout) -> Check:
    """The CLIP-L and T5 tokenizers cached (the container runs offline)."""
    missing = [d for d in TOKENIZER_DIRS if not _non_empty(layout.tokenizers / d)]
    if missing:
        return Check("tokenizers", ERROR, f"tokenizers missing in models/tokenizers: {', '.join(missing)} (the "
                     "trainer runs offline)", "python -m orchestrator download")
    return Check("tokenizers", OK, "CLIP-L and T5 tokenizers cached in models/tokenizers")


def _non_empty(p: Path) -> bool:
    try:
        return any(p.iterdir())
    except OSError:
        return False


def dataset_checks(dataset: "DatasetReport") -> list[Check]:
    """The dataset check's problems as checks (errors block)."""
    out = []
    root = dataset.toml_path.parent.parent if getattr(dataset, "toml_path", None) else None
    for p in dataset.problems:
        where = p.where(root) if hasattr(p, "where") else (str(p.path) if p.path else "")
        out.append(Check(f"dataset:{p.code}", ERROR if p.severity == "error" else WARN,
                         f"{where}: {p.message}" if where else p.message, p.hint))
    if not dataset.errors():
        subsets = [s for s in dataset.subsets if not s.is_reg]
        out.insert(0, Check("dataset", OK, f"{len(subsets)} concept(s), {sum(s.images for s in subsets)} images"))
    return out


def cache_dir_checks(plan: TrainPlan, dataset: "DatasetReport") -> list[Check]:
    """*_to_disk caches are written next to the images: their folders must be writable."""
    values = plan.config
    if not (values.get("cache_latents_to_disk") or values.get("cache_text_encoder_outputs_to_disk")):
        return []
    out = []
    for s in dataset.subsets:
        if s.image_dir.is_dir() and not os.access(s.image_dir, os.W_OK | os.X_OK):
            out.append(Check("cache_dir", ERROR, f"{s.image_dir} is not writable: sd-scripts writes its *_flux.npz "
                             "caches next to the images", "make the folder writable, or turn off the *_to_disk caches"))
    return out


def collision_check(plan: TrainPlan) -> Check:
    """Never overwrite an existing LoRA in models/loras (a resumed run may meet its own links)."""
    taken = []
    for name in plan.expected_outputs:
        existing = plan.lora_dir / name
        if not existing.exists():
            continue
        own = plan.output_dir / name
        if plan.resume_from is not None and own.exists() and os.path.samefile(existing, own):
            continue
        taken.append(name)
    if taken:
        return Check("output_name", ERROR, f"models/loras already has {', '.join(taken)}: this run would "
                     f"overwrite {'them' if len(taken) > 1 else 'it'}", f"choose another name: --name {plan.output_name}_v2 (or continue an "
                     "interrupted run of that name: `train --resume`)")
    if plan.resume_from is None and plan.run_dir.exists():
        return Check("output_name", ERROR, f"run folder {plan.run_dir.name} already exists", "wait a second and "
                     "run again, or choose another --name")
    return Check("output_name", OK, f"models/loras/{plan.expected_outputs[-1]} is a new file")


def disk_need(plan: TrainPlan, dataset: "DatasetReport") -> tuple[int, int]:
    """Bytes needed in the run folder (LoRAs, their links, state dirs) and next to the images (caches)."""
    values = plan.config
    lora = arith.lora_size(values)
    state_lora = lora.parameters * 4
    factor = OPTIMIZER_STATE_FACTOR.get(str(values.get("optimizer_type") or "adamw").lower(), 3)
    kept = len(arith.state_dirs(values, plan.epochs))
    run = lora.bytes * len(plan.expected_outputs) + kept * state_lora * factor
    cache = 0
    if values.get("cache_latents_to_disk") or values.get("cache_text_encoder_outputs_to_disk"):
        cache = CACHE_BYTES_PER_IMAGE * sum(s.images for s in dataset.subsets)
    return run, cache


def disk_check(plan: TrainPlan, layout: Layout, dataset: "DatasetReport",
               disk_free: Callable[[Path], int]) -> Check:
    """Free disk for LoRAs, state dirs and caches."""
    run_need, cache_need = disk_need(plan, dataset)
    runs_fs = _existing(plan.run_dir)
    data_fs = _existing(layout.flux_data)
    try:
        free_runs = disk_free(runs_fs)
        free_data = free_runs if _same_fs(runs_fs, data_fs) else disk_free(data_fs)
    except OSError as e:
        return Check("disk", WARN, f"cannot read free disk space: {e}")
    need_runs = run_need + (cache_need if _same_fs(runs_fs, data_fs) else 0)
    if free_runs < need_runs:
        return Check("disk", ERROR, f"{format_bytes(free_runs)} free for runs/, the run needs about "
                     f"{format_bytes(need_runs)} (LoRAs, state dirs, caches)",
                     "free disk space, or lower save_every_n_epochs / save_precision: bf16")
    if not _same_fs(runs_fs, data_fs) and free_data < cache_need:
        return Check("disk", ERROR, f"{format_bytes(free_data)} free next to the images, the caches need about "
                     f"{format_bytes(cache_need)}", "free disk space or turn off *_to_disk caching")
    return Check("disk", OK, f"about {format_bytes(run_need + cache_need)} needed, {format_bytes(free_runs)} free")


def _existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return True


def gpu_checks(plan: TrainPlan, processes: int, visible: int | None, memory: int | None) -> list[Check]:
    """GPUs requested vs available, and host RAM for several processes."""
    out = []
    if plan.no_gpu:
        return [Check("gpus", WARN, "no GPU requested (--gpus none): only a stand-in trainer runs like this")]
    ids = [g for g in (plan.gpus or "").split(",") if g.strip().isdigit()] if plan.gpus and "," in plan.gpus else []
    if visible is None:
        out.append(Check("gpus", WARN, "cannot count the NVIDIA GPUs on this host (no driver visible here)",
                         "`nvidia-smi` shows them; the run fails at start if there is none"))
    elif processes > visible or any(int(i) >= visible for i in ids):
        out.append(Check("gpus", ERROR, f"{processes} GPU(s) requested ({plan.gpus}), {visible} available",
                         f"use --gpus {visible} or fewer"))
    else:
        out.append(Check("gpus", OK, f"{processes} of {visible} GPU(s)"))
    if processes > 1:
        out.append(Check("multi_gpu", WARN, f"{processes} processes each load the whole model: ~"
                         f"{format_bytes(processes * HOST_RAM_PER_PROCESS)} of host RAM at start; every GPU needs "
                         "the single-GPU memory"))
        if memory is not None and memory < processes * HOST_RAM_PER_PROCESS:
            out.append(Check("host_ram", ERROR, f"{format_bytes(memory)} of host RAM for {processes} processes "
                             f"(~{format_bytes(HOST_RAM_PER_PROCESS)} each): the OOM killer would end the run",
                             "use fewer GPUs"))
    return out


def resume_check(plan: TrainPlan) -> Check:
    """The state dir to resume from has its train_state.json."""
    state = plan.output_dir / Path(str(plan.resume_from)).name
    if not (state / "train_state.json").is_file():
        return Check("resume", WARN, f"{state.name} has no train_state.json: sd-scripts restarts at epoch 1 with "
                     "the saved weights")
    return Check("resume", OK, f"resuming from {state.name}")


def summary_values(checks: list[Check]) -> dict[str, Any]:
    """Counts per status (for the plan's last line)."""
    return {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, ERROR)}
