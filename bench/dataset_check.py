"""Benchmark: `dataset check` over 1,000 generated images.

    python bench/dataset_check.py [--images 1000] [--runs 3] [--keep DIR] [--mixed]

Default: 1,000 photo-like 1024x1024 JPEGs (quality 90, about 150-250 KB each, 10 concepts, a third with
captions), the case of the issue (goal < 2 s on 2 cores). Prints, for 10 images and for N, the median
wall time of the CLI (a fresh `python -m orchestrator` process: start-up included), the time per image,
and the per-image ratio N / 10, so cost growth is visible; then the same for `--verify` (full decode)
and the library call `check_dataset()`. `--mixed`: images of mixed formats and sizes instead.
Image generation is not timed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = [("JPEG", ".jpg", {"quality": 90}), ("PNG", ".png", {"compress_level": 1}),
           ("WEBP", ".webp", {"quality": 80}), ("BMP", ".bmp", {}), ("JPEG", ".JPG", {"quality": 85})]
SIZES = [(512, 512), (768, 1024), (1024, 768), (1024, 1024), (1536, 1024), (640, 480), (1200, 1600), (2048, 1365)]


def generate(root: Path, n: int, concepts: int = 10) -> None:
    """`n` textured images spread over `concepts` folders, plus captions for a third of them."""
    from PIL import Image, ImageDraw

    rng = random.Random(1)
    for i in range(n):
        folder = root / "flux_data" / f"concept{i % concepts:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = SIZES[i % len(SIZES)]
        fmt, ext, kw = FORMATS[i % len(FORMATS)]
        im = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.randrange(w), rng.randrange(h)
            d.rectangle([x, y, x + rng.randrange(w // 2) + 1, y + rng.randrange(h // 2) + 1],
                        fill=tuple(rng.randrange(256) for _ in range(3)))
        im.save(folder / f"img{i:04d}{ext}", fmt, **kw)
        if i % 3 == 0:
            (folder / f"img{i:04d}.txt").write_text(f"concept{i % concepts:02d} thing, photo {i}\n")


def generate_jpegs(root: Path, n: int, concepts: int = 10) -> None:
    """`n` photo-like 1024x1024 JPEGs: a smooth gradient, shapes and sensor noise (so they compress like
    photos, not like flat colour), plus captions for a third of them."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(2)
    noise = Image.effect_noise((1024, 1024), 24).convert("RGB")
    for i in range(n):
        folder = root / "flux_data" / f"concept{i % concepts:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b = (tuple(rng.randrange(256) for _ in range(3)) for _ in range(2))
        im = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
        im = Image.composite(Image.new("RGB", im.size, a), Image.new("RGB", im.size, b), im.convert("L"))
        d = ImageDraw.Draw(im)
        for _ in range(8):
            x, y = rng.randrange(1024), rng.randrange(1024)
            d.ellipse([x, y, x + rng.randrange(300) + 20, y + rng.randrange(300) + 20],
                      fill=tuple(rng.randrange(256) for _ in range(3)))
        im = Image.blend(im.filter(ImageFilter.GaussianBlur(2)), noise, 0.12)
        im.save(folder / f"img{i:04d}.jpg", "JPEG", quality=90)
        if i % 3 == 0:
            (folder / f"img{i:04d}.txt").write_text(f"concept{i % concepts:02d} thing, photo {i}\n")


def timed_cli(root: Path, *extra: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--project-dir", str(root), "dataset", "check", *extra],
                       cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t, r.returncode


def timed_lib(root: Path, verify: bool) -> tuple[float, object]:
    from orchestrator.dataset import check_dataset
    from orchestrator.layout import Layout

    t = time.perf_counter()
    report = check_dataset(Layout.at(root), verify=verify)
    return time.perf_counter() - t, report


def project(root: Path, n: int, mixed: bool) -> Path:
    """A project with `n` images (generated once; reused when --keep names an existing folder)."""
    if not (root / "flux_data").exists():
        t = time.perf_counter()
        (generate if mixed else generate_jpegs)(root, n)
        print(f"generated {n} images in {time.perf_counter() - t:.1f} s (not part of the figures)")
        from orchestrator.dataset.edit import sync_dataset
        from orchestrator.layout import Layout

        sync_dataset(Layout.at(root))
    return root


def median_cli(root: Path, runs: int, *extra: str) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(runs):
        t, code = timed_cli(root, *extra)
        times.append(t)
    return statistics.median(times), code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is printed")
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this folder instead of a temp dir")
    ap.add_argument("--mixed", action="store_true", help="mixed formats and sizes instead of 1024 px JPEGs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        base = args.keep or Path(tmp)
        small = project(base / "small", 10, args.mixed)
        large = project(base / "large", args.images, args.mixed)
        kind = "mixed images" if args.mixed else "1024x1024 JPEGs"
        print(f"dataset check of {kind}: median of {args.runs} runs, CLI wall time (Python start-up included)")
        for label, extra in (("dataset check", ()), ("dataset check --verify", ("--verify",))):
            timed_cli(small, *extra)  # warm the page cache and Python's bytecode cache
            timed_cli(large, *extra)
            t10, _ = median_cli(small, args.runs, *extra)
            tn, code = median_cli(large, args.runs, *extra)
            goal = "   goal < 2 s" if not extra else ""
            print(f"  {label:24s}    10 images: {t10:6.2f} s ({t10 / 10 * 1000:6.2f} ms/image)")
            print(f"  {label:24s} {args.images:5d} images: {tn:6.2f} s ({tn / args.images * 1000:6.2f} ms/image, "
                  f"x{(tn / args.images) / (t10 / 10):.2f} per image vs 10; exit {code}){goal}")
        lib, report = timed_lib(large, verify=False)
        vlib, _ = timed_lib(large, verify=True)
        images = sum(s.images for s in report.subsets)  # type: ignore[attr-defined]
        print(f"  check_dataset() in-process: {lib:6.2f} s, --verify {vlib:6.2f} s; {images} images in "
              f"{len(report.subsets)} concepts, {len(report.warnings())} warnings, "  # type: ignore[attr-defined]
              f"{len(report.errors())} errors")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
