"""The local runtime for training (`LocalTrainer`): a plan run as a subprocess in an sd-scripts checkout
(cloud pods without Docker). The trainer shares this machine's file system: paths are host paths.

A small record `runs/.local-<config hash>.json` (pid, start time, run id; removed when the trainer ends) lets a second `train` of the same plan,
from another shell, find the running trainer and follow its log instead of starting a duplicate."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.containers import Mount
from orchestrator.errors import ConfigError, UsageError
from orchestrator.gpus import GpuSelection
from orchestrator.layout import Layout, atomic_write_text
from orchestrator.procs import pid_alive
from orchestrator.runtimes.base import RuntimeEnv
from orchestrator.train import rules
from orchestrator.train.checks import ERROR, OK, WARN, Check
from orchestrator.train.logparse import split_lines
from orchestrator.train.outputs import recorded_exit_code

if TYPE_CHECKING:  # annotations only: the planner's modules stay off `--help`
    from orchestrator.train.plan import TrainPlan

RECORD_PREFIX = ".local-"


class LocalHandle:
    """A trainer subprocess (its own process group, so SIGINT reaches accelerate and its children)."""

    def __init__(self, proc: subprocess.Popen[bytes], run_id: str, commit: str | None, record: Path | None = None) -> None:
        self.proc = proc
        self.id = str(proc.pid)
        self.run_id: str | None = run_id
        self.image_id: str | None = None
        self.sd_scripts_commit = commit
        self.record = record

    def logs(self) -> Iterator[str]:
        """The subprocess' stdout+stderr, split on \\r and \\n."""
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
        """Exit code; killed by signal N -> 128+N, like a shell."""
        code = self.proc.wait()
        self._forget()
        return 128 - code if code < 0 else code

    def stop(self, grace: float = 30) -> None:
        """SIGINT to the process group, `grace` seconds, then SIGKILL."""
        if self.proc.poll() is None:
            self._signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._forget()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _forget(self) -> None:
        if self.record is not None:
            try:
                if json.loads(self.record.read_text()).get("pid") == self.proc.pid:
                    self.record.unlink()
            except (OSError, ValueError):
                pass


class LocalFollower:
    """A trainer started by another `train` process: follows its run's train.log until the pid is gone."""

    def __init__(self, pid: int, run_id: str, log: Path, poll: float = 0.5) -> None:
        self.pid = pid
        self.id = str(pid)
        self.run_id: str | None = run_id
        self.image_id: str | None = None
        self.sd_scripts_commit: str | None = None
        self.log = log
        self.poll = poll

    def logs(self) -> Iterator[str]:
        """The run's log from the start, then what is appended while the trainer lives."""
        def chunks() -> Iterator[bytes]:
            while not self.log.exists() and pid_alive(self.pid):
                time.sleep(self.poll)
            if not self.log.exists():
                return
            with self.log.open("rb") as f:
                while True:
                    data = f.read(65536)
                    if data:
                        yield data
                    elif pid_alive(self.pid):
                        time.sleep(self.poll)
                    else:
                        rest = f.read()
                        if rest:
                            yield rest
                        return

        return split_lines(chunks())

    def wait(self) -> int:
        """The exit code the owner recorded in the run's manifest (-1 when unknown)."""
        while pid_alive(self.pid):
            time.sleep(self.poll)
        return recorded_exit_code(self.log.parent)

    def stop(self, grace: float = 30) -> None:
        """Not ours to stop: following ends, the trainer keeps running."""


