"""`engine.quick_facts`: the docker-py-free engine probe used by `train --plan` agrees with docker-py."""

from __future__ import annotations

import pytest

from orchestrator.engine import quick_facts
from orchestrator.errors import DockerUnavailable


@pytest.mark.docker
def test_quick_facts_agree_with_docker_py(engine, busybox_image):
    facts = quick_facts(busybox_image)
    assert facts is not None and facts["image_present"] is True
    assert ("nvidia" in facts["runtimes"]) == engine.has_nvidia_runtime()
    assert quick_facts("flux-orch-test/trainplan-missing:none")["image_present"] is False


def test_quick_facts_unreachable_and_remote(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(DockerUnavailable) as e:
        quick_facts()
    assert "not running" in e.value.message
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert quick_facts() is None          # the caller falls back to docker-py
