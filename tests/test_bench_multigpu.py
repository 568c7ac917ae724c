"""bench/multigpu.py refuses to run without two GPUs (exit 2, nothing written) and plans the right commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.gpuprobe import from_nvml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "multigpu.py"


def bench(tmp_path: Path, gpus: list[str] | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the bench with a stand-in nvidia-smi listing `gpus` (None: one that fails, as on a host without a
    driver) and no Docker engine to ask."""
    if from_nvml() is not None:
        pytest.skip("NVML answers on this machine: the stand-in nvidia-smi would not be asked")
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    body = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2; exit 9\n" \
        if gpus is None else "".join(f"echo '{i}, {n}, 143771'\n" for i, n in enumerate(gpus))
    (bindir / "nvidia-smi").write_text("#!/bin/sh\n" + body)
    (bindir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_without_gpus_it_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    r = bench(tmp_path, None, "--project-dir", str(tmp_path), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: bench/multigpu.py needs a machine with at least 2 NVIDIA GPUs; "
                               "no NVIDIA GPU could be found")
    assert "Traceback" not in r.stderr and r.stdout == "" and not out.exists()


def test_with_one_gpu_it_says_how_many_it_found(tmp_path):
    r = bench(tmp_path, ["NVIDIA H200"], "--project-dir", str(tmp_path), "--out", str(tmp_path / "results"))
    assert r.returncode == 2 and "this machine has 1 GPU (nvidia-smi): NVIDIA H200" in r.stderr
    assert not (tmp_path / "results").exists()


def test_plan_runs_one_and_two_gpus_at_the_same_effective_batch(tmp_path):
    local = ("--runtime", "local", "--sd-scripts", "/opt/sd", "--python", "/opt/pysd", "--comfyui", "/opt/ComfyUI")
    r = bench(tmp_path, ["NVIDIA H200", "NVIDIA H200"], "--project-dir", str(tmp_path), "--plan", *local)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    one = next(x for x in lines if x.startswith("train, 1 GPU(s): "))
    two = next(x for x in lines if x.startswith("train, 2 GPU(s): "))
    assert "--gpus 1 " in one and "gradient_accumulation_steps=2" in one
    assert "--gpus 2 " in two and "gradient_accumulation_steps=1" in two
    assert all("--runtime local --sd-scripts /opt/sd --python /opt/pysd" in x for x in (one, two))
    assert any(x.startswith("comfy, 2 worker(s): ") and "--workers 2" in x and "40 images" in x for x in lines)
    r = bench(tmp_path, ["NVIDIA H200", "NVIDIA H200"], "--project-dir", str(tmp_path), "--runtime", "local")
    assert r.returncode == 2 and "--sd-scripts DIR and --python PY" in r.stderr
