"""The docker runtime for training (`DockerTrainer`): a `TrainPlan` run in the training image through
`orchestrator.engine`, with the project's folders bind-mounted where the trainer expects them.

Path translation (`ContainerFiles`): flux_data -> /data/flux_data, models/<dir> -> /models/<dir>,
the run folder -> /run; a dataset folder or model file elsewhere (a link to another disk) is mounted on
its own. `host_path` in train/outputs maps trainer paths back through the plan's mounts."""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.containers import (LABEL_CONFIG, LABEL_PROJECT, LABEL_ROLE, LABEL_RUN, NVIDIA_HINT, BuildLine,
                                     Container, ContainerSpec, Mount, invoking_user, project_id)
from orchestrator.engine import Engine, connect, quick_facts
from orchestrator.errors import DockerError, UsageError
from orchestrator.gpus import GpuSelection
from orchestrator.images import SOURCE_ROOT, TRAIN_DOCKERFILE, TRAIN_REPO, train_image
from orchestrator.layout import Layout
from orchestrator.progress import Event, NullSink
from orchestrator.runtimes.base import RuntimeEnv
from orchestrator.train.checks import ERROR, OK, WARN, Check
from orchestrator.train.logparse import split_lines

if TYPE_CHECKING:  # annotations only: the planner's modules stay off `--help`
    from orchestrator.train.plan import TrainPlan

ROLE = "train"
SD_SCRIPTS_COMMIT_LABEL = "io.flux-orchestrator.sd-scripts-commit"
# The seed's `docker run --ulimit memlock=-1 --ulimit stack=67108864` (NGC's recommended settings).
ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}
WORKDIR = "/opt/sd-scripts"
C_DATA, C_MODELS, C_RUN = "/data/flux_data", "/models", "/run"
C_HOME = "/tmp/home"   # writable for any uid; keeps caches out of the image and the project


# -- Docker ------------------------------------------------------------------------------------------

class DockerHandle:
    """A training container."""

    def __init__(self, engine: Engine, container: Container, *, sd_scripts_commit: str | None) -> None:
        self.engine = engine
        self.container = container
        self.id = container.id
        self.run_id = container.labels.get(LABEL_RUN)
        self.image_id = container.image_id
        self.sd_scripts_commit = sd_scripts_commit
        self.name = container.name

    def logs(self) -> Iterator[str]:
        """The container's output from its start (stdout and stderr), split on \\r and \\n."""
        return split_lines(self.engine.logs(self.container, follow=True))

    def wait(self) -> int:
        """The container's exit code."""
        return self.engine.wait(self.container)

    def stop(self, grace: float = 30) -> None:
        """SIGINT, `grace` seconds, then SIGKILL; the container is removed either way."""
        try:
            self.engine.stop(self.container, signal="SIGINT", grace=grace)
        finally:
            self.engine.remove(self.container)

    def remove(self) -> None:
        """Remove the (exited) container."""
        self.engine.remove(self.container)

    def tail(self, n: int = 30) -> list[str]:
        """The container's last log lines (evidence when the stream was lost)."""
        return self.engine.tail(self.container, n)


