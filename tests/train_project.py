"""A project like the seed's for training-plan tests: two concepts (6 images x1, 7 images x2),
data.toml, model files of the right names (sparse), cached tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.layout import Layout
from orchestrator.models import model_set

SEED_TOML = """\
[general]
shuffle_caption = false
caption_extension = '.txt'
keep_tokens = 1

[[datasets]]
resolution = 1024
batch_size = 1
keep_tokens = 1

  [[datasets.subsets]]
  image_dir = '{tjtoy}'
  class_tokens = 'tjtoy toy'
  num_repeats = 1

  [[datasets.subsets]]
  image_dir = '{spark}'
  class_tokens = 'sparkgpu gpu'
  num_repeats = 2
"""


def make_images(folder: Path, n: int, size: tuple[int, int] = (1024, 1024), shade: int = 0) -> None:
    """`n` small-on-disk PNGs of `size`, distinct from each other (a flat colour with a different bar)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new("RGB", size, (30 * i % 256, shade, 255 - shade))
        ImageDraw.Draw(img).rectangle((0, 0, size[0] * (i + 1) // (n + 1), size[1] // 3), fill=(255, 255 - shade, 0))
        img.save(folder / f"img{i:02d}.png")


def make_models(layout: Layout, variant: str = "fp16", *, size: int = 1 << 20) -> None:
    """Model files of the right names as sparse files (a plan only looks at names and sizes)."""
    for m in model_set(variant):
        p = m.path(layout)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.truncate(size)
    for d in ("openai_clip-vit-large-patch14", "google_t5-v1_1-xxl"):
        (layout.tokenizers / d).mkdir(parents=True, exist_ok=True)
        (layout.tokenizers / d / "tokenizer_config.json").write_text("{}")


def make_seed_project(layout: Layout, *, image_dirs: tuple[str, str] = ("flux_data/tjtoy", "flux_data/sparkgpu"),
                      size: tuple[int, int] = (1024, 1024), models: bool = True) -> None:
    """The seed's dataset: tjtoy (6 images x1) and sparkgpu (7 images x2) = 20 images x repeats."""
    make_images(layout.flux_data / "tjtoy", 6, size, shade=20)
    make_images(layout.flux_data / "sparkgpu", 7, size, shade=200)
    layout.data_toml.write_text(SEED_TOML.format(tjtoy=image_dirs[0], spark=image_dirs[1]))
    layout.loras.mkdir(parents=True, exist_ok=True)
    if models:
        make_models(layout)
    os.makedirs(layout.runs, exist_ok=True)
