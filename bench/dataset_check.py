"""Benchmark: `dataset check` over 1,000 generated images of mixed formats and sizes.

    python bench/dataset_check.py [--images 1000] [--keep DIR]

Prints the time of `dataset check` (headers only; goal < 2 s on 2 cores) and of `--verify`
(full decode), both as the CLI runs them (a fresh `python -m orchestrator` process) and as the
library call `check_dataset()`. Image generation is not timed.
"""

from __future__ import annotations

import argparse
import random
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this folder instead of a temp dir")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        root = args.keep or Path(tmp)
        if not (root / "flux_data").exists():
            t = time.perf_counter()
            generate(root, args.images)
            print(f"generated {args.images} images in {time.perf_counter() - t:.1f} s (not part of the figures)")
            from orchestrator.dataset.edit import sync_dataset
            from orchestrator.layout import Layout

            sync_dataset(Layout.at(root))
        timed_cli(root)  # warm the page cache and Python's bytecode cache
        lib, report = timed_lib(root, verify=False)
        cli, code = timed_cli(root)
        vlib, vreport = timed_lib(root, verify=True)
        vcli, vcode = timed_cli(root, "--verify")
        images = sum(s.images for s in report.subsets)  # type: ignore[attr-defined]
        print(f"images checked: {images} in {len(report.subsets)} concepts; "  # type: ignore[attr-defined]
              f"{len(report.warnings())} warnings, {len(report.errors())} errors")  # type: ignore[attr-defined]
        print(f"dataset check           : {cli:6.2f} s CLI (exit {code}), {lib:6.2f} s check_dataset()   goal < 2 s")
        print(f"dataset check --verify  : {vcli:6.2f} s CLI (exit {vcode}), {vlib:6.2f} s check_dataset()")


if __name__ == "__main__":
    main()
