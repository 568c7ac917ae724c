"""The local runtime for ComfyUI servers (`LocalServerRuntime`): main.py of a checkout on this machine
(`comfyui up --runtime local --comfyui DIR`), a background process.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.comfy import health
from orchestrator.comfy.serverspec import ServerOptions, server_url
from orchestrator.errors import ConfigError, OrchestratorError, UsageError
from orchestrator.gpuprobe import require_gpus
from orchestrator.gpus import parse_gpus, parse_visible, worker_layout
from orchestrator.files import atomic_write_text, file_lock
from orchestrator.layout import Layout
from orchestrator.procs import pid_alive
from orchestrator.progress import Event, NullSink, Sink
from orchestrator.runtimes.base import LogLine, RuntimeEnv, ServerInfo, ServerRequest, ServerUp


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


def pid_file(layout: Layout, index: int = 0) -> Path:
    """comfyui.pid for worker 0 (and a single server), comfyui-<i>.pid for worker i."""
    return state_dir(layout) / ("comfyui.pid" if index == 0 else f"comfyui-{index}.pid")


def log_file(layout: Layout, index: int = 0) -> Path:
    return state_dir(layout) / ("comfyui.log" if index == 0 else f"comfyui-{index}.log")


def _worker_indices(layout: Layout) -> list[int]:
    """Indices of the workers that have a pid file (0 first)."""
    found = []
    for p in state_dir(layout).glob("comfyui*.pid"):
        rest = p.stem[len("comfyui"):]
        if rest == "":
            found.append(0)
        elif rest.startswith("-") and rest[1:].isdigit():
            found.append(int(rest[1:]))
    return sorted(found)


def model_paths_yaml(layout: Layout) -> str:
    """extra_model_paths.yaml text pointing ComfyUI at the project's model folders."""
    lines = ["flux_orchestrator:", f"    base_path: {json.dumps(str(layout.models))}"]
    lines += [f"    {name}: {json.dumps(str(path.relative_to(layout.models)))}"
              for name, path in layout.model_dirs().items()]
    return "\n".join(lines) + "\n"


def command(layout: Layout, comfyui: Path, python: str, options: ServerOptions, index: int = 0) -> list[str]:
    """main.py's argv for the local runtime (pure). Worker i listens on port+i with a temp folder (ComfyUI
    empties it at start) and a database of its own (two processes migrating one sqlite file at start race)."""
    d = state_dir(layout)
    temp, db = (d / "temp", d / "user" / "comfyui.db") if index == 0 else \
        (d / f"temp-{index}", d / "user" / f"comfyui-{index}.db")
    argv = [python, str(comfyui / "main.py"), "--listen", options.listen, "--port", str(options.port + index),
            "--output-directory", str(layout.comfy_outputs), "--input-directory", str(layout.inputs),
            "--temp-directory", str(temp), "--user-directory", str(d / "user"),
            "--extra-model-paths-config", str(d / "extra_model_paths.yaml"),
            "--database-url", f"sqlite:///{db}", "--disable-auto-launch"]
    if options.gpus == "none":
        argv.append("--cpu")
    return argv + list(options.extra_args)


def environment(options: ServerOptions, index: int = 0, inherited: tuple[str, ...] | None = None) -> dict[str, str]:
    """Extra environment of worker `index`: which GPUs it may see (gpus.worker_layout: one GPU per worker, chosen
    among `inherited`, the caller's CUDA_VISIBLE_DEVICES, when it is set)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if options.gpus == "none":
        return env
    worker = worker_layout(parse_gpus(options.gpus), options.workers, options.port, inherited)[index]
    if worker.cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = worker.cuda_visible_devices
    return env


def running_all(layout: Layout) -> list[tuple[int, LocalServer]]:
    """(index, server) of every recorded worker whose process is alive."""
    return [(i, srv) for i in _worker_indices(layout) if (srv := running(layout, i)) is not None]


def running(layout: Layout, index: int = 0) -> LocalServer | None:
    """The recorded local server (worker `index`) when its process is still alive (a stale pid file is removed)."""
    p = pid_file(layout, index)
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
    Returns (server, started_now). Several workers: `up_workers`."""
    if options.workers != 1:
        raise UsageError("several local workers: use localserver.up_workers")
    [(server, started)] = up_workers(layout, options, comfyui, python=python, timeout=timeout, reporter=reporter)
    return server, started


