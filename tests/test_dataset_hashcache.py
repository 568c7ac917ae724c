"""Near-duplicate hashes remembered between checks (user cache folder), and invalidated by any change."""

from __future__ import annotations

import json
import os

from orchestrator.dataset import check_dataset
from orchestrator.dataset.hashcache import cache_file
from tests.dataset_images import codes, photo, save, write_toml


def _toy(project):
    toy = project.flux_data / "toy"
    a = save(toy / "a.jpg", photo((256, 256), seed=1), format="JPEG", quality=90)
    b = save(toy / "b.jpg", photo((256, 256), seed=2), format="JPEG", quality=90)
    write_toml(project)
    return a, b


def _entries() -> dict:
    return json.loads(cache_file().read_text())["entries"]


def test_a_second_check_uses_the_remembered_hashes(project, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a, b = _toy(project)
    assert "near-duplicate" not in codes(check_dataset(project))
    assert cache_file() == tmp_path / "cache" / "flux-orchestrator" / "dhash-v1.json"
    entries = _entries()
    assert set(entries) == {str(a), str(b)}
    # plant a's hash for b: a check that reads the cache now sees two near-duplicates
    entries[str(b)][3] = entries[str(a)][3]
    cache_file().write_text(json.dumps({"version": 1, "entries": entries}))
    assert "near-duplicate" in codes(check_dataset(project), b)
    # b changes (new mtime): its entry no longer matches, b is hashed again
    st = os.stat(b)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert "near-duplicate" not in codes(check_dataset(project))
    assert _entries()[str(b)][3] != _entries()[str(a)][3]


def test_a_broken_cache_is_ignored_and_rewritten(project, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a, b = _toy(project)
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text("{not json")
    before = sorted(p.name for p in project.flux_data.rglob("*"))
    report = check_dataset(project)
    assert not report.errors() and set(_entries()) == {str(a), str(b)}
    assert sorted(p.name for p in project.flux_data.rglob("*")) == before   # nothing written in the project


def test_an_unwritable_cache_only_costs_speed(project, tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    _toy(project)
    assert not check_dataset(project).errors()
