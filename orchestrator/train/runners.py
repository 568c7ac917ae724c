"""Runtimes for a `TrainPlan`: a Docker container (docker-py via orchestrator.engine) or a local
subprocess in an sd-scripts checkout. Both yield the trainer's output as lines split on `\\r` and `\\n`."""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from orchestrator.engine import (LABEL_CONFIG, LABEL_PROJECT, LABEL_ROLE, LABEL_RUN, BuildLine, ContainerSpec,
                                 Engine, invoking_user, project_id)
from orchestrator.errors import DockerError, OrchestratorError, UsageError
from orchestrator.layout import Layout
from orchestrator.progress import Event, NullSink, Sink
from orchestrator.train.local import LocalHandle, LocalRunner, git_commit
from orchestrator.train.logparse import split_lines
from orchestrator.train.plan import TrainPlan

ROLE = "train"
SD_SCRIPTS_COMMIT_LABEL = "io.flux-orchestrator.sd-scripts-commit"
# The seed's `docker run --ulimit memlock=-1 --ulimit stack=67108864` (NGC's recommended settings).
ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}


class RunHandle(Protocol):
    """A started (or found) trainer."""

    id: str
    run_id: str | None
    image_id: str | None
    sd_scripts_commit: str | None

    def lines(self) -> Iterator[str]:
        """Decoded output split on \\r and \\n; ends when the trainer exits."""

    def stop(self, grace: float = 30) -> None:
        """SIGINT, wait `grace` seconds, then kill; removes the container."""

    def wait(self) -> int:
        """The exit code (waits for the end)."""


class Runner(Protocol):
    """Starts a plan's trainer, or finds one already running for the same plan."""

    def start(self, plan: TrainPlan) -> RunHandle:
        """Start the trainer of `plan`."""

    def find_running(self, plan: TrainPlan) -> RunHandle | None:
        """A running trainer started from the same plan (same project and config hash), if any."""


# -- Docker ------------------------------------------------------------------------------------------

class DockerHandle:
    """A training container."""

    def __init__(self, engine: Engine, container: Any, *, sd_scripts_commit: str | None) -> None:
        self.engine = engine
        self.container = container
        self.id = container.id
        labels = (container.labels or {}) if hasattr(container, "labels") else {}
        self.run_id = labels.get(LABEL_RUN)
        self.image_id = (getattr(container, "attrs", {}) or {}).get("Image")
        self.sd_scripts_commit = sd_scripts_commit
        self.name = getattr(container, "name", self.id[:12])

    def lines(self) -> Iterator[str]:
        """The container's output from its start (stdout and stderr), split on \\r and \\n."""
        stream = self.engine.logs(self.container, follow=True)
        return split_lines(stream)  # type: ignore[arg-type]

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


class DockerRunner:
    """Runs a plan in the training image: GPUs, ipc=host, ulimits, mounts, as the invoking user, labelled."""

    def __init__(self, engine: Engine, layout: Layout, *, reporter: Sink | None = None, rebuild: bool = False,
                 dockerfile: Path | None = None, user: str | None = None) -> None:
        from orchestrator.images import SOURCE_ROOT, TRAIN_DOCKERFILE

        self.engine = engine
        self.layout = layout
        self.reporter = reporter or NullSink()
        self.rebuild = rebuild
        self.dockerfile = dockerfile or (SOURCE_ROOT / TRAIN_DOCKERFILE)
        self.user = user or invoking_user()
        self._built: set[str] = set()

    def _say(self, phase: str, message: str) -> None:
        self.reporter.emit(Event("train", phase, message))

    def labels(self, plan: TrainPlan) -> dict[str, str]:
        """Labels of the plan's container: role, project, run id, config hash."""
        return {LABEL_ROLE: ROLE, LABEL_PROJECT: project_id(self.layout.root), LABEL_RUN: plan.run_id,
                LABEL_CONFIG: plan.config_hash}

    def container_spec(self, plan: TrainPlan) -> ContainerSpec:
        """The pure container spec of a plan (tested by equality)."""
        if not plan.image:
            raise UsageError("the training plan has no image (it was planned for the local runtime)",
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
        stale = self.engine.get(spec.name) if spec.name else None
        if stale is not None:  # an exited container of this very run (e.g. a crash of ours): replace it
            stale.reload()
            if stale.status == "running":
                raise DockerError(f"run {plan.run_id} is already running in container {spec.name}",
                                  hint=f"stop it with `docker stop {spec.name}`, or wait for it")
            self.engine.remove(stale)
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
        container.reload()
        return DockerHandle(self.engine, container, sd_scripts_commit=commit)

    def find_running(self, plan: TrainPlan) -> DockerHandle | None:
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


def container_name(layout: Layout, plan: TrainPlan) -> str:
    """`flux-train-<project id>-<run id>` (Docker's allowed characters only)."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", plan.run_id)
    return f"flux-train-{project_id(layout.root)[:8]}-{safe}"[:120]


__all__ = ["DockerHandle", "DockerRunner", "LocalHandle", "LocalRunner", "OrchestratorError", "RunHandle", "Runner",
           "container_name", "git_commit", "split_lines"]
