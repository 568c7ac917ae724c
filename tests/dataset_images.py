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
