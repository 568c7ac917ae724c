"""`check_dataset`: data.toml and every concept folder checked as the trainer will read them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.dataset import rules as R
from orchestrator.dataset.buckets import BucketPlanner
from orchestrator.dataset.captions import check_captions
from orchestrator.dataset.hashcache import HashCache
from orchestrator.dataset.images import check_duplicates, check_images, folder_problems
from orchestrator.dataset.paths import concept_folders, resolve_image_dir
from orchestrator.dataset.report import ERROR, WARNING, DatasetReport, DatasetSummary, Problem, SubsetSummary
from orchestrator.dataset.scan import FolderScan, ImageInfo, parallel_map, read_header, scan_folder, verify_image
from orchestrator.dataset.toml import TomlFile, read_toml
from orchestrator.dataset.validate import Model, Resolver, bucket_settings, check_toml
from orchestrator.errors import DatasetError
from orchestrator.layout import Layout
from orchestrator.progress import Event, NullSink, Sink


def check_dataset(layout: Layout, *, toml_path: Path | None = None,
                  trainer_flags: Mapping[str, Any] | None = None, verify: bool = False,
                  reporter: Sink | None = None) -> DatasetReport:
    """Check data.toml and the folders it names; `trainer_flags` enables the cross rules."""
    path = toml_path or layout.data_toml
    if not path.exists():
        return DatasetReport((Problem(ERROR, "no-toml", "data.toml does not exist", path, None,
                                      "run `python -m orchestrator dataset init`"),), (), "", path)
    try:
        tf = read_toml(path)
    except DatasetError as e:
        return DatasetReport((Problem(ERROR, "toml-unreadable", e.message, path, None, e.hint),), (), "", path)
    if tf.error:
        msg, line = tf.error
        return DatasetReport((Problem(ERROR, "toml-syntax", f"TOML syntax error: {msg}", path, line,
                                      "fix the line (strings need quotes, one key per line)"),), (), tf.text, path)
    problems, model = check_toml(tf, trainer_flags)
    return _check_folders(layout, tf, model, trainer_flags, verify, problems, reporter or NullSink())


def _check_folders(layout: Layout, tf: TomlFile, model: Model, flags: Mapping[str, Any] | None,
                   verify: bool, problems: list[Problem], reporter: Sink) -> DatasetReport:
    res = Resolver(model, flags)
    plans: list[tuple[int, int, dict[str, Any], Path, FolderScan | None]] = []
    for d, subs in enumerate(model.subsets):
        for s, sub in enumerate(subs):
            value = sub.get("image_dir")
            if value is None or "metadata_file" in sub:
                continue
            folder = resolve_image_dir(layout, value)
            line = tf.index.line_of(("subset", d, s), "image_dir")
            scan = _scan(folder, value, res.get("caption_extension", d, s)[0], tf.path, line, problems)
            plans.append((d, s, sub, folder, scan))

    # one pass over every image of every folder, threaded when it pays
    paths = [p for *_, scan in plans if scan for p in scan.images]
    reader = (lambda p: verify_image(read_header(p))) if verify else read_header
    verb = "decoding" if verify else "reading"

    def done(n: int) -> None:
        reporter.emit(Event("dataset", "check", f"{verb} images {n}/{len(paths)}", step=n, total=len(paths),
                            unit="image", live=True))

    infos: dict[Path, ImageInfo] = dict(zip(paths, parallel_map(reader, paths, on_done=done)))

    subsets: list[SubsetSummary] = []
    datasets: list[DatasetSummary] = []
    by_dataset: dict[int, list[int]] = {}
    loaded: dict[Path, ImageInfo] = {}
    for d, s, sub, folder, scan in plans:
        by_dataset.setdefault(d, []).append(len(subsets))
        subsets.append(_summarize_subset(res, tf, d, s, sub, folder, scan, infos, problems, loaded))
    for d in range(len(model.datasets)):
        bs, scope = res.get("batch_size", d)
        datasets.append(DatasetSummary(d, bucket_settings(res, d), bs if scope is not None else None,
                                       tuple(by_dataset.get(d, ()))))
    if tf.path == layout.data_toml:
        problems += _unlisted_folders(layout, [folder for *_, folder, _scan in plans])
    reporter.emit(Event("dataset", "check", "looking for duplicates", live=True))
    dup_problems, notes = check_duplicates(list(loaded.values()), verify=verify, cache=HashCache())
    problems += dup_problems
    if subsets and not any(s.image_steps for s in subsets if not s.is_reg):
        problems.append(Problem(ERROR, "nothing-to-train", "no subset has images the trainer can load: "
                                "sd-scripts would log 'No data found' and exit without training", tf.path, None,
                                "put photos in flux_data/<concept>/ and run `python -m orchestrator dataset check`"))
    return DatasetReport(tuple(_sorted(problems)), tuple(subsets), tf.text, tf.path, tuple(datasets), tuple(notes))


def _summarize_subset(res: Resolver, tf: TomlFile, d: int, s: int, sub: dict[str, Any], folder: Path,
                      scan: FolderScan | None, infos: dict[Path, ImageInfo], problems: list[Problem],
                      loaded: dict[Path, ImageInfo]) -> SubsetSummary:
    """One subset's images, captions and buckets checked (problems appended; loadable images into `loaded`)."""
    settings = bucket_settings(res, d)
    planner = BucketPlanner(settings) if settings else None
    images = [infos[p] for p in scan.images] if scan else []
    alpha_ok = bool(res.get("alpha_mask", d, s)[0])
    problems += check_images(images, planner, settings, alpha_ok)
    good = [i for i in images if i.ok and i.size]
    for i in good:
        loaded[i.path] = i
    cap_ext = _caption_ext(res.get("caption_extension", d, s)[0])
    tokens = res.get("class_tokens", d, s)[0]
    line = tf.index.line_of(("subset", d, s))
    is_reg = bool(res.get("is_reg", d, s)[0])
    captions = 0
    if scan is not None:
        captions, cap_problems = check_captions(scan, good, cap_ext, tokens, check_trigger=not is_reg)
        problems += cap_problems
        problems += folder_problems(scan)
        problems += _count_problems(folder, len(good), len(images), f"{tf.path.name}:{line}")
    reps = res.get("num_repeats", d, s)[0]
    skipped = None
    if scan is None:
        skipped = "folder missing"
    elif not good:
        skipped = "no images"
    elif reps < 1:
        skipped = "num_repeats < 1"
    formats = Counter(i.format or "?" for i in good)
    sizes = tuple(i.size for i in good)  # type: ignore[misc]
    by_area = sorted(sizes, key=lambda wh: (wh[0] * wh[1], wh))
    buckets = Counter(planner.place(*wh).bucket for wh in sizes) if planner else Counter()
    return SubsetSummary(
        image_dir=folder, toml_value=sub["image_dir"], images=len(good), num_repeats=reps,
        is_reg=is_reg, class_tokens=tokens, captions=captions,
        min_size=by_area[0] if by_area else None, max_size=by_area[-1] if by_area else None,
        dataset_index=d, subset_index=s, line=line, exists=scan is not None, caption_extension=cap_ext,
        formats=tuple(sorted(formats.items())), sizes=sizes, buckets=tuple(sorted(buckets.items())),
        skipped=skipped)


