"""ComfyUI from a local checkout (`comfyui up --runtime local --comfyui DIR`): a background process.

The same project folders as the container (models, workflows in the Workflows sidebar, outputs,
input, a persistent user folder) are given to main.py with flags and an extra_model_paths.yaml;
a pid file under .comfyui/local/ lets `status`, `logs` and `down` find the process again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.comfy import health
from orchestrator.comfy.serverspec import ServerOptions, server_url
from orchestrator.engine import gpu_request
from orchestrator.errors import ConfigError, OrchestratorError, UsageError
from orchestrator.layout import Layout, atomic_write_text
from orchestrator.procs import pid_alive
from orchestrator.progress import Event, NullSink, Sink


@dataclass(frozen=True)
class LocalServer:
    """What the pid file records about a running local ComfyUI."""

    pid: int
    url: str
    comfyui: str
    python: str
    argv: tuple[str, ...]
    started: float            # epoch seconds
    log: str

    def uptime(self) -> float:
        return max(0.0, time.time() - self.started)


def state_dir(layout: Layout) -> Path:
    """.comfyui/local: pid file, log, generated model paths, the local user folder."""
    return layout.root / ".comfyui" / "local"


def pid_file(layout: Layout) -> Path:
    return state_dir(layout) / "comfyui.pid"


def log_file(layout: Layout) -> Path:
    return state_dir(layout) / "comfyui.log"


def model_paths_yaml(layout: Layout) -> str:
    """extra_model_paths.yaml text pointing ComfyUI at the project's model folders."""
    lines = ["flux_orchestrator:", f"    base_path: {json.dumps(str(layout.models))}"]
    lines += [f"    {name}: {json.dumps(str(path.relative_to(layout.models)))}"
              for name, path in layout.model_dirs().items()]
    return "\n".join(lines) + "\n"


def command(layout: Layout, comfyui: Path, python: str, options: ServerOptions) -> list[str]:
    """main.py's argv for the local runtime (pure)."""
    d = state_dir(layout)
    argv = [python, str(comfyui / "main.py"), "--listen", options.listen, "--port", str(options.port),
            "--output-directory", str(layout.comfy_outputs), "--input-directory", str(layout.inputs),
            "--temp-directory", str(d / "temp"), "--user-directory", str(d / "user"),
            "--extra-model-paths-config", str(d / "extra_model_paths.yaml"),
            "--database-url", f"sqlite:///{d / 'user' / 'comfyui.db'}", "--disable-auto-launch"]
    if options.gpus == "none":
        argv.append("--cpu")
    return argv + list(options.extra_args)


def environment(options: ServerOptions) -> dict[str, str]:
    """Extra environment of the local process: which GPUs it may see."""
    env = {"PYTHONUNBUFFERED": "1"}
    if options.gpus not in ("all", "none"):
        ids = options.gpu_ids() or [str(i) for i in range(int(gpu_request(options.gpus)["count"]))]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return env


def running(layout: Layout) -> LocalServer | None:
    """The recorded local server when its process is still alive (a stale pid file is removed)."""
    p = pid_file(layout)
    try:
        data = json.loads(p.read_text())
        server = LocalServer(**{**data, "argv": tuple(data["argv"])})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        p.unlink(missing_ok=True)
        return None
    if pid_alive(server.pid) and _is_ours(server):
        return server
    p.unlink(missing_ok=True)
    return None


