"""The two runtime interfaces: where a ComfyUI server runs (`ServerRuntime`) and where a training runs
(`TrainRuntime`), with the typed values that cross them.

A runtime is one way of running the same thing: `docker` (containers through `orchestrator.engine`) and
`local` (processes from a checkout) ship with the product; a cluster runtime plugs in the same way. The
rest of the code never asks *which* runtime it talks to: it holds an object implementing one of these
protocols, obtained from the registry (`orchestrator.runtimes.server_runtime` / `train_runtime`).

How to implement a third runtime (say `ray`):

1. Write one module, `orchestrator/runtimes/ray.py`, with a class implementing `ServerRuntime` and/or
   `TrainRuntime` below. Its constructor takes `(env: RuntimeEnv, settings: Mapping[str, Any])`:
   `env` carries the project layout and the progress reporter, `settings` the values of the runtime's own
   options (see 3). Construction must be cheap and must not contact anything: `--help`, `--plan` and
   `status` build runtimes they may never start. Connect lazily, on the first call that needs it.
2. Raise only `OrchestratorError` subclasses (never a library's exception): `UsageError` / `ConfigError`
   for settings that cannot work (exit 2), `RuntimeUnavailable` when the runtime's backend cannot be
   reached at all (the commands that look at every runtime, e.g. `comfyui status` and `down`, skip an
   unreachable one when another answered), `OrchestratorError` for other failures (exit 1). Never print:
   report progress through `env.reporter`.
3. Add one `Entry` to `REGISTRY` in `orchestrator/runtimes/__init__.py`: the name, a help line, the
   "module:Class" of each implementation, and the runtime-specific options as
   `server_settings=(RuntimeSetting("address", ...),)` / `train_settings=...`. The CLI turns each option
   into a flag (`--address`), refuses it with another runtime, and passes the parsed values in `settings`
   (a missing option is absent or None). An option shared with other runtimes (`--python`) is declared
   by each runtime that uses it. (A `SETTINGS` tuple on the class works too, but then `--help` imports
   the runtime's module to build the flags.) Nothing else changes: the CLI's `--runtime` choices, the help and the
   use cases come from the registry.
4. Keep the module's imports light enough for a command that uses it; the registry imports it only
   when the runtime is used (or listed by `comfyui status | logs | down`).
5. Paths: the product works with host paths (`Layout`). Whatever the server or trainer sees (a container
   mount, a path on another node, a shared file system) is the runtime's business: translate at the
   boundary (`TrainRuntime.files`, `TrainRuntime.outputs`), never assume the file system is shared.
6. Tests: implement the runtime against a real (small) backend or a double of it and run the contract
   tests (`tests/test_runtimes.py`) with it; the product's own doubles implement these same protocols.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from orchestrator.errors import RuntimeUnavailable, UsageError

if TYPE_CHECKING:  # only for annotations: importing a runtime interface stays free of the plan's modules
    from orchestrator.comfy.serverspec import ServerOptions
    from orchestrator.containers import Mount
    from orchestrator.gpus import GpuSelection
    from orchestrator.layout import Layout
    from orchestrator.progress import Sink
    from orchestrator.train.checks import Check
    from orchestrator.train.plan import TrainPlan


@dataclass(frozen=True)
class RuntimeSetting:
    """One option only some runtimes have; the CLI shows it as `--<flag>` (name with _ -> -)."""

    name: str                     # key in `settings`, e.g. "comfyui", "sd_scripts", "no_build"
    help: str
    kind: str = "text"            # "text" (a string) | "path" (a Path, ~ expanded) | "flag" (True when given)
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The command-line spelling, e.g. `--sd-scripts`."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class RuntimeEnv:
    """What every runtime is built with: the project and where progress goes."""

    layout: "Layout"
    reporter: "Sink | None" = None     # where progress Events go (None: nowhere)
    verbose: bool = False         # -v: runtimes may report raw preparation output (image builds) as milestones
    seams: Mapping[str, Any] = field(default_factory=dict)  # injected backends for tests, e.g. {"engine": ...}


# -- ComfyUI servers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerRequest:
    """What `comfyui up` asks of a server runtime."""

    options: "ServerOptions"      # listen address, port, GPUs, worker count, extra main.py flags
    timeout: float = 300.0        # seconds to wait until every started server answers /system_stats
    recreate: bool = False        # restart servers that run with other settings (else: UsageError)


@dataclass(frozen=True)
class ServerInfo:
    """One ComfyUI server as its runtime sees it."""

    runtime: str                  # the registry name of the runtime that runs it
    worker: int                   # 0..workers-1
    name: str                     # container name, "pid 1234", a cluster actor id: shown to people
    url: str                      # where a client on this machine reaches it
    state: str                    # "running" | "exited" | "created" | ... (Docker's words)
    gpu: str = "?"                # "?" unknown, "none" CPU, "all", "0", "0,1"
    uptime_s: float | None = None # seconds since start when running
    exit_code: int | None = None  # when it ended


@dataclass(frozen=True)
class ServerUp:
    """What `up` did: every server's state and which workers it started now (vs. found running)."""

    servers: tuple[ServerInfo, ...]
    started: tuple[int, ...]
    detail: str = ""              # runtime-specific note for people: the image tag, the checkout

    @property
    def urls(self) -> list[str]:
        """The servers' URLs in worker order."""
        return [s.url for s in self.servers]


@dataclass(frozen=True)
class LogLine:
    """One line of a server's log."""

    worker: int
    text: str