def up_workers(layout: Layout, options: ServerOptions, comfyui: Path, *, python: str | None = None,
               timeout: float = 180.0, reporter: Sink | None = None) -> list[tuple[LocalServer, bool]]:
    """Start every worker that is not running (worker i on port+i with its own GPU), then wait for all of them.
    Returns (server, started_now) per worker. If one fails to come up, the ones started now are stopped."""
    reporter = reporter or NullSink()
    options.validate()
    comfyui = comfyui.expanduser().resolve()
    if not (comfyui / "main.py").is_file():
        raise ConfigError(f"{comfyui} is not a ComfyUI checkout (no main.py)",
                          hint="pass the folder you cloned ComfyUI into: --comfyui ~/ComfyUI")
    if python is not None and shutil.which(str(Path(python).expanduser())) is None:
        raise UsageError(f"--python {python}: no such program (or it is not executable)",
                         hint="give the Python of your ComfyUI environment, e.g. --python ~/ComfyUI/.venv/bin/python")
    with file_lock(pid_file(layout), what="comfyui up --runtime local"):  # one start, one set of pid files
        current = {i: running(layout, i) for i in range(options.workers)}
        for i in range(options.workers):
            port = options.port + i
            if current[i] is None and health.port_in_use(options.listen, port):
                raise OrchestratorError(
                    f"port {port} on {options.listen} is already in use by another program, "
                    f"so ComfyUI{f' worker {i}' if options.workers > 1 else ''} cannot listen there",
                    hint=f"choose another port with `comfyui up --port {options.port + options.workers}`, or stop what "
                         f"holds it: `ss -ltnp 'sport = :{port}'`")
        reporter.emit(Event("server", "start", total=options.workers, unit="worker"))   # no line: the CLI says more
        if all(srv is not None for srv in current.values()):
            reporter.emit(Event("server", "end", step=options.workers, total=options.workers, unit="worker"))
            return [(srv, False) for srv in current.values() if srv is not None]
        d = state_dir(layout)
        custom_nodes = comfyui / "custom_nodes"
        layout.ensure_dirs(*(d / ("temp" if i == 0 else f"temp-{i}") for i in range(options.workers)),
                           d / "user" / "default", layout.workflows, layout.comfy_outputs, layout.inputs,
                           *layout.model_dirs().values())
        if not custom_nodes.is_dir():
            custom_nodes.mkdir(parents=True, exist_ok=True)  # main.py stops at start without it
        _link_workflows(layout)
        atomic_write_text(d / "extra_model_paths.yaml", model_paths_yaml(layout))
        py = str(Path(python).expanduser()) if python else sys.executable
        started: dict[int, tuple[LocalServer, subprocess.Popen[bytes]]] = {}
        inherited = parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES"))
        for i in range(options.workers):
            if current[i] is not None:
                continue
            argv = command(layout, comfyui, py, options, i)
            log = log_file(layout, i)
            with open(log, "ab") as out:
                proc = subprocess.Popen(argv, cwd=comfyui, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **environment(options, i, inherited)}, start_new_session=True)
            server = LocalServer(proc.pid, server_url(options.listen, options.port + i), str(comfyui), py, tuple(argv),
                                 time.time(), str(log))
            atomic_write_text(pid_file(layout, i), json.dumps(asdict(server), indent=2))
            started[i] = (server, proc)
            gpu = environment(options, i, inherited).get("CUDA_VISIBLE_DEVICES")
            reporter.emit(Event("server", "starting",
                                f"started ComfyUI{f' worker {i}' if options.workers > 1 else ''} from {comfyui} "
                                f"(pid {proc.pid}{f', CUDA_VISIBLE_DEVICES={gpu}' if gpu is not None else ''}); "
                                f"waiting for {server.url}"))

        def waiting(url: str) -> Callable[[float], None]:
            def on_wait(elapsed: float) -> None:
                reporter.emit(Event("server", "waiting", f"waiting for ComfyUI at {url} ({elapsed:.0f}s)",
                                    step=round(elapsed, 1), total=timeout, unit="second", live=True))

            return on_wait

    try:
        for i, (server, proc) in started.items():
            health.wait_until_ready(server.url, timeout=timeout, alive=lambda p=proc: p.poll() is None,
                                    evidence=lambda i=i: tail(layout, 30, i), on_wait=waiting(server.url),
                                    what="ComfyUI (local)" if options.workers == 1 else f"ComfyUI worker {i} (local)")
    except BaseException:
        for i, (server, _) in started.items():
            _terminate(server.pid, grace=5)
            pid_file(layout, i).unlink(missing_ok=True)
        raise
    reporter.emit(Event("server", "ready", files=()))   # the CLI prints its own line
    reporter.emit(Event("server", "end", step=options.workers, total=options.workers, unit="worker"))
    return [(current[i] or started[i][0], i in started) for i in range(options.workers)]  # type: ignore[misc]