def up(layout: Layout, options: ServerOptions, comfyui: Path, *, python: str | None = None,
       timeout: float = 180.0, reporter: Sink | None = None) -> tuple[LocalServer, bool]:
    """Start main.py from `comfyui` in the background unless it already runs; wait for /system_stats.
    Returns (server, started_now)."""
    reporter = reporter or NullSink()
    options.validate()
    if options.workers != 1:
        raise UsageError("--workers needs the docker runtime", hint="drop --runtime local, or --workers")
    comfyui = comfyui.expanduser().resolve()
    if not (comfyui / "main.py").is_file():
        raise ConfigError(f"{comfyui} is not a ComfyUI checkout (no main.py)",
                          hint="pass the folder you cloned ComfyUI into: --comfyui ~/ComfyUI")
    if python is not None and shutil.which(str(Path(python).expanduser())) is None:
        raise UsageError(f"--python {python}: no such program (or it is not executable)",
                         hint="give the Python of your ComfyUI environment, e.g. --python ~/ComfyUI/.venv/bin/python")
    current = running(layout)
    reporter.emit(Event("server", "start", total=1, unit="worker"))   # no line: the CLI says more
    if current is not None:
        reporter.emit(Event("server", "end", step=1, total=1, unit="worker"))
        return current, False
    url = server_url(options.listen, options.port)
    if health.port_in_use(options.listen, options.port):
        raise OrchestratorError(
            f"port {options.port} on {options.listen} is already in use by another program, "
            "so ComfyUI cannot listen there",
            hint=f"choose another port with `comfyui up --port {options.port + 1}`, or stop what holds it: "
                 f"`ss -ltnp 'sport = :{options.port}'`")
    d = state_dir(layout)
    custom_nodes = comfyui / "custom_nodes"
    layout.ensure_dirs(d / "temp", d / "user" / "default", layout.workflows, layout.comfy_outputs, layout.inputs,
                       *layout.model_dirs().values())
    if not custom_nodes.is_dir():
        custom_nodes.mkdir(parents=True, exist_ok=True)  # main.py stops at start without it
    _link_workflows(layout)
    atomic_write_text(d / "extra_model_paths.yaml", model_paths_yaml(layout))
    py = str(Path(python).expanduser()) if python else sys.executable
    argv = command(layout, comfyui, py, options)
    log = log_file(layout)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=comfyui, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **environment(options)}, start_new_session=True)
    server = LocalServer(proc.pid, url, str(comfyui), py, tuple(argv), time.time(), str(log))
    atomic_write_text(pid_file(layout), json.dumps(asdict(server), indent=2))
    reporter.emit(Event("server", "starting", f"started ComfyUI from {comfyui} (pid {proc.pid}); waiting for {url}"))

    def waiting(elapsed: float) -> None:
        reporter.emit(Event("server", "waiting", f"waiting for ComfyUI at {url} ({elapsed:.0f}s)",
                            step=round(elapsed, 1), total=timeout, unit="second", live=True))

    try:
        health.wait_until_ready(url, timeout=timeout, alive=lambda: proc.poll() is None,
                                evidence=lambda: tail(layout, 30), on_wait=waiting, what="ComfyUI (local)")
    except BaseException:
        _terminate(proc.pid, grace=5)
        pid_file(layout).unlink(missing_ok=True)
        raise
    reporter.emit(Event("server", "ready", files=()))   # the CLI prints its own line
    reporter.emit(Event("server", "end", step=1, total=1, unit="worker"))
    return server, True


def down(layout: Layout, *, grace: float = 20.0) -> LocalServer | None:
    """Stop the local server (SIGINT to its process group, then SIGKILL after `grace`)."""
    server = running(layout)
    if server is None:
        return None
    _terminate(server.pid, grace=grace)
    pid_file(layout).unlink(missing_ok=True)
    return server


def tail(layout: Layout, n: int = 30) -> list[str]:
    """The last `n` non-empty lines of the local server's log."""
    try:
        data = log_file(layout).read_bytes()[-64 * 1024:]
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip()][-n:]


def log_lines(layout: Layout, *, follow: bool = False, poll: float = 0.2) -> Iterator[str]:
    """The log's lines; with follow, keep reading while the server runs."""
    try:
        f = open(log_file(layout), "rb")
    except FileNotFoundError:
        return
    with f:
        pending = b""
        while True:
            chunk = f.read(65536)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line.decode("utf-8", "replace").rstrip("\r") for line in lines)
                continue
            if not follow or running(layout) is None:
                break
            time.sleep(poll)
        if pending:
            yield pending.decode("utf-8", "replace")


def _link_workflows(layout: Layout) -> None:
    """user/default/workflows -> the project's workflows/ (a symlink, so the browser lists ours)."""
    link = state_dir(layout) / "user" / "default" / "workflows"
    target = os.path.relpath(layout.workflows, link.parent)
    if link.is_symlink():
        if os.readlink(link) == target:
            return
        link.unlink()
    elif link.exists():
        if any(link.iterdir()):
            raise ConfigError(f"{link} is a folder with files in it, so our workflows/ cannot be linked there",
                              hint=f"move its files into {layout.workflows} and delete the folder")
        link.rmdir()
    link.symlink_to(target, target_is_directory=True)


def _is_ours(server: LocalServer) -> bool:
    """False when the pid was recycled by another program (its command line lacks our main.py)."""
    try:
        with open(f"/proc/{server.pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): trust the pid
    return server.argv[1].encode() in cmdline



def _terminate(pid: int, *, grace: float) -> None:
    """SIGINT the process group (ComfyUI exits cleanly on KeyboardInterrupt), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
