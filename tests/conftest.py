"""Shared fixtures: an isolated project folder, the CLI run in-process, the real Docker engine."""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.layout import Layout

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
_NOTES: list[str] = []
_ENGINES: list = []  # the engine, once a test asked for it: the session's Docker objects are removed at the end


def pytest_addoption(parser):
    group = parser.getgroup("flux-orchestrator")
    group.addoption("--keep-test-images", action="store_true", default=False,
                    help="keep the Docker images and containers this test run built (removed at the end otherwise)")
    group.addoption("--test-run-id", default=None, metavar="ID",
                    help="label this run's Docker objects with ID instead of a fresh random one")


def pytest_configure(config):
    from tests.images import RUN_ID_ENV

    # always a fresh id (a nested pytest must not inherit and then delete its parent's images)
    os.environ[RUN_ID_ENV] = config.getoption("--test-run-id") or uuid.uuid4().hex[:10]


def pytest_sessionfinish(session, exitstatus):
    if not _ENGINES:
        return
    from tests.images import RUN_ID_ENV, TEST_RUN_LABEL, remove_run_objects

    rid = os.environ[RUN_ID_ENV]
    if session.config.getoption("--keep-test-images"):
        _NOTES.append(f"kept this run's Docker test objects: docker images --filter label={TEST_RUN_LABEL}={rid}")
        return
    left = remove_run_objects(_ENGINES[0], rid)
    if left:
        _NOTES.append(f"warning: could not remove Docker test objects of run {rid}: {', '.join(left)}")


def pytest_terminal_summary(terminalreporter):
    for note in _NOTES:
        terminalreporter.write_line(note)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's HF login, caches or token; HOME is a temp folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)   # caches (dataset check's hashes) go under HOME


@pytest.fixture
def project(tmp_path) -> Layout:
    """An empty project folder with the standard layout."""
    layout = Layout.at(tmp_path / "project")
    layout.ensure_dirs(*layout.model_dirs().values(), layout.tokenizers, layout.flux_data, layout.workflows)
    return layout


@pytest.fixture
def run_cli(project):
    """Run `python -m orchestrator ARGS` in-process in `project`; returns code, stdout, stderr."""

    def run(*argv: str, project_dir: Path | None = None) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--project-dir", str(project_dir or project.root), *argv], stdout=out, stderr=err)
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture(scope="session")
def session_engine():
    """The real Docker engine on this machine. Fails (does not skip) when it is missing:
    deselect with `-m 'not docker'` on a machine without Docker."""
    from orchestrator.engine import connect
    from orchestrator.errors import DockerUnavailable

    try:
        engine = connect()
    except DockerUnavailable as e:
        pytest.fail(f"Docker tests need a running engine: {e.message} ({e.hint})")
    _ENGINES.append(engine)
    return engine


@pytest.fixture
def engine(session_engine, project):
    """The engine; containers labelled with this test's project are removed afterwards."""
    from orchestrator.containers import LABEL_PROJECT, project_id

    yield session_engine
    for c in session_engine.find({LABEL_PROJECT: project_id(project.root)}):
        session_engine.remove(c)


@pytest.fixture(scope="session")
def busybox_image(session_engine) -> str:
    """Tag of the local scratch+busybox base image (built once per session)."""
    from tests.images import ensure_busybox_image

    return ensure_busybox_image(session_engine)


def shared_path(*parts: str) -> Path:
    """A file under ../shared/, skipping the calling test when it is absent (cross-checks only)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data {p} not present")
    return p
