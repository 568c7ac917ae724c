"""`download` use case: bring the model files and tokenizers into models/, resumably and verified.

Flow: ask the Hub about every file first (so a gated model, a bad token or a missing file fails
before a byte is written), skip files whose size already matches, check free disk per file
system, then stream each missing file into `<target>.<etag>.incomplete` (resumed with an HTTP
Range when a previous run left one), check its SHA-256 (LFS files) or git SHA-1 (small files)
against the Hub while streaming, and only then move it to its final name. A file at the final
path is therefore always complete. Each completed file is recorded in the models/ manifest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import models
from orchestrator.errors import DownloadError, LockTimeout, UsageError
from orchestrator.files import atomic_write_text, file_lock, fsync_dir
from orchestrator.hub import EntryMissing, Hub, HubUnreachable, RemoteFile, TransferInterrupted
from orchestrator.layout import Layout, atomic_write_text
from orchestrator.progress import Event, Sink, format_bytes
from orchestrator.transfer import HashingSink, Meter, verify_file

DiskUsage = Callable[[Path], Any]   # shutil.disk_usage-like: returns an object with .free


@dataclass(frozen=True)
class Item:
    """One file to fetch: a model weight, or one file of a tokenizer."""

    group: str              # what the user types and the tables show: "flux1-dev", "clip_l-tokenizer"
    repo: str
    filename: str           # path in the Hub repo
    target: Path            # final local path
    approx_size: int        # catalogue size, used when the Hub cannot be asked
    gated: bool = False
    required: bool = True   # optional tokenizer files are skipped when the repo lacks them


@dataclass(frozen=True)
class FileResult:
    """What happened to one item."""

    item: Item
    status: str             # downloaded | resumed | complete | verified | replaced | absent upstream | ...
    size: int | None
    sha256: str | None = None


def known_names(variant: str = "fp16") -> list[str]:
    """Names accepted by `--only`."""
    return [m.name for m in models.ALL_MODELS] + ["t5xxl"] + [t.name for t in models.TOKENIZERS] + ["tokenizers"]


def plan_items(layout: Layout, only: Sequence[str] | None = None, variant: str = "fp16") -> list[Item]:
    """The files to fetch: the variant's four models plus the tokenizers, or just the `only` names."""
    model_set = models.model_set(variant)
    if not only:
        chosen_models, chosen_tokenizers = list(model_set), list(models.TOKENIZERS)
    else:
        chosen_models, chosen_tokenizers = [], []
        for name in only:
            if name == "tokenizers":
                chosen_tokenizers.extend(models.TOKENIZERS)
            elif name == "t5xxl":
                chosen_models.append(model_set[3])
            elif any(t.name == name for t in models.TOKENIZERS):
                chosen_tokenizers.extend(t for t in models.TOKENIZERS if t.name == name)
            else:
                try:
                    chosen_models.append(models.by_name(name))
                except KeyError:
                    raise UsageError(f"unknown name {name!r} for --only",
                                     hint="choose from: " + ", ".join(known_names(variant))) from None
    items = [Item(m.name, m.repo, m.filename, m.path(layout), m.approx_size, m.gated)
             for m in dict.fromkeys(chosen_models)]
    for tok in dict.fromkeys(chosen_tokenizers):
        folder = tok.folder(layout)
        items += [Item(tok.name, tok.repo, f, folder / f, size) for f, size in tok.files]
        items += [Item(tok.name, tok.repo, f, folder / f, size, required=False) for f, size in tok.optional]
    return items


def partial_path(target: Path, etag: str) -> Path:
    """Where the bytes of an unfinished download of `target` (at this upstream version) are kept."""
    return target.with_name(f"{target.name}.{etag[:16]}.incomplete")


@dataclass(frozen=True)
class Inspection:
    """One item compared with the Hub (for --dry-run and the download plan)."""

    item: Item
    remote: RemoteFile | None
    local_size: int | None
    partial_size: int
    problem: str | None = None      # why the Hub could not tell us about it

    @property
    def size(self) -> int | None:
        return self.remote.size if self.remote else self.item.approx_size

    @property
    def complete(self) -> bool:
        return self.local_size is not None and self.local_size > 0 and self.local_size == self.size

    @property
    def missing_bytes(self) -> int:
        if self.complete or (self.remote is None and self.problem == "absent upstream"):
            return 0
        return max(0, (self.size or 0) - self.partial_size)


