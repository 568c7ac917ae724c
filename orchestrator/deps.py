"""The Python packages flux-orchestrator needs: the ranges it declares, what is installed, and a missing
import turned into an error that names the package and the install command.

The ranges come from the installed distribution's metadata (what `pip install` recorded from
pyproject.toml); a source checkout that was never installed falls back to its pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DependencyMissing

DISTRIBUTION = "flux-orchestrator"
# top-level import name -> distribution name (where they differ, and every one we import)
MODULES = {"docker": "docker", "huggingface_hub": "huggingface_hub", "tomlkit": "tomlkit", "requests": "requests",
           "websocket": "websocket-client", "yaml": "pyyaml", "PIL": "Pillow", "packaging": "packaging",
           "filelock": "filelock"}
REINSTALL = "pip install -e . (in the flux-orchestrator folder)"
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;(.*))?$")


@dataclass(frozen=True)
class Requirement:
    """One declared runtime dependency: `docker` with `>=7.1,<8`."""

    name: str
    specifier: str

    @property
    def pip_arg(self) -> str:
        return f"'{self.name}{self.specifier}'" if self.specifier else self.name


@dataclass(frozen=True)
class PackageStatus:
    """What is installed for one requirement, and what is wrong with it."""

    requirement: Requirement
    installed: str | None
    problem: str | None = None     # None: fine
    severity: str = "fail"          # fail: missing, too old, not importable; warn: newer than tested

    @property
    def fix(self) -> str:
        return f"pip install {self.requirement.pip_arg}"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> Requirement | None:
    """`name>=1,<2; marker` -> Requirement; None for an extra's requirement (`; extra == "test"`)."""
    m = _REQ.match(text)
    if not m or (m.group(3) and "extra" in m.group(3)):
        return None
    parts = [p for p in m.group(2).replace(" ", "").split(",") if p]
    return Requirement(m.group(1), ",".join(sorted(parts, key=lambda p: not p.startswith(">"))))  # lower bound first


def _pyproject() -> Path:
    return Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared_requirements() -> list[Requirement]:
    """The runtime dependencies with their ranges (installed metadata, else the checkout's pyproject.toml)."""
    try:
        texts = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        texts = _pyproject_dependencies(_pyproject())
    return [r for r in map(parse_requirement, texts) if r is not None]


def _pyproject_dependencies(path: Path) -> list[str]:
    """The `[project] dependencies` strings of pyproject.toml, read without a TOML library (it may be missing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    m = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    return re.findall(r'"([^"]+)"', re.sub(r"#[^\n]*", "", m.group(1))) if m else []


def requirement_for(distribution: str) -> Requirement:
    """The declared requirement for `distribution` (just its name when it is not declared)."""
    for r in declared_requirements():
        if _key(r.name) == _key(distribution):
            return r
    return Requirement(distribution, "")


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def importable(distribution: str) -> str | None:
    """None when the distribution's module can be found; otherwise why not."""
    module = next((m for m, d in MODULES.items() if _key(d) == _key(distribution)), None)
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as e:
        return f"`import {module}` fails: {e}"
    return None if found else f"`import {module}` finds no module"


def check_packages(requirements: list[Requirement] | None = None,
                   version_of: Callable[[str], str | None] = installed_version,
                   import_problem: Callable[[str], str | None] = importable) -> list[PackageStatus]:
    """Each declared dependency against what is installed."""
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        SpecifierSet = None  # noqa: N806 (packaging is itself missing: it is reported below, ranges are not checked)
    out = []
    for req in declared_requirements() if requirements is None else requirements:
        version = version_of(req.name)
        if version is None:
            out.append(PackageStatus(req, None, "not installed"))
            continue
        broken = import_problem(req.name)
        if broken:
            out.append(PackageStatus(req, version, f"installed ({version}) but {broken}"))
            continue
        if SpecifierSet is None or not req.specifier:
            out.append(PackageStatus(req, version))
            continue
        try:
            spec, v = SpecifierSet(req.specifier), Version(version)
        except (InvalidSpecifier, InvalidVersion):
            out.append(PackageStatus(req, version, f"version {version} cannot be compared with {req.specifier}",
                                     "warn"))
            continue
        if spec.contains(v, prereleases=True):
            out.append(PackageStatus(req, version))
        elif any(s.operator in (">=", ">", "==", "~=") and v < Version(s.version) for s in spec):
            out.append(PackageStatus(req, version, f"{version} is older than the supported {req.specifier}"))
        else:
            out.append(PackageStatus(req, version, f"{version} is newer than the tested {req.specifier}", "warn"))
    return out


def missing_dependency(e: ImportError) -> DependencyMissing | None:
    """The error for an import of one of our dependencies that failed; None when it is not one (a bug)."""
    name = (e.name or "").split(".")[0]
    if name not in MODULES:
        return None
    req = requirement_for(MODULES[name])
    installed = installed_version(req.name)
    what = (f"the Python package {req.name} is installed ({installed}) but cannot be imported: {e}" if installed
            else f"the Python package {req.name} is not installed (`import {name}` failed)")
    return DependencyMissing(what, hint=f"pip install {req.pip_arg}, or reinstall everything: {REINSTALL}")
