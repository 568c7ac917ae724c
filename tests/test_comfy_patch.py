"""Patching API prompts: each parameter, no/several candidates, --set, required models."""

from __future__ import annotations

import pytest

from orchestrator.comfy.builtin import builtin_workflows
from orchestrator.comfy.patch import (
    PromptParams, parse_set, patch_prompt, positive_text_nodes, required_models,
)
from orchestrator.comfy.schema import load_builtin_schema
from orchestrator.comfy.workflow import load_workflow, to_api_prompt
from orchestrator.errors import ConfigError


def prompt(name="finetuned_flux.json"):
    return to_api_prompt(load_workflow(builtin_workflows()[name]), load_builtin_schema())


def ids(p):
    return {n["class_type"]: nid for nid, n in p.items()}


P = prompt()
I = ids(P)


@pytest.mark.parametrize("param, value, cls, input_name", [
    ("seed", 123, "RandomNoise", "noise_seed"),
    ("lora_name", "mine.safetensors", "LoraLoader", "lora_name"),
    ("strength_model", 0.7, "LoraLoader", "strength_model"),
    ("strength_clip", 0.3, "LoraLoader", "strength_clip"),
    ("steps", 20, "BasicScheduler", "steps"),
    ("guidance", 4.0, "FluxGuidance", "guidance"),
    ("sampler", "euler", "KSamplerSelect", "sampler_name"),
    ("scheduler", "simple", "BasicScheduler", "scheduler"),
    ("denoise", 0.6, "BasicScheduler", "denoise"),
    ("filename_prefix", "tj/run1", "SaveImage", "filename_prefix"),
    ("batch_size", 4, "EmptyLatentImage", "batch_size"),
])
def test_each_parameter_lands_on_its_node(param, value, cls, input_name):
    out = patch_prompt(P, PromptParams(**{param: value}))
    assert out[I[cls]]["inputs"][input_name] == value
    changed = [(nid, k) for nid in P for k in P[nid]["inputs"] if P[nid]["inputs"][k] != out[nid]["inputs"][k]]
    assert changed == [(I[cls], input_name)]


def test_text_goes_to_the_positive_encoder():
    out = patch_prompt(P, PromptParams(text="a tjtoy toy on the moon"))
    assert out[I["CLIPTextEncode"]]["inputs"]["text"] == "a tjtoy toy on the moon"


def test_width_and_height_set_latent_and_model_sampling_together():
    out = patch_prompt(P, PromptParams(width=768, height=1344))
    for cls in ("EmptyLatentImage", "ModelSamplingFlux"):
        assert (out[I[cls]]["inputs"]["width"], out[I[cls]]["inputs"]["height"]) == (768, 1344)


def test_patch_returns_a_copy_and_leaves_the_input_alone():
    before = prompt()
    patch_prompt(P, PromptParams(seed=1, text="x"))
    assert P == before


def test_numbers_are_normalised():
    out = patch_prompt(P, PromptParams(seed="77", strength_model=1))   # type: ignore[arg-type]
    assert out[I["RandomNoise"]]["inputs"]["noise_seed"] == 77
    assert isinstance(out[I["LoraLoader"]]["inputs"]["strength_model"], float)


def test_no_candidate_is_a_clear_error():
    base = prompt("base_flux.json")
    with pytest.raises(ConfigError) as e:
        patch_prompt(base, PromptParams(lora_name="x.safetensors"))
    assert "no LoraLoader or LoraLoaderModelOnly node" in e.value.message
    assert "--set" in e.value.hint


def test_several_candidates_is_a_clear_error_naming_them():
    p = prompt()
    p["99"] = {"class_type": "LoraLoader", "inputs": dict(p[I["LoraLoader"]]["inputs"]), "_meta": {"title": "second"}}
    with pytest.raises(ConfigError) as e:
        patch_prompt(p, PromptParams(strength_model=0.5))
    assert "several nodes" in e.value.message and "99 (LoraLoader 'second')" in e.value.message
    assert e.value.hint.startswith("choose one with --set 4.strength_model=")


def test_positive_text_is_traced_through_the_guider_not_the_negative():
    p = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["9", 0]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["9", 0]}},
        "3": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["2", 0]}},
        "4": {"class_type": "CFGGuider", "inputs": {"positive": ["3", 0], "negative": ["1", 0], "cfg": 1.0}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
    }
    assert positive_text_nodes(p) == ["2"]
    out = patch_prompt(p, PromptParams(text="new"))
    assert out["2"]["inputs"]["text"] == "new" and out["1"]["inputs"]["text"] == "neg"


def test_ksampler_positive_and_text_encode_flux_gets_both_texts():
    p = {"1": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip_l": "a", "t5xxl": "a", "guidance": 3.5}},
         "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad"}},
         "3": {"class_type": "KSampler", "inputs": {"positive": ["1", 0], "negative": ["2", 0], "seed": 1}}}
    out = patch_prompt(p, PromptParams(text="b", seed=5))
    assert out["1"]["inputs"] == {"clip_l": "b", "t5xxl": "b", "guidance": 3.5}
    assert out["3"]["inputs"]["seed"] == 5


def test_two_positive_encoders_are_several_candidates():
    p = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a"}},
         "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "b"}},
         "3": {"class_type": "ConditioningCombine", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
         "4": {"class_type": "BasicGuider", "inputs": {"conditioning": ["3", 0]}}}
    with pytest.raises(ConfigError, match="several nodes"):
        patch_prompt(p, PromptParams(text="x"))


def test_without_any_sampler_a_single_encoder_is_used():
    p = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a"}}}
    assert patch_prompt(p, PromptParams(text="z"))["1"]["inputs"]["text"] == "z"


def test_linked_inputs_set_the_primitive_they_come_from_or_fail_clearly():
    p = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
         "2": {"class_type": "RandomNoise", "inputs": {"noise_seed": ["1", 0]}}}
    assert patch_prompt(p, PromptParams(seed=9))["1"]["inputs"]["value"] == 9
    p["1"]["class_type"] = "SomeMath"
    with pytest.raises(ConfigError) as e:
        patch_prompt(p, PromptParams(seed=9))
    assert "wired to node 1 (SomeMath)" in e.value.message


def test_sets_by_id_title_and_type_with_types_from_the_replaced_value():
    out = patch_prompt(P, PromptParams(sets=(
        parse_set(f"{I['BasicScheduler']}.steps=12"),
        parse_set("Prompt.text=hello there"),
        parse_set("SaveImage.filename_prefix=2024"),
        parse_set("Load LoRA.strength_clip=0.25"),
        parse_set("RandomNoise.noise_seed=18446744073709551615"),
    )))
    assert out[I["RandomNoise"]]["inputs"]["noise_seed"] == 18446744073709551615
    assert out[I["BasicScheduler"]]["inputs"]["steps"] == 12
    assert out[I["CLIPTextEncode"]]["inputs"]["text"] == "hello there"
    assert out[I["SaveImage"]]["inputs"]["filename_prefix"] == "2024"          # stays a string
    assert out[I["LoraLoader"]]["inputs"]["strength_clip"] == 0.25


def test_sets_errors():
    with pytest.raises(ConfigError) as e:
        patch_prompt(P, PromptParams(sets=(("Nope", "x", 1),)))
    assert "no node 'Nope'" in e.value.message and any("LoraLoader" in d for d in e.value.details)
    with pytest.raises(ConfigError) as e:
        patch_prompt(P, PromptParams(sets=(("Prompt", "txt", "a"),)))
    assert "has no input 'txt'" in e.value.message and "text" in e.value.hint
    with pytest.raises(ConfigError, match="is not a number"):
        patch_prompt(P, PromptParams(sets=(("BasicScheduler", "steps", "many"),)))
    for value in ("nan", "inf", "-Infinity", float("nan")):  # json.dumps would send NaN, which is not JSON
        with pytest.raises(ConfigError, match="is not a finite number"):
            patch_prompt(P, PromptParams(sets=(("FluxGuidance", "guidance", value),)))


def test_parse_set():
    assert parse_set("12.steps=20") == ("12", "steps", "20")
    assert parse_set("My v1.2 node.text=a=b") == ("My v1.2 node", "text", "a=b")
    for bad in ("12steps=3", "=3", "12.=3", "12.steps"):
        with pytest.raises(ConfigError, match="NODE.INPUT=VALUE"):
            parse_set(bad)


def test_required_models():
    assert required_models(P) == {"checkpoints": ["flux1-dev.safetensors"],
                                  "text_encoders": ["t5xxl_fp16.safetensors", "clip_l.safetensors"],
                                  "vae": ["ae.safetensors"], "loras": ["flux_dreambooth.safetensors"]}
    unet = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "u.safetensors"}},
            "2": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
            "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": ["9", 0]}}}
    assert required_models(unet) == {"checkpoints": [], "text_encoders": [], "vae": [], "loras": [],
                                     "diffusion_models": ["u.safetensors"]}
