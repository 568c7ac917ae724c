"""`dataset init` / `dataset sync`: data.toml kept in step with the concept folders.

`plan_sync` is pure (text and folder facts in, new text out); `sync_dataset` does the I/O. Edits
are line splices, so every byte outside the changed lines survives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.dataset.paths import concept_folders, image_dir_value, resolve_image_dir
from orchestrator.dataset.scan import is_picked_up
from orchestrator.dataset.template import TEMPLATE
from orchestrator.dataset.toml import LineIndex, TomlFile, parse_toml, render_table, replace_value, write_toml
from orchestrator.errors import DatasetError
from orchestrator.files import file_lock
from orchestrator.layout import Layout

DEFAULT_INDENT = "  "


@dataclass(frozen=True)
class Folder:
    """A concept folder as sync sees it."""

    path: Path
    images: int


@dataclass(frozen=True)
class SyncResult:
    """What a sync changed (or would change)."""

    text: str
    added: tuple[str, ...] = ()                       # image_dir values of new subsets
    missing: tuple[tuple[str, int | None], ...] = ()  # (image_dir, line) of subsets whose folder is gone
    removed: tuple[str, ...] = ()                     # image_dir values removed (--prune)
    repeats: tuple[tuple[str, int, int], ...] = ()    # (image_dir, old, new) from --balance
    created: bool = False                             # data.toml did not exist
    changed: bool = False


@dataclass
class _Edits:
    ops: list[tuple[int, int, list[str]]] = field(default_factory=list)  # replace lines[a-1:b] (1-based)

    def apply(self, lines: list[str]) -> str:
        """Apply bottom-up so line numbers stay valid; ties apply in list order (stable sort)."""
        out = list(lines)
        for a, b, new in sorted(self.ops, key=lambda op: (op[0], op[1]), reverse=True):
            out[a - 1:b] = new
        return "".join(out)


def count_images(folder: Path) -> int:
    """Files in `folder` the trainer would pick up (by name; no decoding)."""
    try:
        return sum(1 for n in os.listdir(folder) if not n.startswith(".") and is_picked_up(n))
    except OSError:
        return 0


def plan_sync(layout: Layout, text: str, folders: list[Folder], *, prune: bool = False, balance: bool = False,
              triggers: Mapping[str, str] | None = None, path: Path | None = None) -> SyncResult:
    """The new data.toml text for these folders; DatasetError when `text` is not valid TOML."""
    path = path or layout.data_toml
    tf, subsets = _editable(path, text)
    idx, lines, edits = tf.index, list(tf.index.lines), _Edits()
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    known: dict[str, tuple[int, int, dict[str, Any]]] = {}
    missing, removed = [], []
    for d, s, sub in subsets:
        value = sub.get("image_dir")
        if not isinstance(value, str):
            continue
        folder = resolve_image_dir(layout, value)
        known[os.path.normpath(folder)] = (d, s, sub)
        if not folder.is_dir():
            missing.append((value, idx.line_of(("subset", d, s), "image_dir")))
            if prune:
                edits.ops.append(_removal(idx, d, s))
                removed.append(value)
    counts = {os.path.normpath(f.path): f.images for f in folders}
    for key in known:
        if key not in counts:
            counts[key] = count_images(Path(key))
    new = [f for f in folders if os.path.normpath(f.path) not in known]
    target = 0
    if balance:
        pool = [counts[k] for k, (_d, _s, sub) in known.items() if not sub.get("is_reg")] + [f.images for f in new]
        target = max([n for n in pool if n > 0], default=0)
    added = []
    new_blocks: list[str] = []
    indent = _subset_indent(idx, lines, 0)
    for f in new:
        value = image_dir_value(layout, f.path)
        tokens = (triggers or {}).get(f.path.name) or f.path.name
        reps = max(1, round(target / f.images)) if target and f.images else 1
        new_blocks.append("\n" + render_table("[[datasets.subsets]]",
                                              {"image_dir": value, "class_tokens": tokens, "num_repeats": reps}, indent))
        added.append(value)
    repeats: list[tuple[str, int, int]] = []
    if target:
        repeats = _balance(idx, lines, edits, known, counts, target)
    if new_blocks:
        at = _insertion_line(idx, lines, 0)
        # first in the list: at the same spot, an added num_repeats line must end up above the new blocks
        edits.ops.insert(0, (at + 1, at, new_blocks))
    new_text = edits.apply(lines) if edits.ops else text
    return SyncResult(new_text, tuple(added), tuple(missing), tuple(removed), tuple(repeats),
                      changed=new_text != text)


def _editable(path: Path, text: str) -> tuple[TomlFile, list[tuple[int, int, dict[str, Any]]]]:
    """The parsed file and its (dataset, subset, table) list; DatasetError when sync cannot edit it safely."""
    tf = parse_toml(path, text)
    if tf.error:
        msg, line = tf.error
        raise DatasetError(f"{path}:{line}: TOML syntax error: {msg}", hint="fix the file, then run the sync again")
    datasets = tf.data.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise DatasetError(f"{path} has no [[datasets]] table to add subsets to",
                           hint="add a [[datasets]] table with resolution = 1024 (see `dataset init` on a new project)")
    for d, ds in enumerate(datasets):
        n = len(ds.get("subsets", [])) if isinstance(ds, dict) and isinstance(ds.get("subsets"), list) else 0
        if n != len(tf.index.subset_headers(d)):
            raise DatasetError(f"{path}: the subsets of dataset {d + 1} are not written as [[datasets.subsets]] "
                               "tables (inline arrays or dotted keys), so sync cannot edit them safely",
                               hint="write each subset as a [[datasets.subsets]] table, or edit the file by hand")
    subsets = [(d, s, sub) for d, ds in enumerate(datasets)
               for s, sub in enumerate(ds.get("subsets", []) if isinstance(ds, dict) else [])
               if isinstance(sub, dict)]
    return tf, subsets


def sync_dataset(layout: Layout, *, prune: bool = False, balance: bool = False,
                 triggers: Mapping[str, str] | None = None, dry_run: bool = False) -> SyncResult:
    """Read (or create from the template) data.toml, sync it with flux_data/, write it atomically."""
    path = layout.data_toml
    with file_lock(path) if not dry_run else contextlib.nullcontext():  # no lost update from a parallel add/sync
        created = not path.exists()
        if created:
            text = TEMPLATE
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"{path} is not UTF-8 text", hint="save it as UTF-8") from None
        folders = [Folder(p, count_images(p)) for p in concept_folders(layout)]
        result = plan_sync(layout, text, folders, prune=prune, balance=balance, triggers=triggers, path=path)
        if (result.changed or created) and not dry_run:
            write_toml(path, result.text)
    return SyncResult(result.text, result.added, result.missing, result.removed, result.repeats,
                      created=created, changed=result.changed or created)


def _balance(idx: LineIndex, lines: list[str], edits: _Edits, known, counts: dict[str, int],
             target: int) -> list[tuple[str, int, int]]:
    """num_repeats = round(largest concept / this concept) for every training subset with images."""
    changes = []
    for key, (d, s, sub) in sorted(known.items(), key=lambda kv: kv[1][:2]):
        n = counts.get(key, 0)
        if sub.get("is_reg") or n <= 0:
            continue
        want = max(1, round(target / n))
        old = sub.get("num_repeats", 1)
        if old == want:
            continue
        changes.append((sub["image_dir"], old if isinstance(old, int) else 0, want))
        scope = ("subset", d, s)
        line = idx.keys.get((scope, "num_repeats"))
        if line is not None:
            edits.ops.append((line, line, [replace_value(lines[line - 1], "num_repeats", want)]))
        else:
            header = idx.line_of(scope) or 1
            last = idx.content_end(header, idx.block_end(header))
            ind = _indent_of(lines[idx.keys[(scope, "image_dir")] - 1]) if (scope, "image_dir") in idx.keys \
                else DEFAULT_INDENT
            edits.ops.append((last + 1, last, [f"{ind}num_repeats = {want}\n"]))
    return changes


def _removal(idx: LineIndex, d: int, s: int) -> tuple[int, int, list[str]]:
    header = idx.line_of(("subset", d, s)) or 1
    end = idx.content_end(header, idx.block_end(header))
    start = header
    while start > 1 and idx.lines[start - 2].strip().startswith("#"):
        start -= 1  # comments directly above the header describe this subset
    before_blank = start > 1 and not idx.lines[start - 2].strip()
    after_blank = end < len(idx.lines) and not idx.lines[end].strip()
    if before_blank and (after_blank or end == len(idx.lines)):
        start -= 1  # do not leave two blank lines behind
    return (start, end, [])


def _subset_indent(idx: LineIndex, lines: list[str], d: int) -> str:
    heads = idx.subset_headers(d)
    return _indent_of(lines[heads[-1].line - 1]) if heads else DEFAULT_INDENT


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _insertion_line(idx: LineIndex, lines: list[str], d: int) -> int:
    """The line (1-based) after which new subsets of dataset `d` go.

    After the last subset's last value (comments that follow it stay below the new subsets);
    in a dataset without subsets, at the end of its table, after its comments (the template's
    commented example stays above).
    """
    heads = idx.subset_headers(d)
    if heads:
        last = heads[-1].line
        return idx.content_end(last, idx.block_end(last))
    head = idx.line_of(("dataset", d)) or 1
    end = idx.block_end(head)
    if end < len(lines):  # a comment block glued to the next header belongs to it
        while end > head and lines[end - 1].strip().startswith("#"):
            end -= 1
    while end > head and not lines[end - 1].strip():
        end -= 1
    return end
