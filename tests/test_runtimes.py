"""The runtime interfaces: the registry, the settings contract, and one contract test that every
ComfyUI server runtime (docker, local, and the test double) passes through the same use cases."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from orchestrator import runtimes
from orchestrator.comfy import serve
from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.serverspec import ServerOptions
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.runtimes.base import RuntimeEnv, ServerRuntime, TrainRuntime
from tests.comfy_standin import fake_checkout
from tests.runtime_doubles import DoubleServer
from tests.test_comfy_server import free_ports, standins  # noqa: F401  (standins: a session fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_runtime_implements_its_interfaces(project, tmp_path):
    env = RuntimeEnv(project)
    assert runtimes.names("server") == ("docker", "local", "ray") and runtimes.names("train") == ("docker", "local")
    for name in runtimes.names("server"):
        rt = runtimes.server_runtime(name, env)
        assert isinstance(rt, ServerRuntime) and rt.name == name
    for name in runtimes.names("train"):
        rt = runtimes.train_runtime(name, env, {"sd_scripts": tmp_path} if name == "local" else {})
        assert isinstance(rt, TrainRuntime) and rt.name == name
    assert isinstance(DoubleServer(env, {}), ServerRuntime)


def test_a_runtime_refuses_the_options_of_another_and_unknown_names(project):
    env = RuntimeEnv(project)
    with pytest.raises(UsageError, match=r"--comfyui applies to --runtime local or ray only, not docker"):
        runtimes.server_runtime("docker", env, {"comfyui": Path("/x")})
    with pytest.raises(UsageError, match=r"--image and --no-build apply to --runtime docker only"):
        runtimes.server_runtime("local", env, {"image": "x", "no_build": True})
    with pytest.raises(UsageError, match="choose docker or local or ray"):
        runtimes.runtime_class("server", "kubernetes")
    with pytest.raises(UsageError, match="choose docker or local"):
        runtimes.runtime_class("train", "ray")
    with pytest.raises(OrchestratorError, match="needs --sd-scripts"):
        runtimes.train_runtime("local", env, {})


def test_runtime_names_appear_only_in_the_registry_and_the_runtime_modules():
    names = {e.name for e in runtimes.REGISTRY}
    # doctor.py names its Docker *engine* check "docker" (the machine check, not the runtime)
    # deps.py names the docker-py *package* (`import docker`), not the runtime
    allowed = {ROOT / "orchestrator" / "doctor.py", ROOT / "orchestrator" / "deps.py"}
    found = []
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        if path.is_relative_to(ROOT / "orchestrator" / "runtimes") or path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []


def _server_runtimes():
    return [pytest.param("docker", marks=pytest.mark.docker), "local", "double"]


@pytest.fixture
def server_runtime(request, project, tmp_path):
    """(runtime, the server options to start it with) for the contract test."""
    env = RuntimeEnv(project)
    name = request.param
    if name == "docker":
        image = request.getfixturevalue("standins")["ok"]
        rt = runtimes.server_runtime("docker", env, {"image": image, "no_build": True})
    elif name == "local":
        rt = runtimes.server_runtime("local", env, {"comfyui": fake_checkout(tmp_path / "ComfyUI"),
                                                    "python": sys.executable})
    else:
        rt = DoubleServer(env, {})
    yield rt, ServerOptions(port=free_ports(), gpus="none")
    rt.down(grace=2)


@pytest.mark.parametrize("server_runtime", _server_runtimes(), indirect=True)
def test_every_server_runtime_keeps_the_contract(project, server_runtime):
    rt, options = server_runtime
    env = RuntimeEnv(project)
    outcome = serve.up(env, serve.UpOptions(options, timeout=60), runtime=rt)
    [url] = outcome.result.urls
    assert outcome.result.started == (0,) and outcome.runtime is rt
    assert (project.workflows / "base_flux.json").is_file()          # the browser's sidebar lists ours
    with ComfyClient(url) as client:
        assert client.system_stats()["system"]["comfyui_version"]    # a ComfyUI answers at the URL
    again = serve.up(env, serve.UpOptions(options, timeout=60), runtime=rt)
    assert again.result.started == () and again.result.urls == [url]   # running: found, not started again
    [row] = serve.status(env, runtimes=[rt])
    assert row.info.runtime == rt.name and row.info.state == "running" and row.responding
    assert serve.endpoints(env, runtimes=[rt]) == [url]
    assert rt.has_run()
    [gone] = serve.down(env, runtimes=[rt])
    assert gone.url == url and rt.status() == [] and serve.endpoints(env, runtimes=[rt]) == []
