"""UI -> API conversion: each rule of the browser's graphToPrompt on its own small graph."""

from __future__ import annotations

import copy
import json
import random
from datetime import datetime

import pytest

from orchestrator.comfy.workflow import load_workflow, to_api_prompt
from orchestrator.errors import ConfigError
from tests.comfy_graphs import chain, graph, inp, node, out, schema

NOW = datetime(2026, 11, 26, 7, 5, 9)


def convert(ui, **kw):
    return to_api_prompt(load_workflow(ui), schema(), now=kw.pop("now", NOW), **kw)


def test_nodes_become_entries_with_class_type_and_title():
    p = convert(chain())
    assert list(p) == ["1", "2", "3", "4", "5", "6", "7"]
    assert p["1"] == {"inputs": {"ckpt_name": "a.safetensors"}, "class_type": "Loader",
                      "_meta": {"title": "Load Checkpoint"}}
    assert p["4"]["_meta"]["title"] == "Latent"          # display_name null -> class name


def test_node_title_overrides_display_name():
    ui = chain()
    ui["nodes"][2]["title"] = "Positive"
    assert convert(ui)["3"]["_meta"]["title"] == "Positive"


def test_widgets_by_schema_order_then_links_in_input_order():
    p = convert(chain())
    assert list(p["5"]["inputs"].items()) == [
        ("seed", 7), ("steps", 20), ("scheduler", "simple"),
        ("model", ["2", 0]), ("positive", ["3", 0]), ("latent", ["4", 0])]


def test_control_after_generate_slot_is_skipped_and_value_sent_as_is():
    # [seed, "randomize", steps, ...]: the control is not sent; the current seed is.
    assert convert(chain())["5"]["inputs"]["seed"] == 7


def test_combo_with_control_takes_control_and_filter_slots():
    ui = graph([node(1, "PickMode", ["b", "increment", "", 5])], [])
    assert convert(ui)["1"]["inputs"] == {"mode": "b", "n": 5}


def test_image_upload_slot_is_skipped():
    ui = graph([node(1, "Upload", ["y.png", "image"])], [])
    assert convert(ui)["1"]["inputs"] == {"image": "y.png"}


def test_force_input_is_not_a_widget_and_optional_widgets_follow_required():
    ui = graph([node(1, "Forced", [3]), node(2, "Opt", [4, "adv"])], [])
    p = convert(ui)
    assert p["1"]["inputs"] == {"k": 3}
    assert list(p["2"]["inputs"].items()) == [("a", 4), ("b", "adv")]


def test_short_widgets_values_use_defaults_and_dict_widgets_values_match_by_name():
    ui = graph([node(1, "Opt", [9]), node(2, "Latent", {"height": 48, "width": 16})], [])
    p = convert(ui)
    assert p["1"]["inputs"] == {"a": 9, "b": ""}
    assert p["2"]["inputs"] == {"width": 16, "height": 48}


def test_widget_input_linked_is_overridden_by_the_link_in_place():
    ui = chain()
    ui["nodes"].append(node(8, "IntNode", [777, "fixed"], outputs=[out("INT", "INT", [10])]))
    ui["nodes"][4]["inputs"].append(inp("seed", "INT", 10, widget=True))
    ui["links"].append([10, 8, 0, 5, 4, "INT"])
    p = convert(ui)
    assert list(p["5"]["inputs"])[0] == "seed"
    assert p["5"]["inputs"]["seed"] == ["8", 0]
    assert p["8"]["inputs"] == {"value": 777}


def test_unconnected_nodes_are_still_included():
    ui = chain()
    ui["nodes"].append(node(9, "Latent", [16, 16]))
    assert "9" in convert(ui)


def test_reroute_is_followed_to_the_real_origin():
    ui = chain()
    ui["nodes"].append(node(20, "Reroute", inputs=[inp("", "*", 11)], outputs=[out("", "VAE", [12])],
                            properties={"showOutputText": False}))
    ui["nodes"][5]["inputs"][1]["link"] = 12
    ui["links"] = [lk for lk in ui["links"] if lk[0] != 8] + [[11, 1, 2, 20, 0, "*"], [12, 20, 0, 6, 1, "VAE"]]
    p = convert(ui)
    assert "20" not in p
    assert p["6"]["inputs"]["vae"] == ["1", 2]


