"""`comfyui up --runtime local`: a stand-in ComfyUI checkout run as a real background process."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest

from orchestrator.runtimes import local_comfyui as localserver
from tests.comfy_standin import fake_checkout
from tests.gpu_fakes import fake_nvidia_smi
from tests.test_comfy_server import free_ports


@pytest.fixture
def checkout(tmp_path):
    return fake_checkout(tmp_path / "ComfyUI")


@pytest.fixture
def stop_local(project):
    yield
    localserver.down(project, grace=2)


def up_local(run_cli, checkout, port, *extra):
    return run_cli("comfyui", "up", "--runtime", "local", "--comfyui", str(checkout), "--python", sys.executable,
                   "--gpus", "none", "--port", str(port), *extra)


def test_local_up_status_logs_down(project, run_cli, checkout, stop_local):
    (project.workflows / "finetuned_flux.json").write_text("{}")
    port = free_ports()
    url = f"http://127.0.0.1:{port}"
    r = up_local(run_cli, checkout, port)
    assert r.code == 0, r.err
    assert r.out == url + "\n" and "started" in r.err
    srv = localserver.running(project)
    assert srv is not None and srv.url == url
    assert json.loads(localserver.pid_file(project).read_text())["pid"] == srv.pid
    user = localserver.state_dir(project) / "user"
    argv = json.loads((user / "standin-argv.json").read_text())
    assert argv[1:5] == ["--listen", "127.0.0.1", "--port", str(port)]
    assert "--cpu" in argv and f"sqlite:///{user / 'comfyui.db'}" in argv
    assert "finetuned_flux.json" in json.loads((user / "standin-workflows.json").read_text())
    assert (checkout / "custom_nodes").is_dir()

    r = up_local(run_cli, checkout, port)  # idempotent
    assert r.code == 0 and r.out == url + "\n" and "already running" in r.err
    assert localserver.running(project).pid == srv.pid

    r = run_cli("comfyui", "status", "--json")
    [row] = [x for x in json.loads(r.out) if x["runtime"] == "local"]
    assert row["url"] == url and row["queue_pending"] == 2 and row["responding"] is True
    r = run_cli("comfyui", "logs")
    assert "[comfy] starting stand-in" in r.out.splitlines()

    r = run_cli("comfyui", "down")
    assert r.code == 0 and f"stopped local ComfyUI pid {srv.pid} (" in r.out
    assert localserver.running(project) is None and not localserver.pid_file(project).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(srv.pid, 0)


def test_local_crash_shows_the_log_tail(project, run_cli, checkout, stop_local, monkeypatch):
    monkeypatch.setenv("STANDIN_MODE", "crash")
    r = up_local(run_cli, checkout, free_ports())
    assert r.code == 1
    assert "ComfyUI (local) exited while starting" in r.err and "  RuntimeError: local standin boom" in r.err
    assert localserver.running(project) is None


@pytest.mark.slow
def test_local_timeout_stops_the_process(project, run_cli, checkout, stop_local, monkeypatch):
    monkeypatch.setenv("STANDIN_DELAY", "30")
    r = up_local(run_cli, checkout, free_ports(), "--timeout", "3")   # a Python start-up to print, under load
    assert r.code == 1 and "did not answer" in r.err and "  starting stand-in" in r.err
    assert localserver.running(project) is None


def test_local_needs_a_checkout_and_a_free_port(project, run_cli, checkout, tmp_path):
    r = run_cli("comfyui", "up", "--runtime", "local", "--gpus", "none")
    assert r.code == 2 and "--comfyui DIR" in r.err
    r = up_local(run_cli, tmp_path, free_ports())
    assert r.code == 2 and "is not a ComfyUI checkout (no main.py)" in r.err
    port = free_ports()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = up_local(run_cli, checkout, port)
    assert r.code == 1 and f"port {port} on 127.0.0.1 is already in use" in r.err


def test_a_stale_pid_file_is_ignored(project):
    localserver.state_dir(project).mkdir(parents=True)
    localserver.pid_file(project).write_text(json.dumps({
        "pid": os.getpid(), "url": "http://127.0.0.1:1", "comfyui": "/x", "python": "py",
        "argv": ["py", "/nowhere/ComfyUI/main.py"], "started": 0, "log": "x"}))
    assert localserver.running(project) is None  # our own pid, but not running that main.py
    assert not localserver.pid_file(project).exists()


def test_local_status_and_down_work_without_docker(project, run_cli, checkout, stop_local, monkeypatch, tmp_path):
    port = free_ports()
    assert up_local(run_cli, checkout, port).code == 0
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    r = run_cli("comfyui", "status")
    assert r.code == 0 and f"http://127.0.0.1:{port}" in r.out and "local" in r.out
    assert run_cli("comfyui", "logs", "--tail", "1").code == 0
    r = run_cli("comfyui", "down")
    assert r.code == 0 and "stopped local ComfyUI" in r.out
    r = run_cli("comfyui", "status")  # nothing local any more: the missing engine is the answer
    assert r.code == 1 and "Docker engine is not running" in r.err


def test_health_probe_ignores_http_proxy_settings(project, run_cli, checkout, stop_local, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a proxy that refuses every connection
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    r = up_local(run_cli, checkout, free_ports(), "--timeout", "20")
    assert r.code == 0, r.err


def test_local_python_that_does_not_exist_is_a_usage_error(project, run_cli, checkout, tmp_path):
    for python in (str(tmp_path / "no-venv" / "bin" / "python"), str(checkout / "main.py")):  # missing; not executable
        r = run_cli("comfyui", "up", "--runtime", "local", "--comfyui", str(checkout), "--python", python,
                    "--gpus", "none", "--port", str(free_ports()))
        assert r.code == 2, r.err
        assert f"error: --python {python}: no such program" in r.err
    assert not localserver.pid_file(project).exists()


def _environ(pid: int) -> dict[str, str]:
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


def test_local_workers_one_gpu_each(project, run_cli, checkout, stop_local, monkeypatch, tmp_path):
    """`comfyui up --runtime local --workers 2`: two processes, GPU i and port+i each; status, logs, down see both."""
    fake_nvidia_smi(tmp_path / "bin", ["NVIDIA H200", "NVIDIA H200"], monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    port = free_ports(2)
    r = run_cli("comfyui", "up", "--runtime", "local", "--comfyui", str(checkout), "--python", sys.executable,
                "--port", str(port), "--workers", "2")
    assert r.code == 0, r.err
    assert r.out.split() == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    assert "worker 1 (local, pid" in r.err and "CUDA_VISIBLE_DEVICES=1" in r.err
    workers = localserver.running_all(project)
    assert [i for i, _ in workers] == [0, 1]
    for i, srv in workers:
        assert _environ(srv.pid)["CUDA_VISIBLE_DEVICES"] == str(i)
        assert srv.argv[srv.argv.index("--port") + 1] == str(port + i)
    temps = {srv.argv[srv.argv.index("--temp-directory") + 1] for _, srv in workers}
    assert len(temps) == 2                       # ComfyUI empties its temp folder at start: one each
    r = run_cli("comfyui", "status", "--json")
    assert sorted(row["url"] for row in json.loads(r.out) if row["runtime"] == "local") == \
        [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    assert run_cli("comfyui", "logs", "--worker", "1").out.startswith("[comfy:1] starting stand-in")
    r = run_cli("comfyui", "down")
    assert r.code == 0 and r.out.count("stopped local ComfyUI") == 2
    assert localserver.running_all(project) == []


def test_more_workers_than_gpus_is_a_usage_error(project, run_cli, checkout, stop_local, monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", ["NVIDIA H200"], monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    r = run_cli("comfyui", "up", "--runtime", "local", "--comfyui", str(checkout), "--python", sys.executable,
                "--port", str(free_ports(2)), "--workers", "2")
    assert r.code == 2 and "error: --workers 2 (one GPU each): 2 GPU(s) needed, 1 GPU (nvidia-smi)" in r.err
    assert "use --workers 1 or fewer" in r.err
    assert localserver.running_all(project) == [] and not localserver.pid_file(project).exists()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")   # refused before the engine is asked
    r = run_cli("comfyui", "up", "--workers", "3", "--port", str(free_ports(3)))
    assert r.code == 2 and "--workers 3 (one GPU each): 3 GPU(s) needed, 1 GPU (nvidia-smi)" in r.err
    r = run_cli("comfyui", "up", "--gpus", "0,1", "--port", str(free_ports()))
    assert r.code == 2 and "--gpus 0,1: 2 GPU(s) needed, 1 GPU (nvidia-smi)" in r.err and "device=0" in r.err
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")   # a scheduler that gave this job no GPU
    r = run_cli("comfyui", "up", "--runtime", "local", "--comfyui", str(checkout), "--python", sys.executable,
                "--gpus", "device=0", "--port", str(free_ports()))
    assert r.code == 2 and "CUDA_VISIBLE_DEVICES='' allows 0" in r.err and "unset it" in r.err


def test_speed_fast_starts_comfyui_with_the_measured_fp8_flags_and_comfy_args_follow(project, run_cli, checkout,
                                                                                     stop_local):
    port = free_ports()
    r = up_local(run_cli, checkout, port, "--speed", "fast", "--comfy-arg=--highvram")
    assert r.code == 0, r.err
    argv = json.loads((localserver.state_dir(project) / "user" / "standin-argv.json").read_text())
    i = argv.index("--fast")
    assert argv[i:i + 4] == ["--fast", "fp8_matrix_mult", "--fp8_e4m3fn-unet", "--highvram"]


def test_speed_standard_adds_no_flags_and_an_unknown_speed_is_a_usage_error(project, run_cli, checkout, stop_local):
    port = free_ports()
    r = up_local(run_cli, checkout, port)
    assert r.code == 0, r.err
    argv = json.loads((localserver.state_dir(project) / "user" / "standin-argv.json").read_text())
    assert "--fast" not in argv and not any(a.startswith("--fp8") for a in argv)
    r = up_local(run_cli, checkout, port, "--speed", "max")
    assert r.code == 2 and "--speed" in r.err and "Traceback" not in r.err
