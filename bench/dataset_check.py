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
import os
import random
import resource
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


def timed_cli(root: Path, *extra: str, cache: Path | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s of the child: user + sys, exit code) of one fresh `dataset check` process; `cache`
    is its XDG_CACHE_HOME (an empty folder = a first check, nothing remembered)."""
    env = {**os.environ, **({"XDG_CACHE_HOME": str(cache)} if cache else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--project-dir", str(root), "dataset", "check", *extra],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), r.returncode


def timed_lib(root: Path, verify: bool) -> tuple[float, object]:
    """Seconds of one in-process `check_dataset()` with an empty hash cache (a first check)."""
    from orchestrator.dataset import check_dataset
    from orchestrator.layout import Layout

    old = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        try:
            t = time.perf_counter()
            report = check_dataset(Layout.at(root), verify=verify)
            return time.perf_counter() - t, report
        finally:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = old


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


def median_cli(root: Path, runs: int, *extra: str, cold: bool) -> tuple[float, float, int]:
    """Median wall and CPU seconds of `runs` CLI checks; cold: each with an empty hash cache."""
    walls, cpus, code = [], [], 0
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as caches:
        warm = Path(caches) / "warm"
        timed_cli(root, *extra, cache=warm)           # fills the warm cache
        for n in range(runs):
            wall, cpu, code = timed_cli(root, *extra, cache=Path(caches) / f"cold{n}" if cold else warm)
            walls.append(wall)
            cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus), code


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
        print(f"dataset check of {kind}: medians of {args.runs} fresh CLI processes (Python start-up included);")
        print("cold = first check (no remembered hashes), warm = the same files checked again; CPU = user + sys")
        for label, extra, cold in (("dataset check, cold", (), True), ("dataset check, warm", (), False),
                                   ("--verify", ("--verify",), True)):
            w10, c10, _ = median_cli(small, args.runs, *extra, cold=cold)
            wn, cn, code = median_cli(large, args.runs, *extra, cold=cold)
            goal = "   goal < 2 s" if not extra else ""
            print(f"  {label:20s}    10 images: {w10:6.2f} s wall, {c10:5.2f} s CPU")
            print(f"  {label:20s} {args.images:5d} images: {wn:6.2f} s wall, {cn:5.2f} s CPU (exit {code}){goal}")
            print(f"  {'':20s} per image: {wn / args.images * 1000:6.2f} ms wall, {cn / args.images * 1000:6.2f} ms "
                  f"CPU; over the 10-image run: +{(wn - w10) / (args.images - 10) * 1000:.2f} ms per extra image "
                  f"(x{(wn / args.images) / (w10 / 10):.2f} of its per-image wall time: start-up spread wider)")
        report = None
        for verify in (False, True):
            t10, _ = timed_lib(small, verify)
            tn, result = timed_lib(large, verify)
            report = result if not verify else report   # the headers-only report is the one printed
            print(f"  check_dataset(verify={verify!s:5s}) in-process, cold: 10 images {t10 * 1000:6.1f} ms "
                  f"({t10 / 10 * 1000:.2f} ms/image), {args.images} images {tn:5.2f} s ({tn / args.images * 1000:.2f} "
                  f"ms/image, x{(tn / args.images) / (t10 / 10):.2f} per image vs 10)")
        images = sum(s.images for s in report.subsets)  # type: ignore[attr-defined]
        print(f"  headers-only report: {images} images in {len(report.subsets)} concepts, "  # type: ignore[attr-defined]
              f"{len(report.warnings())} warnings, {len(report.errors())} errors")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
