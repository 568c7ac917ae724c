"""Why a training run failed: the trainer's exit code and the recognised error signatures -> TrainingFailed
with the cause in words and the next step."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.errors import TrainingFailed
from orchestrator.train import logparse as lp
from orchestrator.train.plan import TrainPlan

MEMORY_PRESETS = ("24gb", "16gb", "12gb")   # largest card first: the next one needs less GPU memory


def diagnose(plan: TrainPlan, code: int, errors: list[lp.TrainerError], final: Path, log: Path) -> TrainingFailed | None:
    """None when the run produced its final LoRA; else a TrainingFailed naming the recognised cause."""
    cause = lp.failure_cause(errors)
    if code == 0 and final.is_file():
        return None
    if cause is not None and cause.kind == "cuda_oom":
        return TrainingFailed("training ran out of GPU memory (CUDA out of memory)", hint=oom_hint(plan),
                              details=[cause.message])
    if cause is not None and cause.kind == "host_oom" or code == 137:
        return TrainingFailed("the trainer was killed (SIGKILL): usually the host ran out of RAM while loading FLUX",
                              hint="FLUX needs ~35 GB of host RAM per GPU process at start: close other programs, "
                                   "add swap, or train with fewer GPUs", details=[cause.message] if cause else [])
    if cause is not None and cause.kind in ("argparse", "config", "assertion"):
        what = {"argparse": "sd-scripts rejected its command line", "config": "sd-scripts rejected the dataset config",
                "assertion": "sd-scripts refused the configuration"}[cause.kind]
        return TrainingFailed(f"{what}: {cause.message}", details=[],
                              hint="check `train --plan`; this is a gap in our checks worth reporting")
    if cause is not None and cause.kind == "no_data":
        return TrainingFailed("the trainer found no images (\"No data found\") and exited without training",
                              hint="check the dataset with `python -m orchestrator dataset check`; image_dir paths in "
                                   f"{plan.run_dir / 'data.toml'} must exist where the trainer runs")
    if code == 0:
        return TrainingFailed(f"the trainer exited normally but did not write {final.name}",
                              hint=f"look at the full log in {log}")
    message = f"the trainer failed (exit code {code})" + (f": {cause.message}" if cause else "")
    return TrainingFailed(message, hint=f"the full log is in {log}")


def oom_hint(plan: TrainPlan) -> str:
    """The next memory preset to try after a CUDA OOM."""
    preset = str(plan.config.get("preset") or _saved_preset(plan.run_dir / "plan.json"))
    later = MEMORY_PRESETS[MEMORY_PRESETS.index(preset) + 1:] if preset in MEMORY_PRESETS else MEMORY_PRESETS
    if not later:
        return ("already on the smallest memory preset: lower resolution or network_dim (--set), "
                "or use a GPU with more memory")
    return f"use a memory-saving preset: `train --preset {later[0]}` (smaller: {', '.join(later[1:]) or 'none'})"


def _saved_preset(plan_file: Path) -> str:
    """The preset name the planner recorded in the run folder ('' when unknown)."""
    try:
        return str(json.loads(plan_file.read_text(encoding="utf-8")).get("preset") or "")
    except (OSError, ValueError, AttributeError):
        return ""
