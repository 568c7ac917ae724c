"""`comfyui up/down/status/logs` against the real Docker engine, with a busybox stand-in for ComfyUI."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.runtimes import docker_comfyui as server
from orchestrator.comfy.serverspec import LABEL_GPU, LABEL_URL, LABEL_WORKER, ServerOptions, user_dir
from orchestrator.containers import (LABEL_CONFIG, LABEL_PROJECT, LABEL_ROLE, ContainerSpec, invoking_user,
                                     project_id)
from orchestrator.errors import DockerError
from orchestrator.progress import RecordingSink
from tests.comfy_standin import standin_image

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[1]


def free_ports(n: int = 1) -> int:
    """A base port with n consecutive free ports on 127.0.0.1."""
    for _ in range(200):
        base = random.randint(20000, 45000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@pytest.fixture(scope="session")
def standins(session_engine, busybox_image):
    """Stand-in image tags: ok, slow (1.5 s start-up), never (never answers), crash (exits at once)."""
    return {"ok": standin_image(session_engine, "ok", 0.0), "slow": standin_image(session_engine, "ok", 1.5),
            "never": standin_image(session_engine, "never"), "crash": standin_image(session_engine, "crash")}


def ours(engine, project):
    """Our ComfyUI containers, listed with docker-py directly (tolerates one being removed meanwhile)."""
    labels = [f"{LABEL_PROJECT}={project_id(project.root)}", f"{LABEL_ROLE}=comfyui"]
    return engine.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)


def up_cli(run_cli, image, port, *extra):
    return run_cli("comfyui", "up", "--image", image, "--no-build", "--gpus", "none", "--port", str(port), *extra)


def test_up_publishes_on_loopback_with_labels_mounts_user_and_command(engine, standins, project, run_cli):
    (project.workflows / "base_flux.json").write_text("{}")
    port = free_ports()
    r = up_cli(run_cli, standins["ok"], port)
    assert r.code == 0, r.err
    url = f"http://127.0.0.1:{port}"
    assert r.out == url + "\n"
    assert "started" in r.err and "Workflows sidebar" in r.err and "NO authentication" not in r.err
    [c] = ours(engine, project)
    host = c.attrs["HostConfig"]
    assert host["PortBindings"] == {"8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    labels = c.labels
    assert labels[LABEL_URL] == url and labels[LABEL_WORKER] == "0" and labels[LABEL_GPU] == "none"
    assert len(labels[LABEL_CONFIG]) == 16
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in c.attrs["Mounts"]}
    root = str(project.root)
    assert mounts == {
        "/comfy/models/checkpoints": (f"{root}/models/checkpoints", False),
        "/comfy/models/text_encoders": (f"{root}/models/text_encoders", False),
        "/comfy/models/vae": (f"{root}/models/vae", False),
        "/comfy/models/loras": (f"{root}/models/loras", False),
        "/comfy/user": (f"{root}/.comfyui/user", True),
        "/comfy/user/default/workflows": (f"{root}/workflows", True),
        "/comfy/output": (f"{root}/outputs/comfyui", True),
        "/comfy/input": (f"{root}/input", True),
    }
    assert c.attrs["Config"]["User"] == invoking_user()
    # what the stand-in saw from inside the container
    rec = user_dir(project)
    assert (rec / "standin-argv").read_text().split() == [
        "main.py", "--listen", "0.0.0.0", "--port", "8188", "--base-directory", "/comfy",
        "--database-url", "sqlite:////comfy/user/comfyui.db", "--disable-auto-launch", "--cpu"]
    assert (rec / "standin-models").read_text().strip() == "ro"
    assert (rec / "standin-output").read_text().strip() == "rw"
    assert (rec / "standin-db").read_text().strip() == "ok" and (rec / "comfyui.db").exists()
    assert "base_flux.json" in (rec / "standin-workflows").read_text().split()


def test_runs_as_the_given_uid_gid_and_writes_user_files_as_it(engine, standins, project):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the project to another uid")
    for p in [project.root, *project.root.rglob("*")]:
        os.chown(p, 4321, 4322)
    port = free_ports()
    result = server.up(engine, project, ServerOptions(port=port, gpus="none"), image=standins["ok"],
                       build=False, user="4321:4322")
    assert result.started == (0,)
    rec = user_dir(project)
    assert (rec / "standin-id").read_text().strip() == "4321:4322"
    assert (rec / "comfyui.db").stat().st_uid == 4321
    assert (project.root / ".comfyui").stat().st_uid == 4321  # created by us for that user, not as root


def test_health_wait_follows_a_slow_start(engine, standins, project):
    port = free_ports()
    rep = RecordingSink()
    result = server.up(engine, project, ServerOptions(port=port, gpus="none"), image=standins["slow"],
                       build=False, reporter=rep)
    assert result.urls == [f"http://127.0.0.1:{port}"]
    assert any("waiting for ComfyUI worker 0" in u for u in rep.updates)
    assert rep.milestones[-1] == f"ComfyUI worker 0 is ready at http://127.0.0.1:{port}"


@pytest.mark.slow
def test_never_ready_times_out_with_the_log_tail_and_leaves_nothing(engine, standins, project, run_cli):
    r = up_cli(run_cli, standins["never"], free_ports(), "--timeout", "3")  # room to print its log line under load
    assert r.code == 1
    assert "did not answer" in r.err and "/system_stats within 3s" in r.err
    assert "  loading custom nodes forever" in r.err and "larger --timeout" in r.err
    assert ours(engine, project) == []


def test_crash_at_start_reports_exit_code_and_log_tail(engine, standins, project, run_cli):
    r = up_cli(run_cli, standins["crash"], free_ports())
    assert r.code == 1
    assert "exited while starting" in r.err and "(exit code 3)" in r.err
    assert "  RuntimeError: standin boom" in r.err
    assert "Traceback" not in r.err.split("last log lines:")[0]
    assert ours(engine, project) == []


def test_up_is_idempotent_and_a_changed_config_offers_recreate(engine, standins, project, run_cli):
    port = free_ports(2)
    assert up_cli(run_cli, standins["ok"], port).code == 0
    [first] = ours(engine, project)
    r = up_cli(run_cli, standins["ok"], port)
    assert r.code == 0 and r.out == f"http://127.0.0.1:{port}\n" and "already running" in r.err
    assert [c.id for c in ours(engine, project)] == [first.id]

    r = up_cli(run_cli, standins["ok"], port + 1)
    assert r.code == 2
    assert "different configuration" in r.err and "other settings: port" in r.err and "--recreate" in r.err
    assert [c.id for c in ours(engine, project)] == [first.id]

    r = up_cli(run_cli, standins["ok"], port + 1, "--recreate")
    assert r.code == 0 and r.out == f"http://127.0.0.1:{port + 1}\n", r.err
    [second] = ours(engine, project)
    assert second.id != first.id


def test_a_stopped_container_is_replaced(engine, standins, project, run_cli):
    port = free_ports()
    assert up_cli(run_cli, standins["ok"], port).code == 0
    [c] = ours(engine, project)
    engine.stop(c, grace=5)
    r = up_cli(run_cli, standins["ok"], port)
    assert r.code == 0 and "removing the stopped ComfyUI container" in r.err
    [new] = ours(engine, project)
    assert new.id != c.id and new.status == "running"


def test_port_taken_by_another_program_is_a_clear_error(engine, standins, project, run_cli):
    port = free_ports()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = up_cli(run_cli, standins["ok"], port)
    assert r.code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.err
    assert f"--port {port + 1}" in r.err and "Traceback" not in r.err
    assert ours(engine, project) == []


def test_listen_beyond_loopback_warns_loudly(engine, standins, project, run_cli):
    port = free_ports()
    r = up_cli(run_cli, standins["ok"], port, "--listen", "0.0.0.0")
    assert r.code == 0, r.err
    assert "warning: ComfyUI has NO authentication" in r.err and "ssh -N -L" in r.err
    assert r.out == f"http://127.0.0.1:{port}\n"
    [c] = ours(engine, project)
    assert c.attrs["HostConfig"]["PortBindings"] == {"8188/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}


def test_status_logs_and_down(engine, standins, project, run_cli):
    port = free_ports()
    assert up_cli(run_cli, standins["ok"], port).code == 0
    r = run_cli("comfyui", "status")
    assert r.code == 0
    header, _, row = r.out.splitlines()
    assert header.split() == ["WORKER", "URL", "STATE", "DEVICE", "QUEUE", "UPTIME", "RUNTIME", "NAME"]
    assert row.split()[:4] == ["0", f"http://127.0.0.1:{port}", "running", "cpu"]
    assert "1 running, 2 pending" in row and row.split()[-2] == "docker"
    [js] = json.loads(run_cli("comfyui", "status", "--json").out)
    assert js["queue_running"] == 1 and js["queue_pending"] == 2 and js["devices"] == ["cpu"]
    assert js["uptime_s"] >= 0 and js["responding"] is True

    r = run_cli("comfyui", "logs")
    assert r.code == 0 and "[comfy] To see the GUI go to: http://0.0.0.0:8188" in r.out.splitlines()
    assert run_cli("comfyui", "logs", "--tail", "1").out.count("\n") == 1

    r = run_cli("comfyui", "down")
    assert r.code == 0 and f"({f'http://127.0.0.1:{port}'})" in r.out
    assert ours(engine, project) == []
    assert run_cli("comfyui", "status").out.startswith("ComfyUI is not running")
    r = run_cli("comfyui", "down")
    assert r.code == 0 and "was not running" in r.err
    assert run_cli("comfyui", "logs").code == 1


def test_two_workers_and_discover_servers(engine, standins, project, run_cli):
    port = free_ports(2)
    r = up_cli(run_cli, standins["ok"], port, "--workers", "2")
    assert r.code == 0, r.err
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    assert r.out.split() == urls
    assert server.discover_servers(engine, project) == urls
    bindings = sorted(c.attrs["HostConfig"]["PortBindings"]["8188/tcp"][0]["HostPort"] for c in ours(engine, project))
    assert bindings == [str(port), str(port + 1)]
    assert "[comfy:1] To see the GUI" in run_cli("comfyui", "logs").out
    assert server.discover_servers(engine, project.__class__.at(project.root / "other")) == []
    assert run_cli("comfyui", "down").out.count("stopped docker ComfyUI") == 2
    assert server.discover_servers(engine, project) == []


def test_gpu_request_without_nvidia_runtime_is_a_clear_error(engine, standins, project, run_cli):
    if engine.has_nvidia_runtime():
        pytest.skip("this engine has the NVIDIA runtime")
    r = run_cli("comfyui", "up", "--image", standins["ok"], "--port", str(free_ports()))
    assert r.code == 1
    assert "no NVIDIA runtime" in r.err and "nvidia-ctk runtime configure" in r.err
    assert ours(engine, project) == []
    # and what the engine itself says when a GPU container is asked for anyway
    spec = ContainerSpec(image=standins["ok"], command=("true",), gpus="0,",
                         labels={LABEL_PROJECT: project_id(project.root), LABEL_ROLE: "comfyui"})
    with pytest.raises(DockerError) as e:
        engine.run(spec)
    assert "cannot give this container a GPU" in e.value.message and "nvidia-ctk" in e.value.hint


def test_missing_image_with_no_build_says_how_to_build(engine, project, run_cli):
    from orchestrator.images import comfy_image

    if engine.image_exists(comfy_image()):
        pytest.skip("the real ComfyUI image is built on this machine")
    r = run_cli("comfyui", "up", "--no-build", "--gpus", "none")
    assert r.code == 1 and "is not built yet" in r.err and "without --no-build" in r.err
    r = run_cli("comfyui", "up", "--image", "flux-orch-test/comfyserver-no-such:1", "--gpus", "none")
    assert r.code == 1 and "is not on this machine" in r.err


@pytest.mark.slow
def test_foreground_streams_logs_and_ctrl_c_stops_and_removes(engine, standins, project):
    port = free_ports()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "comfyui", "up", "--foreground",
         "--image", standins["ok"], "--no-build", "--gpus", "none", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}"
        for line in proc.stderr:
            if line.startswith("[comfy] To see the GUI"):
                break
        assert len(ours(engine, project)) == 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "stopping ComfyUI" in err
    assert ours(engine, project) == []


@pytest.mark.slow
def test_image_is_built_when_missing_from_a_context_holding_only_the_dockerfile(engine, busybox_image, tmp_path):
    df = tmp_path / "Dockerfile.inference"
    df.write_text(f"FROM {busybox_image}\nCOPY . /ctx\nRUN ls -A /ctx\nLABEL probe={random.random()}\n")
    (tmp_path / "models.bin").write_bytes(b"x" * 1000)  # next to the Dockerfile, must not be sent
    repo = "flux-orch-test/comfyserver-build"
    lines = []
    tag = server.ensure_image(engine, dockerfile=df, repo=repo, on_line=lines.append)
    try:
        from orchestrator.images import image_tag

        assert tag == image_tag(repo, df) and engine.image_exists(tag)
        steps = [(b.step, b.total) for b in lines if b.step]
        total = steps[0][1]  # our 4 lines (+ the engine's step for the build labels)
        assert total >= 4 and steps == [(i, total) for i in range(1, total + 1)]
        assert "Dockerfile.inference" in [b.text.strip() for b in lines] and not any("models.bin" in b.text
                                                                                      for b in lines)
        again = []
        assert server.ensure_image(engine, dockerfile=df, repo=repo, on_line=again.append) == tag and again == []
        server.ensure_image(engine, dockerfile=df, repo=repo, on_line=again.append, rebuild=True)
        assert [b.step for b in again if b.step] == list(range(1, total + 1))
        with pytest.raises(DockerError) as e:
            server.ensure_image(engine, dockerfile=tmp_path / "nope", repo=repo)
        assert "is missing" in e.value.message
    finally:
        engine.client.images.remove(tag, force=True)


def test_logs_follow_ends_when_the_server_stops(engine, standins, project):
    import threading

    port = free_ports()
    server.up(engine, project, ServerOptions(port=port, gpus="none"), image=standins["ok"], build=False)
    seen: list[tuple[int, str]] = []
    attached = threading.Event()

    def follow() -> None:
        for line in server.log_lines(engine, project, follow=True):
            seen.append(line)
            attached.set()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert attached.wait(30)                 # following before the stop, not racing it to a removed container
    server.down(engine, project, grace=10)
    t.join(timeout=20)
    assert not t.is_alive()
    assert (0, "To see the GUI go to: http://0.0.0.0:8188") in seen and (0, "Stopped server") in seen


def test_port_held_by_another_projects_comfyui_names_that_project(engine, standins, project, run_cli, tmp_path):
    from orchestrator.layout import Layout

    other = Layout.at(tmp_path / "other-project")
    port = free_ports()
    server.up(engine, other, ServerOptions(port=port, gpus="none"), image=standins["ok"], build=False)
    try:
        r = up_cli(run_cli, standins["ok"], port)
        assert r.code == 1
        assert f"port {port} is already used by the ComfyUI of another project" in r.err
        assert f"--project-dir {other.root} comfyui down" in r.err
    finally:
        server.down(engine, other, grace=5)


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_start_removes_the_container(engine, standins, project):
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "comfyui", "up",
         "--image", standins["never"], "--no-build", "--gpus", "none", "--port", str(free_ports()),
         "--timeout", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while not ours(engine, project) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(ours(engine, project)) == 1
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and out == ""
    assert ours(engine, project) == []