def inspect_items(items: Sequence[Item], hub: Hub, reporter: Sink, *, tolerant: bool) -> list[Inspection]:
    """Ask the Hub about every item. `tolerant` (dry run): record problems instead of raising."""
    out: list[Inspection] = []
    unreachable: str | None = None
    for item in items:
        remote, problem = None, None
        if unreachable is None:
            reporter.emit(Event("download", "inspect", f"asking the Hub about {item.repo}/{item.filename}",
                                live=True))
            try:
                remote = hub.file_info(item.repo, item.filename, gated=item.gated)
            except EntryMissing as e:
                if item.required and not tolerant:
                    raise
                problem = "absent upstream" if not item.required else e.message
            except HubUnreachable as e:
                if not tolerant:
                    raise
                unreachable = problem = e.message
            except DownloadError as e:
                if not tolerant:
                    raise
                problem = e.message + (f" ({e.hint})" if e.hint else "")
        else:
            problem = unreachable
        if problem == "absent upstream" and not item.required:
            out.append(Inspection(item, None, None, 0, problem))
            continue
        out.append(Inspection(item, remote, _size(item.target),
                              _size(partial_path(item.target, remote.etag)) or 0 if remote else 0, problem))
    return out


def download(layout: Layout, items: Sequence[Item], hub: Hub, reporter: Sink, *, verify: bool = False,
             disk_usage: DiskUsage = shutil.disk_usage) -> list[FileResult]:
    """Fetch what is missing, resume what was interrupted, skip (or with `verify`, hash) what is complete."""
    layout.ensure_dirs(layout.models)
    with _project_lock(layout):
        manifest = models.read_manifest(layout)
        try:
            plan = inspect_items(items, hub, reporter, tolerant=False)
        except HubUnreachable:
            if items and all(_recorded_complete(layout, i, manifest) for i in items):
                reporter.emit(Event("download", "start", step=0, total=0, unit="byte"))
                reporter.emit(Event("download", "end", files=tuple(str(i.target) for i in items)))
                return [FileResult(i, "complete (Hub not reachable, not re-checked)", _size(i.target))
                        for i in items]
            raise
        results: list[FileResult] = []
        todo: list[Inspection] = []
        for ins in plan:
            if ins.remote is None:
                results.append(FileResult(ins.item, "absent upstream", None))
            elif ins.complete:
                if verify:
                    digest_ok, sha = verify_file(ins.item.target, ins.remote, reporter)
                    if digest_ok is False:
                        reporter.emit(Event("download", "warning", f"{ins.item.target.name}: checksum does not "
                                            "match the Hub's: the file is corrupt and will be downloaded again",
                                            files=(str(ins.item.target),)))
                        todo.append(Inspection(ins.item, ins.remote, ins.local_size, 0))
                        continue
                    _record(layout, ins.item, ins.remote, sha, verified=digest_ok)
                    results.append(FileResult(ins.item, "verified" if digest_ok else "complete (no checksum upstream)",
                                              ins.local_size, sha))
                else:
                    if _manifest_entry(layout, ins.item, manifest).get("etag") != ins.remote.etag:
                        _record(layout, ins.item, ins.remote, None, verified=False)
                    results.append(FileResult(ins.item, "complete", ins.local_size,
                                              _manifest_entry(layout, ins.item, manifest).get("sha256")))
            else:
                todo.append(ins)
        check_disk_space(todo, disk_usage)
        total = len(todo)
        # no message: the CLI prints its own table; scripts get the counts and the files
        reporter.emit(Event("download", "start", step=0, total=sum(i.missing_bytes for i in todo), unit="byte",
                            files=tuple(str(i.item.target) for i in todo)))
        for n, ins in enumerate(todo, 1):
            results.append(_fetch_one(layout, ins, hub, reporter, f"[{n}/{total}]"))
        order = {id(i): k for k, i in enumerate(items)}
        results = sorted(results, key=lambda r: order.get(id(r.item), 0))
        reporter.emit(Event("download", "end", files=tuple(str(r.item.target) for r in results
                                                             if r.item.target.is_file())))
        return results


def check_disk_space(todo: Sequence[Inspection], disk_usage: DiskUsage = shutil.disk_usage) -> None:
    """Refuse to start when a file system lacks room for the bytes still to fetch onto it."""
    need: dict[Path, int] = {}
    for ins in todo:
        folder = _existing_parent(ins.item.target.parent)
        key = next((k for k in need if _same_fs(k, folder)), folder)
        need[key] = need.get(key, 0) + max(0, (ins.size or 0) - ins.partial_size)
    short = []
    for folder, n in need.items():
        free = disk_usage(folder).free
        if free < n:
            short.append((folder, n, free))
    if short:
        folder, n, free = short[0]
        raise DownloadError(
            f"not enough disk space in {folder}: the download needs {format_bytes(n)} more, "
            f"{format_bytes(free)} is free",
            hint=f"free {format_bytes(n - free)} (or move models/ to a bigger disk and symlink it), then run again; "
                 "`--variant fp8` needs about 5 GB less",
            details=[f"{f}: needs {format_bytes(x)}, free {format_bytes(y)}" for f, x, y in short])


# -- one file ------------------------------------------------------------------------------------
TRANSFER_TRIES = 3  # attempts per file when the connection drops mid-transfer


