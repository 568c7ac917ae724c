"""Where things live in a project folder (the repo itself, or any folder given by --project-dir)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Paths of one project. Nothing here touches the disk except `ensure_dirs`."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None = None) -> "Layout":
        """The layout rooted at `root` (default: the current directory), made absolute."""
        return cls(Path(root if root is not None else os.getcwd()).expanduser().resolve())

    # models/ as ComfyUI and sd-scripts expect them
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.models / "checkpoints"

    @property
    def text_encoders(self) -> Path:
        return self.models / "text_encoders"

    @property
    def vae(self) -> Path:
        return self.models / "vae"

    @property
    def loras(self) -> Path:
        return self.models / "loras"

    @property
    def tokenizers(self) -> Path:
        """sd-scripts' --tokenizer_cache_dir: CLIP-L and T5 tokenizers, so training needs no internet."""
        return self.models / "tokenizers"

    # datasets, workflows, results
    @property
    def flux_data(self) -> Path:
        return self.root / "flux_data"

    @property
    def data_toml(self) -> Path:
        return self.flux_data / "data.toml"

    @property
    def workflows(self) -> Path:
        return self.root / "workflows"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def comfy_outputs(self) -> Path:
        """ComfyUI's own output folder; `generate`/`batch` copy results into outputs/<date>/ etc."""
        return self.outputs / "comfyui"

    @property
    def inputs(self) -> Path:
        """ComfyUI's input/ folder (uploaded images)."""
        return self.root / "input"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def model_dirs(self) -> dict[str, Path]:
        """The four model folders by their ComfyUI name."""
        return {
            "checkpoints": self.checkpoints,
            "text_encoders": self.text_encoders,
            "vae": self.vae,
            "loras": self.loras,
        }

    def ensure_dirs(self, *paths: Path) -> None:
        """Create the given folders (and parents) if missing."""
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and os.replace: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a failed write (disk full)
            raise OSError(e.errno, e.strerror, str(path)) from e                   # names the file it was for
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
