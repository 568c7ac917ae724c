"""The `train` use cases: plan a training run (every check, nothing started) and run a planned one.

Callable from Python (see the README's "Use from Python"); the CLI only parses, calls and renders.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.gpuprobe import probe_gpus
from orchestrator.gpus import GpuInventory, parse_visible
from orchestrator.progress import NullSink
from orchestrator.runtimes import DEFAULT, train_runtime
from orchestrator.runtimes.base import RuntimeEnv, TrainRuntime
from orchestrator.train import preflight
from orchestrator.train.checks import blocking_error
from orchestrator.train.outputs import latest_state
from orchestrator.train.prepare import PlanRequest, Prepared, prepare, write_inputs
from orchestrator.train.run import RunResult, execute


@dataclass(frozen=True)
class TrainOptions:
    """What `train` asks for (the command line's options, typed)."""

    preset: str | None = None
    config_file: Path | None = None
    sets: tuple[str, ...] = ()                  # "KEY=VALUE" overrides, applied last
    name: str | None = None                     # output name of the LoRA
    gpus: str | None = None                     # orchestrator.gpus grammar; None: one GPU
    resume: str | None = None                   # None: a new run; "": the newest run; else a run id or folder
    runtime: str = DEFAULT
    settings: Mapping[str, Any] = field(default_factory=dict)   # the runtime's own options (image, sd_scripts, ...)

    def request(self) -> PlanRequest:
        """The planner's request."""
        return PlanRequest(preset=self.preset, config_file=self.config_file, sets=self.sets, name=self.name,
                           gpus=self.gpus, resume=self.resume)


def plan_training(env: RuntimeEnv, options: TrainOptions, *, runtime: TrainRuntime | None = None,
                  now: datetime | None = None, probe: bool = True) -> Prepared:
    """Resolve config and dataset, build the plan and run every check (the runtime's backend is probed
    unless `probe` is False). Starts nothing; `Prepared.ok` says whether it could run."""
    runtime = runtime or train_runtime(options.runtime, env, options.settings)
    inventory = probe_gpus() if options.gpus != "none" else GpuInventory(None)
    return prepare(env.layout, options.request(), runtime=runtime, now=now or datetime.now(),
                   probe=runtime.probe if probe else None, visible_gpus=inventory.count,
                   memory=preflight.host_memory(), latest_state=latest_state, inventory=inventory,
                   inherited_devices=parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES")))


def run_training(env: RuntimeEnv, prepared: Prepared, *, raw_line: Callable[[str], None] | None = None,
                 grace: float = 30.0) -> RunResult:
    """Run a prepared plan to its end (or follow the same plan's running trainer); ConfigError when a
    check failed, TrainingFailed when the trainer did. A run that never started leaves no folder."""
    failure = blocking_error(prepared.checks)   # the same error `train --plan` ends with
    if failure is not None:
        raise failure
    plan, runtime = prepared.plan, prepared.runtime
    created = not plan.run_dir.exists()
    if runtime.attach(plan) is None:   # else execute() follows the running one: write nothing new
        write_inputs(prepared)
    try:
        return execute(plan, runtime, env.reporter or NullSink(), raw_line=raw_line, grace=grace)
    except OrchestratorError:
        if created and not (plan.run_dir / "train.log").exists():   # it never started: leave nothing behind
            shutil.rmtree(plan.run_dir, ignore_errors=True)
        raise

