"""The result of checking a dataset: problems, one summary per subset, batch arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.dataset.buckets import BucketSettings, SubsetImages, batches, bucket_counts

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the dataset, with the file (and line) it concerns and the fix."""

    severity: str  # "error" | "warning"
    code: str
    message: str
    path: Path | None = None
    line: int | None = None
    hint: str | None = None

    def where(self, root: Path | None = None) -> str:
        """`path:line` (relative to `root` when inside it), or '' without a path."""
        if self.path is None:
            return ""
        p = self.path
        if root is not None:
            try:
                p = p.relative_to(root)
            except ValueError:
                pass
        return f"{p}:{self.line}" if self.line else str(p)

    def render(self, root: Path | None = None) -> str:
        """One line: `where: message` (hint on the next line when present)."""
        where = self.where(root)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\n    fix: {self.hint}" if self.hint else text

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "path": str(self.path) if self.path else None, "line": self.line, "hint": self.hint}


@dataclass(frozen=True)
class SubsetSummary:
    """One `[[datasets.subsets]]` as the trainer will see it."""

    image_dir: Path                      # host folder
    toml_value: str                      # image_dir as written in data.toml
    images: int                          # images the trainer will load
    num_repeats: int
    is_reg: bool
    class_tokens: str | None
    captions: int                        # images with a caption file the trainer will read
    min_size: tuple[int, int] | None     # smallest / largest stored size (w, h) by area
    max_size: tuple[int, int] | None
    dataset_index: int = 0
    subset_index: int = 0
    line: int | None = None              # line of the subset's header in data.toml
    exists: bool = True
    caption_extension: str = ".caption"
    formats: tuple[tuple[str, int], ...] = ()         # ("JPEG", 5), ...
    sizes: tuple[tuple[int, int], ...] = ()           # stored size of every loaded image
    buckets: tuple[tuple[tuple[int, int], int], ...] = ()  # bucket -> images (without repeats)
    skipped: str | None = None           # why the trainer would skip this subset

    @property
    def name(self) -> str:
        """The concept name (the folder's name)."""
        return self.image_dir.name

    @property
    def image_steps(self) -> int:
        """Images x repeats: how many samples this subset contributes per epoch."""
        return 0 if self.skipped else self.images * self.num_repeats

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name, "image_dir": str(self.image_dir), "toml_value": self.toml_value,
            "dataset": self.dataset_index, "subset": self.subset_index, "line": self.line,
            "exists": self.exists, "skipped": self.skipped, "images": self.images,
            "num_repeats": self.num_repeats, "image_steps": self.image_steps, "is_reg": self.is_reg,
            "class_tokens": self.class_tokens, "caption_extension": self.caption_extension,
            "captions": self.captions, "formats": dict(self.formats),
            "min_size": list(self.min_size) if self.min_size else None,
            "max_size": list(self.max_size) if self.max_size else None,
            "buckets": {f"{w}x{h}": n for (w, h), n in self.buckets},
        }


@dataclass(frozen=True)
class DatasetSummary:
    """One `[[datasets]]`: the settings that decide buckets and batches, and its subsets."""

    index: int
    settings: BucketSettings | None      # None when no resolution is known
    batch_size: int | None               # set in data.toml (wins over --train_batch_size)
    subsets: tuple[int, ...]             # indices into DatasetReport.subsets


@dataclass(frozen=True)
class DatasetReport:
    """Everything `check_dataset` found."""

    problems: tuple[Problem, ...]
    subsets: tuple[SubsetSummary, ...]
    toml_text: str
    toml_path: Path | None = None
    datasets: tuple[DatasetSummary, ...] = field(default=())
    notes: tuple[str, ...] = ()          # what was not checked, and why

    def errors(self) -> list[Problem]:
        """Problems that stop training."""
        return [p for p in self.problems if p.severity == ERROR]

    def warnings(self) -> list[Problem]:
        """Problems worth knowing that do not stop training."""
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors()

    def batches_per_epoch(self, batch_size: int) -> int:
        """sd-scripts' batches per epoch; `batch_size` is --train_batch_size (data.toml's wins)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        total = 0
        for ds in self.datasets:
            bs = ds.batch_size or batch_size
            subs = [self.subsets[i] for i in ds.subsets if not self.subsets[i].skipped]
            if ds.settings is None:
                total += sum(-(-s.images * s.num_repeats // bs) for s in subs if not s.is_reg)
                continue
            counts = bucket_counts(ds.settings, (SubsetImages(s.sizes, s.num_repeats, s.is_reg) for s in subs))
            total += batches(counts, bs)
        return total

    def image_steps_per_epoch(self) -> int:
        """Training images x repeats over all subsets (reg images excluded)."""
        return sum(s.image_steps for s in self.subsets if not s.is_reg)

    def to_json(self, batch_size: int = 1) -> dict[str, Any]:
        """A JSON-ready dict (what `dataset check --json` prints)."""
        return {
            "ok": self.ok,
            "toml": str(self.toml_path) if self.toml_path else None,
            "errors": len(self.errors()), "warnings": len(self.warnings()),
            "subsets": [s.to_json() for s in self.subsets],
            "image_steps_per_epoch": self.image_steps_per_epoch(),
            "batch_size": batch_size,
            "batches_per_epoch": self.batches_per_epoch(batch_size),
            "problems": [p.to_json() for p in self.problems],
            "notes": list(self.notes),
        }
