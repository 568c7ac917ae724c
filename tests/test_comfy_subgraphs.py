"""Subgraph flattening (`outer:inner` ids) and the browser's recorded conversions as a cross-check."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from orchestrator.comfy.schema import schemas_from_object_info
from orchestrator.comfy.workflow import load_workflow, to_api_prompt
from tests.comfy_graphs import chain, inp, node, out, schema
from tests.conftest import shared_path

SUB = "5b0f0000-0000-4000-8000-00000000abcd"
INNER = "5b0f0000-0000-4000-8000-00000000beef"


def _definition(id_, nodes, links, inputs, outputs):
    return {"id": id_, "version": 1, "name": "sg", "inputNode": {"id": -10}, "outputNode": {"id": -20},
            "inputs": inputs, "outputs": outputs, "widgets": [], "nodes": nodes, "links": links}


def _encode_subgraph(inner_mode=0):
    """Encode (id 1) inside a subgraph: subgraph input 0 = clip, output 0 = conditioning."""
    return _definition(
        SUB,
        [node(1, "Encode", ["inside"], mode=inner_mode, inputs=[inp("clip", "CLIP", 101)],
              outputs=[out("CONDITIONING", "CONDITIONING", [102])])],
        [{"id": 101, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "CLIP"},
         {"id": 102, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"}],
        [{"id": "i0", "name": "clip", "type": "CLIP", "linkIds": [101]}],
        [{"id": "o0", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [102]}])


def _root_with_subgraph(definitions, mode=0):
    ui = chain()
    ui["nodes"][2] = node(3, SUB, [], mode=mode, inputs=[inp("clip", "CLIP", 4)],
                          outputs=[out("CONDITIONING", "CONDITIONING", [5])])
    ui["definitions"] = {"subgraphs": definitions}
    return ui


def convert(ui):
    return to_api_prompt(load_workflow(ui), schema(), now=datetime(2026, 11, 26))


def test_inner_nodes_get_outer_inner_ids_and_links_cross_the_boundary():
    p = convert(_root_with_subgraph([_encode_subgraph()]))
    assert "3" not in p
    assert p["3:1"] == {"inputs": {"text": "inside", "clip": ["2", 1]}, "class_type": "Encode",
                        "_meta": {"title": "Encode"}}
    assert p["5"]["inputs"]["positive"] == ["3:1", 0]
    assert list(p)[-1] == "3:1"                   # non-integer keys come after the integer ones


def test_nested_subgraphs_flatten_to_a_b_c():
    inner = _encode_subgraph()
    inner["id"] = INNER
    outer = _definition(
        SUB,
        [node(7, INNER, [], inputs=[inp("clip", "CLIP", 201)], outputs=[out("CONDITIONING", "CONDITIONING", [202])])],
        [{"id": 201, "origin_id": -10, "origin_slot": 0, "target_id": 7, "target_slot": 0, "type": "CLIP"},
         {"id": 202, "origin_id": 7, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"}],
        [{"id": "i0", "name": "clip", "type": "CLIP", "linkIds": [201]}],
        [{"id": "o0", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [202]}])
    p = convert(_root_with_subgraph([outer, inner]))
    assert p["3:7:1"]["inputs"]["clip"] == ["2", 1]
    assert p["5"]["inputs"]["positive"] == ["3:7:1", 0]


def test_muted_subgraph_instance_leaves_out_its_inner_nodes():
    p = convert(_root_with_subgraph([_encode_subgraph()], mode=2))
    assert not [k for k in p if k.startswith("3")] and "positive" not in p["5"]["inputs"]


def test_bypassed_inner_node_passes_through_by_type():
    p = convert(_root_with_subgraph([_encode_subgraph(inner_mode=4)]))
    assert "3:1" not in p and "positive" not in p["5"]["inputs"]   # CONDITIONING cannot pass through CLIP


def test_unlinked_subgraph_input_with_a_promoted_widget_gives_its_value():
    sg = _definition(
        SUB,
        [node(1, "Latent", [8, 8], inputs=[inp("width", "INT", 101, widget=True)],
              outputs=[out("LATENT", "LATENT", [102])])],
        [{"id": 101, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "INT"},
         {"id": 102, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"}],
        [{"id": "i0", "name": "width", "type": "INT", "linkIds": [101]}],
        [{"id": "o0", "name": "LATENT", "type": "LATENT", "linkIds": [102]}])
    ui = chain()
    ui["nodes"][3] = node(4, SUB, [96], inputs=[inp("width", "INT", None, widget=True)],
                          outputs=[out("LATENT", "LATENT", [6])])
    ui["definitions"] = {"subgraphs": [sg]}
    p = convert(ui)
    assert p["4:1"]["inputs"] == {"width": 96, "height": 8}
    assert p["5"]["inputs"]["latent"] == ["4:1", 0]


def test_a_subgraph_that_contains_itself_is_an_error():
    from orchestrator.errors import ConfigError

    sg = _encode_subgraph()
    sg["nodes"].append(node(2, SUB, []))
    with pytest.raises(ConfigError, match="nested"):
        convert(_root_with_subgraph([sg]))


# ---- cross-check: what the real frontend 1.35.9 produced (skipped without ../shared)

CASES = ["flux_lora", "features", "flux_subgraph", "quirks", "default_graph"]


def _reference(case):
    obj = json.loads(shared_path("comfyui", "object_info.json").read_text())
    recorded = json.loads(shared_path("comfyui", "conversion", f"{case}_frontend_out.json").read_text())
    return schemas_from_object_info(obj), recorded


@pytest.mark.parametrize("case", CASES)
def test_matches_the_browser_on_the_recorded_ui_files(case):
    # The only random/clock-dependent parts of these files: quirks_ui.json's `{sks|sks}` (both
    # options are equal, so any rng gives the same text) and its %date:yyyy-MM-dd%, recorded on
    # 2026-11-26: we pass that date as `now`. Nothing else is normalised; key order is compared too.
    schemas, recorded = _reference(case)
    source = (shared_path("comfyui", "conversion", f"{case}_ui.json") if case != "default_graph" else None)
    ui = json.loads(source.read_text()) if source else recorded["workflow"]
    got = to_api_prompt(load_workflow(ui), schemas, now=datetime(2026, 11, 26, 12, 0))
    assert json.dumps(got) == json.dumps(recorded["output"])


@pytest.mark.parametrize("case", CASES)
def test_matches_the_browser_on_its_own_re_saved_workflow(case):
    schemas, recorded = _reference(case)
    got = to_api_prompt(load_workflow(recorded["workflow"]), schemas, now=datetime(2026, 11, 26, 12, 0))
    assert got == recorded["output"]