def test_chained_reroutes():
    ui = chain()
    ui["nodes"] += [node(20, "Reroute", inputs=[inp("", "*", 11)], outputs=[out("", "VAE", [13])]),
                    node(21, "Reroute", inputs=[inp("", "*", 13)], outputs=[out("", "VAE", [12])])]
    ui["nodes"][5]["inputs"][1]["link"] = 12
    ui["links"] = [lk for lk in ui["links"] if lk[0] != 8] + [
        [11, 1, 2, 20, 0, "*"], [13, 20, 0, 21, 0, "*"], [12, 21, 0, 6, 1, "VAE"]]
    assert convert(ui)["6"]["inputs"]["vae"] == ["1", 2]


def _with_primitive(value, control="fixed", replace=False):
    ui = chain()
    ui["nodes"].append(node(30, "PrimitiveNode", [value, control], title="w",
                            outputs=[out("INT", "INT", [20], widget="width")],
                            properties={"Run widget replace on values": replace}))
    ui["nodes"][3]["inputs"].append(inp("width", "INT", 20, widget=True))
    ui["links"].append([20, 30, 0, 4, 0, "INT"])
    return ui


def test_primitive_node_pushes_its_value_into_the_target_widget():
    p = convert(_with_primitive(896))
    assert "30" not in p
    assert p["4"]["inputs"] == {"width": 896, "height": 32}    # value, not a link; own 64 ignored


def test_string_primitive_into_converted_text_widget():
    ui = chain()
    ui["nodes"].append(node(30, "PrimitiveNode", ["a {red|red} fox"], outputs=[out("STRING", "STRING", [20],
                                                                                  widget="text")]))
    ui["nodes"][2]["inputs"].append(inp("text", "STRING", 20, widget=True))
    ui["links"].append([20, 30, 0, 3, 1, "STRING"])
    assert convert(ui)["3"]["inputs"]["text"] == "a red fox"     # and dynamic prompts still apply


def test_muted_node_is_left_out_and_links_to_it_dropped():
    p = convert(chain(decode_mode=2))
    assert "6" not in p
    assert p["7"]["inputs"] == {"filename_prefix": "out"}


def test_bypassed_node_passes_each_output_through_the_matching_input():
    p = convert(chain(lora_mode=4))
    assert "2" not in p
    assert p["5"]["inputs"]["model"] == ["1", 0]
    assert p["3"]["inputs"]["clip"] == ["1", 1]


def test_bypass_with_no_matching_input_makes_the_downstream_input_disappear():
    ui = chain()
    ui["nodes"][2]["mode"] = 4          # Encode: CONDITIONING out, only CLIP in
    p = convert(ui)
    assert "3" not in p and "positive" not in p["5"]["inputs"]


def test_bypass_prefers_same_slot_then_first_exact_type():
    # Two bypassed LoRAs in a row: resolution repeats through the chain.
    ui = chain(lora_mode=4)
    ui["nodes"].append(node(9, "Lora", ["l.safetensors", 1.0], mode=4,
                            inputs=[inp("model", "MODEL", 3), inp("clip", "CLIP", 21)],
                            outputs=[out("MODEL", "MODEL", [22]), out("CLIP", "CLIP", [])]))
    ui["links"] = [lk for lk in ui["links"] if lk[0] != 3] + [[3, 2, 0, 9, 0, "MODEL"], [21, 2, 1, 9, 1, "CLIP"],
                                                              [22, 9, 0, 5, 0, "MODEL"]]
    ui["nodes"][1]["outputs"][0]["links"] = [3]
    ui["nodes"][4]["inputs"][0]["link"] = 22
    assert convert(ui)["5"]["inputs"]["model"] == ["1", 0]


def test_dangling_links_and_missing_link_ids_are_dropped():
    ui = chain()
    ui["nodes"][5]["inputs"][1]["link"] = 999           # no such link
    assert "vae" not in convert(ui)["6"]["inputs"]


def test_frontend_only_notes_are_left_out():
    ui = chain()
    ui["nodes"] += [node(40, "Note", ["hello"]), node(41, "MarkdownNote", ["# hi"])]
    assert "40" not in convert(ui) and "41" not in convert(ui)


def test_unknown_node_type_is_a_clear_error():
    ui = chain()
    ui["nodes"].append(node(50, "FancyCustomNode", [1]))
    with pytest.raises(ConfigError) as e:
        convert(ui)
    assert "node 50 (FancyCustomNode)" in e.value.message and "test schema" in e.value.message


def test_unknown_node_type_is_fine_when_muted():
    ui = chain()
    ui["nodes"].append(node(50, "FancyCustomNode", [1], mode=2))
    assert "50" not in convert(ui)


