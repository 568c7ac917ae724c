"""Python dependencies: a missing one is a clear error naming the package and the install command, and
`doctor` checks the installed versions against the declared ranges. The subprocess tests hide a real
package with a sitecustomize that blocks its import, or shadow its metadata with an older version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import deps
from orchestrator.deps import Requirement, check_packages, parse_requirement

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = '''\
import importlib.metadata as _md
import os, re, sys
_BLOCKED = set(os.environ["FLUX_TEST_BLOCK"].split(","))
_UNINSTALLED = {re.sub(r"[-_.]+", "-", n).lower() for n in os.environ.get("FLUX_TEST_UNINSTALL", "").split(",") if n}
_discover = _md.Distribution.discover.__func__


def _installed(cls, **kw):
    """Distributions as if the FLUX_TEST_UNINSTALL ones had been uninstalled."""
    for d in _discover(cls, **kw):
        if re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() not in _UNINSTALLED:
            yield d


_from_name = _md.Distribution.from_name.__func__


def _named(cls, name):
    if re.sub(r"[-_.]+", "-", name).lower() in _UNINSTALLED:
        raise _md.PackageNotFoundError(name)
    return _from_name(cls, name)


_md.Distribution.discover = classmethod(_installed)
_md.Distribution.from_name = classmethod(_named)  # Python 3.10 looks names up without discover()


class _Blocker:
    """Makes `import NAME` fail as it does when the package is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


