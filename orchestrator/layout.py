"""Where things live in a project folder (the repo itself, or any folder given by --project-dir)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.files import atomic_write_bytes, atomic_write_text  # noqa: F401  (one mechanism: files.py)


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
