"""`dataset add`: copy (or hard-link) a folder of photos into a new concept folder and register it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.dataset import rules as R
from orchestrator.dataset.edit import SyncResult, sync_dataset
from orchestrator.dataset.scan import read_header, scan_folder
from orchestrator.dataset.toml import read_toml
from orchestrator.errors import DatasetError, UsageError
from orchestrator.files import file_lock, fsync_dir
from orchestrator.layout import Layout

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class AddResult:
    """What `add_concept` did: files brought in, renamed, left behind (with why), the sync."""

    folder: Path
    images: tuple[Path, ...]
    captions: tuple[Path, ...]
    renamed: tuple[tuple[str, str], ...]        # (source name, new name): mixed-case extensions
    skipped: tuple[tuple[Path, str], ...]       # (source file, reason)
    sync: SyncResult
    linked: bool


def add_concept(layout: Layout, name: str, source: Path, *, trigger: str | None = None,
                link: bool = False) -> AddResult:
    """Bring the images (and matching captions) of `source` into flux_data/NAME; register the subset."""
    if not NAME.match(name):
        raise UsageError(f"concept name {name!r} must be letters, digits, '_', '-' or '.', starting with a "
                         "letter or digit", hint="e.g. `dataset add tjtoy --from ~/photos/toy`")
    bad_trigger = R.range_problem(R.KEYS["class_tokens"], trigger) if trigger is not None else None
    if bad_trigger or (trigger is not None and not trigger.strip()):
        raise UsageError(f"--trigger {trigger!r} {bad_trigger or 'is empty'}",
                         hint='give the trigger word and class on one line, e.g. --trigger "tjtoy toy"')
    source = source.expanduser()
    if not source.is_dir():
        raise UsageError(f"--from {source} is not a folder", hint="give the folder that holds the photos")
    dest = layout.flux_data / name
    _check_target(layout, dest)
    scan = scan_folder(source, ".txt")
    plan: list[tuple[Path, str]] = []
    skipped: list[tuple[Path, str]] = []
    renamed: list[tuple[str, str]] = []
    for p in (*scan.images, *scan.mixed_case):
        info = read_header(p)
        if info.error:
            skipped.append((p, info.error))
            continue
        target = p.name
        if p in scan.mixed_case:
            stem, ext = os.path.splitext(p.name)
            target = stem + ext.lower()
            renamed.append((p.name, target))
        plan.append((p, target))
    if not plan:
        raise DatasetError(f"no images the trainer can read in {source}",
                           hint="it reads .png .jpg .jpeg .webp .bmp files directly in the folder",
                           details=[f"{p.name}: {why}" for p, why in skipped][:20])
    stems = {os.path.splitext(t)[0] for _, t in plan}
    captions = [p for p in scan.captions if os.path.splitext(p.name)[0] in stems]
    skipped += [(p, "the trainer does not read this format: convert it to PNG or JPEG") for p in scan.unsupported]
    skipped += [(p, "a caption without a matching image") for p in scan.captions if p not in captions]
    skipped += [(p, "sub-folder: the trainer does not look into sub-folders; add it as its own concept")
                for p in scan.subfolders]
    skipped += [(p, "not an image or caption") for p in scan.other]
    # the folder check, the copy and the data.toml update hold data.toml's lock: a parallel `dataset add` or
    # `sync` can neither take the same folder nor write back a data.toml without this concept
    with file_lock(layout.data_toml, what=f"dataset add {name}"):
        _check_target(layout, dest)
        _copy_all([*plan, *((c, c.name) for c in captions)], dest, layout.flux_data, link)
        sync = sync_dataset(layout, triggers={name: trigger} if trigger else None)
    return AddResult(dest, tuple(dest / t for _, t in plan), tuple(dest / c.name for c in captions),
                     tuple(renamed), tuple(skipped), sync, link)


def _check_target(layout: Layout, dest: Path) -> None:
    """Refuse before copying anything: data.toml that cannot be updated, a taken concept folder."""
    if layout.data_toml.exists():
        tf = read_toml(layout.data_toml)
        if tf.error:
            raise DatasetError(f"{layout.data_toml}:{tf.error[1]}: TOML syntax error: {tf.error[0]}",
                               hint="fix data.toml first (`dataset check` shows the problem)")
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest} already exists and is a file, not a concept folder",
                           hint="pick another name, or move that file away")
    if dest.exists() and any(dest.iterdir()):
        raise DatasetError(f"{dest} already exists and is not empty",
                           hint="pick another name, or copy files into it yourself and run `dataset sync`")


def _copy_all(files: list[tuple[Path, str]], dest: Path, parent: Path, link: bool) -> None:
    """Fill a hidden temp folder, then rename it into place: no half-filled concept on Ctrl+C."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".add-{dest.name}-", dir=parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a concept folder is an ordinary folder
    try:
        for src, name in files:
            target = tmp / name
            if link:
                try:
                    os.link(src, target)
                except OSError as e:
                    raise DatasetError(f"cannot hard-link {src} into {parent}: {e.strerror or e}",
                                       hint="hard links need the same filesystem; drop --link to copy") from None
            else:
                shutil.copy2(src, target)
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.rename(tmp, dest)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
