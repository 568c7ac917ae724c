"""`doctor` against the real Docker engine, an unreachable one, a local Hub and stand-in programs."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections import namedtuple

import pytest

from orchestrator import doctor, models
from tests.test_download import TOKEN, UNGRANTED, _closed_port, hub  # noqa: F401  (hub is a fixture)


def _checks(r) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(r.out)["checks"]}


@pytest.mark.docker
def test_doctor_against_the_real_engine_says_there_is_no_nvidia_runtime(run_cli, session_engine):
    r = run_cli("doctor")
    assert "Traceback" not in r.err
    lines = {line.split("  ")[0]: line for line in r.out.splitlines() if line and not line.startswith("-")}
    assert " ok " in lines["docker"] and "reachable" in lines["docker"]
    if session_engine.has_nvidia_runtime():
        pytest.skip("this engine has an NVIDIA runtime")
    assert "FAIL" in lines["nvidia runtime"] and "Docker has no NVIDIA runtime" in lines["nvidia runtime"]
    assert "nvidia-ctk runtime configure" in r.out  # the fix
    assert r.code == 1
    assert "not ready" in r.out


@pytest.mark.docker
def test_doctor_json_for_scripts(run_cli):
    r = run_cli("doctor", "--json")
    doc = json.loads(r.out)
    assert doc["ok"] is False and r.code == 1
    checks = _checks(r)
    for name in ("python", "docker", "nvidia runtime", "gpus", "disk", "model flux1-dev", "model ae",
                 "model clip_l", "model t5xxl_fp16", "tokenizer clip_l", "tokenizer t5xxl", "hf token", "port",
                 "train image", "comfyui image"):
        assert name in checks, name
    assert all(c["status"] in ("ok", "warn", "fail", "info") for c in checks.values())
    assert all(c["fix"] for c in checks.values() if c["status"] == "fail")
    assert checks["model flux1-dev"]["status"] == "fail" and checks["model flux1-dev"]["blocking"]
    assert "python -m orchestrator download" in checks["model flux1-dev"]["fix"]
    assert checks["train image"]["status"] in ("ok", "info")


def test_doctor_with_an_unreachable_docker_host(run_cli, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    r = run_cli("doctor", "--json")
    checks = _checks(r)
    assert r.code == 1
    assert checks["docker"]["status"] == "fail"
    assert "not running" in checks["docker"]["summary"]
    assert "systemctl start docker" in checks["docker"]["fix"]
    assert checks["nvidia runtime"]["status"] == "info" and "not checked" in checks["nvidia runtime"]["summary"]
    r = run_cli("doctor")
    assert "Traceback" not in r.err and "docker" in r.out and "FAIL" in r.out


def test_models_and_tokenizers_after_download(hub, run_cli, project, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    assert run_cli("download").code == 0
    checks = _checks(run_cli("doctor", "--json"))
    for m in models.model_set("fp16"):
        assert checks[f"model {m.name}"]["status"] == "ok"
    assert checks["tokenizer clip_l"]["status"] == checks["tokenizer t5xxl"]["status"] == "ok"
    assert checks["hf token"]["status"] == "ok" and "HF_TOKEN" in checks["hf token"]["summary"]
    # a file cut short on disk is a blocking failure with the fix
    path = models.AE.path(project)
    path.write_bytes(path.read_bytes()[:1000])
    ae = _checks(run_cli("doctor", "--json"))["model ae"]
    assert ae["status"] == "fail" and "incomplete" in ae["summary"] and "--only ae" in ae["fix"]
    # a file copied in by hand (never recorded) works but is flagged
    (project.models / models.MANIFEST_NAME).unlink()
    ae = _checks(run_cli("doctor", "--json"))["model ae"]
    assert ae["status"] == "warn" and "--verify" in ae["fix"]


def test_fp8_variant_is_detected(project):
    models.T5XXL_FP8.path(project).write_bytes(b"x" * 10)
    assert doctor.detect_variant(project) == "fp8"
    models.T5XXL_FP16.path(project).write_bytes(b"x" * 10)
    assert doctor.detect_variant(project) == "fp16"


def test_online_token_checks(hub, run_cli, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    checks = _checks(run_cli("doctor", "--json", "--online"))
    assert checks["hub"]["status"] == "ok" and hub.url in checks["hub"]["summary"]
    assert checks["hf token"]["status"] == "ok" and "logged in as alice" in checks["hf token"]["summary"]
    assert checks["flux licence"]["status"] == "ok"
    monkeypatch.setenv("HF_TOKEN", UNGRANTED)
    checks = _checks(run_cli("doctor", "--json", "--online"))
    assert "logged in as bob" in checks["hf token"]["summary"]
    assert checks["flux licence"]["status"] == "fail"
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in checks["flux licence"]["fix"]
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    r = run_cli("doctor", "--json", "--online")
    checks = _checks(r)
    assert checks["hf token"]["status"] == "fail" and "rejected" in checks["hf token"]["summary"]
    assert "hf_not_a_real_token" not in r.out + r.err
    # offline (the default), a token is only reported present
    checks = _checks(run_cli("doctor", "--json"))
    assert "not checked online" in checks["hf token"]["summary"]
    assert "flux licence" not in checks


def _fake_nvidia_smi(tmp_path, monkeypatch, output: str, code: int = 0) -> None:
    """A stand-in `nvidia-smi` program on PATH printing what the real one prints for the query."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def _probes() -> doctor.Probes:
    return doctor.Probes(connect=lambda: None)


