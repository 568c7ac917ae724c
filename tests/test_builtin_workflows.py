"""Our two workflows: committed files == generated ones, valid prompts, the seed's graph, readable layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.comfy.builtin import (
    DEFAULT_LORA, DEFAULT_SAMPLER, DEFAULT_STEPS, builtin_workflows, render, write_builtin_workflows,
)
from orchestrator.comfy.patch import PromptParams, patch_prompt, required_models
from orchestrator.comfy.schema import load_builtin_schema
from orchestrator.comfy.validate import validate_prompt
from orchestrator.comfy.workflow import load_workflow, to_api_prompt

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["base_flux.json", "finetuned_flux.json"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_file_equals_the_generated_one(name):
    committed = (ROOT / "workflows" / name).read_text(encoding="utf-8")
    assert committed == render(builtin_workflows()[name]), \
        "regenerate with `python -m orchestrator.comfy.builtin workflows`"


@pytest.mark.parametrize("name", NAMES)
def test_converts_to_a_valid_prompt_equal_to_the_golden_file(name):
    prompt = to_api_prompt(load_workflow(ROOT / "workflows" / name), load_builtin_schema())
    assert validate_prompt(prompt, load_builtin_schema()) == []
    golden = (ROOT / "tests" / "golden" / name.replace(".json", ".prompt.json")).read_text()
    assert json.dumps(prompt, indent=2) + "\n" == golden


def _by_type(prompt):
    return {n["class_type"]: n["inputs"] for n in prompt.values()}


def test_base_workflow_is_the_seeds_graph_with_our_defaults():
    prompt = to_api_prompt(load_workflow(builtin_workflows()["base_flux.json"]), load_builtin_schema())
    t = _by_type(prompt)
    assert set(t) == {"CheckpointLoaderSimple", "DualCLIPLoader", "VAELoader", "CLIPTextEncode", "FluxGuidance",
                      "ModelSamplingFlux", "BasicScheduler", "KSamplerSelect", "RandomNoise", "BasicGuider",
                      "EmptyLatentImage", "SamplerCustomAdvanced", "VAEDecode", "SaveImage"}
    assert t["CheckpointLoaderSimple"]["ckpt_name"] == "flux1-dev.safetensors"
    assert (t["DualCLIPLoader"]["clip_name1"], t["DualCLIPLoader"]["clip_name2"], t["DualCLIPLoader"]["type"]) == (
        "t5xxl_fp16.safetensors", "clip_l.safetensors", "flux")
    assert t["VAELoader"]["vae_name"] == "ae.safetensors"
    assert t["FluxGuidance"]["guidance"] == 3.5
    assert (t["ModelSamplingFlux"]["max_shift"], t["ModelSamplingFlux"]["base_shift"]) == (1.15, 0.5)
    assert t["BasicScheduler"] == {"scheduler": "sgm_uniform", "steps": DEFAULT_STEPS, "denoise": 1,
                                   "model": t["BasicScheduler"]["model"]}
    assert DEFAULT_STEPS == 28 and t["KSamplerSelect"]["sampler_name"] == DEFAULT_SAMPLER == "dpmpp_2m"
    size = (t["EmptyLatentImage"]["width"], t["EmptyLatentImage"]["height"])
    assert size == (t["ModelSamplingFlux"]["width"], t["ModelSamplingFlux"]["height"]) == (1024, 1024)
    assert required_models(prompt)["loras"] == []


def test_finetuned_workflow_puts_the_lora_between_loaders_and_the_rest():
    prompt = to_api_prompt(load_workflow(builtin_workflows()["finetuned_flux.json"]), load_builtin_schema())
    ids = {n["class_type"]: nid for nid, n in prompt.items()}
    lora = prompt[ids["LoraLoader"]]["inputs"]
    assert lora["lora_name"] == DEFAULT_LORA == "flux_dreambooth.safetensors"
    assert lora["model"] == [ids["CheckpointLoaderSimple"], 0] and lora["clip"] == [ids["DualCLIPLoader"], 0]
    assert prompt[ids["ModelSamplingFlux"]]["inputs"]["model"] == [ids["LoraLoader"], 0]
    assert prompt[ids["CLIPTextEncode"]]["inputs"]["clip"] == [ids["LoraLoader"], 1]
    # nothing else reads the base model or CLIP directly
    for nid, node in prompt.items():
        if nid != ids["LoraLoader"]:
            assert [ids["CheckpointLoaderSimple"], 0] not in node["inputs"].values()
            assert [ids["DualCLIPLoader"], 0] not in node["inputs"].values()


def test_size_primitives_drive_both_latent_and_model_sampling_in_the_browser():
    wf = builtin_workflows()["base_flux.json"]
    prims = {n["title"]: n for n in wf["nodes"] if n["type"] == "PrimitiveNode"}
    assert set(prims) == {"width", "height"}
    for n in wf["nodes"]:
        if n["type"] == "PrimitiveNode":
            n["widgets_values"][0] = 640
    t = _by_type(to_api_prompt(load_workflow(wf), load_builtin_schema()))
    assert t["EmptyLatentImage"]["width"] == t["ModelSamplingFlux"]["height"] == 640


def test_every_parameter_can_be_patched_without_ambiguity():
    prompt = to_api_prompt(load_workflow(builtin_workflows()["finetuned_flux.json"]), load_builtin_schema())
    params = PromptParams(text="t", seed=1, lora_name="x.safetensors", strength_model=0.5, strength_clip=0.5,
                          width=832, height=1216, steps=20, guidance=3.0, sampler="euler", scheduler="simple",
                          denoise=1.0, filename_prefix="p", batch_size=2)
    assert validate_prompt(patch_prompt(prompt, params), load_builtin_schema()) == []


def test_layout_is_readable_no_overlapping_nodes_and_groups_contain_their_nodes():
    for wf in builtin_workflows().values():
        boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])  # + title bar
                 for n in wf["nodes"]]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        assert [g["title"] for g in wf["groups"]] == ["Models", "Prompt and size", "Sampling", "Image"]
        rects = [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in wf["groups"])]
        for i, a in enumerate(rects):
            for b in rects[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        assert wf["version"] == 0.4 and wf["last_node_id"] == len(wf["nodes"])
        orders = sorted(n["order"] for n in wf["nodes"])
        assert orders == list(range(len(wf["nodes"])))
        for link in wf["links"]:
            src = next(n for n in wf["nodes"] if n["id"] == link[1])
            dst = next(n for n in wf["nodes"] if n["id"] == link[3])
            assert src["order"] < dst["order"]
            assert dst["inputs"][link[4]]["link"] == link[0] and link[0] in src["outputs"][link[2]]["links"]


def test_write_builtin_workflows(tmp_path):
    paths = write_builtin_workflows(tmp_path / "wf")
    assert [p.name for p in paths] == NAMES
    assert all(load_workflow(p).kind == "ui" for p in paths)