def run_hidden(tmp_path: Path, blocked: str, *argv: str, metadata: dict[str, str] | None = None,
               uninstall: str = ""):
    """`python -m orchestrator ARGV` with `blocked` modules unimportable, the `uninstall` distributions'
    metadata hidden (so both look uninstalled), and fake dist-info versions."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / "sitecustomize.py").write_text(BLOCKER)
    for name, version in (metadata or {}).items():
        info = shadow / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), str(ROOT)]), FLUX_TEST_BLOCK=blocked, FLUX_TEST_UNINSTALL=uninstall,
               HOME=str(tmp_path / "home"), DOCKER_HOST=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    return subprocess.run([sys.executable, "-m", "orchestrator", *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


@pytest.fixture
def project_dir(tmp_path) -> Path:
    p = tmp_path / "project"
    (p / "flux_data").mkdir(parents=True)
    (p / "flux_data" / "data.toml").write_text("[general]\n")
    (p / "jobs.yaml").write_text("jobs:\n  - prompt: a cat\n")
    return p


@pytest.mark.parametrize("module,package,argv", [
    ("tomlkit", "tomlkit", ("dataset", "check")),
    ("yaml", "pyyaml", ("batch", "plan", "jobs.yaml")),
    ("docker", "docker", ("comfyui", "status")),
    ("huggingface_hub", "huggingface_hub", ("download", "--dry-run")),
])
def test_a_missing_dependency_names_the_package_and_the_install_command(tmp_path, project_dir, module, package,
                                                                         argv):
    r = run_hidden(tmp_path, module, "--project-dir", str(project_dir), *argv, uninstall=package)
    req = deps.requirement_for(package)
    assert r.returncode == 1, r.stderr
    assert f"error: the Python package {req.name} is not installed (`import {module}` failed)" in r.stderr
    assert f"hint: pip install {req.pip_arg}, or reinstall everything: pip install -e ." in r.stderr
    assert req.specifier.startswith(">=") and "<" in req.specifier
    assert "Traceback" not in r.stderr and "bug" not in r.stderr


def test_a_package_installed_but_not_importable_says_so(tmp_path, project_dir):
    r = run_hidden(tmp_path, "tomlkit", "--project-dir", str(project_dir), "dataset", "check")
    version = deps.installed_version("tomlkit")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (f"error: the Python package tomlkit is installed ({version}) but cannot be imported: "
            "No module named 'tomlkit'") in r.stderr


def test_debug_shows_the_traceback_of_a_missing_dependency(tmp_path, project_dir):
    r = run_hidden(tmp_path, "tomlkit", "--project-dir", str(project_dir), "--debug", "dataset", "check",
                   uninstall="tomlkit")
    assert r.returncode == 1 and "Traceback" in r.stderr and "ModuleNotFoundError" in r.stderr
    assert "error: the Python package tomlkit is not installed" in r.stderr


def test_a_missing_module_of_our_own_is_still_a_bug():
    from orchestrator.deps import missing_dependency

    assert missing_dependency(ModuleNotFoundError("No module named 'orchestrator.nope'", name="orchestrator.nope")) \
        is None
    assert missing_dependency(ImportError("cannot import name x")) is None
    assert missing_dependency(ModuleNotFoundError("x", name="PIL.Image")).message.startswith(
        "the Python package Pillow")


def test_doctor_reports_an_old_and_an_unimportable_package_with_the_fix(tmp_path, project_dir):
    r = run_hidden(tmp_path, "websocket", "--project-dir", str(project_dir), "doctor", "--json",
                   metadata={"Pillow": "9.0.0"})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    pillow, ws = checks["package Pillow"], checks["package websocket-client"]
    spec = deps.requirement_for("Pillow").specifier
    assert pillow["status"] == "fail" and pillow["summary"] == f"Pillow 9.0.0 is older than the supported {spec}"
    assert pillow["fix"] == f"pip install 'Pillow{spec}'"
    assert ws["status"] == "fail" and "`import websocket` fails" in ws["summary"]
    assert ws["fix"] == f"pip install 'websocket-client{deps.requirement_for('websocket-client').specifier}'"
    assert "python packages" not in checks and r.returncode == 1


def test_doctor_without_docker_py_still_shows_every_check(tmp_path, project_dir):
    r = run_hidden(tmp_path, "docker", "--project-dir", str(project_dir), "doctor", uninstall="docker")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "package docker" in r.stdout and "the Python package docker is not installed" in r.stdout
    assert "tokenizer" in r.stdout and "comfyui image" in r.stdout


def test_doctor_says_all_packages_are_fine(run_cli):
    r = run_cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    assert checks["python packages"]["status"] == "ok"


def test_versions_against_ranges():
    reqs = [Requirement("a", ">=1.2,<2"), Requirement("b", ">=0.15.1,<0.16"), Requirement("c", ">=1,<2"),
            Requirement("d", ">=1,<2"), Requirement("e", ">=1,<2"), Requirement("f", ""), Requirement("g", ">=1,<2")]
    versions = {"a": "1.9.9", "b": "0.15.0", "c": "2.0.0", "e": "1.5.0rc1", "f": "0.0.1", "g": "1.1"}
    out = {s.requirement.name: s for s in check_packages(reqs, version_of=versions.get,
                                                         import_problem=lambda n: "boom" if n == "g" else None)}
    assert out["a"].problem is None and out["f"].problem is None and out["e"].problem is None
    assert (out["b"].problem, out["b"].severity) == ("0.15.0 is older than the supported >=0.15.1,<0.16", "fail")
    assert (out["c"].problem, out["c"].severity) == ("2.0.0 is newer than the tested >=1,<2", "warn")
    assert (out["d"].problem, out["d"].installed) == ("not installed", None)
    assert out["g"].problem == "installed (1.1) but boom"
    assert out["b"].fix == "pip install 'b>=0.15.1,<0.16'"


def test_requirement_strings():
    assert parse_requirement("docker>=7.1,<8") == Requirement("docker", ">=7.1,<8")
    assert parse_requirement("huggingface_hub >= 0.34, < 3") == Requirement("huggingface_hub", ">=0.34,<3")
    assert parse_requirement('pytest>=8,<10; extra == "test"') is None
    assert parse_requirement("x[extra]>=1; python_version >= '3.10'") == Requirement("x", ">=1")


def test_a_checkout_that_was_never_installed_reads_pyproject():
    import tomlkit

    declared = tomlkit.parse((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps._pyproject_dependencies(ROOT / "pyproject.toml") == list(declared)
    assert deps._pyproject_dependencies(ROOT / "nope.toml") == []