@runtime_checkable
class ServerRuntime(Protocol):
    """Runs this project's ComfyUI server(s). State lives with the runtime (labels, pid files, the
    cluster), so a later process finds the servers again: no state is kept in the object."""

    name: ClassVar[str]                       # the registry name

    def up(self, request: ServerRequest) -> ServerUp:
        """Start the servers unless they already run with the same settings; return once each started
        server answers (or raise, leaving nothing half-started behind)."""

    def status(self) -> list[ServerInfo]:
        """Every server of this project this runtime knows of, running or not (worker order)."""

    def endpoints(self) -> list[str]:
        """URLs of the running servers (worker order): what `generate` / `batch run` connect to."""

    def logs(self, *, follow: bool = False, tail: int | None = None,
             worker: int | None = None) -> Iterator[LogLine]:
        """The servers' log lines (the last `tail` per server, or all); with `follow`, until they stop."""

    def has_run(self) -> bool:
        """True when ComfyUI ran in this project with this runtime (a server or a log is left)."""

    def down(self, *, grace: float = 20.0) -> list[ServerInfo]:
        """Stop (SIGINT, then kill after `grace`) and remove every server; return what was stopped."""


# -- training -------------------------------------------------------------------------------------

class TrainerFiles(Protocol):
    """How the host paths of one run appear to the trainer; made by `TrainRuntime.files` at plan time
    and asked for every path the command line and the trainer-side data.toml name."""

    workdir: str                               # the trainer's working directory, as it sees it

    def model(self, role: str, host: Path) -> str:
        """A model file (role: flux, clip_l, t5xxl, ae) as the trainer sees it."""

    def folder(self, host: Path) -> str:
        """A dataset image folder as the trainer sees it."""

    def tokenizers(self, host: Path) -> str:
        """The tokenizer cache folder."""

    def run(self, relative: str) -> str:
        """A path inside the run folder (`data.toml`, `output/...`)."""

    def mounts(self) -> "tuple[Mount, ...]":
        """Host folders to make visible (containers: bind mounts), after every path was asked; () if shared."""

    def environment(self, gpu: "GpuSelection", processes: int) -> dict[str, str]:
        """Variables the runtime adds to the trainer's environment (HOME, CUDA_VISIBLE_DEVICES, ...)."""

    def gpus(self, gpu: "GpuSelection") -> str | None:
        """The GPU request recorded in the plan for the runtime's start (None: none or by environment)."""

    def image(self) -> str | None:
        """The image the trainer runs in (None: no image)."""


class TrainJob(Protocol):
    """A started (or attached) trainer."""

    id: str                                   # container id, pid, job id
    run_id: str | None
    image_id: str | None
    sd_scripts_commit: str | None

    def logs(self) -> Iterator[str]:
        """Decoded output from the start, split on \\r and \\n; ends when the trainer exits."""

    def wait(self) -> int:
        """The exit code (waits for the end)."""

    def stop(self, grace: float = 30) -> None:
        """SIGINT, wait `grace` seconds, then kill; frees what the runtime allocated (the container)."""


@runtime_checkable
class TrainRuntime(Protocol):
    """Runs a `TrainPlan`: plan (files, checks, describe) -> start / attach -> logs, stop -> outputs."""

    name: ClassVar[str]                       # the registry name

    def files(self, layout: "Layout", run_dir: Path) -> TrainerFiles:
        """The path translation for one run (pure: no I/O beyond resolving links)."""

    def probe(self) -> Any:
        """Facts about the backend for `checks` (reachable, GPU support, image present); may be slow (a
        network call), so the planner runs it in a thread while it reads the dataset. None: nothing to ask."""

    def checks(self, plan: "TrainPlan", probe: Any = None) -> "list[Check]":
        """Preflight checks of this runtime (backend reachable, image present, checkout complete);
        `probe` returns what `self.probe()` found (or a test's stand-in); None: the backend was not asked."""

    def describe(self, plan: "TrainPlan") -> dict[str, Any] | None:
        """Where the trainer runs, for `train --plan` (JSON `container`); None when there is nothing to add."""

    def start(self, plan: "TrainPlan") -> TrainJob:
        """Start the trainer of `plan` (the run folder and its inputs are written already)."""

    def attach(self, plan: "TrainPlan") -> TrainJob | None:
        """A trainer already running from the same plan (same project and config hash), if any."""

    def outputs(self, plan: "TrainPlan") -> Path:
        """The host folder holding what the trainer wrote so far (fetched first when not shared)."""


def check_settings(runtime: str, known: tuple[RuntimeSetting, ...], settings: Mapping[str, Any],
                   others: Mapping[str, tuple[RuntimeSetting, ...]]) -> None:
    """UsageError when `settings` holds a value for an option only other runtimes have."""
    mine = {s.name for s in known}
    foreign = [s for rt, opts in others.items() if rt != runtime for s in opts
               if s.name not in mine and settings.get(s.name) not in (None, False)]
    if foreign:
        owners = sorted({rt for rt, opts in others.items() for s in opts if s in foreign})
        flags = " and ".join(dict.fromkeys(s.flag for s in foreign))
        raise UsageError(f"{flags} {'apply' if len(set(s.flag for s in foreign)) > 1 else 'applies'} to --runtime "
                         f"{' or '.join(owners)} only, not {runtime}",
                         hint=f"add --runtime {owners[0]}, or leave {flags} out")



__all__ = ["LogLine", "RuntimeEnv", "RuntimeSetting", "RuntimeUnavailable", "ServerInfo", "ServerRequest",
           "ServerRuntime", "ServerUp", "TrainJob", "TrainRuntime", "TrainerFiles", "check_settings"]
