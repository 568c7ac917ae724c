"""The training plan: golden argv and data.toml per preset, step arithmetic, LoRA size, paths."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.dataset import check_dataset
from orchestrator.errors import UsageError
from orchestrator.layout import Layout
from orchestrator.runtimes import RuntimeEnv, train_runtime
from orchestrator.train import arith
from orchestrator.train.config import load_config
from orchestrator.train.plan import auto_prompts, build_plan, parse_gpus, with_sample_defaults
from tests.conftest import shared_path
from tests.train_project import make_seed_project

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 26, 7, 15, 0)
PRESETS = ("playbook", "default", "24gb", "16gb", "12gb")


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Layout:
    layout = Layout.at(tmp_path_factory.mktemp("seed") / "project")
    make_seed_project(layout, size=(256, 256))   # small: the plan does not depend on pixels (no buckets)
    return layout


def plan_for(layout: Layout, preset: str = "default", sets=(), **kw):
    config = load_config(preset, None, sets)
    flags = {k: config.get(k) for k in ("cache_latents", "cache_latents_to_disk", "cache_text_encoder_outputs",
                                        "cache_text_encoder_outputs_to_disk", "resolution", "train_batch_size")}
    dataset = check_dataset(layout, trainer_flags=flags)
    name = kw.pop("runtime", "docker")
    settings = {"image": kw.pop("image", "flux-train:test"), "sd_scripts": kw.pop("sd_scripts", None)}
    runtime = train_runtime(name, RuntimeEnv(layout), settings if name == "docker" else {"sd_scripts": settings["sd_scripts"]})
    return build_plan(layout, config, dataset=dataset, now=NOW, runtime=runtime, **kw)


def load_toml(text: str) -> dict:
    """TOML as plain data, so goldens compare what the trainer reads, not how a tomlkit version quotes it."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomlkit

        return tomlkit.parse(text).unwrap()
    return tomllib.loads(text)


def golden_view(plan, steps, root: Path) -> dict:
    def rel(x):
        return str(x).replace(str(root), "<project>")

    return {
        "launcher_args": list(plan.launcher_args), "script": plan.script,
        "trainer_args": [rel(a) for a in plan.trainer_args], "workdir": rel(plan.workdir),
        "dataset_toml": load_toml(rel(plan.dataset_toml)), "files": {k: v.splitlines() for k, v in plan.files.items()},
        "mounts": [[rel(m.source), m.target, m.read_only] for m in plan.mounts],
        "environment": dict(plan.environment), "gpus": plan.gpus, "run_id": plan.run_id,
        "steps": [steps.image_steps, steps.batches_per_epoch, steps.steps_per_epoch, steps.epochs, steps.total_steps],
        "expected_outputs": list(plan.expected_outputs),
    }


def check_golden(name: str, view: dict) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(view, indent=1) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing (UPDATE_GOLDEN=1 writes it)"
    assert json.loads(path.read_text()) == view


@pytest.mark.parametrize("preset", PRESETS)
def test_golden_docker(seed, preset):
    plan, steps = plan_for(seed, preset)
    check_golden(f"train_{preset}", golden_view(plan, steps, seed.root))


