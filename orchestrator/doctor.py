"""`doctor`: is this machine and project ready to train and generate? One check per concern,
each with a fix. The outside world comes in through `Probes` (Docker, the Hub, programs on PATH,
the disk, ports), so tests can point each probe at a real but controlled thing.

Levels: `fail` blocks training or generation (the CLI exits 1), `warn` works but deserves a
look, `info` is context, `ok` is fine.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator import models
from orchestrator.containers import NVIDIA_HINT
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.hub import LOGIN_HINT, Hub, HubUnreachable, model_card_url
from orchestrator.images import comfy_image, train_image
from orchestrator.layout import Layout
from orchestrator.progress import format_bytes

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
GIB = 1024 ** 3
COMFY_PORT = 8188
TRAIN_GPU_MEMORY_GIB = 24        # FLUX.1-dev LoRA training at bf16 without block swapping
HEADROOM = 30 * GIB              # latent/text caches, LoRA saves, training state, ComfyUI outputs
DOWNLOAD = "python -m orchestrator download"


@dataclass(frozen=True)
class Finding:
    """One finding of `doctor` (a line of its table): what was checked, how it stands, the fix."""

    name: str
    status: str
    summary: str
    fix: str | None = None

    @property
    def blocking(self) -> bool:
        return self.status == FAIL

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "blocking": self.blocking}


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


@dataclass(frozen=True)
class Probes:
    """How the doctor looks at the world; defaults are the real thing."""

    connect: Callable[[], Any]                       # -> orchestrator.engine.Engine (raises DockerUnavailable)
    hub: Callable[[], Any] | None = None             # -> orchestrator.hub.Hub; None: offline checks only
    which: Callable[[str], str | None] = shutil.which
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    disk_usage: Callable[[Any], Any] = shutil.disk_usage
    port_free: Callable[[str, int], bool] = port_is_free
    python: tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    packages: Callable[[], list[Any]] = field(default=lambda: _package_statuses())   # -> [deps.PackageStatus]
    images: Callable[[], tuple[str, str]] = field(default=lambda: _image_tags())


def run_checks(layout: Layout, probes: Probes, *, variant: str | None = None, port: int = COMFY_PORT,
               online: bool = False) -> list[Finding]:
    """Every check, in the order a user fixes them."""
    checks = [check_python(probes.python), *check_packages(probes.packages())]
    engine, docker_check = _docker(probes)
    checks.append(docker_check)
    checks.append(check_nvidia_runtime(engine, toolkit=probes.which("nvidia-ctk") or
                                       probes.which("nvidia-container-runtime")))
    checks.append(check_gpus(probes, engine_has_nvidia=_has_nvidia(engine)))
    model_set = models.model_set(variant or detect_variant(layout))
    manifest = models.read_manifest(layout)
    statuses = [models.local_status(layout, m, manifest) for m in model_set]
    checks.append(check_disk(layout, statuses, probes.disk_usage))
    several_missing = sum(not s.complete for s in statuses) > 1
    checks += [check_model(s, fetch_all=several_missing) for s in statuses]
    checks += [check_tokenizer(models.tokenizer_status(layout, t, manifest)) for t in models.TOKENIZERS]
    flux_ready = all(s.complete for s in statuses if s.model.gated)
    checks += check_token(probes.hub, online=online, needed=not flux_ready)
    checks.append(check_port(probes.port_free, port))
    checks += check_images(engine, probes.images)
    return checks


def detect_variant(layout: Layout) -> str:
    """fp8 when only the fp8 T5-XXL is present, else fp16."""
    if not models.T5XXL_FP16.path(layout).exists() and models.T5XXL_FP8.path(layout).exists():
        return "fp8"
    return "fp16"


# -- single checks --------------------------------------------------------------------------------
def check_python(version: tuple[int, int, int]) -> Finding:
    text = ".".join(map(str, version))
    if version[:2] >= (3, 10):
        return Finding("python", OK, f"Python {text}")
    return Finding("python", FAIL, f"Python {text} is too old", "install Python 3.10 or newer")


def _package_statuses() -> list[Any]:
    from orchestrator.deps import check_packages as statuses

    return statuses()


def check_packages(statuses: list[Any]) -> list[Finding]:
    """One line for the Python packages when all are fine, else one per package that is not."""
    bad = [s for s in statuses if s.problem]
    if not bad:
        return [Finding("python packages", OK, f"{len(statuses)} dependencies installed within the tested ranges")]
    return [Finding(f"package {s.requirement.name}", FAIL if s.severity == "fail" else WARN,
                  f"{s.requirement.name} {s.problem}", s.fix) for s in bad]


def _import_failure(e: ImportError) -> Finding | None:
    from orchestrator.deps import missing_dependency

    missing = missing_dependency(e)
    return None if missing is None else Finding("docker", FAIL, missing.message, missing.hint)


def _docker(probes: Probes) -> tuple[Any | None, Finding]:
    try:
        engine = probes.connect()
        info = engine.info()
    except OrchestratorError as e:
        return None, Finding("docker", FAIL, e.message, e.hint)
    except ImportError as e:  # docker-py missing: the packages line says how to install it
        check = _import_failure(e)
        if check is None:
            raise
        return None, check
    version = info.get("ServerVersion", "?")
    return engine, Finding("docker", OK, f"engine {version} reachable ({info.get('OperatingSystem', '?')})")


def _has_nvidia(engine: Any | None) -> bool | None:
    if engine is None:
        return None
    try:
        return bool(engine.has_nvidia_runtime())
    except OrchestratorError:
        return None


def check_nvidia_runtime(engine: Any | None, *, toolkit: str | None = None) -> Finding:
    """`toolkit`: path of the NVIDIA Container Toolkit on this host, when installed."""
    if engine is None:
        return Finding("nvidia runtime", INFO, "not checked: Docker is not reachable")
    info = engine.info()
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    if "nvidia" in runtimes:
        default = info.get("DefaultRuntime", "?")
        return Finding("nvidia runtime", OK, f"registered with Docker (default runtime: {default})")
    summary = f"Docker has no NVIDIA runtime (only {', '.join(runtimes) or 'none'}): containers cannot use a GPU"
    if toolkit:
        return Finding("nvidia runtime", FAIL, summary + f"; the toolkit is installed ({toolkit}) but not registered",
                     "register it: `sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`")
    return Finding("nvidia runtime", FAIL, summary, NVIDIA_HINT)


def check_gpus(probes: Probes, *, engine_has_nvidia: bool | None) -> Finding:
    exe = probes.which("nvidia-smi")
    if exe is None:
        if engine_has_nvidia:
            return Finding("gpus", WARN, "nvidia-smi not found on this host, cannot list GPUs",
                         "install the NVIDIA driver utilities (or ignore if Docker runs on another machine)")
        return Finding("gpus", WARN, "no NVIDIA driver found on this host (no nvidia-smi)",
                     "training and generation need an NVIDIA GPU with a recent driver")
    try:
        r = probes.run([exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return Finding("gpus", WARN, f"nvidia-smi failed: {e}", "check the NVIDIA driver (`nvidia-smi`)")
    if r.returncode != 0:
        text = (r.stderr or r.stdout or "").strip().splitlines()
        return Finding("gpus", WARN, f"nvidia-smi failed: {text[0] if text else r.returncode}",
                     "check the NVIDIA driver (`nvidia-smi`); a driver/library mismatch needs a reboot")
    gpus = []
    for line in r.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[2].replace(".", "").isdigit():
            gpus.append((parts[0], parts[1], float(parts[2]) / 1024))  # MiB -> GiB
    if not gpus:
        return Finding("gpus", WARN, "nvidia-smi lists no GPU", "check the NVIDIA driver (`nvidia-smi`)")
    summary = "; ".join(f"GPU {i}: {name} {mem:.0f} GiB" for i, name, mem in gpus)
    if max(mem for _, _, mem in gpus) < TRAIN_GPU_MEMORY_GIB - 1:
        return Finding("gpus", WARN, summary + f" (training FLUX.1-dev wants ~{TRAIN_GPU_MEMORY_GIB} GiB)",
                     "train with the low-memory settings (fp8 base model, block swapping) and "
                     "`download --variant fp8`")
    return Finding("gpus", OK, summary)


def check_disk(layout: Layout, statuses: list[models.LocalStatus], disk_usage: Callable[[Any], Any]) -> Finding:
    folder = layout.models if layout.models.exists() else layout.root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = disk_usage(folder).free
    need = sum(max(0, (s.expected or s.model.approx_size) - (s.size or 0)) for s in statuses if not s.complete)
    text = f"{format_bytes(free)} free in {folder}"
    if need:
        text += f"; the missing models need {format_bytes(need)}"
    if free < need:
        return Finding("disk", FAIL, text, f"free {format_bytes(need - free)} or put models/ on a bigger disk "
                                         "(a symlink is fine)")
    if free - need < HEADROOM:
        return Finding("disk", WARN, text + f"; less than {format_bytes(HEADROOM)} left for caches and results",
                     "free some space before training (latent caches, LoRA saves and state need room)")
    return Finding("disk", OK, text)


def check_model(s: models.LocalStatus, *, fetch_all: bool = False) -> Finding:
    name = f"model {s.model.name}"
    rel = f"models/{s.model.folder}/{s.path.name}"
    fetch = f"`{DOWNLOAD}`" if fetch_all else f"`{DOWNLOAD} --only {s.model.name}`"
    if not s.present:
        return Finding(name, FAIL, f"{rel} is missing", f"run {fetch}" + ("" if fetch_all or not s.model.gated
                                                                         else " (gated: needs a Hugging Face token)"))
    if not s.complete:
        return Finding(name, FAIL, f"{rel} is incomplete: {format_bytes(s.size)} of {format_bytes(s.expected)}",
                     f"run {fetch}: it resumes or replaces it")
    if not s.recorded:
        return Finding(name, WARN, f"{rel} present ({format_bytes(s.size)}) but not recorded by `download`",
                     f"run `{DOWNLOAD} --only {s.model.name} --verify` to check it against the Hub")
    return Finding(name, OK, f"{rel} ({format_bytes(s.size)})")


def check_tokenizer(t: models.TokenizerStatus) -> Finding:
    name = f"tokenizer {t.tokenizer.name.removesuffix('-tokenizer')}"
    rel = f"models/tokenizers/{t.tokenizer.folder_name}/"
    if t.complete:
        return Finding(name, OK, f"{rel} cached")
    gone = ", ".join(t.missing + t.incomplete)
    return Finding(name, FAIL, f"{rel} lacks {gone}", f"run `{DOWNLOAD} --only tokenizers` (a few MB; training "
                                                    "runs offline and cannot fetch them itself)")


def check_token(make_hub: Callable[[], Any] | None, *, online: bool, needed: bool) -> list[Finding]:
    from orchestrator.hub import LOGIN_HINT, Hub, HubUnreachable, model_card_url

    try:
        hub = make_hub() if make_hub is not None else Hub.from_env()
    except ImportError as e:  # huggingface_hub missing: the packages line says how to install it
        check = _import_failure(e)
        if check is None:
            raise
        return [Finding("hf token", FAIL, check.summary, check.fix)]
    except ConfigError as e:  # a malformed token (the message names its source, never the value)
        return [Finding("hf token", FAIL, e.message, e.hint)]
    card = model_card_url(models.FLUX_REPO)
    reach: list[Finding] = []
    if online:
        try:
            hub.file_info(models.CLIP_L.repo, models.CLIP_L.filename)
        except HubUnreachable as e:
            return [Finding("hub", FAIL if needed else WARN, e.message, e.hint)]
        except OrchestratorError:
            pass  # it answered (a refused token is the next check's business)
        reach = [Finding("hub", OK, f"{hub.endpoint} reachable")]
    if not hub.has_token:
        if hub.token_warnings:   # e.g. HF_TOKEN set to whitespace only: say so rather than "none found"
            return reach + [Finding("hf token", WARN, "; ".join(hub.token_warnings), LOGIN_HINT)]
        if needed:
            return reach + [Finding("hf token", WARN, "no Hugging Face token (HF_TOKEN or `hf auth login`); FLUX.1-dev is "
                                            "gated and not downloaded yet",
                          f"accept the licence at {card}, then {LOGIN_HINT}")]
        return reach + [Finding("hf token", INFO, "none found (not needed: the gated files are already here)")]
    if not online:
        if hub.token_warnings:
            return [Finding("hf token", WARN, f"found ({hub.token_source}); " + "; ".join(hub.token_warnings),
                            "store the token without surrounding whitespace")]
        return [Finding("hf token", OK, f"found ({hub.token_source}); not checked online (`doctor --online` does)")]
    try:
        user = hub.whoami()
    except OrchestratorError as e:
        return reach + [Finding("hf token", FAIL, e.message, e.hint)]
    checks = reach + [Finding("hf token", WARN if hub.token_warnings else OK,
                              f"valid ({hub.token_source}): logged in as {user}"
                              + "".join(f"; {w}" for w in hub.token_warnings),
                              "store the token without surrounding whitespace" if hub.token_warnings else None)]
    try:
        hub.file_info(models.FLUX_REPO, models.FLUX_DEV.filename, gated=True)
        checks.append(Finding("flux licence", OK, f"{user} has access to {models.FLUX_REPO}"))
    except OrchestratorError as e:
        checks.append(Finding("flux licence", FAIL if needed else WARN, e.message, e.hint))
    return checks


def check_port(port_free: Callable[[str, int], bool], port: int) -> Finding:
    if port_free("127.0.0.1", port):
        return Finding("port", OK, f"{port} is free for ComfyUI")
    return Finding("port", WARN, f"{port} is in use (a ComfyUI already running?)",
                 f"stop what listens on it (`ss -ltnp 'sport = :{port}'` shows it) or give ComfyUI another port")


def check_images(engine: Any | None, tags: Callable[[], tuple[str, str]]) -> list[Finding]:
    train, comfy = tags()
    out = []
    for label, tag, when in (("train image", train, "`train`"), ("comfyui image", comfy, "`comfyui`")):
        if engine is None:
            out.append(Finding(label, INFO, f"{tag}: not checked (Docker is not reachable)"))
            continue
        try:
            built = engine.image_exists(tag)
        except OrchestratorError as e:
            out.append(Finding(label, WARN, f"{tag}: {e.message}", e.hint))
            continue
        out.append(Finding(label, OK, f"{tag} built") if built else
                   Finding(label, INFO, f"{tag} not built yet: the first {when} builds it (takes a while)"))
    return out


def _image_tags() -> tuple[str, str]:
    return train_image(), comfy_image()
