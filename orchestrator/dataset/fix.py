"""`dataset check --fix-orientation`: upright copies of EXIF-rotated photos, originals kept."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from orchestrator.files import atomic_write_bytes, file_lock
from orchestrator.layout import Layout

ORIGINALS = ".originals"


@dataclass(frozen=True)
class Fixed:
    """One photo turned upright; the untouched original is at `original`."""

    path: Path
    original: Path


def originals_dir(layout: Layout) -> Path:
    """Where originals go: flux_data/.originals/<concept>/ (a dot-folder: never a concept)."""
    return layout.flux_data / ORIGINALS


def fix_orientation(layout: Layout, paths: Iterable[Path]) -> list[Fixed]:
    """Rotate each image's pixels as its EXIF orientation says, drop the tag, keep the original."""
    done: list[Fixed] = []
    for path in paths:
        with Image.open(path) as im:
            fmt = im.format
            icc = im.info.get("icc_profile")
            upright = ImageOps.exif_transpose(im)
        kwargs: dict = {"format": fmt}
        if icc:
            kwargs["icc_profile"] = icc
        if upright.info.get("exif"):
            kwargs["exif"] = upright.info["exif"]
        if fmt in ("JPEG", "MPO"):
            kwargs.update(format="JPEG", quality=95, subsampling=0)  # re-encoding loses little at 95
        elif fmt == "WEBP":
            kwargs.update(lossless=True)
        buf = io.BytesIO()
        upright.save(buf, **kwargs)
        with file_lock(originals_dir(layout)):  # two fixes at once must not pick the same backup name
            backup = _backup_path(originals_dir(layout) / path.parent.name / path.name)
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, backup)
        atomic_write_bytes(path, buf.getvalue())
        done.append(Fixed(path, backup))
    return done


def _backup_path(p: Path) -> Path:
    n = 1
    candidate = p
    while candidate.exists():
        candidate = p.with_name(f"{p.stem}.{n}{p.suffix}")
        n += 1
    return candidate
