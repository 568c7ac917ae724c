"""Runtimes for a `TrainPlan`: a Docker container (docker-py via orchestrator.engine) or a local
subprocess in an sd-scripts checkout. Both yield the trainer's output as lines split on `\\r` and `\\n`."""

from __future__ import annotations

import codecs
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from orchestrator.engine import (LABEL_CONFIG, LABEL_PROJECT, LABEL_ROLE, LABEL_RUN, BuildLine, ContainerSpec,
                                 Engine, invoking_user, project_id)
from orchestrator.errors import DockerError, OrchestratorError, UsageError
from orchestrator.layout import Layout
from orchestrator.progress import NullReporter, Reporter
from orchestrator.train.plan import TrainPlan

ROLE = "train"
SD_SCRIPTS_COMMIT_LABEL = "io.flux-orchestrator.sd-scripts-commit"
# The seed's `docker run --ulimit memlock=-1 --ulimit stack=67108864` (NGC's recommended settings).
ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}
_BREAK = re.compile(r"\r\n|\r|\n")


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


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode byte chunks (UTF-8, multibyte-safe) into lines split on \\r, \\n and \\r\\n."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    buf = ""
    pending_cr = False  # the previous chunk ended with "\r": a leading "\n" completes "\r\n"
    for chunk in chunks:
        text = decoder.decode(chunk)
        if not text:
            continue
        if pending_cr and text[0] == "\n":
            text = text[1:]
        pending_cr = text.endswith("\r")
        buf += text
        parts = _BREAK.split(buf)
        buf = parts.pop()
        yield from parts
    buf += decoder.decode(b"", final=True)
    if buf:
        yield from _BREAK.split(buf)


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
        stream = self.engine.logs(self.container, follow=True)
        return split_lines(stream)  # type: ignore[arg-type]

    def wait(self) -> int:
        return self.engine.wait(self.container)

    def stop(self, grace: float = 30) -> None:
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

    def __init__(self, engine: Engine, layout: Layout, *, reporter: Reporter | None = None, rebuild: bool = False,
                 dockerfile: Path | None = None, user: str | None = None) -> None:
        from orchestrator.images import SOURCE_ROOT, TRAIN_DOCKERFILE

        self.engine = engine
        self.layout = layout
        self.reporter = reporter or NullReporter()
        self.rebuild = rebuild
        self.dockerfile = dockerfile or (SOURCE_ROOT / TRAIN_DOCKERFILE)
        self.user = user or invoking_user()
        self._built: set[str] = set()

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
        self.reporter.milestone(f"building the training image {tag} from {self.dockerfile.name} "
                                "(first time only; downloads the NGC PyTorch base, ~20 GB)")
        started = time.monotonic()

        def on_line(line: BuildLine) -> None:
            if line.step is not None:
                self.reporter.milestone(f"[build] step {line.step}/{line.total}: {line.text.split(' : ', 1)[-1]}")
            else:
                self.reporter.update(f"[build] {line.text[:120]}")

        # an empty context with only the Dockerfile: the project (models, datasets) is never sent to the daemon
        with tempfile.TemporaryDirectory(prefix="flux-train-build-") as ctx:
            shutil.copyfile(self.dockerfile, Path(ctx) / "Dockerfile")
            self.engine.build(Path(ctx), "Dockerfile", tag, on_line=on_line, pull=self.rebuild,
                              labels={"io.flux-orchestrator.dockerfile": self.dockerfile.name})
        self._built.add(tag)
        self.reporter.milestone(f"built {tag} in {time.monotonic() - started:.0f}s")

    def start(self, plan: TrainPlan) -> DockerHandle:
        if plan.gpus:
            self.engine.require_gpu_support()
        spec = self.container_spec(plan)
        self.ensure_image(spec.image)
        commit = self.engine.image_labels(spec.image).get(SD_SCRIPTS_COMMIT_LABEL)
        stale = self.engine.get(spec.name) if spec.name else None
        if stale is not None:  # an exited container of this very run (e.g. a crash of ours): replace it
            stale.reload()
            if stale.status == "running":
                raise DockerError(f"run {plan.run_id} is already running in container {spec.name}",
                                  hint=f"stop it with `docker stop {spec.name}`, or wait for it")
            self.engine.remove(stale)
        container = self.engine.run(spec)
        container.reload()
        return DockerHandle(self.engine, container, sd_scripts_commit=commit)

    def find_running(self, plan: TrainPlan) -> DockerHandle | None:
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


# -- local subprocess ----------------------------------------------------------------------------------

class LocalHandle:
    """A trainer subprocess (its own process group, so SIGINT reaches accelerate and its children)."""

    def __init__(self, proc: subprocess.Popen[bytes], run_id: str, commit: str | None) -> None:
        self.proc = proc
        self.id = str(proc.pid)
        self.run_id = run_id
        self.image_id: str | None = None
        self.sd_scripts_commit = commit

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()

        def chunks() -> Iterator[bytes]:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return
                yield data

        return split_lines(chunks())

    def wait(self) -> int:
        code = self.proc.wait()
        return 128 - code if code < 0 else code  # killed by signal N -> 128+N, like a shell

    def stop(self, grace: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        self._signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class LocalRunner:
    """Runs a plan as a subprocess in an sd-scripts checkout with the given Python (cloud pods without Docker)."""

    def __init__(self, sd_scripts_dir: Path, python: str = "python3", *,
                 popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen) -> None:
        self.sd_scripts_dir = Path(sd_scripts_dir)
        self.python = python
        self._popen = popen
        self._running: dict[str, LocalHandle] = {}

    def command(self, plan: TrainPlan) -> list[str]:
        """The argv to execute: `accelerate launch ...` becomes `PY -m accelerate.commands.accelerate_cli launch ...`
        so the trainer runs in the chosen Python without relying on PATH."""
        argv = plan.argv()
        if argv and argv[0] == "accelerate":
            return [self.python, "-m", "accelerate.commands.accelerate_cli", *argv[1:]]
        if argv and argv[0] in ("python", "python3"):
            return [self.python, *argv[1:]]
        return argv

    def start(self, plan: TrainPlan) -> LocalHandle:
        workdir = Path(plan.workdir) if plan.workdir else self.sd_scripts_dir
        if not (workdir / plan.script).is_file():
            raise UsageError(f"{workdir} is not an sd-scripts checkout ({plan.script} is missing)",
                             hint="pass the folder of a `git clone https://github.com/kohya-ss/sd-scripts` "
                                  "with --sd-scripts DIR")
        env = {**os.environ, **plan.environment, "PYTHONUNBUFFERED": "1"}
        try:
            proc = self._popen(self.command(plan), cwd=str(workdir), env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError as e:
            raise UsageError(f"cannot run {self.python}: {e.strerror}",
                             hint="pass the Python of the sd-scripts environment with --python PATH") from e
        handle = LocalHandle(proc, plan.run_id, git_commit(workdir))
        self._running[plan.config_hash] = handle
        return handle

    def find_running(self, plan: TrainPlan) -> LocalHandle | None:
        handle = self._running.get(plan.config_hash)
        if handle is not None and handle.proc.poll() is None:
            return handle
        return None


def git_commit(checkout: Path) -> str | None:
    """`git rev-parse HEAD` of a checkout (None when it is not a git checkout or git is missing)."""
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


__all__ = ["DockerHandle", "DockerRunner", "LocalHandle", "LocalRunner", "OrchestratorError", "RunHandle", "Runner",
           "container_name", "git_commit", "split_lines"]