def down(layout: Layout, *, grace: float = 20.0) -> LocalServer | None:
    """Stop every local worker (SIGINT to its process group, then SIGKILL after `grace`); worker 0's record
    (the single server's) or the first one stopped is returned. `down_all` returns them all."""
    gone = down_all(layout, grace=grace)
    return gone[0] if gone else None


def down_all(layout: Layout, *, grace: float = 20.0) -> list[LocalServer]:
    """Stop every local worker; the records of those that were running, in index order."""
    gone = []
    with file_lock(pid_file(layout), what="comfyui down --runtime local"):
        for i, server in running_all(layout):
            _terminate(server.pid, grace=grace)
            pid_file(layout, i).unlink(missing_ok=True)
            gone.append(server)
    return gone


def tail(layout: Layout, n: int = 30, index: int = 0) -> list[str]:
    """The last `n` non-empty lines of the local server's (worker `index`'s) log."""
    try:
        data = log_file(layout, index).read_bytes()[-64 * 1024:]
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip()][-n:]


def log_lines(layout: Layout, *, follow: bool = False, poll: float = 0.2, index: int = 0) -> Iterator[str]:
    """The log's lines (worker `index`); with follow, keep reading while the server runs."""
    try:
        f = open(log_file(layout, index), "rb")
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
            if not follow or running(layout, index) is None:
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


# -- the ServerRuntime ---------------------------------------------------------------------------------

class LocalServerRuntime:
    """`ServerRuntime` for a ComfyUI checkout on this machine: one background main.py per worker."""

    name: ClassVar[str] = "local"

    def __init__(self, env: RuntimeEnv, settings: Mapping[str, Any]) -> None:
        self.env = env
        self.settings = dict(settings)

    def up(self, request: ServerRequest) -> ServerUp:
        """Start every worker's main.py from the checkout unless it already runs; wait until they answer."""
        checkout = self.settings.get("comfyui")
        if not checkout:
            raise UsageError("--runtime local needs --comfyui DIR (your ComfyUI checkout)",
                             hint="e.g. `comfyui up --runtime local --comfyui ~/ComfyUI "
                                  "--python ~/ComfyUI/venv/bin/python`")
        if request.recreate:
            raise UsageError("--recreate needs the docker runtime (a local ComfyUI keeps its settings)",
                             hint="`comfyui down`, then `comfyui up --runtime local ...` again")
        inherited = parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES"))
        require_gpus(request.options.gpus, request.options.workers, inherited=inherited)
        servers = up_workers(self.env.layout, request.options, Path(checkout), python=self.settings.get("python"),
                             timeout=request.timeout, reporter=self.env.reporter)
        infos = tuple(self._info(i, srv, environment(request.options, i, inherited).get("CUDA_VISIBLE_DEVICES",
                                                                                       "all"))
                      for i, (srv, _) in enumerate(servers))
        return ServerUp(infos, tuple(i for i, (_, started) in enumerate(servers) if started),
                        detail=servers[0][0].comfyui)

    def status(self) -> list[ServerInfo]:
        """The running local workers."""
        return [self._info(i, server) for i, server in running_all(self.env.layout)]

    def endpoints(self) -> list[str]:
        """Their URLs while they run."""
        return [s.url for s in self.status()]

    def logs(self, *, follow: bool = False, tail: int | None = None,
             worker: int | None = None) -> Iterator[LogLine]:
        """The log file's lines of worker `worker` (default 0; the last `tail` when not following)."""
        index = worker or 0
        lines: Iterator[str] = log_lines(self.env.layout, follow=follow, index=index)
        if tail is not None and not follow:
            lines = iter(list(lines)[-tail:] if tail else [])
        for line in lines:
            yield LogLine(index, line)

    def has_run(self) -> bool:
        """True when a local ComfyUI left its log in this project."""
        return log_file(self.env.layout).exists()

    def down(self, *, grace: float = 20.0) -> list[ServerInfo]:
        """Stop every local worker that runs."""
        return [self._info(i, server) for i, server in enumerate(down_all(self.env.layout, grace=grace))]

    def _info(self, index: int, server: LocalServer, gpu: str = "?") -> ServerInfo:
        return ServerInfo(runtime=self.name, worker=index, name=f"pid {server.pid}", url=server.url,
                          state="running", gpu=gpu, uptime_s=server.uptime())
