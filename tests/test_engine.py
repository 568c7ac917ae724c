"""The Docker seam against the real engine on this machine (tiny local images only)."""

from __future__ import annotations

import os
import time

import pytest

from orchestrator import containers
from orchestrator import engine as eng
from orchestrator.containers import LABEL_PROJECT, ContainerSpec, Mount, gpu_request, project_id
from orchestrator.errors import DockerError, DockerUnavailable


def test_run_kwargs_is_pure_and_complete(tmp_path):
    spec = ContainerSpec(
        image="img:1", command=("a", "b c"), name="n", labels={"k": "v"},
        mounts=(Mount(tmp_path, "/data"), Mount(tmp_path / "o", "/out", read_only=False)),
        environment={"X": "1"}, user="1000:1000", working_dir="/w", gpus="0,1",
        ports={8188: ("127.0.0.1", 8190)}, ipc_host=True, ulimits={"memlock": (-1, -1)},
    )
    kw = eng.run_kwargs(spec)
    assert kw["command"] == ["a", "b c"]
    assert kw["volumes"] == {str(tmp_path): {"bind": "/data", "mode": "ro"},
                             str(tmp_path / "o"): {"bind": "/out", "mode": "rw"}}
    assert kw["ports"] == {"8188/tcp": ("127.0.0.1", 8190)}
    assert kw["ipc_mode"] == "host"
    assert kw["device_requests"][0]["DeviceIDs"] == ["0", "1"]
    assert kw["device_requests"][0]["Capabilities"] == [["gpu"]]
    assert kw["ulimits"][0]["Name"] == "memlock"
    assert kw["user"] == "1000:1000" and kw["detach"] is True


@pytest.mark.parametrize("value,expected", [("all", {"count": -1}), ("2", {"count": 2}),
                                            ("0,3", {"device_ids": ["0", "3"]}),
                                            ("GPU-1a2b", {"device_ids": ["GPU-1a2b"]})])
def test_gpu_request(value, expected):
    assert gpu_request(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "x", "", "0,x", ",", "gpu0,gpu1"])
def test_gpu_request_rejects_nonsense(value):
    with pytest.raises(ValueError):
        gpu_request(value)


def test_config_hash_ignores_key_order():
    assert containers.config_hash({"a": 1, "b": [1, 2]}) == containers.config_hash({"b": [1, 2], "a": 1})
    assert containers.config_hash({"a": 1}) != containers.config_hash({"a": 2})


def test_unreachable_engine_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(DockerUnavailable) as e:
        eng.connect(timeout=2)
    assert "not running" in e.value.message
    assert "systemctl start docker" in e.value.hint


def test_a_malformed_docker_host_is_named_in_the_hint(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:99999")
    with pytest.raises(DockerUnavailable) as e:
        eng.connect(timeout=2)
    assert "tcp://127.0.0.1:99999" in e.value.message
    assert "DOCKER_HOST=tcp://127.0.0.1:99999 is right" in (e.value.hint or "")


@pytest.mark.docker
def test_run_find_logs_stop_remove(engine, busybox_image, project):
    labels = {containers.LABEL_PROJECT: containers.project_id(project.root), containers.LABEL_ROLE: "probe"}
    out = project.root / "out"
    out.mkdir()
    spec = ContainerSpec(
        image=busybox_image,
        command=("sh", "-c", "echo hello; id -u > /out/uid; trap 'echo bye; exit 0' INT; "
                 "while true; do sleep 0.1; done"),
        labels=labels, mounts=(Mount(out, "/out", read_only=False),), user=containers.invoking_user(),
    )
    c = engine.run(spec)
    deadline = time.time() + 10
    while not ((out / "uid").exists() and (out / "uid").read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    assert (out / "uid").read_text().strip() == str(os.getuid())
    assert [x.id for x in engine.find(labels)] == [c.id]
    engine.stop(c, signal="SIGINT", grace=10)
    assert engine.wait(c) == 0
    assert engine.tail(c) == ["hello", "bye"]
    engine.remove(c)
    assert engine.find(labels) == []
    engine.remove(c)  # removing twice is fine


@pytest.mark.docker
def test_stop_kills_after_grace(engine, busybox_image, project):
    labels = {LABEL_PROJECT: project_id(project.root)}
    c = engine.run(ContainerSpec(image=busybox_image, labels=labels,
                                 command=("sh", "-c", "trap '' INT TERM; while true; do sleep 0.1; done")))
    t0 = time.monotonic()
    engine.stop(c, signal="SIGINT", grace=1)
    assert time.monotonic() - t0 < 15
    assert engine.inspect(c).state == "exited"


@pytest.mark.docker
def test_gpu_request_without_nvidia_runtime_is_explained(engine, busybox_image, project):
    assert not engine.has_nvidia_runtime()  # this machine has no NVIDIA runtime
    with pytest.raises(DockerError) as e:
        engine.require_gpu_support()
    assert "NVIDIA" in e.value.message and "nvidia-ctk" in e.value.hint
    labels = {LABEL_PROJECT: project_id(project.root)}
    with pytest.raises(DockerError) as e:
        engine.run(ContainerSpec(image=busybox_image, command=("true",), gpus="all", labels=labels))
    assert "GPU" in e.value.message and "NVIDIA Container Toolkit" in e.value.hint


@pytest.mark.docker
def test_build_failure_keeps_evidence(engine, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo about-to-fail && false\n")
    lines = []
    with pytest.raises(DockerError) as e:
        engine.build(tmp_path, "Dockerfile", "flux-orch-test/broken:1", on_line=lines.append)
    assert "building image flux-orch-test/broken:1 failed" in e.value.message
    assert any("about-to-fail" in d for d in e.value.details)
    assert any(line.step == 2 and line.total == 2 for line in lines)


@pytest.mark.docker
def test_missing_image_is_explained(engine, project):
    with pytest.raises(DockerError) as e:
        engine.run(ContainerSpec(image="flux-orch-test/never-built:0",
                                 labels={containers.LABEL_PROJECT: containers.project_id(project.root)}))
    assert "not on this machine" in e.value.message


@pytest.mark.docker
def test_failed_start_leaves_no_container(engine, busybox_image, project):
    labels = {LABEL_PROJECT: project_id(project.root)}
    with pytest.raises(DockerError):
        engine.run(ContainerSpec(image=busybox_image, command=("true",), gpus="all", labels=labels))
    assert engine.find(labels) == []
