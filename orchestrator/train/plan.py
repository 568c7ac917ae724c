"""The training plan: everything one sd-scripts run needs, resolved before anything starts.

`build_plan` is pure given its inputs (layout, config, dataset report, clock, GPU count): it
resolves `auto` values from the dataset, renders the command line and the trainer-side data.toml,
and lays out the container (image, mounts, environment). Preflight checks live in `preflight.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from orchestrator.engine import Mount, config_hash
from orchestrator.errors import UsageError
from orchestrator.layout import Layout
from orchestrator.train import arith, kohya
from orchestrator.train.config import TrainConfig

if TYPE_CHECKING:
    from orchestrator.dataset import DatasetReport

RUNTIMES = ("docker", "local")
WORKDIR = "/opt/sd-scripts"
C_DATA, C_MODELS, C_RUN = "/data/flux_data", "/models", "/run"
C_HOME = "/tmp/home"   # writable for any uid; keeps caches out of the image and the project
SAMPLE_DEFAULTS = (("--w", "1024"), ("--h", "1024"), ("--s", "20"), ("--g", "3.5"), ("--d", "42"))

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
    files: Mapping[str, str] = field(default_factory=dict)  # other inputs to write into run_dir (name -> text)

    def argv(self) -> list[str]:
        """The full trainer command line."""
        return [*self.launcher_args, self.script, *self.trainer_args]


@dataclass(frozen=True)
class GpuRequest:
    """`--gpus` parsed: what the container gets and how many trainer processes run."""

    spec: str | None        # engine value: "all" | "2" | "0,1" | None
    processes: int
    ids: tuple[str, ...] = ()


def parse_gpus(value: str | None, visible: int | None) -> GpuRequest:
    """`all` (every GPU, one process each), `N` (a count), `0,1` / `device=1` (ids), `none` (no GPU:
    stand-in trainers only); default one GPU."""
    if value is None:
        return GpuRequest("1", 1)
    text = value.strip()
    if text == "none":
        return GpuRequest(None, 1)
    if text.startswith("device="):
        text = text[len("device="):] + ","
    if text == "all":
        return GpuRequest("all", max(1, visible or 1))
    if text.isdigit() and int(text) >= 1:
        return GpuRequest(text, int(text))
    ids = tuple(p.strip() for p in text.split(",") if p.strip())
    if "," in text and ids and all(i.isdigit() or i.startswith("GPU-") for i in ids):
        return GpuRequest(",".join(ids) + ("," if len(ids) == 1 else ""), len(ids), ids)
    raise UsageError(f"--gpus {value!r}: expected all, a count like 2, or ids like 0,1 (one id: device=1)")


def build_plan(layout: Layout, config: TrainConfig, *, dataset: "DatasetReport", now: datetime,
               runtime: str = "docker", gpus: str | None = None, name: str | None = None,
               resume: Path | None = None, image: str | None = None, sd_scripts: Path | None = None,
               visible_gpus: int | None = None, prompts_file: tuple[str, str] | None = None,
               ) -> tuple[TrainPlan, arith.Steps]:
    """The plan and its step arithmetic. `resume` is a host state dir of an earlier run (its run folder
    is reused); `prompts_file` is (extension, text) of a user prompts file."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r}: choose docker or local")
    if name is not None:
        from orchestrator.train.config import coerce
        from orchestrator.train.schema import BY_NAME

        config = config.replace({"output_name": coerce(BY_NAME["output_name"], name, "--name")}, "--name")
    gpu = parse_gpus(gpus, visible_gpus)
    bs = int(config.get("train_batch_size") or 1)
    train_subsets = [s for s in dataset.subsets if not s.is_reg and not getattr(s, "skipped", None)]
    steps = arith.compute_steps(config.values, image_steps=sum(s.images * s.num_repeats for s in train_subsets),
                                batches_per_epoch=dataset.batches_per_epoch(bs),
                                train_images=sum(s.images for s in train_subsets), processes=gpu.processes)
    config = config.replace(arith.resolve_auto(config.values, steps), "auto")
    values = config.values
    output_name = str(values["output_name"])

    if resume is not None:
        run_dir = resume.parent.parent
    else:
        run_dir = layout.runs / f"{now:%Y%m%d-%H%M%S}-{output_name}"
    docker = runtime == "docker"
    run_c = C_RUN if docker else str(run_dir)
    workdir = WORKDIR if docker else str(sd_scripts or "")
    mounts: list[Mount] = []

    extra_mounts: list[Mount] = []

    def model_path(role: str, host: Path) -> str:
        if not docker:
            return str(host)
        try:
            real = host.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop (RuntimeError before 3.13): the model check says so
            return f"{C_MODELS}/{host.parent.name}/{host.name}"
        if host.is_symlink() and not real.is_relative_to(host.parent.resolve()):
            # a link to another disk: the folder mount would show a dangling link, so mount the file itself
            target = f"{C_MODELS}/links/{role}/{host.name}"
            extra_mounts.append(Mount(real, target))
            return target
        return f"{C_MODELS}/{host.parent.name}/{host.name}"

    from orchestrator.models import model_set

    files = {m.role: model_path(m.role, m.path(layout)) for m in model_set(str(values["t5xxl"]))}
    extra_dirs: dict[Path, str] = {}

    def folder_for_trainer(host: Path) -> str:
        if not docker:
            return str(host)
        try:
            real, data = host.resolve(), layout.flux_data.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop or a NUL: the dataset check reports the folder
            return str(PurePosixPath(C_DATA, host.name))
        if real.is_relative_to(data) and host.is_relative_to(layout.flux_data):
            return str(PurePosixPath(C_DATA, *host.relative_to(layout.flux_data).parts))
        # outside flux_data (or a link to elsewhere): mount the real folder on its own
        return extra_dirs.setdefault(real, f"/data/extra/{len(extra_dirs)}-{host.name}")

    from orchestrator.dataset.trainer import trainer_toml as rewrite_folders
    from orchestrator.errors import DatasetError

    try:
        trainer_toml = rewrite_folders(layout, dataset.toml_text, folder_for_trainer)
    except DatasetError:  # an unreadable data.toml is reported by the dataset check; keep the text as is
        trainer_toml = dataset.toml_text

    plan_files: dict[str, str] = {}
    prompts_name = None
    prompts = values.get("sample_prompts")
    if prompts_file is not None:
        prompts_name = "sample_prompts" + prompts_file[0]
        plan_files[prompts_name] = prompts_file[1]
    elif prompts:
        prompts_name = "sample_prompts.txt"
        lines = auto_prompts(dataset) if prompts == "auto" else list(prompts)
        plan_files[prompts_name] = "".join(with_sample_defaults(p) + "\n" for p in lines)
    logging_dir = values.get("logging_dir")
    state_c = f"{run_c}/output/{resume.name}" if resume is not None else None
    paths = kohya.TrainerPaths(
        flux=files["flux"], clip_l=files["clip_l"], t5xxl=files["t5xxl"], ae=files["ae"],
        tokenizers=f"{C_MODELS}/tokenizers" if docker else str(layout.tokenizers),
        dataset_config=f"{run_c}/data.toml", output_dir=f"{run_c}/output",
        sample_prompts=f"{run_c}/{prompts_name}" if prompts_name else None,
        logging_dir=f"{run_c}/{logging_dir}" if logging_dir else None, resume=state_c)
    trainer_args = kohya.trainer_args(values, paths)
    launcher = kohya.launcher_args(values, gpu.processes)

    environment = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if docker:
        environment.update({"HOME": C_HOME, "HF_HOME": f"{C_HOME}/.cache/huggingface",
                            "XDG_CACHE_HOME": f"{C_HOME}/.cache"})
        mounts = [Mount(layout.flux_data, C_DATA, read_only=False),
                  *[Mount(d, f"{C_MODELS}/{d.name}") for d in (layout.checkpoints, layout.text_encoders, layout.vae,
                                                               layout.tokenizers)],
                  Mount(run_dir, C_RUN, read_only=False),
                  *[Mount(host, target, read_only=False) for host, target in extra_dirs.items()], *extra_mounts]
    elif gpu.spec is None:
        environment["CUDA_VISIBLE_DEVICES"] = ""
    elif gpu.spec != "all":
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.ids) if gpu.ids else ",".join(
            str(i) for i in range(gpu.processes))

    plain = config.as_dict()
    hashed = {"config": plain, "trainer_args": [a for a in trainer_args if a != state_c and a != "--resume"],
              "launcher_args": launcher, "dataset_toml": trainer_toml, "image": image, "files": plan_files}
    plan = TrainPlan(
        run_id=run_dir.name, run_dir=run_dir, output_name=output_name, output_dir=run_dir / "output",
        lora_dir=layout.loras, runtime=runtime, launcher_args=launcher, script=kohya.SCRIPT,
        trainer_args=trainer_args, workdir=workdir, dataset_toml=trainer_toml, image=image if docker else None,
        mounts=tuple(mounts), environment=environment, gpus=gpu.spec if docker else None, config=plain,
        config_hash=config_hash(hashed), epochs=steps.epochs, total_steps=steps.total_steps,
        steps_per_epoch=steps.steps_per_epoch, expected_outputs=arith.expected_outputs(values, steps.epochs),
        resume_from=state_c, files=plan_files)
    return plan, steps


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