class ContainerFiles:
    """`TrainerFiles` of a container: host paths -> mount targets, collecting the mounts they need."""

    workdir = WORKDIR

    def __init__(self, layout: Layout, run_dir: Path, image: str | None) -> None:
        self.layout = layout
        self.run_dir = run_dir
        self._image = image
        self._extra_dirs: dict[Path, str] = {}
        self._links: list[Mount] = []

    def model(self, role: str, host: Path) -> str:
        """models/<dir>/<file> -> /models/<dir>/<file>; a link to another disk is mounted as a file."""
        try:
            real = host.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop (RuntimeError before 3.13): the model check says so
            return f"{C_MODELS}/{host.parent.name}/{host.name}"
        if host.is_symlink() and not real.is_relative_to(host.parent.resolve()):
            # a link to another disk: the folder mount would show a dangling link, so mount the file itself
            target = f"{C_MODELS}/links/{role}/{host.name}"
            self._links.append(Mount(real, target))
            return target
        return f"{C_MODELS}/{host.parent.name}/{host.name}"

    def folder(self, host: Path) -> str:
        """Inside flux_data: under /data/flux_data; elsewhere (or a link out): its own mount."""
        try:
            real, data = host.resolve(), self.layout.flux_data.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop or a NUL: the dataset check reports the folder
            return str(PurePosixPath(C_DATA, host.name))
        if real.is_relative_to(data) and host.is_relative_to(self.layout.flux_data):
            return str(PurePosixPath(C_DATA, *host.relative_to(self.layout.flux_data).parts))
        return self._extra_dirs.setdefault(real, f"/data/extra/{len(self._extra_dirs)}-{host.name}")

    def tokenizers(self, host: Path) -> str:
        """The tokenizer cache, mounted with the model folders."""
        return f"{C_MODELS}/{host.name}"

    def run(self, relative: str) -> str:
        """The run folder is /run."""
        return f"{C_RUN}/{relative}"

    def mounts(self) -> tuple[Mount, ...]:
        """flux_data and the run folder writable, the models read-only, then what the paths asked for."""
        layout = self.layout
        return (Mount(layout.flux_data, C_DATA, read_only=False),
                *[Mount(d, f"{C_MODELS}/{d.name}") for d in (layout.checkpoints, layout.text_encoders, layout.vae,
                                                             layout.tokenizers)],
                Mount(self.run_dir, C_RUN, read_only=False),
                *[Mount(host, target, read_only=False) for host, target in self._extra_dirs.items()], *self._links)

    def environment(self, gpu: GpuSelection, processes: int) -> dict[str, str]:
        """A writable HOME for any uid; caches kept out of the image and the project."""
        return {"HOME": C_HOME, "HF_HOME": f"{C_HOME}/.cache/huggingface", "XDG_CACHE_HOME": f"{C_HOME}/.cache"}

    def gpus(self, gpu: GpuSelection) -> str | None:
        """The engine's --gpus value."""
        return gpu.engine_value

    def image(self) -> str | None:
        """The training image tag."""
        return self._image


@dataclass(frozen=True)
class EngineFacts:
    """What the Docker engine told us (or why it could not)."""

    reachable: bool
    nvidia: bool = False
    image_present: bool = False
    error: str | None = None
    hint: str | None = None