def test_gpus_listed_from_nvidia_smi(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, "0, NVIDIA GeForce RTX 4090, 24564\n1, NVIDIA A100-SXM4-80GB, 81920")
    c = doctor.check_gpus(_probes(), engine_has_nvidia=True)
    assert c.status == "ok"
    assert c.summary == "GPU 0: NVIDIA GeForce RTX 4090 24 GiB; GPU 1: NVIDIA A100-SXM4-80GB 80 GiB"


def test_small_gpu_is_a_warning_with_the_low_memory_fix(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, "0, NVIDIA GeForce RTX 4070 Ti, 12282")
    c = doctor.check_gpus(_probes(), engine_has_nvidia=True)
    assert c.status == "warn" and "12 GiB" in c.summary and "fp8" in c.fix


def test_broken_driver_is_reported(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, "Failed to initialize NVML: Driver/library version mismatch", code=18)
    c = doctor.check_gpus(_probes(), engine_has_nvidia=True)
    assert c.status == "warn" and "Driver/library version mismatch" in c.summary


def test_port_in_use_is_a_warning():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = doctor.check_port(doctor.port_is_free, port)
        assert c.status == "warn" and str(port) in c.summary
    assert doctor.check_port(doctor.port_is_free, port).status == "ok"


def test_disk_too_small_for_the_missing_models_is_blocking(project):
    usage = namedtuple("usage", "total used free")
    statuses = [models.local_status(project, m) for m in models.model_set("fp16")]
    c = doctor.check_disk(project, statuses, lambda p: usage(0, 0, 10 * 1024 ** 3))
    assert c.status == "fail" and "need" in c.summary and c.fix
    c = doctor.check_disk(project, statuses, lambda p: usage(0, 0, 40 * 1024 ** 3))
    assert c.status == "warn"
    c = doctor.check_disk(project, statuses, lambda p: usage(0, 0, 400 * 1024 ** 3))
    assert c.status == "ok"


def test_old_python_is_blocking():
    assert doctor.check_python((3, 9, 18)).status == "fail"
    assert doctor.check_python((3, 12, 1)).status == "ok"


@pytest.mark.docker
def test_toolkit_installed_but_not_registered(session_engine):
    if session_engine.has_nvidia_runtime():
        pytest.skip("this engine has an NVIDIA runtime")
    c = doctor.check_nvidia_runtime(session_engine, toolkit="/usr/bin/nvidia-ctk")
    assert c.status == "fail" and "installed (/usr/bin/nvidia-ctk) but not registered" in c.summary
    assert "nvidia-ctk runtime configure" in c.fix


def test_online_without_network(run_cli, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    checks = _checks(run_cli("doctor", "--json", "--online"))
    assert checks["hub"]["status"] == "fail" and "cannot reach the Hugging Face Hub" in checks["hub"]["summary"]
    assert "hf token" not in checks  # cannot be checked without the Hub
