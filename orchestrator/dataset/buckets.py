"""sd-scripts' aspect-ratio buckets and batch arithmetic, re-implemented from its rules.

Follows `make_bucket_resolutions` and `BucketManager.select_bucket` (library/model_util.py,
library/train_util.py): without `bucket_no_upscale` the bucket set is fixed (area <= resolution^2,
sides between min and max_bucket_reso in steps) and each image goes to the bucket with the closest
aspect ratio, scaled to cover it and centre-cropped; with `bucket_no_upscale` small images keep
their size (rounded down to the step) and large ones shrink to the resolution's area. The trainer
reads the stored pixel size, ignoring EXIF orientation, and so do we.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketSettings:
    """The dataset-level settings that decide buckets."""

    resolution: tuple[int, int]
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False

    def adjusted(self) -> "BucketSettings":
        """min/max rounded to the step the way sd-scripts does (min down, max up)."""
        step = max(1, self.bucket_reso_steps)
        lo = self.min_bucket_reso - self.min_bucket_reso % step
        hi = self.max_bucket_reso
        if hi % step:
            hi = hi + step - hi % step
        return BucketSettings(self.resolution, self.enable_bucket, lo, hi, step, self.bucket_no_upscale)


@dataclass(frozen=True)
class Placement:
    """Where one image lands: its bucket, the size it is resized to, the share cropped away."""

    bucket: tuple[int, int]
    resized: tuple[int, int]
    scale: float
    cropped: float


def bucket_resolutions(resolution: tuple[int, int], min_size: int, max_size: int, step: int) -> list[tuple[int, int]]:
    """The predefined buckets: area at most resolution's area, sides within [min_size, max_size]."""
    max_area = resolution[0] * resolution[1]
    resos = {(int(math.sqrt(max_area) // step) * step,) * 2}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


class BucketPlanner:
    """Places images into buckets as one sd-scripts dataset would."""

    def __init__(self, settings: BucketSettings) -> None:
        self.s = settings.adjusted() if settings.enable_bucket else settings
        if not self.s.enable_bucket:
            self.resos = [self.s.resolution]
        elif not self.s.bucket_no_upscale:
            self.resos = bucket_resolutions(self.s.resolution, self.s.min_bucket_reso,
                                            self.s.max_bucket_reso, self.s.bucket_reso_steps)
        else:
            self.resos = []
        self._ratios = [w / h for w, h in self.resos]

    def place(self, width: int, height: int) -> Placement:
        """The bucket, resized size, scale and cropped share for an image of this stored size."""
        aspect = width / height
        if not self.s.enable_bucket or not self.s.bucket_no_upscale:
            if (width, height) in self.resos:
                reso = (width, height)
            else:
                errors = [abs(r - aspect) for r in self._ratios]
                reso = self.resos[errors.index(min(errors))]
            if aspect > reso[0] / reso[1]:
                scale = reso[1] / height
            else:
                scale = reso[0] / width
            resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        else:
            resized = self._no_upscale_size(width, height, aspect)
            step = self.s.bucket_reso_steps
            reso = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
            scale = resized[0] / width
        kept = (reso[0] * reso[1]) / max(1, resized[0] * resized[1])
        return Placement(reso, resized, scale, max(0.0, 1.0 - kept))

    def _no_upscale_size(self, width: int, height: int, aspect: float) -> tuple[int, int]:
        max_area = self.s.resolution[0] * self.s.resolution[1]
        if width * height <= max_area:
            return (width, height)
        rw = math.sqrt(max_area * aspect)
        rh = max_area / rw
        bw = self._round(rw)
        bh_in_w = self._round(bw / aspect)
        bh = self._round(rh)
        bw_in_h = self._round(bh * aspect)
        err_w = abs(bw / bh_in_w - aspect) if bh_in_w else math.inf
        err_h = abs(bw_in_h / bh - aspect) if bh else math.inf
        if err_w < err_h:
            return (bw, int(bw / aspect + 0.5))
        return (int(bh * aspect + 0.5), bh)

    def _round(self, x: float) -> int:
        v = int(x + 0.5)
        return v - v % self.s.bucket_reso_steps


@dataclass(frozen=True)
class SubsetImages:
    """What batch arithmetic needs of one subset: stored image sizes, repeats, reg or not."""

    sizes: tuple[tuple[int, int], ...]
    num_repeats: int
    is_reg: bool = False


def bucket_counts(settings: BucketSettings, subsets: Iterable[SubsetImages]) -> Counter[tuple[int, int]]:
    """Entries per bucket for one epoch of one dataset (images x repeats; reg images padded)."""
    planner = BucketPlanner(settings)
    counts: Counter[tuple[int, int]] = Counter()
    subsets = [s for s in subsets if s.num_repeats >= 1 and s.sizes]
    train = [s for s in subsets if not s.is_reg]
    num_train = sum(len(s.sizes) * s.num_repeats for s in train)
    for s in train:
        for w, h in s.sizes:
            counts[planner.place(w, h).bucket] += s.num_repeats
    reg = [(size, s.num_repeats) for s in subsets if s.is_reg for size in s.sizes]
    if reg and num_train:
        # sd-scripts registers reg images until their repeats match the train count
        repeats = [0] * len(reg)
        n, first = 0, True
        while n < num_train:
            for i, (_size, rep) in enumerate(reg):
                if first:
                    repeats[i] = rep
                    n += rep
                else:
                    repeats[i] += 1
                    n += 1
                if n >= num_train:
                    break
            first = False
        for (size, _rep), r in zip(reg, repeats):
            if r:
                counts[planner.place(*size).bucket] += r
    return counts


def batches(counts: Counter[tuple[int, int]], batch_size: int) -> int:
    """Batches per epoch: every bucket is split into batches on its own."""
    return sum(math.ceil(n / batch_size) for n in counts.values())
