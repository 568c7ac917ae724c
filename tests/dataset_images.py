"""Real image files for dataset tests, made with Pillow (textured, so hashes are meaningful)."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw


def photo(size: tuple[int, int] = (256, 256), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A textured picture: random rectangles and ellipses on a random background."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = min(w, x0 + rng.randrange(w // 8 + 1, w // 2 + 2)), min(h, y0 + rng.randrange(h // 8 + 1, h // 2 + 2))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    return im.convert(mode) if mode != "RGB" else im


def save(path: Path, im: Image.Image, **kwargs) -> Path:
    """Save `im` at `path` (format from the extension unless `format=` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kwargs)
    return path


def concept(folder: Path, n: int, *, size: tuple[int, int] = (256, 256), ext: str = ".png", seed: int = 0) -> list[Path]:
    """`n` distinct valid images in `folder`."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}[ext.lower()]
    return [save(folder / f"img{i:02d}{ext}", photo(size, seed * 1000 + i), format=fmt) for i in range(n)]


def exif_rotated(path: Path, orientation: int = 6, size: tuple[int, int] = (320, 240), seed: int = 7) -> Path:
    """A JPEG whose EXIF says it must be rotated for display."""
    im = photo(size, seed)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(path, im, format="JPEG", exif=exif.tobytes())


def truncated(path: Path, fmt: str = "PNG", size: tuple[int, int] = (256, 256), keep: float = 0.5) -> Path:
    """A valid image file cut after `keep` of its bytes."""
    save(path, photo(size, 99), format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


TOML_ONE = """[general]
caption_extension = ".txt"

[[datasets]]
resolution = 256
enable_bucket = true
min_bucket_reso = 128
max_bucket_reso = 512
{dataset_extra}
  [[datasets.subsets]]
  image_dir = "flux_data/{name}"
  class_tokens = "{tokens}"
  num_repeats = 1
{subset_extra}"""


def write_toml(layout, name: str = "toy", *, tokens: str = "tjtoy toy", dataset_extra: str = "",
               subset_extra: str = "", text: str | None = None) -> Path:
    """A data.toml with one subset for flux_data/<name> (resolution 256 keeps test images small)."""
    layout.data_toml.parent.mkdir(parents=True, exist_ok=True)
    layout.data_toml.write_text(text if text is not None else TOML_ONE.format(
        name=name, tokens=tokens, dataset_extra=dataset_extra, subset_extra=subset_extra))
    return layout.data_toml


def codes(report, path: Path | None = None) -> set[str]:
    """Problem codes in a report (only those about `path` when given)."""
    return {p.code for p in report.problems if path is None or p.path == path}
