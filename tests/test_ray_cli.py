"""The `ray` runtime's command line without a cluster: the missing extra, bad or unreachable addresses."""

from __future__ import annotations

import sys

import pytest

from tests.ray_cluster import free_port
from tests.test_batch_cli import copy_workflows, write_jobs


@pytest.fixture
def no_ray(monkeypatch):
    """This Python without the `ray` extra: `import ray` fails as it does when it is not installed."""
    monkeypatch.setitem(sys.modules, "ray", None)


def test_batch_run_ray_without_the_extra_names_it(run_cli, project, no_ray):
    copy_workflows(project)
    r = run_cli("batch", "run", str(write_jobs(project)), "--ray", "127.0.0.1:6379")
    assert r.code == 2, r.err
    assert "need Ray, which is not installed" in r.err
    assert "pip install -e '.[ray]'" in r.err and "Traceback" not in r.err
    assert not (project.root / "outputs").exists()


def test_comfyui_up_ray_without_the_extra_names_it(run_cli, project, no_ray):
    r = run_cli("comfyui", "up", "--runtime", "ray", "--address", f"127.0.0.1:{free_port()}",
                "--comfyui", str(project.root))
    assert r.code == 2 and "pip install -e '.[ray]'" in r.err


def test_status_without_the_extra_or_a_cluster_lists_no_ray_workers(run_cli, project, no_ray, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    r = run_cli("comfyui", "status", "--json")
    assert '"runtime": "ray"' not in r.out


def test_up_needs_an_address_and_a_checkout(run_cli, project, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    r = run_cli("comfyui", "up", "--runtime", "ray", "--comfyui", str(project.root))
    assert r.code == 2 and "--runtime ray needs the cluster's address: --address HOST:6379" in r.err
    r = run_cli("comfyui", "up", "--runtime", "ray", "--address", "127.0.0.1:6379")
    assert r.code == 2 and "--runtime ray needs --comfyui DIR" in r.err and "same path on every node" in r.err
    r = run_cli("comfyui", "up", "--runtime", "ray", "--address", "nohost", "--comfyui", str(project.root))
    assert r.code == 2 and "'nohost' is not HOST:PORT" in r.err


def test_unreachable_cluster_is_a_quick_runtime_error(run_cli, project):
    pytest.importorskip("ray")
    port = free_port()  # nothing listens there
    copy_workflows(project)
    r = run_cli("batch", "run", str(write_jobs(project)), "--ray", f"127.0.0.1:{port}")
    assert r.code == 1, r.err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in r.err and "ray start --head" in r.err


def test_server_and_ray_together_are_refused(run_cli, project):
    copy_workflows(project)
    r = run_cli("batch", "run", str(write_jobs(project)), "--ray", "127.0.0.1:6379", "--server", "http://127.0.0.1:9")
    assert r.code == 2 and "give --server or --ray, not both" in r.err
