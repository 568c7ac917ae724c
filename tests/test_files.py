"""Project files: no lost update under concurrency (real CLI processes), lock timeouts, atomic writes, and
files others can read (modes follow the umask)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomlkit

from orchestrator.errors import LockTimeout
from orchestrator.files import atomic_copy, atomic_write_text, file_lock, lock_path
from orchestrator.train.outputs import link_lora
from tests.dataset_images import concept

REPO = Path(__file__).resolve().parents[1]


# Each process imports the CLI, then waits for a common start time before running its command: on a
# small machine the processes would otherwise start one after the other (each import takes ~0.3 s).
_AT_START = """
import sys, time
from orchestrator.cli import main
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
sys.exit(main(sys.argv[2:]))
"""


def _cli(project_root: Path, start: float, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _AT_START, str(start), "--project-dir", str(project_root), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _subsets(project) -> list[str]:
    doc = tomlkit.parse(project.data_toml.read_text()).unwrap()
    return [s["image_dir"] for d in doc["datasets"] for s in d.get("subsets", [])]


@pytest.mark.slow
def test_twenty_concurrent_adds_and_syncs_lose_nothing(project, tmp_path):
    """10 `dataset add` + 10 `dataset sync` processes at once, twice: every concept ends up in data.toml, once.
    (Without the lock, about one run of this test in three loses a concept on a 2-core machine.)"""
    assert subprocess.run([sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "dataset",
                           "init"], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True).returncode == 0
    want: list[str] = []
    for added, synced in (("a", "s"), ("b", "t")):
        for i in range(10):
            concept(tmp_path / "photos" / f"{added}{i}", 1, size=(32, 32), seed=i)
            concept(project.flux_data / f"{synced}{i}", 1, size=(32, 32), seed=100 + i)  # only a sync adds these
        procs = []
        start = time.time() + 5   # all 20 have imported the CLI by then, even on 2 busy cores
        for i in range(10):
            photos = str(tmp_path / "photos" / f"{added}{i}")
            procs.append(_cli(project.root, start, "dataset", "add", f"{added}{i}", "--from", photos))
            procs.append(_cli(project.root, start, "dataset", "sync"))
        results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
        assert all(code == 0 for code, _, _ in results), [err for code, _, err in results if code]
        want += [f"flux_data/{added}{i}" for i in range(10)] + [f"flux_data/{synced}{i}" for i in range(10)]
        assert sorted(_subsets(project)) == sorted(want)      # nothing lost, nothing twice
    assert not [p for p in project.flux_data.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".add-")]


def test_a_held_lock_times_out_naming_the_file_and_its_holder(project):
    path = project.data_toml
    ready, release = threading.Event(), threading.Event()

    def holder() -> None:
        with file_lock(path, what="dataset sync"):
            ready.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout) as e:
            with file_lock(path, timeout=0.2):
                pass
        assert str(path) in e.value.message and "waited 0.2 s" in e.value.message
        assert f"held by pid {os.getpid()}" in e.value.hint and "(dataset sync)" in e.value.hint
        assert str(lock_path(path)) in e.value.hint
    finally:
        release.set()
        t.join()
    assert not Path(f"{lock_path(path)}.owner").exists()   # the holder's note left with it
    with file_lock(path, timeout=0.2):                         # and the lock is free again
        pass


def test_the_cli_reports_a_locked_data_toml_without_a_traceback(project, tmp_path):
    """A second process waits, then fails with exit 1 and the holder's pid (short timeout via the env)."""
    concept(project.flux_data / "toy", 1, size=(32, 32))
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from pathlib import Path\nfrom orchestrator.files import file_lock\n"
              "with file_lock(Path(%r), what='test holder'):\n    print('locked', flush=True); time.sleep(30)\n"
              % (str(REPO), str(project.data_toml)))
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = {**os.environ, "PYTHONPATH": str(REPO), "FLUX_LOCK_TIMEOUT": "0.5"}
        r = subprocess.run([sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "dataset",
                            "init"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1, r.stderr
    assert f"error: {project.data_toml} is locked by another command" in r.stderr
    assert f"held by pid {holder.pid}" in r.stderr and "(test holder)" in r.stderr
    assert "Traceback" not in r.stderr and not project.data_toml.exists()


def test_nested_locks_of_one_path_do_not_deadlock(project):
    with file_lock(project.data_toml, timeout=1):
        with file_lock(project.data_toml, timeout=1):
            atomic_write_text(project.data_toml, "x = 1\n")
    assert project.data_toml.read_text() == "x = 1\n"


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(project, monkeypatch):
    path = project.root / "state.json"
    atomic_write_text(path, "old\n")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError) as e:
        atomic_write_text(path, "new\n")
    assert e.value.filename == str(path)
    assert path.read_text() == "old\n" and [p.name for p in project.root.iterdir() if p.is_file()] == ["state.json"]


def test_atomic_copy_never_overwrites_when_asked_not_to(tmp_path):
    src, dst = tmp_path / "a.bin", tmp_path / "b.bin"
    src.write_bytes(b"new")
    dst.write_bytes(b"theirs")
    assert atomic_copy(src, dst, overwrite=False) is False
    assert dst.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
    assert atomic_copy(src, dst) is True and dst.read_bytes() == b"new"


# -- modes: what others can read ------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path, umask):
    path = tmp_path / "report.html"
    atomic_write_text(path, "<html>")
    assert _mode(path) == 0o666 & ~umask
    os.chmod(path, 0o640)                   # a file the user chmod-ed keeps its mode when rewritten
    atomic_write_text(path, "<html>2")
    assert _mode(path) == 0o640


def test_a_lora_written_0600_by_the_trainer_is_readable_in_models_loras(tmp_path, umask):
    out, loras = tmp_path / "run" / "output", tmp_path / "models" / "loras"
    out.mkdir(parents=True)
    lora = out / "toy.safetensors"
    lora.write_bytes(b"weights")
    os.chmod(lora, 0o600)                   # what a trainer using mkstemp (or a umask 077 container) leaves
    res = link_lora(lora, loras)
    assert res.target == loras / "toy.safetensors"
    assert _mode(res.target) == 0o666 & ~umask and res.target.stat().st_uid == os.getuid()


def test_a_copied_lora_follows_the_umask(tmp_path, umask, monkeypatch):
    """Where a hard link is impossible (another file system) the copy is not mkstemp's 0600."""
    import errno

    out, loras = tmp_path / "run" / "output", tmp_path / "models" / "loras"
    out.mkdir(parents=True)
    lora = out / "toy.safetensors"
    lora.write_bytes(b"weights")
    real_link = os.link

    def no_cross_device(src, dst, *a, **k):
        if Path(src) == lora:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", no_cross_device)
    res = link_lora(lora, loras)
    assert res.note and "copied" in res.note and res.target.read_bytes() == b"weights"
    assert _mode(res.target) == 0o666 & ~umask
    assert [p.name for p in loras.iterdir()] == ["toy.safetensors"]


def test_generated_images_sidecars_and_batch_manifest_follow_the_umask(tmp_path, umask):
    from orchestrator.batch.manifest import Manifest

    with Manifest(tmp_path / "out" / "manifest.jsonl") as m:
        m.event("run")
    assert _mode(tmp_path / "out" / "manifest.jsonl") == 0o666 & ~umask
    from orchestrator.batch.sheets import write_index

    index = write_index(tmp_path / "out", "batch x", [], {}, {}, [])
    assert _mode(index) == 0o666 & ~umask
    assert json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])["event"] == "run"


