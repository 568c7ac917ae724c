"""The training plan: everything one sd-scripts run needs, resolved before anything starts.

`build_plan` is pure given its inputs (layout, config, dataset report, clock, GPU count): it
resolves `auto` values from the dataset, renders the command line and the trainer-side data.toml,
with every path as the runtime's trainer sees it (`TrainRuntime.files`: mounts, environment, image). Preflight checks live in `preflight.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from orchestrator.dataset.trainer import trainer_toml as trainer_side_toml
from orchestrator.containers import Mount, config_hash
from orchestrator.errors import DatasetError, UsageError
from orchestrator.gpus import GpuSelection, parse_option, trainer_launch
from orchestrator.layout import Layout
from orchestrator.models import model_set
from orchestrator.train import arith, kohya
from orchestrator.train.config import TrainConfig, coerce
from orchestrator.train.schema import BY_NAME

if TYPE_CHECKING:
    from orchestrator.dataset import DatasetReport
    from orchestrator.runtimes.base import TrainRuntime

# Samples are previews of how the concept is learned, drawn at every save: 512 px and 12 steps instead
# of 1024 px and 20 (a round of two 1024 px samples took 11.7 s on an H200, bench/results/train-h200.json).
# A prompt that names its own --w/--h/--s keeps them.
SAMPLE_DEFAULTS = (("--w", "512"), ("--h", "512"), ("--s", "12"), ("--g", "3.5"), ("--d", "42"))

@dataclass(frozen=True)
class TrainPlan:
    """One resolved training run (pure data; built by the planner, executed by a runner)."""

    run_id: str                      # "20261126-071500-flux_dreambooth" (timestamp-name)
    run_dir: Path                    # host: <project>/runs/<run_id>/
    output_name: str                 # sd-scripts --output_name
    output_dir: Path                 # host folder sd-scripts writes LoRAs/state/samples into: run_dir/"output"
    lora_dir: Path                   # host models/loras: finished LoRA files are hard-linked (or copied) here
    runtime: str                     # the registry name of the runtime it was planned for
    launcher_args: tuple[str, ...]   # accelerate words before the script
    script: str                      # "flux_train_network.py"
    trainer_args: tuple[str, ...]    # words after the script, with paths as the TRAINER sees them
    workdir: str                     # trainer's working dir, as the trainer sees it
    dataset_toml: str                # full text of the trainer-side data.toml (written to run_dir/"data.toml")
    image: str | None                # image tag (None: the runtime runs no image)
    mounts: tuple[Mount, ...]        # host folders the runtime makes visible to the trainer (() when shared)
    environment: Mapping[str, str]   # PYTHONUNBUFFERED=1, HOME, HF_HOME, HF_HUB_OFFLINE=1, ...
    gpus: str | None                 # "all" | "2" | "0,1" | None
    config: Mapping[str, Any]        # the resolved training config (for manifest/report)
    config_hash: str                 # orchestrator.engine.config_hash of what determines the run
    epochs: int
    total_steps: int
    steps_per_epoch: int
    expected_outputs: tuple[str, ...]  # LoRA file names in output_dir: epoch saves then the final one
    resume_from: str | None = None   # trainer-side path of the state dir passed to --resume
    files: Mapping[str, str] = field(default_factory=dict)  # other inputs to write into run_dir (name -> text)
    no_gpu: bool = False             # --gpus none: a stand-in trainer on the CPU
    gpu_selection: str = "1"         # --gpus as given (normalised: all | none | N | 0,1 | device=1)
    devices: tuple[str, ...] | None = ()  # host GPUs the trainer uses (None: `all` on an uncounted host)
    main_process_port: int | None = None  # accelerate's rendezvous port (several processes only)

    def argv(self) -> list[str]:
        """The full trainer command line."""
        return [*self.launcher_args, self.script, *self.trainer_args]


@dataclass(frozen=True)
class GpuRequest:
    """`--gpus` parsed for training: what the runtime gets and how many trainer processes run."""

    spec: str | None        # engine value: "all" | "2" | "0,1" | "1," | None (no GPU)
    processes: int
    ids: tuple[str, ...] = ()
    selection: GpuSelection = GpuSelection(count=1)


def parse_gpus(value: str | None, visible: int | None, inherited: tuple[str, ...] | None = None) -> GpuRequest:
    """`all` (every GPU, one process each), `N` (the first N), `0,1` / `device=1` (ids), `none` (no GPU:
    stand-in trainers only); default one GPU. The grammar is orchestrator.gpus'; `inherited` is the caller's
    CUDA_VISIBLE_DEVICES (a local trainer chooses among them)."""
    sel = parse_option(value)
    return GpuRequest(sel.engine_value, sel.processes(visible, inherited), sel.ids, sel)


def build_plan(layout: Layout, config: TrainConfig, *, dataset: "DatasetReport", now: datetime,
               runtime: "TrainRuntime", gpus: str | None = None, name: str | None = None,
               resume: Path | None = None, visible_gpus: int | None = None,
               prompts_file: tuple[str, str] | None = None,
               inherited_devices: tuple[str, ...] | None = None) -> tuple[TrainPlan, arith.Steps]:
    """The plan and its step arithmetic; every path the trainer sees comes from `runtime.files`.
    `resume` is a host state dir of an earlier run (its run folder is reused); `prompts_file` is
    (extension, text) of a user prompts file; `inherited_devices` is the caller's CUDA_VISIBLE_DEVICES
    (a trainer that shares this host's GPU numbering chooses its GPUs among them)."""
    if name is not None:
        config = config.replace({"output_name": coerce(BY_NAME["output_name"], name, "--name")}, "--name")
    output_name = str(config.get("output_name"))
    run_dir = resume.parent.parent if resume is not None else layout.runs / f"{now:%Y%m%d-%H%M%S}-{output_name}"
    files = runtime.files(layout, run_dir)
    container = files.image() is not None   # the engine exposes the chosen GPUs renumbered 0..N-1
    gpu = parse_gpus(gpus, visible_gpus, None if container else inherited_devices)
    launch = trainer_launch(gpu.selection, container=container, run_id=run_dir.name, visible=visible_gpus,
                            inherited=inherited_devices)
    config, steps = _resolve_steps(config, dataset, gpu.processes)
    values = config.values
    models = {m.role: files.model(m.role, m.path(layout)) for m in model_set(str(values["t5xxl"]))}
    try:
        trainer_toml = trainer_side_toml(layout, dataset.toml_text, files.folder)
    except DatasetError:  # an unreadable data.toml is reported by the dataset check; keep the text as is
        trainer_toml = dataset.toml_text
    plan_files = _prompt_files(values, dataset, prompts_file)
    prompts_name = next(iter(plan_files), None)
    logging_dir = values.get("logging_dir")
    state_c = files.run(f"output/{resume.name}") if resume is not None else None
    paths = kohya.TrainerPaths(
        flux=models["flux"], clip_l=models["clip_l"], t5xxl=models["t5xxl"], ae=models["ae"],
        tokenizers=files.tokenizers(layout.tokenizers), dataset_config=files.run("data.toml"),
        output_dir=files.run("output"), sample_prompts=files.run(prompts_name) if prompts_name else None,
        logging_dir=files.run(logging_dir) if logging_dir else None, resume=state_c)
    trainer_args = kohya.trainer_args(values, paths)
    launcher = kohya.launcher_args(values, gpu.processes, gpu_ids=launch.gpu_ids,
                                   main_process_port=launch.main_process_port)
    environment = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                   **files.environment(gpu.selection, gpu.processes)}
    if launch.cuda_visible_devices is not None:   # the same ids as --gpu_ids, within the caller's allocation
        environment["CUDA_VISIBLE_DEVICES"] = launch.cuda_visible_devices
    image = files.image()
    plain = config.as_dict()
    hashed = {"config": plain, "trainer_args": [a for a in trainer_args if a != state_c and a != "--resume"],
              "launcher_args": launcher, "dataset_toml": trainer_toml, "image": image, "files": plan_files}
    plan = TrainPlan(
        run_id=run_dir.name, run_dir=run_dir, output_name=output_name, output_dir=run_dir / "output",
        lora_dir=layout.loras, runtime=runtime.name, launcher_args=launcher, script=kohya.SCRIPT,
        trainer_args=trainer_args, workdir=files.workdir, dataset_toml=trainer_toml, image=image,
        mounts=files.mounts(), environment=environment, gpus=files.gpus(gpu.selection), config=plain,
        config_hash=config_hash(hashed), epochs=steps.epochs, total_steps=steps.total_steps,
        steps_per_epoch=steps.steps_per_epoch, expected_outputs=arith.expected_outputs(values, steps.epochs),
        resume_from=state_c, files=plan_files, no_gpu=gpu.selection.none, gpu_selection=gpu.selection.text,
        devices=launch.devices, main_process_port=launch.main_process_port)
    return plan, steps