def test_circular_reroutes_are_a_clear_error():
    ui = chain()
    ui["nodes"] += [node(20, "Reroute", inputs=[inp("", "*", 13)], outputs=[out("", "VAE", [12, 14])]),
                    node(21, "Reroute", inputs=[inp("", "*", 14)], outputs=[out("", "VAE", [13])])]
    ui["nodes"][5]["inputs"][1]["link"] = 12
    ui["links"] += [[12, 20, 0, 6, 1, "VAE"], [13, 21, 0, 20, 0, "*"], [14, 20, 0, 21, 0, "*"]]
    with pytest.raises(ConfigError, match="circular"):
        convert(ui)


def test_array_widget_values_are_wrapped():
    ui = graph([node(1, "Many", [["a", "b"]])], [])
    assert convert(ui)["1"]["inputs"] == {"items": {"__value__": ["a", "b"]}}


def test_integral_floats_are_sent_as_integers_like_javascript():
    ui = chain()
    ui["nodes"][1]["widgets_values"] = ["l.safetensors", 1.0]
    value = convert(ui)["2"]["inputs"]["strength"]
    assert value == 1 and isinstance(value, int)


def test_dynamic_prompt_choices_use_the_injected_rng():
    ui = chain()
    ui["nodes"][2]["widgets_values"] = ["a {red|green|blue} {cat|dog} // note"]
    first = convert(ui, rng=random.Random(3))["3"]["inputs"]["text"]
    assert first == convert(ui, rng=random.Random(3))["3"]["inputs"]["text"]
    assert first.split()[1] in ("red", "green", "blue") and first.split()[2] in ("cat", "dog")
    assert "//" not in first
    seen = {convert(ui, rng=random.Random(s))["3"]["inputs"]["text"] for s in range(40)}
    assert len(seen) == 6


def test_dynamic_prompts_only_on_widgets_that_ask_for_them():
    ui = chain()
    ui["nodes"][6]["widgets_values"] = ["{a|b} // x"]   # Save's filename_prefix has no dynamicPrompts
    assert convert(ui)["7"]["inputs"]["filename_prefix"] == "{a|b} // x"


def test_filename_prefix_of_save_nodes_expands_date_and_node_widgets():
    ui = chain()
    ui["nodes"][3]["title"] = "Img"
    ui["nodes"].append(node(8, "SaveImage", ["runs/%date:yyyy-MM-dd%/%Img.width%x%Latent.height%_%Nope.x%"],
                            properties={}))
    p = convert(ui)
    assert p["8"]["inputs"]["filename_prefix"] == "runs/2026-11-26/64x32_%Nope.x%"


def test_filename_prefix_sees_primitive_values_and_replaces_slashes():
    ui = _with_primitive(896)
    ui["nodes"][0]["title"] = "Ck"
    ui["nodes"].append(node(8, "SaveImage", ["%Latent.width%-%Ck.ckpt_name%-%width%"], properties={}))
    assert convert(ui)["8"]["inputs"]["filename_prefix"] == "896-a.safetensors-%width%"


def test_primitive_with_replace_property_expands_its_text():
    ui = chain()
    ui["nodes"].append(node(30, "PrimitiveNode", ["%date:yy%_x"], outputs=[out("STRING", "STRING", [20],
                                                                              widget="filename_prefix")],
                            properties={"Run widget replace on values": True}))
    ui["nodes"][6]["inputs"].append(inp("filename_prefix", "STRING", 20, widget=True))
    ui["links"].append([20, 30, 0, 7, 1, "STRING"])
    assert convert(ui)["7"]["inputs"]["filename_prefix"] == "26_x"


def test_api_format_is_returned_as_a_copy():
    api = {"1": {"class_type": "Latent", "inputs": {"width": 8, "height": 8}}}
    wf = load_workflow(api)
    assert wf.kind == "api"
    p = to_api_prompt(wf, schema())
    assert p == api
    p["1"]["inputs"]["width"] = 16
    assert api["1"]["inputs"]["width"] == 8


def test_conversion_does_not_mutate_the_workflow():
    ui = _with_primitive(896)
    wf = load_workflow(ui)
    before = copy.deepcopy(wf.data)
    convert(wf.data)
    to_api_prompt(wf, schema())
    assert wf.data == before


def test_output_is_json_serialisable_and_stable():
    a = json.dumps(convert(chain()))
    assert a == json.dumps(convert(chain()))


def test_legacy_group_nodes_are_refused_with_a_hint():
    ui = chain()
    ui["extra"] = {"groupNodes": {"x": {}}}
    with pytest.raises(ConfigError) as e:
        convert(ui)
    assert "subgraph" in e.value.hint
