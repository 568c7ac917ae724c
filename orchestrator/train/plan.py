"""The training plan: everything one sd-scripts run needs, resolved before anything starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.engine import Mount


@dataclass(frozen=True)
class TrainPlan:
    """One resolved training run (pure data; built by the planner, executed by a runner)."""

    run_id: str                      # "20261126-071500-flux_dreambooth" (timestamp-name)
    run_dir: Path                    # host: <project>/runs/<run_id>/
    output_name: str                 # sd-scripts --output_name
    output_dir: Path                 # host folder sd-scripts writes LoRAs/state/samples into: run_dir/"output"
    lora_dir: Path                   # host models/loras: finished LoRA files are hard-linked (or copied) here
    runtime: str                     # "docker" | "local"
    launcher_args: tuple[str, ...]   # accelerate words before the script
    script: str                      # "flux_train_network.py"
    trainer_args: tuple[str, ...]    # words after the script, with paths as the TRAINER sees them
    workdir: str                     # trainer's working dir (container: "/opt/sd-scripts"; local: the checkout)
    dataset_toml: str                # full text of the trainer-side data.toml (written to run_dir/"data.toml")
    image: str | None                # docker image tag (None for local)
    mounts: tuple[Mount, ...]        # docker only
    environment: Mapping[str, str]   # PYTHONUNBUFFERED=1, HOME, HF_HOME, HF_HUB_OFFLINE=1, ...
    gpus: str | None                 # "all" | "2" | "0,1" | None
    config: Mapping[str, Any]        # the resolved training config (for manifest/report)
    config_hash: str                 # orchestrator.engine.config_hash of what determines the run
    epochs: int
    total_steps: int
    steps_per_epoch: int
    expected_outputs: tuple[str, ...]  # LoRA file names in output_dir: epoch saves then the final one
    resume_from: str | None = None   # trainer-side path of the state dir passed to --resume

    def argv(self) -> list[str]:
        """The full trainer command line."""
        return [*self.launcher_args, self.script, *self.trainer_args]
