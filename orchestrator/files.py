"""Writing project files safely: atomic writes and copies that follow the umask, and file locks.

    with file_lock(layout.data_toml):                 # read-modify-write under a lock...
        text = layout.data_toml.read_text()
        atomic_write_text(layout.data_toml, edit(text))   # ...and never half-written

Atomic: a temp file in the same folder, written and fsynced, renamed over the target, then the
folder fsynced, so a crash leaves the old file or the new one. New files get 0666 minus the umask
(0644 by default), as `open()` would give them: files others (a ComfyUI container running as
another user) must read are not 0600 as `tempfile.mkstemp` would make them. A replaced file
keeps its mode.

Locks: `filelock` (fcntl on Unix) on `.NAME.lock` next to the file; released by the kernel when the
holder dies, so a crashed command never leaves a stale lock. Who holds it is noted in
`.NAME.lock.owner`, for the timeout message.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import LockTimeout, UsageError

LOCK_TIMEOUT = 60.0   # seconds (FLUX_LOCK_TIMEOUT overrides); a data.toml edit takes milliseconds


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and os.replace: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _temp_in(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        _discard(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a failed write (disk full)
            raise OSError(e.errno, e.strerror, str(path)) from e                   # names the file it was for
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(source: Path, target: Path, *, overwrite: bool = True) -> bool:
    """Copy `source` to `target` atomically, mode from the umask; with overwrite=False an existing target
    is left alone (no check-then-write race: the final step is a hard link). False when it was there."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _temp_in(target)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            _keep_mode(target, tmp)
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            finally:
                _discard(tmp)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(target.parent)
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or new name in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_file_mode() -> int:
    """The mode `open()` gives a new file under the current umask (0644 with umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def follow_umask(path: Path) -> None:
    """Give a file we own, written by another program (the trainer), the mode a new file of ours gets."""
    try:
        st = os.stat(path)
        want = new_file_mode() | (st.st_mode & 0o111)
        if st.st_uid == os.geteuid() and st.st_mode & 0o777 != want:
            os.chmod(path, want)
    except OSError:
        pass  # not ours to change, or gone: the file stays as it is


def lock_path(path: Path) -> Path:
    """The lock file guarding `path` (a file or a folder): `.NAME.lock` next to it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float | None = None, what: str | None = None) -> Iterator[None]:
    """Hold the lock of `path` (see lock_path) for a read-modify-write; LockTimeout names the file and
    who holds it. Re-entrant within a thread (a nested lock of the same path does not deadlock)."""
    from filelock import Timeout

    path = Path(path)
    lp = lock_path(path)
    wait = default_lock_timeout() if timeout is None else timeout
    lock = None
    try:
        lp.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock_for(lp)
        lock.acquire(timeout=wait)
    except Timeout:
        raise LockTimeout(f"{path} is locked by another command: waited {wait:g} s for it",
                          hint=f"{_holder(lp)}; wait for it to finish and run again (the lock is {lp}, freed "
                               "automatically when its holder exits)") from None
    except OSError as e:   # (after Timeout: filelock's Timeout is an OSError too)
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        lock = None
    if lock is None:
        # A folder we cannot create the lock file in is one no atomic write can go to either (its temp
        # file goes next to the target): a read-only project is read without a lock; a write fails there.
        yield
        return
    first = lock.lock_counter == 1
    try:
        if first:
            _note_holder(lp, what)
        yield
    finally:
        if first:
            _discard(Path(f"{lp}.owner"))
        lock.release()


_LOCKS: dict[str, object] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(lp: Path):
    """One FileLock object per lock file in this process: nested use is re-entrant instead of deadlocking on
    a second descriptor; its state is per thread, so two threads still exclude each other."""
    from filelock import FileLock

    with _LOCKS_GUARD:
        lock = _LOCKS.get(str(lp))
        if lock is None:
            lock = _LOCKS[str(lp)] = FileLock(str(lp))
        return lock


def default_lock_timeout() -> float:
    """Seconds to wait for a lock: $FLUX_LOCK_TIMEOUT, else LOCK_TIMEOUT."""
    raw = os.environ.get("FLUX_LOCK_TIMEOUT", "").strip()
    if not raw:
        return LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"FLUX_LOCK_TIMEOUT={raw!r}: expected a number of seconds >= 0",
                         hint=f"e.g. FLUX_LOCK_TIMEOUT=120, or unset it for the default {LOCK_TIMEOUT:g}")
    return value


def _note_holder(lp: Path, what: str | None) -> None:
    import socket

    note = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3),
            "command": what or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:4]))}
    try:
        Path(f"{lp}.owner").write_text(json.dumps(note) + "\n")
    except OSError:
        pass  # the note only improves a timeout message


def _holder(lp: Path) -> str:
    try:
        note = json.loads(Path(f"{lp}.owner").read_text())
        since = time.strftime("%H:%M:%S", time.localtime(float(note["since"])))
        return f"held by pid {int(note['pid'])} on {note['host']} ({note['command']}) since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "held by another flux-orchestrator command (or another program using the same lock file)"


def _temp_in(path: Path) -> tuple[str, int]:
    """A new temp file next to `path`, created with O_EXCL and mode 0666 & ~umask (unlike mkstemp's 0600)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue


def _keep_mode(path: Path, tmp: str) -> None:
    try:
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    except FileNotFoundError:
        pass  # a new file: the umask already applied


def _discard(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
