"""Files of a run: LoRA hard links into models/loras (never overwriting), hashes, saved states,
the dataset fingerprint, and the resume compatibility check."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError
from orchestrator.files import atomic_copy, follow_umask, fsync_dir

if TYPE_CHECKING:  # annotations only: the planner's modules stay off `--help`
    from orchestrator.train.plan import TrainPlan

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".caption", ".txt")

# Settings that must not change between a run and its resume: sd-scripts restores optimizer/scheduler
# state and the step counter, so the network shape, the batch arithmetic and the data must match (§1.6).
RESUME_KEYS = frozenset({
    "network_module", "network_dim", "network_alpha", "network_args", "network_train_unet_only",
    "network_train_text_encoder_only", "train_batch_size", "batch_size", "gradient_accumulation_steps",
    "optimizer_type", "optimizer_args", "lr_scheduler", "max_train_epochs", "max_train_steps", "epochs",
    "resolution", "enable_bucket", "num_repeats", "image_dir", "dataset", "dataset_config", "dataset_toml",
    "dataset_fingerprint", "gpus", "num_processes", "output_name", "pretrained_model_name_or_path",
    "save_precision", "full_bf16",
})


@dataclass(frozen=True)
class LinkResult:
    """Where a LoRA landed in models/loras (None when a different file already has its name)."""

    source: Path
    target: Path | None
    note: str | None = None


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path, *, cached_only: bool = False) -> str | None:
    """Hex SHA-256 of a file, memoised on path, size and mtime (LoRAs are hashed once, in the background
    while training goes on); with cached_only, None unless it was computed before."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    _cache = _HASHES
    if key not in _cache:
        if cached_only:
            return None
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def link_lora(source: Path, lora_dir: Path, *, allow_copy: bool = True) -> LinkResult | None:
    """Hard-link `source` into `lora_dir` (copy when linking is impossible and allowed); never overwrite
    another file. None when a copy is needed but not allowed yet (the file may still be being written)."""
    lora_dir.mkdir(parents=True, exist_ok=True)
    target = lora_dir / source.name
    if target.exists():
        return _existing(source, target)
    follow_umask(source)  # the link shares its mode: ComfyUI (maybe another user) must read it
    try:
        os.link(source, target)
        fsync_dir(lora_dir)
        return LinkResult(source, target)
    except FileExistsError:
        return _existing(source, target)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        if not allow_copy:
            return None
    if not atomic_copy(source, target, overwrite=False):  # appeared while copying: never overwritten
        return _existing(source, target)
    return LinkResult(source, target, "copied (hard link not possible across file systems)")


def _existing(source: Path, target: Path) -> LinkResult:
    if os.path.samefile(source, target):
        return LinkResult(source, target)
    if target.stat().st_size == source.stat().st_size and sha256_file(target) == sha256_file(source):
        return LinkResult(source, target, "an identical file was already there")
    return LinkResult(source, None, f"{target} already exists and is a different file: left it alone; "
                                    f"this run's LoRA stays at {source}")


def lora_files(output_dir: Path) -> list[Path]:
    """LoRA files written by the trainer at the top of output_dir (state dirs excluded)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_file() and p.suffix in LORA_SUFFIXES)


def sample_files(output_dir: Path) -> list[Path]:
    """Sample images of a run (output_dir/sample/*.png|jpg|webp)."""
    d = output_dir / "sample"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def state_dirs(output_dir: Path) -> list[Path]:
    """Saved accelerate state dirs (`*-state` with train_state.json), oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and p.name.endswith("-state")
             and (p / "train_state.json").is_file()]
    return sorted(found, key=lambda p: (_state_step(p), p.stat().st_mtime_ns))


def _state_step(state: Path) -> int:
    try:
        return int(json.loads((state / "train_state.json").read_text()).get("current_step", -1))
    except (OSError, ValueError, AttributeError):
        return -1


def state_step(state: Path) -> int | None:
    """The optimizer step a state dir was saved at (None when unreadable)."""
    step = _state_step(state)
    return None if step < 0 else step


def latest_state(run_dir: Path) -> Path | None:
    """Newest saved state dir of a run (host path), for --resume; None when the run saved none."""
    states = state_dirs(Path(run_dir) / "output")
    return states[-1] if states else None


def recorded_exit_code(run_dir: Path, *, timeout: float = 10.0, poll: float = 0.2) -> int:
    """The exit code the owning `train` wrote into a run's manifest once it ended (-1 when unknown)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            manifest = json.loads((run_dir / "manifest.json").read_text())
            if manifest.get("status") not in ("starting", "running"):
                code = manifest.get("exit_code")
                return int(code) if code is not None else -1
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return -1
        time.sleep(poll)


def dir_size(path: Path) -> int:
    """Total bytes of the files under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def host_path(plan: TrainPlan, trainer_path: str) -> Path:
    """Map a path as the trainer sees it to the host: relative ones are under the workdir, then through
    the plan's mounts (longest target first); a path no mount covers is already a host path."""
    p = PurePosixPath(trainer_path if trainer_path.startswith("/") else f"{plan.workdir}/{trainer_path}")
    best = None
    for m in plan.mounts:
        target = PurePosixPath(m.target)
        if (p == target or target in p.parents) and (best is None or len(m.target) > len(best.target)):
            best = m
    if best is not None:
        return Path(best.source) / p.relative_to(best.target)
    return Path(str(p))


def dataset_fingerprint(plan: TrainPlan) -> dict[str, Any]:
    """SHA-256 over the names and contents of the dataset's images and captions (caches excluded)."""
    from orchestrator.dataset.toml import parse_toml  # tomlkit: tomllib is not in Python 3.10

    parsed = parse_toml(Path("data.toml"), plan.dataset_toml)
    if parsed.error is not None:
        return {"sha256": None, "images": 0, "error": "data.toml does not parse"}
    data = parsed.data
    lines: list[str] = []
    images = 0
    for ds in data.get("datasets", []):
        for sub in ds.get("subsets", []):
            value = sub.get("image_dir")
            if not isinstance(value, str):
                continue
            folder = host_path(plan, value)
            lines.append(f"dir {value} repeats={sub.get('num_repeats', 1)} reg={sub.get('is_reg', False)}")
            if not folder.is_dir():
                lines.append("missing")
                continue
            for f in sorted(folder.iterdir()):
                suffix = f.suffix.lower()
                if f.is_file() and (suffix in IMAGE_SUFFIXES or suffix in CAPTION_SUFFIXES):
                    images += suffix in IMAGE_SUFFIXES
                    lines.append(f"{f.name} {sha256_file(f)}")
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"sha256": digest, "images": images}


def check_resumable(old_config: Mapping[str, Any], new_config: Mapping[str, Any], *,
                    keys: Iterable[str] = RESUME_KEYS) -> None:
    """Refuse (ConfigError) when the new plan changed a setting that breaks resuming the old run."""
    wanted = set(keys)
    old, new = _flatten(old_config), _flatten(new_config)
    changed = []
    for name in sorted(set(old) | set(new)):
        leaf = name.rsplit(".", 1)[-1]
        top = name.split(".", 1)[0]
        if (leaf in wanted or top in wanted) and old.get(name) != new.get(name):
            changed.append(f"{name}: {_show(old.get(name))} -> {_show(new.get(name))}")
    if changed:
        raise ConfigError(
            "cannot resume: the plan changed in a way the saved state cannot follow",
            hint="resume with the old settings (drop the changed --set/--preset), or start a new run without --resume",
            details=changed,
        )


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, default=str)