def test_fix_orientation_keeps_the_photo_readable(project, umask):
    """The upright copy replaces the photo with the photo's own mode (it was mkstemp's 0600 before)."""
    from orchestrator.dataset.fix import fix_orientation
    from tests.dataset_images import exif_rotated

    photo = exif_rotated(project.flux_data / "toy" / "side.jpg")
    os.chmod(photo, 0o644)
    fixed = fix_orientation(project, [photo])
    assert [f.path for f in fixed] == [photo] and _mode(photo) == 0o644
    assert fixed[0].original.exists() and not [p for p in photo.parent.iterdir() if p.suffix == ".tmp"]


def test_a_folder_without_room_for_a_lock_is_read_unlocked(project, monkeypatch):
    """EACCES/EROFS creating the lock file (a read-only project): reading goes on; any write would fail anyway."""
    import errno

    import orchestrator.files as files

    class NoLock:
        def acquire(self, timeout):
            raise PermissionError(errno.EACCES, "Permission denied", "x.lock")

    monkeypatch.setattr(files, "_lock_for", lambda lp: NoLock())
    with file_lock(project.data_toml, timeout=0.1):
        ran = True
    assert ran
    monkeypatch.setattr(files, "_lock_for", lambda lp: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):           # other failures are not hidden
        with file_lock(project.data_toml, timeout=0.1):
            pass
