"""The UI workflow a PNG carries shows the values the image was made with."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.comfy.patch import PromptParams, parse_set, patch_prompt
from orchestrator.comfy.schema import load_builtin_schema
from orchestrator.comfy.uivalues import reflect_in_ui
from orchestrator.comfy.workflow import load_workflow, to_api_prompt

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_through_the_browser_conversion():
    schema = load_builtin_schema()
    for name in ("base_flux.json", "finetuned_flux.json"):
        ui = json.loads((ROOT / "workflows" / name).read_text())
        before = to_api_prompt(load_workflow(ui), schema)
        lora = {"lora_name": "mine.safetensors", "strength_model": 0.7, "strength_clip": 0.7} \
            if "finetuned" in name else {}
        after = patch_prompt(before, PromptParams(text="a red fox", seed=123, width=768, height=1152, steps=12,
                                                  guidance=2.5, sampler="euler", scheduler="simple",
                                                  sets=(parse_set("BasicScheduler.denoise=0.8"),), **lora))
        shown = reflect_in_ui(ui, before, after, schema)
        assert to_api_prompt(load_workflow(shown), schema) == after          # reopened, it queues the same
        assert ui == json.loads((ROOT / "workflows" / name).read_text())      # the input is not modified
        primitives = sorted(n["widgets_values"][0] for n in shown["nodes"] if n["type"] == "PrimitiveNode")
        assert primitives == [768, 1152]


def test_unknown_nodes_and_links_are_left_alone():
    schema = load_builtin_schema()
    ui = {"nodes": [{"id": 1, "type": "Mystery", "widgets_values": [1]}], "links": []}
    before = {"1": {"class_type": "Mystery", "inputs": {"x": 1}}, "2": {"class_type": "Other", "inputs": {}}}
    after = {"1": {"class_type": "Mystery", "inputs": {"x": 2}}, "2": {"class_type": "Other", "inputs": {"y": 3}}}
    assert reflect_in_ui(ui, before, after, schema) == ui
