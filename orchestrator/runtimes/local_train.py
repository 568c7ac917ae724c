"""The local runtime: a plan run as a subprocess in an sd-scripts checkout (cloud pods without Docker).

A small record `runs/.local-<config hash>.json` (pid, start time, run id; removed when the trainer ends) lets a second `train` of the same plan,
from another shell, find the running trainer and follow its log instead of starting a duplicate."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.layout import atomic_write_text
from orchestrator.procs import pid_alive
from orchestrator.train.logparse import split_lines
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

    def lines(self) -> Iterator[str]:
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

    def lines(self) -> Iterator[str]:
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
        from orchestrator.train.outputs import recorded_exit_code

        while pid_alive(self.pid):
            time.sleep(self.poll)
        return recorded_exit_code(self.log.parent)

    def stop(self, grace: float = 30) -> None:
        """Not ours to stop: following ends, the trainer keeps running."""


class LocalRunner:
    """Runs a plan as a subprocess in an sd-scripts checkout with the given Python."""

    def __init__(self, sd_scripts_dir: Path, python: str = "python3", *,
                 popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen) -> None:
        self.sd_scripts_dir = Path(sd_scripts_dir)
        self.python = python
        self._popen = popen

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

    def find_running(self, plan: TrainPlan) -> LocalFollower | None:
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