def _resolve_steps(config: TrainConfig, dataset: "DatasetReport", processes: int) -> tuple[TrainConfig, arith.Steps]:
    """The step arithmetic of the dataset, and the config with its `auto` values resolved from it."""
    bs = int(config.get("train_batch_size") or 1)
    train_subsets = [s for s in dataset.subsets if not s.is_reg and not getattr(s, "skipped", None)]
    steps = arith.compute_steps(config.values, image_steps=sum(s.images * s.num_repeats for s in train_subsets),
                                batches_per_epoch=dataset.batches_per_epoch(bs),
                                train_images=sum(s.images for s in train_subsets), processes=processes)
    return config.replace(arith.resolve_auto(config.values, steps), "auto"), steps


def _prompt_files(values: Mapping[str, Any], dataset: "DatasetReport",
                  prompts_file: tuple[str, str] | None) -> dict[str, str]:
    """The sample prompts file to write into the run folder ({} without samples): name -> text."""
    prompts = values.get("sample_prompts")
    if prompts_file is not None:
        return {"sample_prompts" + prompts_file[0]: prompts_file[1]}
    if prompts:
        lines = auto_prompts(dataset) if prompts == "auto" else list(prompts)
        return {"sample_prompts.txt": "".join(with_sample_defaults(p) + "\n" for p in lines)}
    return {}


def auto_prompts(dataset: "DatasetReport") -> list[str]:
    """One sample prompt per training concept, from its trigger words (or its folder name)."""
    out = []
    for s in dataset.subsets:
        if s.is_reg or getattr(s, "skipped", None):
            continue
        tokens = (s.class_tokens or s.image_dir.name).strip()
        prompt = f"a photo of {tokens}"
        if prompt not in out:
            out.append(prompt)
    return out


def with_sample_defaults(prompt: str) -> str:
    """Append sd-scripts' per-prompt options that are missing (its own defaults are 512 px, random seed)."""
    words = prompt.split()
    extra = [f"{opt} {val}" for opt, val in SAMPLE_DEFAULTS if opt not in words]
    return " ".join([prompt.strip(), *extra])