class DockerTrainer:
    """`TrainRuntime` in the training image: GPUs, ipc=host, ulimits, mounts, as the invoking user, labelled.

    Settings: `image` (default: flux-train:<hash of Dockerfile.train>), `rebuild`; from Python also
    `user` ("uid:gid") and `dockerfile`. Seams: `engine` (an `orchestrator.engine.Engine`)."""

    name: ClassVar[str] = "docker"

    def __init__(self, env: RuntimeEnv, settings: Mapping[str, Any]) -> None:
        self.layout = env.layout
        self.reporter = env.reporter or NullSink()
        self._image: str | None = settings.get("image")
        self.rebuild = bool(settings.get("rebuild"))
        self.dockerfile = settings.get("dockerfile") or (SOURCE_ROOT / TRAIN_DOCKERFILE)
        self.user = settings.get("user") or invoking_user()
        self._engine: Engine | None = env.seams.get("engine")
        self._built: set[str] = set()

    @property
    def image(self) -> str:
        """The image to train in: the one asked for, or ours (tag from the hash of Dockerfile.train)."""
        if self._image is None:
            self._image = train_image()
        return self._image

    @property
    def engine(self) -> Engine:
        """The engine, connected on first use."""
        if self._engine is None:
            self._engine = connect()
        return self._engine

    # -- plan time --

    def files(self, layout: Layout, run_dir: Path) -> ContainerFiles:
        """Container paths for one run."""
        return ContainerFiles(layout, run_dir, self.image)

    def probe(self) -> EngineFacts:
        """Engine facts for the preflight: stdlib HTTP on the local socket (fast), docker-py otherwise."""
        try:
            facts = quick_facts(self.image)
            if facts is not None:
                return EngineFacts(True, nvidia="nvidia" in facts["runtimes"], image_present=facts["image_present"])
            engine = self.engine
            return EngineFacts(True, nvidia=engine.has_nvidia_runtime(), image_present=engine.image_exists(self.image))
        except DockerError as e:
            return EngineFacts(False, error=e.message, hint=e.hint)

    def checks(self, plan: TrainPlan, probe: Any = None) -> list[Check]:
        """The engine, its NVIDIA runtime and the image; `probe` returns EngineFacts (None: not checked)."""
        if probe is None:
            return [Check("docker", WARN, "Docker not checked")]
        facts = probe()
        if not facts.reachable:
            return [Check("docker", ERROR, facts.error or "the Docker engine is not reachable", facts.hint)]
        out = [Check("docker", OK, "Docker engine reachable")]
        if plan.gpus is None:
            pass
        elif facts.nvidia:
            out.append(Check("nvidia_runtime", OK, "NVIDIA container runtime registered"))
        else:
            out.append(Check("nvidia_runtime", ERROR, "this Docker engine has no NVIDIA runtime, so the training "
                             "container cannot use a GPU", NVIDIA_HINT))
        if facts.image_present:
            out.append(Check("image", OK, f"image {plan.image} is built"))
        elif str(plan.image).startswith(TRAIN_REPO + ":"):
            out.append(Check("image", OK, f"image {plan.image} will be built from Dockerfile.train first (once)"))
        else:
            out.append(Check("image", ERROR, f"image {plan.image} is not on this machine (it is never pulled)",
                             f"`docker pull {plan.image}` or build it first"))
        return out

    def describe(self, plan: TrainPlan) -> dict[str, Any]:
        """The container: image, GPUs, user, workdir, mounts, environment."""
        return {"image": plan.image, "gpus": plan.gpus, "user": self.user, "workdir": plan.workdir,
                "mounts": [{"source": str(m.source), "target": m.target, "read_only": m.read_only}
                           for m in plan.mounts], "environment": dict(plan.environment)}

    # -- run time --

    def _say(self, phase: str, message: str) -> None:
        self.reporter.emit(Event("train", phase, message))

    def labels(self, plan: TrainPlan) -> dict[str, str]:
        """Labels of the plan's container: role, project, run id, config hash."""
        return {LABEL_ROLE: ROLE, LABEL_PROJECT: project_id(self.layout.root), LABEL_RUN: plan.run_id,
                LABEL_CONFIG: plan.config_hash}

    def container_spec(self, plan: TrainPlan) -> ContainerSpec:
        """The pure container spec of a plan (tested by equality)."""
        if not plan.image:
            raise UsageError("the training plan has no image (it was planned for another runtime)",
                             hint="plan it again with `--runtime docker`")
        env = {**plan.environment, "PYTHONUNBUFFERED": "1"}
        return ContainerSpec(
            image=plan.image, command=tuple(plan.argv()), name=container_name(self.layout, plan),
            labels=self.labels(plan), mounts=plan.mounts, environment=env, user=self.user,
            working_dir=plan.workdir, gpus=plan.gpus, ipc_host=True, ulimits=ULIMITS, stop_signal="SIGINT",
        )

    def ensure_image(self, tag: str) -> None:
        """Build `tag` from Dockerfile.train when missing (or when rebuild was asked), streaming the build."""
        if tag in self._built or (not self.rebuild and self.engine.image_exists(tag)):
            return
        if not self.dockerfile.is_file():
            raise DockerError(f"image {tag} is missing and {self.dockerfile} does not exist",
                              hint="restore Dockerfile.train from the repository")
        self._say("build", f"building the training image {tag} from {self.dockerfile.name} "
                  "(first time only; downloads the NGC PyTorch base, ~20 GB)")
        started = time.monotonic()

        def on_line(line: BuildLine) -> None:
            if line.step is not None:
                self.reporter.emit(Event("train", "build", f"[build] step {line.step}/{line.total}: "
                                         f"{line.text.split(' : ', 1)[-1]}", step=line.step, total=line.total))
            else:
                self.reporter.emit(Event("train", "build", f"[build] {line.text[:120]}", live=True))

        # an empty context with only the Dockerfile: the project (models, datasets) is never sent to the daemon
        with tempfile.TemporaryDirectory(prefix="flux-train-build-") as ctx:
            shutil.copyfile(self.dockerfile, Path(ctx) / "Dockerfile")
            self.engine.build(Path(ctx), "Dockerfile", tag, on_line=on_line, nocache=self.rebuild,
                              labels={"io.flux-orchestrator.dockerfile": self.dockerfile.name})
        self._built.add(tag)
        self._say("build", f"built {tag} in {time.monotonic() - started:.0f}s")

    def start(self, plan: TrainPlan) -> DockerHandle:
        """Check GPU support, build the image when missing, start the labelled container."""
        if plan.gpus:
            self.engine.require_gpu_support()
        spec = self.container_spec(plan)
        for other in self.running():
            if other.run_id != plan.run_id:  # a different plan: not a duplicate, but it shares the GPUs
                self._say("warning", f"warning: training run {other.run_id} is also running in this project "
                          f"(container {other.name}); both share the GPU memory")
        self.ensure_image(spec.image)
        commit = self.engine.image_labels(spec.image).get(SD_SCRIPTS_COMMIT_LABEL)
        self._replace_stale(plan, spec)
        try:
            container = self.engine.run(spec)
        except DockerError as e:
            if "rlimit" not in e.message or "memlock" not in spec.ulimits:
                raise
            # rootless engines (and hosts with a low hard limit) refuse memlock=-1; it only speeds up
            # pinned-memory copies, so run without it rather than not at all
            self._say("warning", "warning: this Docker engine refuses `--ulimit memlock=-1` (rootless Docker or "
                      "a low hard limit); training without it, host-to-GPU copies may be slower")
            spec = dataclasses.replace(spec, ulimits={k: v for k, v in spec.ulimits.items() if k != "memlock"})
            container = self.engine.run(spec)
        return DockerHandle(self.engine, container, sd_scripts_commit=commit)

    def _replace_stale(self, plan: TrainPlan, spec: ContainerSpec) -> None:
        """Remove an exited container of this very run (e.g. after a crash of ours); refuse a running one."""
        stale = self.engine.get(spec.name) if spec.name else None
        if stale is None:
            return
        if stale.state == "running":
            raise DockerError(f"run {plan.run_id} is already running in container {spec.name}",
                              hint=f"stop it with `docker stop {spec.name}`, or wait for it")
        self.engine.remove(stale)

    def attach(self, plan: TrainPlan) -> DockerHandle | None:
        """A running container of this project started from the same plan (same config hash)."""
        labels = {LABEL_ROLE: ROLE, LABEL_PROJECT: project_id(self.layout.root), LABEL_CONFIG: plan.config_hash}
        for c in self.engine.find(labels, all=False):
            commit = None
            if plan.image:
                commit = self.engine.image_labels(plan.image).get(SD_SCRIPTS_COMMIT_LABEL)
            return DockerHandle(self.engine, c, sd_scripts_commit=commit)
        return None

    def running(self) -> list[DockerHandle]:
        """Every training container of this project that is running (any plan)."""
        found = self.engine.find({LABEL_ROLE: ROLE, LABEL_PROJECT: project_id(self.layout.root)}, all=False)
        return [DockerHandle(self.engine, c, sd_scripts_commit=None) for c in found]

    def outputs(self, plan: TrainPlan) -> Path:
        """The run folder is bind-mounted: the trainer writes straight into plan.output_dir."""
        return plan.output_dir


def container_name(layout: Layout, plan: TrainPlan) -> str:
    """`flux-train-<project id>-<run id>` (Docker's allowed characters only)."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", plan.run_id)
    return f"flux-train-{project_id(layout.root)[:8]}-{safe}"[:120]


__all__ = ["ContainerFiles", "DockerHandle", "DockerTrainer", "EngineFacts", "container_name"]