def test_golden_local_two_gpus(seed, tmp_path):
    plan, steps = plan_for(seed, "default", runtime="local", sd_scripts=tmp_path / "sd-scripts", gpus="0,1")
    view = golden_view(plan, steps, seed.root)
    view["workdir"] = view["workdir"].replace(str(tmp_path), "<sd-scripts>")
    check_golden("train_default_local_2gpu", view)
    assert plan.image is None and plan.mounts == () and plan.gpus is None
    assert plan.environment["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert plan.launcher_args[:2] == ("accelerate", "launch")     # the local runner runs it with --python
    assert "--multi_gpu" in plan.launcher_args


def test_seed_step_arithmetic(seed):
    """README §2: 6x1 + 7x2 = 20 batches/epoch; accumulation 4 -> 5 steps/epoch; 100 epochs -> 500 steps."""
    plan, steps = plan_for(seed, "playbook")
    assert (steps.image_steps, steps.batches_per_epoch, steps.steps_per_epoch) == (20, 20, 5)
    assert (plan.epochs, plan.total_steps, plan.steps_per_epoch) == (100, 500, 5)
    assert plan.expected_outputs == ("flux_dreambooth-000025.safetensors", "flux_dreambooth-000050.safetensors",
                                     "flux_dreambooth-000075.safetensors", "flux_dreambooth.safetensors")


def test_multi_gpu_step_arithmetic(seed):
    """README §4: steps = epochs x ceil(batches / N / accumulation)."""
    plan, steps = plan_for(seed, "playbook", gpus="2")
    assert steps.steps_per_epoch == 3 and plan.total_steps == 300 and steps.effective_batch == 8
    assert plan.launcher_args[plan.launcher_args.index("--num_processes") + 1] == "2"
    assert "--multi_gpu" in plan.launcher_args and plan.gpus == "2"


def test_default_scales_steps_to_the_dataset(seed):
    plan, steps = plan_for(seed, "default")
    assert steps.steps_per_epoch == 20 and plan.epochs == 65 and plan.total_steps == 1300   # 100 x 13 images
    assert plan.config["max_train_epochs"] == 65 and plan.config["save_every_n_epochs"] == 17
    assert plan.config["sample_every_n_epochs"] == 17
    assert "auto" not in plan.trainer_args
    assert arith.auto_target_samples(3) == 500 and arith.auto_target_samples(40) == 2000
    two, steps2 = plan_for(seed, "default", gpus="2")           # same exposure on 2 GPUs: half the steps
    assert two.epochs == 65 and steps2.steps_per_epoch == 10 and two.total_steps == 650
    accum, _ = plan_for(seed, "default", sets=["gradient_accumulation_steps=4"])
    assert accum.epochs == 65 and accum.total_steps == 65 * 5
    fixed, _ = plan_for(seed, "default", sets=["target_steps=400"])
    assert fixed.epochs == 20 and fixed.total_steps == 400


def test_h100_estimate_matches_the_measured_recipe(seed):
    """PERFORMANCE.md: the playbook recipe takes ~41 min without torch.compile, ~30 min with it."""
    for compiled, minutes in ((False, 41), (True, 30)):
        plan, steps = plan_for(seed, "playbook", sets=[f"torch_compile={str(compiled).lower()}"])
        lora = arith.lora_size(plan.config)
        seconds = arith.estimate_h100_seconds(plan.config, steps, lora, saves=4, sample_events=0, prompts=0)
        assert abs(seconds / 60 - minutes) < 2, (compiled, seconds / 60)


def test_lora_size_matches_the_facts():
    """README §1.2: rank 256 on every FLUX linear + CLIP-L = 1.27 G parameters, ~4.8 GiB in fp32."""
    size = arith.lora_size({"network_dim": 256, "network_train_unet_only": False})
    assert size.modules == 304 + 72
    assert size.parameters == 1_267_728_384 + 376          # lora_down/up plus one alpha per module
    assert abs(size.bytes / 2 ** 30 - 4.72) < 0.01 and size.dtype == "float"
    small = arith.lora_size({"network_dim": 32, "network_train_unet_only": True, "save_precision": "bf16"})
    assert small.modules == 304 and small.parameters == 32 * 4_786_176 + 304
    single = arith.lora_size({"network_dim": 16, "network_train_unet_only": True,
                              "network_args": {"train_blocks": "single", "single_mod_dim": 0}})
    assert single.modules == 38 * 2
    t5 = arith.lora_size({"network_dim": 4, "network_args": {"train_t5xxl": True}})
    assert t5.modules == 304 + 72 + 168


def image_dirs(toml_text: str) -> list[str]:
    return [s["image_dir"] for d in load_toml(toml_text)["datasets"] for s in d["subsets"]]


def test_trainer_toml_rewrites_image_dirs(seed):
    plan, _ = plan_for(seed)
    assert image_dirs(plan.dataset_toml) == ["/data/flux_data/tjtoy", "/data/flux_data/sparkgpu"]
    data = load_toml(plan.dataset_toml)
    assert data["general"]["keep_tokens"] == 1 and data["datasets"][0]["subsets"][0]["class_tokens"] == "tjtoy toy"
    assert image_dirs(seed.data_toml.read_text()) == ["flux_data/tjtoy", "flux_data/sparkgpu"]   # untouched
    local, _ = plan_for(seed, runtime="local", sd_scripts=Path("/opt/x"))
    assert image_dirs(local.dataset_toml) == [str(seed.flux_data / "tjtoy"), str(seed.flux_data / "sparkgpu")]


def test_seed_container_paths_and_outside_folders(tmp_path):
    layout = Layout.at(tmp_path / "p")
    outside = tmp_path / "elsewhere" / "sparkgpu"
    make_seed_project(layout, image_dirs=("/workspace/sd-scripts/flux_data/tjtoy", str(outside)))
    from tests.train_project import make_images

    make_images(outside, 7, shade=90)
    plan, steps = plan_for(layout)
    assert image_dirs(plan.dataset_toml) == ["/data/flux_data/tjtoy", "/data/extra/0-sparkgpu"]
    assert any(m.source == outside and m.target == "/data/extra/0-sparkgpu" and not m.read_only for m in plan.mounts)
    assert steps.image_steps == 20


def test_links_to_other_disks_are_mounted_themselves(tmp_path):
    layout = Layout.at(tmp_path / "p")
    make_seed_project(layout, size=(64, 64))
    other = tmp_path / "big-disk"
    other.mkdir()
    flux = layout.checkpoints / "flux1-dev.safetensors"
    flux.rename(other / "flux1-dev.safetensors")
    flux.symlink_to(other / "flux1-dev.safetensors")
    concept = layout.flux_data / "sparkgpu"
    concept.rename(other / "sparkgpu")
    concept.symlink_to(other / "sparkgpu")
    plan, steps = plan_for(layout)
    args = plan.trainer_args
    assert args[args.index("--pretrained_model_name_or_path") + 1] == "/models/links/flux/flux1-dev.safetensors"
    mounts = {m.target: (m.source, m.read_only) for m in plan.mounts}
    assert mounts["/models/links/flux/flux1-dev.safetensors"] == (other / "flux1-dev.safetensors", True)
    assert image_dirs(plan.dataset_toml) == ["/data/flux_data/tjtoy", "/data/extra/0-sparkgpu"]
    assert mounts["/data/extra/0-sparkgpu"] == (other / "sparkgpu", False)
    assert steps.image_steps == 20


def test_mounts_and_environment(seed):
    plan, _ = plan_for(seed)
    mounts = {m.target: (m.source, m.read_only) for m in plan.mounts}
    assert mounts["/data/flux_data"] == (seed.flux_data, False)
    assert mounts["/run"] == (plan.run_dir, False)
    for folder in ("checkpoints", "text_encoders", "vae", "tokenizers"):
        assert mounts[f"/models/{folder}"] == (seed.models / folder, True)
    assert "/models/loras" not in mounts                     # LoRAs are linked from the run folder by the runner
    env = plan.environment
    assert env["PYTHONUNBUFFERED"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["HOME"].startswith("/tmp")
    args = plan.trainer_args
    assert args[args.index("--tokenizer_cache_dir") + 1] == "/models/tokenizers"
    assert args[args.index("--mixed_precision") + 1] == "bf16"             # given to the script itself
    assert plan.run_id == "20261126-071500-flux_dreambooth" and plan.run_dir == seed.runs / plan.run_id
    assert plan.output_dir == plan.run_dir / "output" and plan.lora_dir == seed.loras


def test_options_are_full_names_one_value_each(seed):
    plan, _ = plan_for(seed, "default", sets=["network_args.train_blocks=all", "network_args.split_qkv=true"])
    args = list(plan.trainer_args)
    i = args.index("--network_args")
    assert args[i + 1:i + 3] == ["train_blocks=all", "split_qkv=True"]
    i = args.index("--optimizer_args")
    assert args[i + 1:i + 4] == ["decouple=True", "weight_decay=0.01", "use_bias_correction=True"]
    flags = [a for a in args if a.startswith("--")]
    assert len(flags) == len(set(flags))


def test_false_network_bool_is_left_out(seed):
    plan, _ = plan_for(seed, sets=["network_args.split_qkv=false"])
    assert "--network_args" not in plan.trainer_args


def test_name_and_resume(seed):
    plan, _ = plan_for(seed, name="tjtoy_v2")
    assert plan.output_name == "tjtoy_v2" and plan.expected_outputs[-1] == "tjtoy_v2.safetensors"
    state = seed.runs / "20260101-000000-flux_dreambooth" / "output" / "flux_dreambooth-000017-state"
    resumed, _ = plan_for(seed, resume=state)
    assert resumed.run_dir == state.parent.parent and resumed.resume_from == "/run/output/flux_dreambooth-000017-state"
    assert resumed.trainer_args[-2:] == ("--resume", "/run/output/flux_dreambooth-000017-state")
    fresh, _ = plan_for(seed)
    assert resumed.config_hash == fresh.config_hash       # resuming does not change what determines the run


def test_gpu_parsing():
    assert parse_gpus(None, 4) == parse_gpus("1", 4)
    assert parse_gpus("all", 4).processes == 4 and parse_gpus("all", None).processes == 1
    assert parse_gpus("0,1", None).ids == ("0", "1") and parse_gpus("0,1", None).spec == "0,1"
    assert parse_gpus("device=1", None).spec == "1," and parse_gpus("device=1", None).processes == 1
    for bad in ("0", "two", "-1", ""):
        with pytest.raises(UsageError):
            parse_gpus(bad, None)


def test_gpu_ids_as_the_trainer_sees_them(seed, tmp_path):
    """Docker renumbers the chosen GPUs 0..N-1 inside the container; a local process keeps the host ids (accelerate
    copies --gpu_ids into CUDA_VISIBLE_DEVICES, so they must be the same ids)."""
    docker, _ = plan_for(seed, gpus="2,3")
    words = docker.launcher_args
    assert docker.gpus == "2,3" and words[words.index("--gpu_ids") + 1] == "0,1"
    assert words[words.index("--main_process_port") + 1] == "29500"     # the container's own network
    assert "CUDA_VISIBLE_DEVICES" not in docker.environment and docker.devices == ("2", "3")
    local, _ = plan_for(seed, runtime="local", sd_scripts=tmp_path, gpus="2,3")
    words = local.launcher_args
    assert words[words.index("--gpu_ids") + 1] == "2,3" and local.environment["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert local.main_process_port is not None and 29500 <= local.main_process_port < 30500
    one, _ = plan_for(seed, runtime="local", sd_scripts=tmp_path, gpus="device=1")
    assert "--gpu_ids" not in one.launcher_args and "--main_process_port" not in one.launcher_args
    assert one.environment["CUDA_VISIBLE_DEVICES"] == "1" and "--multi_gpu" not in one.launcher_args
    every, steps = plan_for(seed, runtime="local", sd_scripts=tmp_path, gpus="all", visible_gpus=4)
    assert steps.processes == 4 and "CUDA_VISIBLE_DEVICES" not in every.environment
    assert every.launcher_args[every.launcher_args.index("--gpu_ids") + 1] == "0,1,2,3"
    allowed, _ = plan_for(seed, runtime="local", sd_scripts=tmp_path, gpus="2", inherited_devices=("5", "7", "9"))
    assert allowed.environment["CUDA_VISIBLE_DEVICES"] == "5,7"


def test_sample_prompts(seed):
    plan, _ = plan_for(seed)
    text = plan.files["sample_prompts.txt"]
    assert text.splitlines() == ["a photo of tjtoy toy --w 512 --h 512 --s 12 --g 3.5 --d 42",
                                 "a photo of sparkgpu gpu --w 512 --h 512 --s 12 --g 3.5 --d 42"]
    assert with_sample_defaults("x --w 768 --d 7") == "x --w 768 --d 7 --h 512 --s 12 --g 3.5"
    custom, _ = plan_for(seed, sets=["sample_prompts=[a tjtoy toy on a desk]"])
    assert custom.files["sample_prompts.txt"].startswith("a tjtoy toy on a desk --w 512")
    none, _ = plan_for(seed, "playbook")
    assert none.files == {} and "--sample_prompts" not in none.trainer_args
    assert auto_prompts(check_dataset(seed)) == ["a photo of tjtoy toy", "a photo of sparkgpu gpu"]


def _reference() -> dict[str, dict[str, str]]:
    # ../shared next to the repo (conftest), or next to the worktree folder that holds this checkout
    here = Path(__file__).resolve()
    found = [p / "shared" / "kohya" / "args-reference.md" for p in here.parents[2:4]]
    path = next((p for p in found if p.exists()), None) or shared_path("kohya", "args-reference.md")
    text = path.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`--"):
            rows[cells[0].strip("`")] = dict(zip(("kind", "type", "nargs", "default", "choices"), cells[1:]))
    return rows


@pytest.mark.parametrize("preset", PRESETS)
def test_every_emitted_option_exists_in_sd_scripts(seed, preset):
    """Cross-check against the parser of sd-scripts 48d368fa: name, flag vs value, type, choices, nargs."""
    ref = _reference()
    sets = ["network_args.split_qkv=true", "lr_warmup_steps=0.1", "blocks_to_swap=4"] if preset == "default" else []
    plan, _ = plan_for(seed, preset, sets=sets)
    args = list(plan.trainer_args)
    i = 0
    while i < len(args):
        opt = args[i]
        assert opt in ref, f"{opt} is not an sd-scripts option"
        row = ref[opt]
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        vals = args[i + 1:j]
        if row["kind"] == "flag":
            assert vals == [], f"{opt} is a flag but got {vals}"
        elif row["nargs"] == "*":
            assert vals, f"{opt} needs values"
        else:
            assert len(vals) == 1, f"{opt} takes one value, got {vals}"
            v = vals[0]
            if row["type"] == "int":
                assert re.fullmatch(r"-?\d+", v), (opt, v)
            elif row["type"] == "float":
                float(v)
            elif row["type"] == "int_or_float":
                assert re.fullmatch(r"\d+|0?\.\d+|\d+(\.\d+)?%", v), (opt, v)
            if row["choices"]:
                assert v in [c.strip() for c in row["choices"].split(",")], (opt, v)
        i = j
