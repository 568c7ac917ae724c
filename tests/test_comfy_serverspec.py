"""The pure ComfyUI server plan (specs by equality) and Dockerfile.inference's pins and structure."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from orchestrator import images
from orchestrator.comfy import serverspec
from orchestrator.runtimes import local_comfyui as localserver
from orchestrator.comfy.serverspec import ServerOptions
from orchestrator.containers import LABEL_CONFIG, LABEL_PROJECT, LABEL_ROLE, Mount, project_id
from orchestrator.engine import run_kwargs
from orchestrator.errors import UsageError

IMAGE = "flux-comfyui:test"


def test_default_plan_is_one_loopback_worker_with_all_gpus(project):
    [w] = serverspec.plan(project, ServerOptions(), IMAGE, "1000:1000")
    assert w.url == "http://127.0.0.1:8188" and w.host_port == 8188 and w.gpu == "all"
    s = w.spec
    assert s.ports == {8188: ("127.0.0.1", 8188)}
    assert s.user == "1000:1000" and s.working_dir == "/opt/ComfyUI" and s.stop_signal == "SIGINT"
    assert s.command == ("python", "main.py", "--listen", "0.0.0.0", "--port", "8188", "--base-directory", "/comfy",
                         "--database-url", "sqlite:////comfy/user/comfyui.db", "--disable-auto-launch")
    assert s.labels[LABEL_ROLE] == "comfyui" and s.labels[LABEL_PROJECT] == project_id(project.root)
    assert s.name == f"flux-comfyui-{project_id(project.root)}-0"
    kw = run_kwargs(s)
    assert kw["device_requests"][0]["Count"] == -1 and kw["device_requests"][0]["Capabilities"] == [["gpu"]]
    assert kw["ports"] == {"8188/tcp": ("127.0.0.1", 8188)}
    assert kw["ipc_mode"] == "host"


def test_mounts_models_read_only_and_user_data_writable(project):
    [w] = serverspec.plan(project, ServerOptions(), IMAGE, "1:1")
    root = project.root
    assert w.spec.mounts == (
        Mount(root / "models/checkpoints", "/comfy/models/checkpoints", True),
        Mount(root / "models/text_encoders", "/comfy/models/text_encoders", True),
        Mount(root / "models/vae", "/comfy/models/vae", True),
        Mount(root / "models/loras", "/comfy/models/loras", True),
        Mount(root / ".comfyui/user", "/comfy/user", False),
        Mount(root / "workflows", "/comfy/user/default/workflows", False),
        Mount(root / "outputs" / "comfyui", "/comfy/output", False),
        Mount(root / "input", "/comfy/input", False),
    )
    # the nested workflows mount point exists on the host before docker would create it as root
    assert root / ".comfyui/user/default/workflows" in serverspec.writable_dirs(project)


def test_two_workers_get_consecutive_ports_and_one_gpu_each(project):
    ws = serverspec.plan(project, ServerOptions(workers=2), IMAGE, "1:1")
    assert [w.host_port for w in ws] == [8188, 8189]
    assert [w.url for w in ws] == ["http://127.0.0.1:8188", "http://127.0.0.1:8189"]
    assert [w.spec.ports for w in ws] == [{8188: ("127.0.0.1", 8188)}, {8188: ("127.0.0.1", 8189)}]
    assert [run_kwargs(w.spec)["device_requests"][0]["DeviceIDs"] for w in ws] == [["0"], ["1"]]
    assert [w.spec.name[-2:] for w in ws] == ["-0", "-1"]
    assert len({w.spec.labels[LABEL_CONFIG] for w in ws}) == 2


def test_workers_take_listed_gpu_ids(project):
    ws = serverspec.plan(project, ServerOptions(workers=2, gpus="2,5", port=9000), IMAGE, "1:1")
    assert [w.gpu for w in ws] == ["2", "5"]
    assert [run_kwargs(w.spec)["device_requests"][0]["DeviceIDs"] for w in ws] == [["2"], ["5"]]
    assert [w.host_port for w in ws] == [9000, 9001]


@pytest.mark.parametrize("gpus,label,wanted", [
    ("all", "all", {"Count": -1, "DeviceIDs": []}), ("2", "2", {"Count": 2, "DeviceIDs": []}),
    ("device=1", "1", {"Count": 0, "DeviceIDs": ["1"]}), ("0,3", "0,3", {"Count": 0, "DeviceIDs": ["0", "3"]}),
])
def test_one_worker_gpu_selections(project, gpus, label, wanted):
    [w] = serverspec.plan(project, ServerOptions(gpus=gpus), IMAGE, "1:1")
    assert w.gpu == label and w.spec.labels[serverspec.LABEL_GPU] == label
    dr = run_kwargs(w.spec)["device_requests"][0]
    assert {"Count": dr.get("Count"), "DeviceIDs": dr.get("DeviceIDs")} == wanted


def test_gpus_none_runs_on_cpu_without_device_requests(project):
    [w] = serverspec.plan(project, ServerOptions(gpus="none"), IMAGE, "1:1")
    assert w.spec.command[-1] == "--cpu"
    kw = run_kwargs(w.spec)
    assert "device_requests" not in kw and "ipc_mode" not in kw


@pytest.mark.parametrize("options,needle", [
    (ServerOptions(listen="localhost"), "--listen"),
    (ServerOptions(port=70000), "--port"),
    (ServerOptions(port=65535, workers=2), "--port"),
    (ServerOptions(workers=0), "--workers"),
    (ServerOptions(gpus="x"), "--gpus"),
    (ServerOptions(gpus="0"), "--gpus"),
    (ServerOptions(gpus="device="), "--gpus"),
    (ServerOptions(gpus="device=x"), "--gpus"),
    (ServerOptions(gpus="0,x"), "--gpus"),
    (ServerOptions(gpus="1,2,3", workers=2), "--workers 2 needs 2 GPU ids"),
    (ServerOptions(gpus="1", workers=2), "--workers 2 needs 2 GPU ids"),
])
def test_bad_options_are_usage_errors(options, needle):
    with pytest.raises(UsageError) as e:
        options.validate()
    assert needle in e.value.message


def test_exposed_and_probe_address():
    assert not ServerOptions().exposed
    assert ServerOptions(listen="0.0.0.0").exposed and ServerOptions(listen="192.168.1.5").exposed
    assert serverspec.server_url("0.0.0.0", 8188) == "http://127.0.0.1:8188"
    assert serverspec.server_url("::", 8188) == "http://[::1]:8188"
    assert serverspec.server_url("10.0.0.2", 8190) == "http://10.0.0.2:8190"


def test_config_hash_and_changed_settings(project):
    a = serverspec.plan(project, ServerOptions(), IMAGE, "1:1")[0].spec.labels
    b = serverspec.plan(project, ServerOptions(port=8190), IMAGE, "1:1")[0].spec.labels
    assert a[LABEL_CONFIG] != b[LABEL_CONFIG]
    assert serverspec.changed_settings(a[serverspec.LABEL_SETTINGS], json.loads(b[serverspec.LABEL_SETTINGS])) \
        == ["port"]
    assert serverspec.plan(project, ServerOptions(), IMAGE, "2:2")[0].spec.labels[LABEL_CONFIG] == a[LABEL_CONFIG]


# -- local runtime (pure parts) ------------------------------------------------------------------

def test_local_command_and_model_paths(project, tmp_path):
    d = localserver.state_dir(project)
    argv = localserver.command(project, tmp_path / "ComfyUI", "/py", ServerOptions(gpus="none", port=8200))
    assert argv == ["/py", str(tmp_path / "ComfyUI/main.py"), "--listen", "127.0.0.1", "--port", "8200",
                    "--output-directory", str(project.comfy_outputs), "--input-directory", str(project.inputs),
                    "--temp-directory", str(d / "temp"), "--user-directory", str(d / "user"),
                    "--extra-model-paths-config", str(d / "extra_model_paths.yaml"),
                    "--database-url", f"sqlite:///{d / 'user/comfyui.db'}", "--disable-auto-launch", "--cpu"]
    assert localserver.environment(ServerOptions(gpus="1,3"))["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert localserver.environment(ServerOptions(gpus="device=2"))["CUDA_VISIBLE_DEVICES"] == "2"
    assert localserver.environment(ServerOptions(gpus="2"))["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in localserver.environment(ServerOptions())
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(localserver.model_paths_yaml(project)) == {"flux_orchestrator": {
        "base_path": str(project.models), "checkpoints": "checkpoints", "text_encoders": "text_encoders",
        "vae": "vae", "loras": "loras"}}


# -- Dockerfile.inference ----------------------------------------------------------------------------

DOCKERFILE = images.SOURCE_ROOT / images.COMFY_DOCKERFILE


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_pins_base_comfyui_and_frontend():
    ins = _instructions()
    froms = [arg for op, arg in ins if op == "FROM"]
    assert froms == ["nvcr.io/nvidia/pytorch:25.09-py3"]
    env = " ".join(arg for op, arg in ins if op == "ENV")
    assert "COMFYUI_COMMIT=3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce" in env
    assert "COMFYUI_FRONTEND_VERSION=1.35.9" in env
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert 'git fetch -q --depth 1 origin "${COMFYUI_COMMIT}"' in runs
    assert 'test "$(git rev-parse HEAD)" = "${COMFYUI_COMMIT}"' in runs
    assert 'echo "comfyui-frontend-package==${COMFYUI_FRONTEND_VERSION}" >> /tmp/constraints.txt' in runs
    assert "for extra in comfyui-frontend-package torchsde requests" in runs
    assert 'assert v == os.environ["COMFYUI_FRONTEND_VERSION"]' in runs and "import torchsde" in runs
    assert images.comfy_image().startswith("flux-comfyui:") and "missing" not in images.comfy_image()


def test_dockerfile_never_replaces_torch_and_has_no_secrets():
    ins = _instructions()
    runs = [arg for op, arg in ins if op == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert pip and all("-c /tmp/constraints.txt" in r for r in pip)  # torch pinned to the base's build
    assert all("diff /opt/base-torch.txt -" in r for r in pip)        # and checked unchanged afterwards
    assert not any(re.search(r"pip install[^&]*\btorch(vision|audio)?\b(?!sde)", r) for r in runs)
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?i)(HF_TOKEN|hf download|huggingface-cli|ARG .*(TOKEN|KEY|SECRET))", text)
    assert not any(op in ("ADD", "COPY") for op, _ in ins)  # built from a context holding only this file


def test_dockerfile_requirement_filter_drops_torch_but_keeps_the_rest(tmp_path):
    """Run the Dockerfile's own shell lines on a sample requirements.txt."""
    runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
    script = re.search(r"(grep -viE '[^']+' requirements.txt > /tmp/requirements.txt .*?done)", runs).group(1)
    (tmp_path / "requirements.txt").write_text(
        "comfyui-frontend-package==1.35.9\ntorch\ntorchsde\ntorchvision\ntorchaudio>=2\nnumpy>=1.25.0\nTorch ==2.1\n")
    script = script.replace("/tmp/requirements.txt", str(tmp_path / "out.txt"))
    subprocess.run(["sh", "-c", script], cwd=tmp_path, check=True)
    assert (tmp_path / "out.txt").read_text().split() == [
        "comfyui-frontend-package==1.35.9", "torchsde", "numpy>=1.25.0", "requests"]