def _fetch_one(layout: Layout, ins: Inspection, hub: Hub, reporter: Sink, tag: str) -> FileResult:
    item, remote = ins.item, ins.remote
    assert remote is not None
    target, partial = item.target, partial_path(item.target, remote.etag)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{target.name}.*.incomplete"):
        if stale != partial:
            stale.unlink(missing_ok=True)  # bytes of an older upstream version: useless now
    resume = _size(partial) or 0
    if remote.size is not None and resume > remote.size:
        partial.unlink()
        resume = 0
    loud = (remote.size or 0) >= 1024 * 1024   # small files (tokenizer JSON) only show on the live line
    if resume:
        reporter.emit(Event("download", "download", f"{tag} resuming {target.name} at {format_bytes(resume)} of "
                            f"{format_bytes(remote.size)} from {remote.repo}", step=resume, total=remote.size,
                            unit="byte", files=(str(target),)))
    elif loud:
        reporter.emit(Event("download", "download", f"{tag} downloading {target.name} ({format_bytes(remote.size)}) "
                            f"from {remote.repo}", step=0, total=remote.size, unit="byte", files=(str(target),)))
    start = resume
    try:
        for attempt in range(1, TRANSFER_TRIES + 1):
            sink = HashingSink(partial, remote, start, Meter(reporter, tag, target.name, remote.size, start,
                                                              str(target)))
            try:
                hub.fetch(remote, sink, resume_size=start)
                break
            except TransferInterrupted:
                # huggingface_hub retries a dropped connection itself in some versions only: resume here,
                # from the bytes on disk, so every supported version behaves alike
                if attempt == TRANSFER_TRIES:
                    raise
                start = _size(partial) or 0
                reporter.emit(Event("download", "download", f"{tag} connection lost during {target.name}; resuming "
                                    f"at {format_bytes(start)} (try {attempt + 1} of {TRANSFER_TRIES})",
                                    step=start, total=remote.size, unit="byte", files=(str(target),)))
            finally:
                sink.close()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = _size(partial) or 0
            raise DownloadError(
                f"the disk is full: {target.parent} ran out of space while downloading {target.name} "
                f"({format_bytes(kept)} of {format_bytes(remote.size)} written)",
                hint=f"free at least {format_bytes((remote.size or 0) - kept)} and run again: it resumes from "
                     f"{partial.name} (delete that file to get its space back). Nothing was written to {target.name}.",
            ) from None
        raise DownloadError(f"cannot write {partial}: {e.strerror or e}",
                            hint="check the folder's permissions and the disk") from None
    problem = sink.mismatch()
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{target.name} arrived corrupt: {problem}; the bad copy was deleted",
                            hint="run the same command again to download it afresh")
    os.replace(partial, target)
    fsync_dir(target.parent)
    _record(layout, item, remote, sink.sha256, verified=sink.checkable)
    if loud or resume:
        sink.progress.finish()
    return FileResult(item, "resumed" if resume else ("replaced" if ins.local_size else "downloaded"),
                      remote.size, sink.sha256)


# -- manifest, lock, small helpers ------------------------------------------------------------------
def _manifest_key(layout: Layout, item: Item) -> str:
    return str(item.target.relative_to(layout.models))


def _manifest_entry(layout: Layout, item: Item, manifest: dict[str, dict]) -> dict:
    return manifest.get(_manifest_key(layout, item), {})


def _record(layout: Layout, item: Item, remote: RemoteFile, sha256: str | None, *, verified: bool) -> None:
    """Add one completed file to models/<MANIFEST_NAME> (read-modify-write under its lock, atomic)."""
    path = layout.models / models.MANIFEST_NAME
    with file_lock(path):  # two downloads (`--only ae` and `--only clip_l`) may finish at the same time
        manifest = models.read_manifest(layout)
        manifest[_manifest_key(layout, item)] = _entry(item, remote, sha256, verified=verified)
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _entry(item: Item, remote: RemoteFile, sha256: str | None, *, verified: bool) -> dict:
    return {
        "size": remote.size if remote.size is not None else _size(item.target),
        "sha256": sha256 or remote.sha256,
        "verified": verified,
        "etag": remote.etag,
        "commit": remote.commit,
        "repo": remote.repo,
        "filename": remote.filename,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _recorded_complete(layout: Layout, item: Item, manifest: dict[str, dict]) -> bool:
    if not item.required and not item.target.exists():
        return True
    recorded = _manifest_entry(layout, item, manifest).get("size")
    return recorded is not None and _size(item.target) == int(recorded)


@contextmanager
def _project_lock(layout: Layout) -> Iterator[None]:
    """One `download` per project at a time (two would write the same partial files)."""
    from contextlib import ExitStack

    stack = ExitStack()
    try:
        stack.enter_context(file_lock(layout.models / "download", timeout=0, what="download"))  # models/.download.lock
    except LockTimeout as e:
        raise DownloadError("another `download` is already running for this project",
                            hint=f"wait for it to finish (or stop it), then run again ({(e.hint or '').split(';')[0]})"
                            ) from None
    with stack:
        yield


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev
