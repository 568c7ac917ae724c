"""The image pipeline: strengths, model patches between the loader (+LoRA) and the sampler, effective values."""

from __future__ import annotations

import pytest

from orchestrator.comfy.builtin import builtin_workflows
from orchestrator.comfy.pipeline import (ImagePipeline, ImageSpec, ModelPatch, effective_values, insert_model_patch,
                                         lora_loads)
from orchestrator.comfy.schema import load_builtin_schema, schemas_from_object_info
from orchestrator.comfy.workflow import load_workflow, to_api_prompt
from orchestrator.errors import ConfigError
from tests.comfy_double import DEFAULT_MODELS
from tests.comfy_double_nodes import object_info, validate


def shipped(name: str) -> dict:
    return to_api_prompt(load_workflow(builtin_workflows()[name]), load_builtin_schema())


def by_type(prompt: dict, cls: str) -> tuple[str, dict]:
    return next((nid, n) for nid, n in prompt.items() if n["class_type"] == cls)


@pytest.mark.parametrize("name,source", [("base_flux.json", "CheckpointLoaderSimple"),
                                         ("finetuned_flux.json", "LoraLoader")])
def test_a_model_patch_goes_after_the_loader_and_its_lora(name, source):
    prompt = shipped(name)
    patched, first = insert_model_patch(prompt, "TorchCompileModel", {"backend": "inductor"})
    src_id, _ = by_type(patched, source)
    assert patched[first] == {"inputs": {"backend": "inductor", "model": [src_id, 0]}, "class_type": "TorchCompileModel",
                              "_meta": {"title": "TorchCompileModel", "model_patch": True}}
    users = [(nid, n["class_type"]) for nid, n in patched.items() if n["inputs"].get("model") == [first, 0]]
    assert [cls for _, cls in users] == ["ModelSamplingFlux"]        # the rest takes the model through it
    assert not any(n["inputs"].get("model") == [src_id, 0] for nid, n in patched.items() if nid != first)
    again, second = insert_model_patch(patched, "EasyCache", {"reuse_threshold": 0.2}, title="speed")
    assert again[second]["inputs"]["model"] == [first, 0]            # stacked in call order
    assert by_type(again, "ModelSamplingFlux")[1]["inputs"]["model"] == [second, 0]
    assert prompt == shipped(name)                                    # the input is left alone
    # still a graph the server takes, once it knows the node (here: a pass-through MODEL -> MODEL class)
    info = object_info(DEFAULT_MODELS, [])
    for cls in ("TorchCompileModel", "EasyCache"):
        info[cls] = {**info["ModelSamplingFlux"], "name": cls,
                     "input": {"required": {"model": ["MODEL"]}}, "input_order": {"required": ["model"]}}
    for node in again.values():
        if node["class_type"] in ("TorchCompileModel", "EasyCache"):
            node["inputs"] = {"model": node["inputs"]["model"]}
    assert validate(again, info)[0] == 200


def test_no_model_loader_no_patch():
    with pytest.raises(ConfigError) as e:
        insert_model_patch({"1": {"class_type": "EmptyLatentImage", "inputs": {}}}, "TorchCompileModel", {})
    assert "has no model loader" in e.value.message


def test_the_pipeline_applies_model_patches_to_every_image(project):
    pipe = ImagePipeline(project, load_builtin_schema(), model_patches=[ModelPatch("TorchCompileModel",
                                                                                   {"backend": "inductor"})])
    prompt, _ = pipe.build(pipe.base(None, lora=True), ImageSpec(prompt="x", seed=1, lora="flux_dreambooth"))
    assert by_type(prompt, "ModelSamplingFlux")[1]["inputs"]["model"] == [by_type(prompt, "TorchCompileModel")[0], 0]


def _model_only(prompt: dict) -> dict:
    """The finetuned graph with LoraLoaderModelOnly (no CLIP strength) instead of LoraLoader."""
    nid, node = by_type(prompt, "LoraLoader")
    inputs = {k: v for k, v in node["inputs"].items() if k not in ("clip", "strength_clip")}
    clip_source = node["inputs"]["clip"]
    for other in prompt.values():
        for k, v in other["inputs"].items():
            if v == [nid, 1]:        # the text encoders take CLIP from where the LoRA loader took it
                other["inputs"][k] = clip_source
    prompt[nid] = {**node, "class_type": "LoraLoaderModelOnly", "inputs": inputs}
    return prompt


def test_strength_clip_follows_strength_unless_given(project, tmp_path):
    schema = schemas_from_object_info(object_info({**DEFAULT_MODELS, "loras": ["x.safetensors"]}, []))
    pipe = ImagePipeline(project, schema)
    base = pipe.base(None, lora=True)
    prompt, _ = pipe.build(base, ImageSpec(lora="X", strength=0.7))
    assert by_type(prompt, "LoraLoader")[1]["inputs"].items() >= {
        "lora_name": "x.safetensors", "strength_model": 0.7, "strength_clip": 0.7}.items()
    prompt, _ = pipe.build(base, ImageSpec(lora="x", strength=0.7, strength_clip=0.0))
    assert by_type(prompt, "LoraLoader")[1]["inputs"]["strength_clip"] == 0.0
    assert lora_loads(prompt) == [(by_type(prompt, "LoraLoader")[0], "x.safetensors")]
    assert effective_values(prompt).items() >= {"lora": "x.safetensors", "strength": 0.7, "strength_clip": 0.0,
                                                "width": 1024, "steps": 28, "sampler": "dpmpp_2m"}.items()
    import json

    path = tmp_path / "model_only.json"
    path.write_text(json.dumps(_model_only(shipped("finetuned_flux.json"))))
    only = pipe.base(str(path), lora=False)
    prompt, _ = pipe.build(only, ImageSpec(lora="x", strength=0.5))     # was: "cannot set strength_clip" in generate
    assert by_type(prompt, "LoraLoaderModelOnly")[1]["inputs"]["strength_model"] == 0.5
    with pytest.raises(ConfigError) as e:
        pipe.build(only, ImageSpec(lora="x", strength=0.5, strength_clip=0.5))
    assert "cannot set strength_clip: the workflow has no LoraLoader node" in e.value.message
    prompt, _ = pipe.build(base, ImageSpec(lora="x", strength=0.0, strength_clip=0.0))
    assert lora_loads(prompt) == []                                    # ComfyUI skips a LoRA at 0 / 0


def test_the_readme_pipeline_example_runs(project, monkeypatch):
    import contextlib
    import io
    import re
    from pathlib import Path

    from tests.comfy_double import ComfyDouble

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ImagePipeline(" in b)
    monkeypatch.chdir(project.root)
    out = io.StringIO()
    with ComfyDouble(steps=1) as d, contextlib.redirect_stdout(out):
        exec(compile(code.replace("http://127.0.0.1:8188", d.url), "README.md", "exec"), {})
        posted = d.posted[-1]["prompt"]
    assert "OutputImage(" in out.getvalue()
    patch = [nid for nid, n in posted.items() if n["_meta"].get("model_patch")]
    assert len(patch) == 1 and posted[patch[0]]["inputs"]["model"] == [by_type(posted, "LoraLoader")[0], 0]
    assert by_type(posted, "LoraLoader")[1]["inputs"]["lora_name"] == "flux_dreambooth.safetensors"
