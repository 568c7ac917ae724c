"""Preflight checks, with the outside world (engine, disk, GPUs, RAM) passed in."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from datetime import datetime

import pytest

from orchestrator.dataset import check_dataset
from orchestrator.layout import Layout
from orchestrator.train.config import load_config
from orchestrator.train.plan import build_plan
from orchestrator.runtimes import RuntimeEnv, train_runtime
from orchestrator.runtimes.docker_train import EngineFacts
from orchestrator.train.preflight import preflight
from tests.train_project import make_seed_project

NOW = datetime(2026, 11, 26, 7, 15, 0)
FLAGS = {"cache_latents": True, "cache_latents_to_disk": True, "cache_text_encoder_outputs": True,
         "cache_text_encoder_outputs_to_disk": True, "resolution": None, "train_batch_size": None}
BIG = 10 ** 13


@pytest.fixture
def seed(project) -> Layout:
    make_seed_project(project, size=(128, 128))
    return project


def checks(layout, preset="default", *, sets=(), engine=None, visible=1, free=BIG, memory=None, gpus=None,
           runtime="docker", image="flux-train:abc", python=None, sd_scripts=None):
    config = load_config(preset, None, sets)
    dataset = check_dataset(layout, trainer_flags=FLAGS)
    settings = {"image": image} if runtime == "docker" else {"sd_scripts": sd_scripts, "python": python}
    rt = train_runtime(runtime, RuntimeEnv(layout), settings)
    plan, steps = build_plan(layout, config, dataset=dataset, now=NOW, runtime=rt, gpus=gpus, visible_gpus=visible)
    engine = engine or (lambda: EngineFacts(True, nvidia=True, image_present=True))
    return {c.name: c for c in preflight(plan, layout, dataset, processes=steps.processes, visible_gpus=visible,
                                         runtime=rt, probe=engine, disk_free=lambda p: free, memory=memory)}


def test_a_ready_project_passes(seed):
    found = checks(seed)
    assert [c.name for c in found.values() if c.status == "error"] == []
    for name in ("model:flux1-dev", "model:ae", "model:clip_l", "model:t5xxl_fp16", "tokenizers", "dataset",
                 "arguments", "output_name", "disk", "gpus", "docker", "nvidia_runtime", "image"):
        assert found[name].status == "ok", found[name]


def test_incomplete_model_by_download_manifest(seed):
    (seed.models / ".download-manifest.json").write_text(json.dumps(
        {"checkpoints/flux1-dev.safetensors": {"size": 23_802_932_552}}))
    c = checks(seed)["model:flux1-dev"]
    assert c.status == "error" and "incomplete" in c.message


def test_fp8_t5_variant_needs_its_file(seed):
    c = checks(seed, sets=["t5xxl=fp8"])["model:t5xxl_fp8"]
    assert c.status == "error" and "--variant fp8" in c.hint


def test_missing_tokenizers(seed):
    (seed.tokenizers / "google_t5-v1_1-xxl" / "tokenizer_config.json").unlink()
    c = checks(seed)["tokenizers"]
    assert c.status == "error" and "google_t5-v1_1-xxl" in c.message


def test_dataset_errors_block(seed):
    """TE caching + shuffle_caption aborts sd-scripts: the dataset check (given our flags) reports it."""
    seed.data_toml.write_text(seed.data_toml.read_text().replace("shuffle_caption = false", "shuffle_caption = true"))
    found = checks(seed)
    errors = [c for c in found.values() if c.status == "error"]
    assert errors and all(c.name.startswith("dataset:") for c in errors)
    assert any("shuffle_caption" in c.message for c in errors)


@pytest.mark.parametrize("old, new, fragment", [
    ("resolution = 1024\n", "resolution = 1024\nbucket_reso_steps = 32\nenable_bucket = true\n", "multiple of 64"),
    ("num_repeats = 2\n", "num_repeats = 2\n  color_aug = true\n", "color_aug"),
])
def test_data_toml_settings_that_clash_with_trainer_flags(seed, old, new, fragment):
    seed.data_toml.write_text(seed.data_toml.read_text().replace(old, new, 1))
    errors = [c for c in checks(seed).values() if c.status == "error"]
    assert any(c.name.startswith("dataset:") and fragment in c.message for c in errors), errors


def test_empty_dataset_would_exit_0_without_training(seed):
    for p in (seed.flux_data / "tjtoy").iterdir():
        p.unlink()
    for p in (seed.flux_data / "sparkgpu").iterdir():
        p.unlink()
    errors = [c for c in checks(seed).values() if c.status == "error"]
    assert any(c.name.startswith("dataset:") for c in errors)


@contextmanager
def read_only(folder):
    """`folder` unwritable for this process: mode 0555, or for root (whom modes do not stop) a read-only bind mount."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    r = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"root cannot bind-mount here, so cannot make a read-only folder: {r.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_cache_folders_must_be_writable(seed):
    folder = seed.flux_data / "tjtoy"
    assert "cache_dir" not in checks(seed)
    with read_only(folder):
        assert not os.access(folder, os.W_OK)
        c = checks(seed)["cache_dir"]
        assert c.status == "error" and "tjtoy" in c.message
        assert "cache_dir" not in checks(seed, sets=["cache_latents_to_disk=false",
                                                     "cache_text_encoder_outputs_to_disk=false"])


def test_collision_with_an_existing_lora(seed):
    (seed.loras / "flux_dreambooth-000017.safetensors").write_bytes(b"x")
    c = checks(seed)["output_name"]
    assert c.status == "error" and "flux_dreambooth-000017.safetensors" in c.message and "--name" in c.hint


def test_free_disk(seed):
    c = checks(seed, free=10 ** 6)["disk"]
    assert c.status == "error" and "free" in c.message
    assert checks(seed, free=BIG)["disk"].status == "ok"


def test_gpus_requested_vs_available(seed):
    assert checks(seed, gpus="2", visible=1)["gpus"].status == "error"
    assert checks(seed, gpus="0,3", visible=2)["gpus"].status == "error"
    assert checks(seed, gpus="2", visible=2)["gpus"].status == "ok"
    assert checks(seed, visible=None)["gpus"].status == "warn"


def test_multi_gpu_host_ram(seed):
    found = checks(seed, gpus="2", visible=2, memory=64 * 2 ** 30)
    assert found["multi_gpu"].status == "warn" and found["host_ram"].status == "error"
    assert "host_ram" not in checks(seed, gpus="2", visible=2, memory=512 * 2 ** 30)


def test_docker_unreachable_and_no_nvidia_runtime(seed):
    down = checks(seed, engine=lambda: EngineFacts(False, error="the Docker engine is not running", hint="start it"))
    assert down["docker"].status == "error" and down["docker"].hint == "start it"
    no_gpu = checks(seed, engine=lambda: EngineFacts(True, nvidia=False))
    assert no_gpu["nvidia_runtime"].status == "error" and "nvidia-ctk" in no_gpu["nvidia_runtime"].hint
    assert no_gpu["image"].status == "ok" and "will be built" in no_gpu["image"].message
    custom = checks(seed, image="someone/trainer:1", engine=lambda: EngineFacts(True, nvidia=True))
    assert custom["image"].status == "error"
    stand_in = checks(seed, gpus="none", engine=lambda: EngineFacts(True, nvidia=False))
    assert "nvidia_runtime" not in stand_in and stand_in["gpus"].status == "warn"


def test_local_runtime_checks(seed, tmp_path):
    found = checks(seed, runtime="local", sd_scripts=tmp_path / "nothing", python="/no/such/python")
    assert found["sd_scripts"].status == "error" and found["python"].status == "error"
    assert "docker" not in found
    checkout = tmp_path / "sd"
    checkout.mkdir()
    (checkout / "flux_train_network.py").write_text("")
    import sys

    found = checks(seed, runtime="local", sd_scripts=checkout, python=sys.executable)
    assert found["sd_scripts"].status == "warn" and "unknown commit" in found["sd_scripts"].message
    assert found["python"].status == "ok"
