"""Streaming one file to disk with checksums and progress (used by `download`).

`HashingSink` is the file object handed to huggingface_hub's `http_get`: it appends to the
partial file and hashes every byte on the way (SHA-256, plus the git blob SHA-1 for small git
files), so a finished download is checked against the Hub without reading it again.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.hub import RemoteFile
from orchestrator.progress import Event, Sink, format_bytes, format_duration

CHUNK = 8 * 1024 * 1024


class HashingSink:
    """The file object handed to huggingface_hub: appends to the partial file, hashes as it goes."""

    def __init__(self, path: Path, remote: RemoteFile, resume: int, progress: "Meter") -> None:
        self.path, self.remote, self.progress = path, remote, progress
        self._f = open(path, "ab")
        self._rehash(resume)

    @property
    def checkable(self) -> bool:
        return bool(self.remote.sha256 or self.remote.git_sha1)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def _rehash(self, upto: int) -> None:
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1(b"blob %d\0" % (self.remote.size or 0)) if self.remote.git_sha1 else None
        if upto:
            self.progress.note(f"checking the {format_bytes(upto)} already downloaded")
            for chunk in read_chunks(self.path, upto):
                self._update(chunk)

    def _update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        if self._sha1 is not None:
            self._sha1.update(chunk)

    def write(self, chunk: bytes) -> int:
        self._f.write(chunk)
        self._update(chunk)
        self.progress.advance(len(chunk))
        return len(chunk)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        """huggingface_hub rewinds when a server ignores Range: start the hashes over to match."""
        self._f.flush()
        n = self._f.truncate(size)
        self._rehash(0)
        self.progress.restart()
        return n

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            try:
                self._f.close()
            except OSError:
                pass  # the flush above already raised the real error

    def mismatch(self) -> str | None:
        size = _size(self.path) or 0
        if self.remote.size is not None and size != self.remote.size:
            return f"{size} bytes instead of {self.remote.size}"
        if self.remote.sha256 and self.sha256 != self.remote.sha256:
            return f"SHA-256 {self.sha256[:12]}… instead of the Hub's {self.remote.sha256[:12]}…"
        if self.remote.git_sha1 and self._sha1 is not None and self._sha1.hexdigest() != self.remote.git_sha1:
            return "its git SHA-1 differs from the Hub's"
        return None


class Meter:
    """Bytes, speed and ETA of one file as live events; a few milestones for logs."""

    def __init__(self, reporter: Sink, tag: str, name: str, total: int | None, start: int,
                 path: str | None = None) -> None:
        self.reporter, self.tag, self.name, self.total = reporter, tag, name, total
        self.files = (path,) if path else ()
        self.done = start
        self.session_start, self.t0 = start, time.monotonic()
        self._next_mark = 0.25

    def note(self, text: str) -> None:
        self.reporter.emit(Event("download", "download", f"{self.tag} {self.name}: {text}", step=self.done,
                                 total=self.total, unit="byte", files=self.files, live=True))

    def restart(self) -> None:
        self.done = self.session_start = 0
        self.t0 = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        speed = (self.done - self.session_start) / elapsed
        if self.total:
            frac = self.done / self.total
            eta = (self.total - self.done) / speed if speed > 0 else None
            self._emit(f"{self.tag} {self.name}  {frac:6.1%}  {format_bytes(self.done)} / "
                       f"{format_bytes(self.total)}  {format_bytes(speed)}/s  ETA {format_duration(eta)}", speed, eta)
            if self.total >= 64 * 1024 * 1024 and frac >= self._next_mark and frac < 1:
                self._emit(f"{self.tag} {self.name}: {frac:.0%} ({format_bytes(self.done)})", speed, eta, live=False)
                self._next_mark += 0.25
        else:
            self._emit(f"{self.tag} {self.name}  {format_bytes(self.done)}  {format_bytes(speed)}/s", speed, None)

    def _emit(self, text: str, speed: float, eta: float | None, *, live: bool = True) -> None:
        self.reporter.emit(Event("download", "download", text, step=self.done, total=self.total, unit="byte",
                                 rate=speed, eta=eta, files=self.files, live=live))

    def finish(self) -> None:
        elapsed = time.monotonic() - self.t0
        got = self.done - self.session_start
        speed = f", {format_bytes(got / elapsed)}/s" if elapsed > 0.5 else ""
        self.reporter.emit(Event("download", "file", f"{self.tag} {self.name}: done, {format_bytes(got)} in "
                                 f"{format_duration(elapsed)}{speed}", step=self.done, total=self.total, unit="byte",
                                 rate=got / elapsed if elapsed > 0 else None, files=self.files))


def verify_file(path: Path, remote: RemoteFile, reporter: Sink) -> tuple[bool | None, str]:
    """(matches the Hub's checksum, or None when the Hub gave none; our SHA-256)."""
    size = _size(path) or 0
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size) if remote.git_sha1 else None
    done, t0 = 0, time.monotonic()
    for chunk in read_chunks(path, size):
        sha256.update(chunk)
        if sha1 is not None:
            sha1.update(chunk)
        done += len(chunk)
        rate = done / max(time.monotonic() - t0, 1e-6)
        reporter.emit(Event("download", "verify", f"verifying {path.name}  {done / max(size, 1):6.1%}  "
                            f"{format_bytes(rate)}/s", step=done, total=size, unit="byte", rate=rate,
                            files=(str(path),), live=True))
    ours = sha256.hexdigest()
    if remote.sha256:
        return ours == remote.sha256, ours
    if sha1 is not None:
        return sha1.hexdigest() == remote.git_sha1, ours
    return None, ours


def read_chunks(path: Path, upto: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        left = upto
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
