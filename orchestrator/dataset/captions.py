"""Caption files as the trainer reads them: `<stem><caption_extension>`, first line, UTF-8."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from orchestrator.dataset.report import ERROR, WARNING, Problem
from orchestrator.dataset.scan import FolderScan, ImageInfo


def trigger_word(class_tokens: str | None) -> str | None:
    """The rare token users type to call the concept: the first word of class_tokens."""
    words = (class_tokens or "").split()
    return words[0] if words else None


def check_captions(scan: FolderScan, images: Sequence[ImageInfo], cap_ext: str, class_tokens: str | None,
                   *, check_trigger: bool = True) -> tuple[int, list[Problem]]:
    """(images with a caption the trainer reads, problems); no trigger check for reg images."""
    out: list[Problem] = []
    trigger = trigger_word(class_tokens) if check_trigger else None
    found = 0
    stems = {os.path.splitext(i.path.name)[0] for i in images}
    for i in images:
        cap = i.path.with_name(os.path.splitext(i.path.name)[0] + cap_ext)
        if not cap.is_file():
            if not class_tokens:
                out.append(Problem(WARNING, "no-caption", f"no caption file ({cap.name}) and the subset has no "
                                   "class_tokens: it trains with an empty caption", i.path, None,
                                   f"add {cap.name} or set class_tokens for the subset"))
            continue
        found += 1
        out += _caption_problems(cap, trigger)
    ignored = [p for p in scan.captions if not p.name.endswith(cap_ext)
               and os.path.splitext(p.name)[0] in stems]
    by_ext: dict[str, int] = {}
    for p in ignored:
        ext = os.path.splitext(p.name)[1]
        by_ext[ext] = by_ext.get(ext, 0) + 1
    for ext, n in sorted(by_ext.items()):
        out.append(Problem(WARNING, "captions-ignored", f"{n} {ext} caption file(s) are ignored: the trainer "
                           f'looks for "{cap_ext}" captions', scan.folder, None,
                           f'set caption_extension = "{ext}" in data.toml (or rename the files)'))
    for p in scan.captions:
        if p.name.endswith(cap_ext) and os.path.splitext(p.name)[0] not in stems:
            out.append(Problem(WARNING, "orphan-caption", "caption without an image next to it", p, None,
                               "rename it to match its image, or delete it"))
    return found, out


def _caption_problems(cap: Path, trigger: str | None) -> list[Problem]:
    try:
        raw = cap.read_bytes()
    except OSError as e:
        return [Problem(ERROR, "caption-unreadable", f"cannot read caption: {e.strerror or e}", cap, None,
                        "check the file's permissions")]
    if not raw:
        return [Problem(ERROR, "empty-caption", "empty caption file: the trainer aborts on it", cap, None,
                        "write a caption in it, or delete it to use the subset's class_tokens")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [Problem(ERROR, "caption-encoding", "caption is not UTF-8: the trainer aborts on it", cap, None,
                        "save it as UTF-8")]
    first = text.lstrip("\ufeff").splitlines()[0].strip() if text.strip() else ""
    if not first:
        return [Problem(WARNING, "blank-caption", "the first line (the caption) is blank: trains without a caption",
                        cap, 1, "write the caption on the first line")]
    if trigger and not re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", first, re.IGNORECASE):
        return [Problem(WARNING, "caption-no-trigger", f"caption does not contain the trigger '{trigger}': a "
                        "caption replaces class_tokens, so this image does not teach the trigger", cap, 1,
                        f"put '{trigger}' in the caption")]
    return []
