"""The set-up: the README's commands are what CI runs, the oldest constraints are the declared lower
bounds, the tests' busybox is found and checked, and a test run leaves no Docker objects behind."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.busybox import is_static_elf

ROOT = Path(__file__).resolve().parents[1]


def readme_set_up_block(text: str) -> list[str]:
    """The lines of the first ```bash block in the README's '## Set up' section."""
    section = re.search(r"^## Set up\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Set up' section"
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the README's '## Set up' section has no ```bash block"
    return block.group(1).splitlines()


def ci_print(readme: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"CI_README": str(readme)} if readme else {}))
    return subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print"], capture_output=True, text=True,
                          env=env, timeout=30)


def test_ci_runs_exactly_the_readme_set_up_commands():
    block = readme_set_up_block((ROOT / "README.md").read_text())
    r = ci_print()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == block
    commands = [line.split("#")[0].strip() for line in block]
    assert commands == ["./setup.sh", "python3 -m pytest"]
    assert os.access(ROOT / "setup.sh", os.X_OK)


def test_ci_reads_the_readme_when_it_runs(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Set up\n\n```bash\necho one   # first\necho two\n```\n\n## Next\n```bash\nno\n```\n")
    r = ci_print(readme)
    assert r.returncode == 0 and r.stdout == "echo one   # first\necho two\n"
    readme.write_text("# x\n\n## Set up\n\nnothing here\n\n## Next\n```bash\nno\n```\n")
    r = ci_print(readme)
    assert r.returncode == 2 and "no ```bash block under '## Set up'" in r.stderr


def declared_requirements():
    import tomlkit
    from packaging.requirements import Requirement

    project = tomlkit.parse((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_constraints_oldest_pins_every_lower_bound_and_each_range_has_an_upper_bound():
    pins = {}
    for line in (ROOT / "constraints-oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    declared = declared_requirements()
    assert sorted(pins) == sorted(r.name.lower().replace("_", "-") for r in declared)
    for req in declared:
        lower = [s.version for s in req.specifier if s.operator == ">="]
        upper = [s.version for s in req.specifier if s.operator == "<"]
        assert len(lower) == 1 and len(upper) == 1, f"{req}: needs one >= and one < bound"
        pin = pins[req.name.lower().replace("_", "-")]
        assert pin in req.specifier and pin.split(".")[:len(lower[0].split("."))] == lower[0].split("."), (req, pin)


def _elf64(interp: bool) -> bytes:
    """A minimal little-endian ELF64 header with one program header: PT_INTERP (3) or PT_LOAD (1)."""
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 32, 64)          # e_phoff
    struct.pack_into("<HH", head, 54, 56, 1)      # e_phentsize, e_phnum
    ph = bytearray(56)
    struct.pack_into("<I", ph, 0, 3 if interp else 1)
    return bytes(head + ph)


def test_static_elf_detection(tmp_path):
    static, dynamic, text = tmp_path / "static", tmp_path / "dynamic", tmp_path / "text"
    static.write_bytes(_elf64(interp=False))
    dynamic.write_bytes(_elf64(interp=True))
    text.write_text("#!/bin/sh\n")
    assert is_static_elf(static) and not is_static_elf(dynamic) and not is_static_elf(text)
    assert not is_static_elf(tmp_path / "missing")


def test_the_busybox_the_tests_use_is_static_and_a_dynamic_one_is_refused(tmp_path):
    from tests.busybox import ENV

    r = subprocess.run([sys.executable, "-m", "tests.busybox"], cwd=ROOT, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert is_static_elf(Path(r.stdout.strip()))
    fake = tmp_path / "busybox"
    fake.write_bytes(_elf64(interp=True))
    fake.chmod(0o755)
    r = subprocess.run([sys.executable, "-c", "from tests.busybox import find_static_busybox as f; print(f())"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30, env=dict(os.environ, **{ENV: str(fake)}))
    assert f"{fake}: not statically linked" in r.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_a_test_run_removes_its_docker_objects_unless_asked_to_keep_them(session_engine, tmp_path):
    from tests.images import remove_run_objects, run_objects

    def nested(run_id: str, *extra: str) -> subprocess.CompletedProcess:
        home = tmp_path / f"home-{run_id}"
        home.mkdir()
        env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(home))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--test-run-id", run_id,
                            *extra, "tests/test_engine.py::test_run_find_logs_stop_remove"],
                           cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        assert list(home.iterdir()) == []          # nothing written to $HOME
        return r

    gone = f"cleanup-{uuid.uuid4().hex[:8]}"
    nested(gone)
    assert not any(run_objects(session_engine, gone).values())
    kept = f"kept-{uuid.uuid4().hex[:8]}"
    try:
        r = nested(kept, "--keep-test-images")
        assert f"label=io.flux-orchestrator.test-run={kept}" in r.stdout
        assert [t for i in run_objects(session_engine, kept)["images"] for t in i.tags] == \
            [f"flux-orch-test/busybox:1-{kept}"]
    finally:
        assert remove_run_objects(session_engine, kept) == []