class HostFiles:
    """`TrainerFiles` of a process on this machine: every path is the host path."""

    def __init__(self, run_dir: Path, workdir: Path) -> None:
        self.run_dir = run_dir
        self.workdir = str(workdir)

    def model(self, role: str, host: Path) -> str:
        """The model file itself."""
        return str(host)

    def folder(self, host: Path) -> str:
        """The dataset folder itself."""
        return str(host)

    def tokenizers(self, host: Path) -> str:
        """The tokenizer cache itself."""
        return str(host)

    def run(self, relative: str) -> str:
        """A path in the run folder."""
        return f"{self.run_dir}/{relative}"

    def mounts(self) -> tuple[Mount, ...]:
        """Nothing to mount: the file system is shared."""
        return ()

    def environment(self, gpu: GpuSelection, processes: int) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES: the chosen ids, the first N GPUs, or none."""
        if gpu.none:
            return {"CUDA_VISIBLE_DEVICES": ""}
        if gpu.all:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpu.ids) if gpu.ids else ",".join(str(i) for i in range(processes))}

    def gpus(self, gpu: GpuSelection) -> str | None:
        """GPUs are chosen through the environment."""
        return None

    def image(self) -> str | None:
        """No image."""
        return None


class LocalTrainer:
    """`TrainRuntime` as a subprocess in an sd-scripts checkout with the given Python.

    Settings: `sd_scripts` (the checkout, required), `python` (default python3). Seams: `popen`."""

    name: ClassVar[str] = "local"

    def __init__(self, env: RuntimeEnv, settings: Mapping[str, Any]) -> None:
        if not settings.get("sd_scripts"):
            raise ConfigError("--runtime local needs --sd-scripts DIR (an sd-scripts checkout)",
                              hint="train --runtime local --sd-scripts ~/sd-scripts "
                                   "--python ~/sd-scripts/venv/bin/python")
        self.sd_scripts_dir = Path(settings["sd_scripts"]).expanduser().resolve()
        self.python = str(settings.get("python") or "python3")
        self._python_given = settings.get("python")
        self._popen: Callable[..., subprocess.Popen[bytes]] = env.seams.get("popen", subprocess.Popen)

    def files(self, layout: Layout, run_dir: Path) -> HostFiles:
        """Host paths; the checkout is the working directory."""
        return HostFiles(run_dir, self.sd_scripts_dir)

    def probe(self) -> None:
        """Nothing slow to ask."""
        return None

    def checks(self, plan: TrainPlan, probe: Any = None) -> list[Check]:
        """The sd-scripts checkout (at the commit our rules were made for) and the Python that runs it."""
        return [_checkout_check(plan), _python_check(self._python_given)]

    def describe(self, plan: TrainPlan) -> None:
        """Nothing beyond the plan's workdir and environment."""
        return None

    def outputs(self, plan: TrainPlan) -> Path:
        """The trainer writes straight into plan.output_dir."""
        return plan.output_dir

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
        """Start the trainer subprocess (in its own session: Ctrl+C reaches us, we forward SIGINT)."""
        workdir = Path(plan.workdir) if plan.workdir else self.sd_scripts_dir
        if not (workdir / plan.script).is_file():
            raise UsageError(f"{workdir} is not an sd-scripts checkout ({plan.script} is missing)",
                             hint="pass the folder of a `git clone https://github.com/kohya-ss/sd-scripts` "
                                  "with --sd-scripts DIR")
        env = {**os.environ, **plan.environment, "PYTHONUNBUFFERED": "1"}
        try:
            proc = self._popen(self.command(plan), cwd=str(workdir), env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except (FileNotFoundError, PermissionError) as e:
            raise UsageError(f"cannot run {self.python}: {e.strerror}",
                             hint="pass the Python of the sd-scripts environment with --python PATH") from e
        record = _record_path(plan)
        atomic_write_text(record, json.dumps({"pid": proc.pid, "started": _start_time(proc.pid),
                                              "run_id": plan.run_id, "log": str(plan.run_dir / "train.log")}) + "\n")
        return LocalHandle(proc, plan.run_id, git_commit(workdir), record)

    def attach(self, plan: TrainPlan) -> LocalFollower | None:
        """The trainer another `train` started for the same plan, if it still runs."""
        record = _record_path(plan)
        try:
            data = json.loads(record.read_text())
            pid, run_id, log = int(data["pid"]), str(data["run_id"]), Path(data["log"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not pid_alive(pid) or _start_time(pid) != data.get("started"):  # gone, or the pid was reused
            record.unlink(missing_ok=True)
            return None
        return LocalFollower(pid, run_id, log)


def _record_path(plan: TrainPlan) -> Path:
    return plan.run_dir.parent / f"{RECORD_PREFIX}{plan.config_hash}.json"



def _start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot) from /proc: tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().split(b") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
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


def _checkout_check(plan: TrainPlan) -> Check:
    script = Path(plan.workdir) / plan.script
    if not plan.workdir or not script.is_file():
        return Check("sd_scripts", ERROR, f"{script} does not exist", "give the sd-scripts checkout with "
                     "--sd-scripts DIR (commit 48d368fa or later)")
    commit = git_commit(Path(plan.workdir))
    if commit == rules.SD_SCRIPTS_COMMIT:
        return Check("sd_scripts", OK, f"sd-scripts checkout {plan.workdir} at {commit[:8]}")
    return Check("sd_scripts", WARN, f"sd-scripts checkout {plan.workdir} is at "
                 f"{commit[:8] if commit else 'an unknown commit'}; the argument checks were made for "
                 f"{rules.SD_SCRIPTS_COMMIT[:8]}", f"git -C {plan.workdir} checkout "
                 f"{rules.SD_SCRIPTS_COMMIT[:8]} (the commit of the training image)")


def _python_check(python: str | None) -> Check:
    exe = python or "python3"
    found = shutil.which(exe) if os.sep not in exe else (exe if os.access(exe, os.X_OK) else None)
    if not found:
        return Check("python", ERROR, f"python {exe!r} not found",
                     "give the python of the sd-scripts environment with --python")
    return Check("python", OK, f"{found} (runs accelerate from its environment)")