def _unlisted_folders(layout: Layout, listed_folders: list[Path]) -> list[Problem]:
    """Concept folders in flux_data/ that data.toml does not list."""
    listed = {os.path.normpath(folder) for folder in listed_folders}
    return [Problem(WARNING, "unlisted-folder", "this concept folder is not in data.toml: the trainer will not use "
                    "it", folder, None, "run `python -m orchestrator dataset sync` to add it")
            for folder in concept_folders(layout) if os.path.normpath(folder) not in listed]


def _scan(folder: Path, value: str, cap_ext: Any, toml: Path, line: int | None,
          problems: list[Problem]) -> FolderScan | None:
    if value.startswith("~"):
        problems.append(Problem(ERROR, "image-dir-tilde", f'image_dir "{value}": the trainer does not expand ~',
                                toml, line, 'write it relative to the project, e.g. "flux_data/<concept>"'))
        return None
    if not folder.exists() and folder.is_symlink():
        problems.append(Problem(ERROR, "image-dir-missing", f'image_dir "{value}" is a symbolic link that leads '
                                f"nowhere (a loop, or its target is gone): {folder} -> {_link_target(folder)}",
                                toml, line, "point the link (or image_dir) at the concept's real folder"))
        return None
    if not folder.exists():
        problems.append(Problem(ERROR, "image-dir-missing", f'image_dir "{value}" does not exist ({folder}): '
                                "sd-scripts silently skips it", toml, line,
                                "create the folder, fix the path, or run `python -m orchestrator dataset sync --prune`"))
        return None
    if not folder.is_dir():
        problems.append(Problem(ERROR, "image-dir-not-folder", f'image_dir "{value}" is a file, not a folder',
                                toml, line, "point image_dir at the concept's folder"))
        return None
    try:
        return scan_folder(folder, _caption_ext(cap_ext))
    except OSError as e:
        problems.append(Problem(ERROR, "image-dir-unreadable", f"cannot list {folder}: {e.strerror or e}",
                                toml, line, "check the folder's permissions"))
        return None


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _caption_ext(value: Any) -> str:
    ext = str(value or ".caption")
    return ext if ext.startswith(".") else "." + ext


def _count_problems(folder: Path, good: int, total: int, where: str) -> list[Problem]:
    if good == 0:
        what = "no images the trainer can load" if total else "no images (.png .jpg .jpeg .webp .bmp)"
        return [Problem(ERROR, "no-images", f"{what}: sd-scripts skips this subset ({where})", folder, None,
                        "put 5-20 photos of the concept in the folder")]
    if good < R.MIN_IMAGES:
        return [Problem(WARNING, "few-images", f"only {good} image(s): a concept learns best from 5-20 photos",
                        folder, None, "add a few more varied photos")]
    return []


def _sorted(problems: list[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    unique = [p for p in problems if not (p in seen or seen.add(p))]
    return sorted(unique, key=lambda p: (p.severity != ERROR, str(p.path or ""), p.line or 0))

