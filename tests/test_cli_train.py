"""`train` through the CLI: --plan (text and JSON), config errors, and runs of the stand-in trainer
(local subprocess here; the Docker ones use the real engine)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from orchestrator.layout import Layout
from tests.standin import ensure_standin_trainer, make_local_trainer
from tests.train_project import make_seed_project

SHORT = ("--set", "max_train_epochs=2")   # 2 epochs x 20 steps: a LoRA at epoch 1, the final one, 2 states


@pytest.fixture
def seed(project) -> Layout:
    make_seed_project(project, size=(256, 256))
    return project


@pytest.fixture
def local(tmp_path):
    checkout, python = make_local_trainer(tmp_path / "trainer")
    return ("--runtime", "local", "--sd-scripts", str(checkout), "--python", str(python))


def run_dirs(layout: Layout) -> list[Path]:
    """Run folders (the runners keep their own records in hidden folders under runs/)."""
    return sorted(p for p in layout.runs.iterdir() if not p.name.startswith("."))


def plan_json(run_cli, *argv):
    r = run_cli("train", "--plan", "--json", *argv)
    return r, json.loads(r.out)


def test_plan_json_has_everything_scripts_need(seed, run_cli, local):
    r, p = plan_json(run_cli, *local)
    assert r.code == 0, r.err
    for key in ("trainer_args", "launcher_args", "workdir", "dataset_toml", "container", "checks", "steps", "lora",
                "expected_outputs", "config", "run_id"):
        assert key in p
    assert p["container"] is None                           # the local runtime
    assert p["launcher_args"][:2] == ["accelerate", "launch"]
    assert p["trainer_args"][0] == "--pretrained_model_name_or_path"
    assert p["workdir"].endswith("sd-scripts")
    assert "[[datasets.subsets]]" in p["dataset_toml"]
    assert all({"name", "status", "message"} <= set(c) for c in p["checks"])
    assert p["steps"]["total_steps"] == 1300 and p["lora"]["modules"] == 304
    assert not (seed.runs / p["run_id"]).exists()          # --plan starts and writes nothing


def test_plan_json_when_a_check_fails_exits_2(seed, run_cli, local):
    (seed.checkpoints / "flux1-dev.safetensors").unlink()
    r, p = plan_json(run_cli, *local)
    assert r.code == 2 and p["ok"] is False
    bad = [c for c in p["checks"] if c["status"] == "error"]
    assert [c["name"] for c in bad] == ["model:flux1-dev"] and "missing" in bad[0]["message"]


def test_plan_text_shows_config_command_steps_and_checks(seed, run_cli, local):
    r = run_cli("train", "--dry-run", "--preset", "playbook", *local)
    assert r.code == 0, r.err
    for fragment in ("config:", "network_dim", "preset playbook", "steps:", "20 images x repeats per epoch",
                     "5 optimizer steps per epoch", "100 epochs -> 500 optimizer steps", "LoRA: 376 modules",
                     "command:", "flux_train_network.py", "--network_dim 256", "checks:", "flux_dreambooth-000025"):
        assert fragment in r.out, fragment


def test_repeated_warnings_are_counted_not_repeated(seed, run_cli, local):
    """The 256 px test images give one `upscaled` warning per image: two are shown, then a count."""
    r = run_cli("train", "--plan", *local)
    assert r.out.count("warn  dataset:upscaled") == 3 and "... and 11 more like these" in r.out
    r = run_cli("train", "--plan", "-v", *local)
    assert r.out.count("warn  dataset:upscaled") == 13


def test_set_typo_is_exit_2_with_did_you_mean(seed, run_cli):
    r = run_cli("train", "--plan", "--set", "network_dimm=16")
    assert r.code == 2 and "unknown key 'network_dimm'" in r.err and "did you mean 'network_dim'" in r.err


def test_plan_json_on_a_config_error_is_still_one_object(seed, run_cli):
    r = run_cli("train", "--plan", "--json", "--set", "lr_scheduler=cosin")
    assert r.code == 2 and "did you mean 'cosine'" in r.err
    p = json.loads(r.out)
    assert p["ok"] is False and "lr_scheduler" in p["error"]["message"] and p["checks"] == []


def test_sample_prompts_from_a_file(seed, run_cli, local):
    (seed.root / "prompts.toml").write_text('[[prompt]]\nprompt = "a tjtoy toy"\nwidth = 1024\n')
    r, p = plan_json(run_cli, *local, "--set", "sample_prompts=prompts.toml")
    assert r.code == 0 and p["files"] == {"sample_prompts.toml": (seed.root / "prompts.toml").read_text()}
    args = p["trainer_args"]
    assert args[args.index("--sample_prompts") + 1].endswith("/sample_prompts.toml")
    r, p = plan_json(run_cli, *local, "--set", "sample_prompts=prompts.yaml")
    assert r.code == 2 and "samples:extension" in [c["name"] for c in p["checks"] if c["status"] == "error"]
    r = run_cli("train", "--plan", *local, "--set", "sample_prompts=missing.txt")
    assert r.code == 2 and "cannot read" in r.err
    (seed.root / "latin1.txt").write_bytes(b"a caf\xe9 toy\n")
    r = run_cli("train", "--plan", *local, "--set", "sample_prompts=latin1.txt")
    assert r.code == 2 and "latin1.txt:1 is not UTF-8 text" in r.err, r.err
    (seed.root / "broken.toml").write_text('[[prompt]\nprompt = "a tjtoy toy"\n')
    (seed.root / "broken.json").write_text('{"prompt": }\n')
    for name, what in (("broken.toml", "not valid TOML"), ("broken.json", "broken.json:1: not valid JSON")):
        r = run_cli("train", "--plan", *local, "--set", f"sample_prompts={name}")
        assert r.code == 2 and what in r.err and "crash at its first sample" in r.err, r.err


def test_config_file_in_project_is_used(seed, run_cli, local):
    (seed.root / "train.yaml").write_text("preset: 24gb\nnetwork_dim: 8\n")
    r, p = plan_json(run_cli, *local, "--set", "seed=3")
    assert p["preset"] == "24gb" and p["config"]["network_dim"] == 8 and p["config"]["seed"] == 3
    assert p["sources"]["network_dim"].endswith("train.yaml:2") and p["sources"]["seed"] == "--set"


def test_rule_violation_blocks_the_run_before_anything_starts(seed, run_cli, local):
    r = run_cli("train", *local, "--set", "blocks_to_swap=8", "--set", "cpu_offload_checkpointing=true")
    assert r.code == 2 and "blocks_to_swap+cpu_offload" in r.err
    assert run_dirs(seed) == []


def test_name_collision_refused_then_versioned(seed, run_cli, local):
    (seed.loras / "flux_dreambooth.safetensors").write_bytes(b"someone's LoRA")
    r = run_cli("train", "--plan", *local)
    assert r.code == 2 and "would overwrite" in r.out and "--name flux_dreambooth_v2" in r.out
    r = run_cli("train", "--plan", *local, "--name", "flux_dreambooth_v2")
    assert r.code == 0
    (seed.loras / "flux_dreambooth-000001.safetensors").write_bytes(b"and its epoch save")
    r = run_cli("train", "--plan", *local, *SHORT)
    assert r.code == 2 and "would overwrite them" in r.out and "would overwrite it " not in r.out


def test_multi_gpu_rules_through_the_cli(seed, run_cli, local):
    r, p = plan_json(run_cli, *local, "--gpus", "2", "--preset", "16gb")
    assert r.code == 2
    assert "blocks_to_swap+multi_gpu" in [c["name"] for c in p["checks"] if c["status"] == "error"]
    assert "--multi_gpu" in p["launcher_args"]


@pytest.mark.slow
def test_local_run_end_to_end_then_resume(seed, run_cli, local):
    r = run_cli("train", *local, *SHORT)
    assert r.code == 0, r.err
    final = seed.loras / "flux_dreambooth.safetensors"
    assert r.out.strip() == str(final) and final.exists()
    assert (seed.loras / "flux_dreambooth-000001.safetensors").exists()
    run_dir = run_dirs(seed)[0]
    for name in ("plan.json", "data.toml", "sample_prompts.txt", "manifest.json", "report.html", "train.log"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "succeeded"
    assert list((run_dir / "output" / "sample").glob("flux_dreambooth_e000001_*.png"))

    # a changed setting that breaks the saved state is refused
    r = run_cli("train", "--resume", *local, "--set", "network_dim=64")
    assert r.code == 2 and "network_dim" in r.err
    # resume the same run from its newest state
    r = run_cli("train", "--resume", run_dir.name, *local, "-v")
    assert r.code == 0, r.err
    assert "resuming from flux_dreambooth-state" in r.err and "[train] " in r.err
    assert len(run_dirs(seed)) == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["resume_from"].endswith("output/flux_dreambooth-state") and manifest["status"] == "succeeded"


def test_resume_without_runs_is_a_clear_error(seed, run_cli, local):
    r = run_cli("train", "--resume", *local)
    assert r.code == 2 and "no earlier training run" in r.err
    r = run_cli("train", "--resume", "nope", *local)
    assert r.code == 2 and "no training run 'nope'" in r.err
    broken = seed.runs / "20260101-000000-x"
    broken.mkdir()
    (broken / "plan.json").write_text("{not json")
    r = run_cli("train", "--resume", "runs/20260101-000000-x", *local)
    assert r.code == 2 and "unreadable" in r.err and "Traceback" not in r.err



def test_resume_of_a_run_stopped_before_its_first_save_says_to_start_again(seed, run_cli, local):
    r = run_cli("train", *local, *SHORT)
    assert r.code == 0, r.err
    run_dir = run_dirs(seed)[0]
    for state in (run_dir / "output").glob("*-state"):   # as if Ctrl+C came before the first save
        shutil.rmtree(state)
    r = run_cli("train", "--resume", run_dir.name, *local)
    assert r.code == 2 and "no saved state" in r.err
    assert "stopped before its first save" in r.err and "train --name flux_dreambooth`" in r.err

@pytest.mark.docker
def test_plan_on_an_engine_without_nvidia_runtime(seed, run_cli, engine):
    r, p = plan_json(run_cli)
    nvidia = [c for c in p["checks"] if c["name"] == "nvidia_runtime"]
    if engine.has_nvidia_runtime():
        pytest.skip("this engine has the NVIDIA runtime")
    assert r.code == 2 and nvidia[0]["status"] == "error"
    c = p["container"]
    assert c["gpus"] == "1" and c["image"].startswith("flux-train:")
    assert {m["target"] for m in c["mounts"]} >= {"/data/flux_data", "/run", "/models/tokenizers"}


@pytest.mark.docker
def test_gpu_run_on_an_engine_without_nvidia_runtime_starts_nothing(seed, run_cli, engine):
    if engine.has_nvidia_runtime():
        pytest.skip("this engine has the NVIDIA runtime")
    tag = ensure_standin_trainer(engine)
    r = run_cli("train", "--image", tag, *SHORT)
    assert r.code == 2 and "NVIDIA runtime" in r.err
    from orchestrator.containers import LABEL_PROJECT, project_id

    assert engine.find({LABEL_PROJECT: project_id(seed.root)}) == []
    assert run_dirs(seed) == []


@pytest.mark.docker
@pytest.mark.slow
def test_docker_run_end_to_end_with_the_standin(seed, run_cli, engine):
    tag = ensure_standin_trainer(engine)
    r = run_cli("train", "--image", tag, "--gpus", "none", *SHORT)
    assert r.code == 0, r.err
    final = seed.loras / "flux_dreambooth.safetensors"
    assert r.out.strip() == str(final)
    st = final.stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    run_dir = run_dirs(seed)[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["image"] == tag
    from orchestrator.containers import LABEL_PROJECT, project_id

    assert engine.find({LABEL_PROJECT: project_id(seed.root)}) == []   # the container is gone
