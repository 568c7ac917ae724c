"""Per-image problems (damage, rotation, colour, size, aspect) and duplicates across folders."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

from orchestrator.dataset import rules as R
from orchestrator.dataset.buckets import BucketPlanner, BucketSettings
from orchestrator.dataset.hashcache import HashCache
from orchestrator.dataset.report import ERROR, WARNING, Problem
from orchestrator.dataset.scan import FolderScan, ImageInfo, file_digest, near_pairs, parallel_map, with_dhash

ROTATIONS = {2: "mirrored", 3: "upside down", 4: "upside down and mirrored", 5: "rotated and mirrored",
             6: "rotated 90° (portrait shown as landscape)", 7: "rotated and mirrored",
             8: "rotated 90° (portrait shown as landscape)"}
# Without --verify, non-JPEGs are decoded in full for their hash: stop after this many pixels
# (about a fifth of a second on one idle core): 10 photos of 2 megapixels fit.
DHASH_PIXEL_BUDGET = 20_000_000


def folder_problems(scan: FolderScan) -> list[Problem]:
    """Files in a concept folder the trainer will not use (caches it wrote itself are fine)."""
    out: list[Problem] = []
    for p in scan.mixed_case:
        stem, ext = os.path.splitext(p.name)
        out.append(Problem(WARNING, "mixed-case-extension", f"the trainer skips it: extension {ext} is neither "
                           "all lower- nor all upper-case", p, None, f"rename it to {stem}{ext.lower()}"))
    for p in scan.unsupported:
        out.append(Problem(WARNING, "unsupported-format", f"the trainer does not read {p.suffix.lower()} files",
                           p, None, "convert it to PNG or JPEG (the trainer reads .png .jpg .jpeg .webp .bmp)"))
    for p in scan.subfolders:
        out.append(Problem(WARNING, "subfolder-ignored", "files in this sub-folder are ignored: the trainer does "
                           "not look into sub-folders", p, None,
                           "move the photos up into the concept folder, or make the sub-folder a concept of its own"))
    for p in scan.other:
        out.append(Problem(WARNING, "stray-file", "not an image or caption: the trainer ignores it", p, None,
                           "move it out of the concept folder"))
    return out


def check_images(images: Sequence[ImageInfo], planner: BucketPlanner | None,
                 settings: BucketSettings | None, alpha_ok: bool) -> list[Problem]:
    """Problems of each image file the trainer picks up."""
    out: list[Problem] = []
    for i in images:
        if i.error:
            hint = ("delete it or replace it with a real image" if i.error_code == "not-an-image"
                    else "re-export or re-copy the file")
            if "HEIC" in i.error:
                hint = "convert it to JPEG (e.g. `heif-convert IMG.HEIC IMG.jpg`) and delete this file"
            out.append(Problem(ERROR, i.error_code or "bad-image", i.error, i.path, None, hint))
            continue
        if i.suspect:
            out.append(Problem(WARNING, "maybe-truncated", i.suspect, i.path, None,
                               "run `python -m orchestrator dataset check --verify` to decode every image"))
        if i.orientation != 1:
            out.append(Problem(WARNING, "exif-rotated", f"EXIF orientation {i.orientation}: the trainer ignores it "
                               f"and learns the photo {ROTATIONS.get(i.orientation, 'rotated')}", i.path, None,
                               "run `python -m orchestrator dataset check --fix-orientation` (keeps the original "
                               "in flux_data/.originals/)"))
        if i.mode == "CMYK":
            out.append(Problem(WARNING, "cmyk", "CMYK image: the trainer converts it to RGB without colour "
                               "management, so colours shift", i.path, None, "export it as an RGB JPEG or PNG"))
        if i.bits > 8:
            msg = (f"{i.bits}-bit grayscale: Pillow clips it when the trainer converts to RGB (mostly white)"
                   if i.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
                   else f"{i.bits}-bit per channel: the trainer reduces it to 8 bits")
            out.append(Problem(WARNING, "high-bit-depth", msg, i.path, None, "save it as an 8-bit PNG or JPEG"))
        if i.has_alpha and not alpha_ok:
            out.append(Problem(WARNING, "alpha", "has an alpha channel: the trainer drops it, transparent areas "
                               "become whatever colour is stored under them (often black)", i.path, None,
                               "flatten it onto a background, or set alpha_mask = true for masked training"))
        if planner is not None and settings is not None and i.size:
            out += _size_problems(i, planner, settings)
    return out


def _size_problems(i: ImageInfo, planner: BucketPlanner, settings: BucketSettings) -> list[Problem]:
    w, h = i.size  # type: ignore[misc]
    place = planner.place(w, h)
    bw, bh = place.bucket
    res = f"{settings.resolution[0]}x{settings.resolution[1]}"
    if bw <= 0 or bh <= 0:
        return [Problem(ERROR, "too-small", f"{w}x{h} is too small: its bucket would be {bw}x{bh} px", i.path,
                        None, f"use images of at least {settings.bucket_reso_steps} px per side (ideally {res})")]
    out = []
    if place.scale > R.UPSCALE_TOLERANCE:
        out.append(Problem(WARNING, "upscaled", f"{w}x{h} is smaller than its {bw}x{bh} bucket at resolution "
                           f"{res}: the trainer upscales it x{place.scale:.2f} (soft details)", i.path, None,
                           "use a larger original, or set bucket_no_upscale = true to train it at its own size"))
    elif settings.enable_bucket and settings.bucket_no_upscale and \
            bw * bh * 4 < settings.resolution[0] * settings.resolution[1]:
        out.append(Problem(WARNING, "small", f"{w}x{h} trains at only {bw}x{bh} (bucket_no_upscale) while the "
                           f"resolution is {res}", i.path, None, "use a larger original"))
    if place.cropped > R.CROP_TOLERANCE:
        out.append(Problem(WARNING, "extreme-aspect", f"aspect ratio {w / h:.2f} ({w}x{h}): the trainer crops away "
                           f"{place.cropped:.0%} of it to fit the {bw}x{bh} bucket", i.path, None,
                           "crop it yourself to the part that matters"
                           + ("" if settings.enable_bucket else ", or set enable_bucket = true")))
    return out


def check_duplicates(images: Sequence[ImageInfo], *, verify: bool, pixel_budget: int | None = None,
                     cache: HashCache | None = None) -> tuple[list[Problem], list[str]]:
    """Exact duplicates (same bytes) and near duplicates (64-bit dHash within a few bits); notes."""
    out: list[Problem] = []
    notes: list[str] = []
    digests = _digests(images)
    exact: set[tuple[str, str]] = set()
    first: dict[str, ImageInfo] = {}
    for i in sorted((i for i in images if i.path in digests), key=lambda x: str(x.path)):
        dg = digests[i.path]
        if dg in first:
            out.append(Problem(WARNING, "duplicate", f"exact duplicate of {_short(first[dg])}", i.path, None,
                               "delete one copy (duplicates weigh that photo double)"))
            exact.add((str(first[dg].path), str(i.path)))
        else:
            first[dg] = i
    hashable, skipped = _hash_plan(images, verify, DHASH_PIXEL_BUDGET if pixel_budget is None else pixel_budget)
    if skipped:
        notes.append(f"near-duplicate check skipped for {skipped} large non-JPEG image(s) (slow to decode); "
                     "`dataset check --verify` includes them")
    if cache is not None:
        known, todo = cache.lookup([i for i in hashable if i.dhash is None and not i.error])
        fresh = parallel_map(with_dhash, todo, min_items=8)
        cache.store(fresh)
        cache.save()
        done = {i.path for i in known} | {i.path for i in fresh}
        hashed = [*known, *fresh, *(i for i in hashable if i.path not in done)]
    else:
        hashed = parallel_map(with_dhash, hashable, min_items=8)
    # a flat image hashes to 0 or all ones: no information, skip it
    ids = sorted((i for i in hashed if i.dhash not in (None, 0, (1 << 64) - 1)), key=lambda i: str(i.path))
    pairs = near_pairs(((n, i.dhash) for n, i in enumerate(ids)), R.NEAR_DUPLICATE_DISTANCE)  # type: ignore[misc]
    reported: set[int] = set()
    for a, b in pairs:  # report each image once, against the first image it resembles
        x, y = ids[a], ids[b]
        if b in reported or (str(x.path), str(y.path)) in exact:
            continue
        if x.path in digests and digests.get(x.path) == digests.get(y.path):
            continue
        reported.add(b)
        out.append(Problem(WARNING, "near-duplicate", f"looks almost the same as {_short(x)}", y.path, None,
                           "keep the better one; near-copies add weight, not variety"))
    return out, notes


def _digests(images: Sequence[ImageInfo]) -> dict:
    """Full digests of files that share their size and their first and last 64 KiB with another."""
    by_size: dict[int, list[ImageInfo]] = defaultdict(list)
    for i in images:
        by_size[i.file_size].append(i)
    same_size = [i for group in by_size.values() if len(group) > 1 for i in group]
    quick = dict(zip([i.path for i in same_size],
                     parallel_map(lambda i: file_digest(i.path, quick=True), same_size)))
    by_quick: dict[tuple[int, str], list[ImageInfo]] = defaultdict(list)
    for i in same_size:
        by_quick[(i.file_size, quick[i.path])].append(i)
    candidates = [i for group in by_quick.values() if len(group) > 1 for i in group]
    return dict(zip([i.path for i in candidates], parallel_map(lambda i: file_digest(i.path), candidates)))


def _hash_plan(images: Sequence[ImageInfo], verify: bool, budget: int) -> tuple[list[ImageInfo], int]:
    """Which images to dHash: all with --verify; else JPEGs (a cheap 1/8 draft) and other formats
    while their pixels stay within a decode budget."""
    if verify:
        return list(images), 0
    plan = [i for i in images if i.dhash is not None or i.format in ("JPEG", "MPO")]
    others = sorted((i for i in images if i.dhash is None and i.format not in ("JPEG", "MPO") and i.size),
                    key=lambda i: i.size[0] * i.size[1])  # type: ignore[index]
    skipped = 0
    for i in others:
        px = i.size[0] * i.size[1]  # type: ignore[index]
        if px <= budget:
            plan.append(i)
            budget -= px
        else:
            skipped += 1
    return plan, skipped


def _short(i: ImageInfo) -> str:
    return f"{i.path.parent.name}/{i.path.name}"
