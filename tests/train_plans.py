"""TrainPlans for the runner tests, built from the contract fields (the planner builds real ones)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.containers import Mount
from orchestrator.layout import Layout
from orchestrator.progress import RecordingSink
from orchestrator.runtimes.base import RuntimeEnv
from orchestrator.runtimes.docker_train import DockerTrainer
from orchestrator.runtimes.local_train import LocalTrainer
from orchestrator.train.plan import TrainPlan

LAUNCHER = ("accelerate", "launch", "--num_cpu_threads_per_process", "1", "--mixed_precision", "bf16")


def make_dataset(layout: Layout, concept: str = "toy", images: int = 3) -> Path:
    """A concept folder with tiny 'images' (the stand-in only counts them)."""
    folder = layout.flux_data / concept
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        (folder / f"img{i}.png").write_bytes(b"\x89PNG fake %d" % i)
    return folder


def make_plan(layout: Layout, *, runtime: str = "docker", run_id: str = "20261126-071500-toy", epochs: int = 4,
              repeats: int = 2, accum: int = 2, save_every: int = 2, samples: bool = True, image: str | None = None,
              workdir: str = "/opt/sd-scripts", environment: dict[str, str] | None = None, gpus: str | None = None,
              marker: str | None = None, resume_from: str | None = None, config: dict | None = None,
              config_hash: str = "cfg-1") -> TrainPlan:
    """A playbook-like plan on a 3-image dataset: 6 batches/epoch, accumulation 2 -> 3 steps/epoch."""
    folder = make_dataset(layout)
    run_dir = layout.runs / run_id
    if runtime == "docker":
        run_t, data_t = "/run", "/data/flux_data"
        mounts = (Mount(layout.flux_data, data_t, read_only=False), Mount(run_dir, run_t, read_only=False))
    else:
        run_t, data_t = str(run_dir), str(layout.flux_data)
        mounts = ()
    image_dir = f"{data_t}/{folder.name}"
    toml = ("[general]\nresolution = 1024\nbatch_size = 1\ncaption_extension = \".txt\"\n\n[[datasets]]\n\n"
            f"[[datasets.subsets]]\nimage_dir = \"{image_dir}\"\nnum_repeats = {repeats}\n")
    args = ["--dataset_config", f"{run_t}/data.toml", "--output_dir", f"{run_t}/output", "--output_name", "toy",
            "--max_train_epochs", str(epochs), "--save_every_n_epochs", str(save_every), "--save_state",
            "--gradient_accumulation_steps", str(accum), "--network_args", "train_blocks=all", "split_qkv=True"]
    if samples:
        args += ["--sample_prompts", f"{run_t}/sample_prompts.txt", "--sample_every_n_epochs", "2"]
    if marker:
        args += ["--training_comment", f"standin:{marker}"]
    if resume_from:
        args += ["--resume", resume_from]
    steps_per_epoch = -(-(3 * repeats) // accum)  # batch size 1: batches = images x repeats
    saves = tuple(f"toy-{e:06d}.safetensors" for e in range(save_every, epochs, save_every)) if save_every else ()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "sample_prompts.txt").write_text("a tjtoy toy on a desk --w 1024 --h 1024 --d 42\nsecond prompt\n")
    return TrainPlan(
        run_id=run_id, run_dir=run_dir, output_name="toy", output_dir=run_dir / "output", lora_dir=layout.loras,
        runtime=runtime, launcher_args=LAUNCHER, script="flux_train_network.py", trainer_args=tuple(args),
        workdir=workdir, dataset_toml=toml, image=image, mounts=mounts,
        environment={"HOME": f"{run_t}/home", "HF_HUB_OFFLINE": "1", **(environment or {})}, gpus=gpus,
        config=config or {"preset": "default", "network_dim": 16, "gradient_accumulation_steps": accum},
        config_hash=config_hash, epochs=epochs, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
        expected_outputs=(*saves, "toy.safetensors"), resume_from=resume_from,
    )


def docker_trainer(engine, layout: Layout, *, reporter=None, **settings) -> DockerTrainer:
    """The docker TrainRuntime on the test engine (settings: user, dockerfile, rebuild, image)."""
    return DockerTrainer(RuntimeEnv(layout, reporter, seams={"engine": engine}), settings)


def local_trainer(sd_scripts: Path, python: str, layout: Layout | None = None) -> LocalTrainer:
    """The local TrainRuntime for a (stand-in) sd-scripts checkout."""
    return LocalTrainer(RuntimeEnv(layout or Layout(Path(sd_scripts).parent)),
                        {"sd_scripts": sd_scripts, "python": python})


class GateOpener(RecordingSink):
    """Lets a gated stand-in trainer (STANDIN_WAIT_FOR) go on at the first milestone of the follower."""

    def __init__(self, gate) -> None:
        super().__init__()
        self.gate = gate

    def emit(self, event) -> None:
        super().emit(event)
        if not event.live:
            self.gate.parent.mkdir(parents=True, exist_ok=True)
            self.gate.touch()
