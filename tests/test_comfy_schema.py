"""Node schemas from /object_info and from the shipped schemas/nodes.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from orchestrator.comfy.builtin import builtin_workflows
from orchestrator.comfy.schema import (
    InputSpec, load_builtin_schema, schemas_from_object_info, schemas_from_shipped,
)
from orchestrator.errors import ConfigError
from tests.comfy_graphs import OBJECT_INFO, schema
from tests.conftest import shared_path


def test_inputs_in_order_required_then_optional_hidden_ignored():
    s = schema()
    assert [i.name for i in s["Opt"].inputs] == ["a", "b", "m"]
    assert [i.required for i in s["Opt"].inputs] == [True, False, False]
    assert [i.name for i in s["Save"].inputs] == ["images", "filename_prefix"]


def test_widget_and_socket_types():
    s = schema()
    spec = {i.name: i for i in s["Sampler"].inputs}
    assert spec["model"].is_widget is False and spec["model"].type == "MODEL"
    assert spec["steps"].is_widget and (spec["steps"].min, spec["steps"].max, spec["steps"].default) == (1, 100, 1)
    assert spec["scheduler"].is_combo and spec["scheduler"].options == ("simple", "normal")   # V3 "COMBO"
    assert s["Loader"].inputs[0].is_combo and s["Loader"].inputs[0].options == ("a.safetensors", "b.safetensors")
    assert s["Forced"].input("value").force_input and not s["Forced"].input("value").is_widget
    assert s["Opt"].input("b").advanced and s["Opt"].input("b").is_widget


def test_widget_layout_has_the_frontend_only_slots():
    s = schema()
    assert [n for n, _ in s["Sampler"].widget_layout()] == ["seed", "control_after_generate", "steps", "scheduler"]
    assert [n for n, _ in s["PickMode"].widget_layout()] == ["mode", "control_after_generate",
                                                             "control_filter_list", "n"]
    assert [n for n, _ in s["Upload"].widget_layout()] == ["image", "upload"]
    assert [spec is None for _, spec in s["Upload"].widget_layout()] == [False, True]


def test_outputs_titles_and_output_nodes():
    s = schema()
    assert [(o.name, o.type) for o in s["Loader"].outputs] == [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]
    assert s["Loader"].title == "Load Checkpoint" and s["Latent"].title == "Latent"
    assert s["Save"].output_node and not s["Loader"].output_node


def test_malformed_entries_are_tolerated_and_non_objects_refused():
    s = schemas_from_object_info({"A": {"input": {"required": {"x": "weird"}}}, "B": 3})
    assert "B" not in s and s["A"].inputs[0].type == "*"
    with pytest.raises(ConfigError):
        schemas_from_object_info([1, 2])   # type: ignore[arg-type]


def test_shipped_schema_covers_every_node_of_our_workflows():
    s = load_builtin_schema()
    used = {n["type"] for wf in builtin_workflows().values() for n in wf["nodes"]}
    frontend_only = {"PrimitiveNode", "Note"}
    assert used - frontend_only <= set(s)
    assert s.source == "builtin" and len(s) < 40
    assert s["LoraLoader"].input("lora_name").folder == "loras"
    assert s["LoraLoader"].input("lora_name").options is None       # model files: known only to a server
    assert "dpmpp_2m" in s["KSamplerSelect"].input("sampler_name").options
    assert "sgm_uniform" in s["BasicScheduler"].input("scheduler").options


def test_shipped_format_shared_lists_and_named_outputs():
    doc = {"lists": {"xs": ["a", "b"]}, "nodes": {"N": {"title": None, "inputs": [
        ["c", "COMBO", {"options": "@xs"}], ["o", "INT", {"optional": True, "default": 3}]],
        "outputs": ["out:LATENT", "IMAGE"], "output_node": True}}}
    n = schemas_from_shipped(doc)["N"]
    assert n.input("c").options == ("a", "b") and n.input("o").required is False and n.input("o").default == 3
    assert [(o.name, o.type) for o in n.outputs] == [("out", "LATENT"), ("IMAGE", "IMAGE")]
    assert n.title == "N" and n.output_node


def test_shipped_schema_agrees_with_the_recorded_object_info():
    """Cross-check (skips without ../shared): every shipped class matches the real server's schema."""
    live = schemas_from_object_info(json.loads(shared_path("comfyui", "object_info.json").read_text()))
    shipped = load_builtin_schema()
    for name in shipped:
        assert name in live, name
        a, b = shipped[name], live[name]
        assert (a.display_name, a.outputs, a.output_node) == (b.display_name, b.outputs, b.output_node), name
        assert [i.name for i in a.inputs] == [i.name for i in b.inputs], name
        for mine, real in zip(a.inputs, b.inputs):
            if mine.folder:        # a file picker: the server lists whatever is in its folder
                assert real.is_combo, (name, mine.name)
                real = dataclasses.replace(real, options=None, folder=mine.folder)
            assert mine == real, (name, mine.name)


def test_default_values():
    assert InputSpec("x", "INT").default_value() == 0
    assert InputSpec("x", "COMBO", options=("p", "q")).default_value() == "p"
    assert InputSpec("x", "STRING", default="d").default_value() == "d"
    assert OBJECT_INFO["Save"]["input"]["required"]["filename_prefix"][1]["default"] == "ComfyUI"