def test_dockerfile_python_one_liners_run(tmp_path):
    runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
    snippet = re.search(r"python -c '(import importlib.metadata as m; names[^']+)'", runs).group(1)
    site = tmp_path / "site"        # the base image's torch builds, as installed distributions
    for name, version in (("torch", "2.5.1+cu124"), ("triton", "3.1.0"), ("numpy", "2.1.0")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    only_site = f"import sys; sys.path[:] = [{str(site)!r}] + [p for p in sys.path if 'packages' not in p]; "
    out = subprocess.run([sys.executable, "-c", only_site + snippet], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["torch==2.5.1+cu124", "triton==3.1.0"]   # the pins; other packages are not pinned


def test_dockerfile_runs_as_non_root_with_writable_dirs_and_our_entry():
    ins = _instructions()
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert "/comfy/custom_nodes" in runs and "chmod 1777" in runs and "/comfy/temp" in runs
    assert ("WORKDIR", "/opt/ComfyUI") in ins
    cmd = json.loads([arg for op, arg in ins if op == "CMD"][-1])
    assert cmd[:6] == ["python", "main.py", "--listen", "0.0.0.0", "--port", "8188"]
    assert list(serverspec.command("all")) == cmd  # the image's default = what `comfyui up` runs


def test_dockerfile_run_lines_are_valid_shell():
    for op, arg in _instructions():
        if op == "RUN":
            r = subprocess.run(["sh", "-n", "-c", arg], capture_output=True, text=True)
            assert r.returncode == 0, (arg, r.stderr)
