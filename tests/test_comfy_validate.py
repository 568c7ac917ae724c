"""validate_prompt: the problems the server would report, one readable line each."""

from __future__ import annotations

import copy

import pytest

from orchestrator.comfy.schema import load_builtin_schema
from orchestrator.comfy.validate import validate_prompt
from orchestrator.comfy.workflow import load_workflow, to_api_prompt
from tests.comfy_graphs import chain, schema

S = schema()
GOOD = to_api_prompt(load_workflow(chain()), S)
GOOD["5"]["inputs"]["negative"] = ["3", 0]         # chain() leaves the negative unconnected


def check(mutate):
    p = copy.deepcopy(GOOD)
    mutate(p)
    return validate_prompt(p, S)


def test_a_valid_prompt_has_no_problems():
    assert validate_prompt(GOOD, S) == []


def test_unknown_class_type_and_missing_class_type():
    assert check(lambda p: p["3"].update(class_type="Nope")) == [
        "node 3: unknown node type 'Nope' (not installed on the server)"]
    assert check(lambda p: p["3"].pop("class_type")) == ["node 3: has no class_type"]
    builtin = validate_prompt({"1": {"class_type": "Nope", "inputs": {}}}, load_builtin_schema())
    assert "offline schema" in builtin[0]


def test_required_input_missing():
    assert check(lambda p: p["5"]["inputs"].pop("steps")) == ["node 5 (Sampler) input steps: required input missing"]


def test_value_not_in_list():
    assert check(lambda p: p["2"]["inputs"].update(lora_name="x.safetensors")) == [
        "node 2 (Lora) input lora_name: 'x.safetensors' not in list (available: l.safetensors)"]


def test_out_of_range_and_not_a_number():
    assert check(lambda p: p["5"]["inputs"].update(steps=0)) == [
        "node 5 (Sampler) input steps: 0 is smaller than the minimum 1"]
    assert check(lambda p: p["5"]["inputs"].update(steps=101)) == [
        "node 5 (Sampler) input steps: 101 is bigger than the maximum 100"]
    assert check(lambda p: p["5"]["inputs"].update(steps="many")) == [
        "node 5 (Sampler) input steps: 'many' is not an INT"]
    assert check(lambda p: p["2"]["inputs"].update(strength="x")) == [
        "node 2 (Lora) input strength: 'x' is not a FLOAT"]
    assert check(lambda p: p["5"]["inputs"].update(steps="12")) == []          # the server converts it


def test_bad_links():
    assert check(lambda p: p["6"]["inputs"].update(vae=["1", 2, 3])) == [
        "node 6 (Decode) input vae: bad link ['1', 2, 3] (a link is [node id, output index])"]
    assert check(lambda p: p["6"]["inputs"].update(vae=["99", 0])) == [
        "node 6 (Decode) input vae: linked to node 99, which is not in the prompt"]
    assert check(lambda p: p["6"]["inputs"].update(vae=["1", 5])) == [
        "node 6 (Decode) input vae: linked to output 5 of node 1 (Loader), which has 3 outputs"]


def test_type_mismatch():
    assert check(lambda p: p["6"]["inputs"].update(vae=["1", 0])) == [
        "node 6 (Decode) input vae: receives MODEL from node 1 (Loader) but needs VAE"]


def test_socket_given_a_plain_value():
    assert check(lambda p: p["6"]["inputs"].update(vae="ae.safetensors")) == [
        "node 6 (Decode) input vae: expects a link from a VAE output, got the value 'ae.safetensors'"]


def test_every_problem_is_listed_in_node_order():
    def many(p):
        p["2"]["inputs"]["lora_name"] = "x"
        p["5"]["inputs"]["steps"] = 0
        p["5"]["inputs"].pop("scheduler")
    lines = check(many)
    assert lines == ["node 2 (Lora) input lora_name: 'x' not in list (available: l.safetensors)",
                     "node 5 (Sampler) input steps: 0 is smaller than the minimum 1",
                     "node 5 (Sampler) input scheduler: required input missing"]


def test_nodes_no_output_depends_on_are_not_checked_like_the_server():
    def orphan(p):
        p["50"] = {"class_type": "Encode", "inputs": {"text": "x"}}          # no clip, but unused
    assert check(orphan) == []


def test_no_output_node_and_empty_prompt():
    assert check(lambda p: p.pop("7")) == [
        "the prompt has no output node (such as SaveImage), so the server would run nothing"]
    assert validate_prompt({}, S) == ["the prompt is empty"]


def test_offline_file_pickers_are_not_checked_but_fixed_combos_are():
    s = load_builtin_schema()
    p = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anything.safetensors"}},
         "2": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "warp_drive"}},
         "3": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
         "4": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
         "5": {"class_type": "SamplerCustomAdvanced", "inputs": {"sampler": ["2", 0]}}}
    lines = validate_prompt(p, s)
    assert "node 2 (KSamplerSelect) input sampler_name: 'warp_drive' not in list (44 options)" in lines
    assert not any("ckpt_name" in line for line in lines)


# ---- cross-check with the real server's answers to bad prompts (skipped without ../shared)

def _recorded_cases():
    import json

    from tests.conftest import SHARED

    path = SHARED / "comfyui" / "transcripts" / "c_validation_errors.json"
    if not path.exists():
        return []
    cases = []
    for case in json.loads(path.read_text()):
        req = next((e for e in case["transcript"] if e["direction"] == "http_request"), {})
        res = next((e for e in case["transcript"] if e["direction"] == "http_response"), {})
        prompt = (req.get("body") or {}).get("prompt") if isinstance(req.get("body"), dict) else None
        if isinstance(prompt, dict):
            cases.append(pytest.param(prompt, res.get("body"), id=case["case"]))
    return cases



@pytest.mark.parametrize("prompt, answer", _recorded_cases() or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="../shared/comfyui/transcripts not present"))])
def test_same_nodes_and_inputs_as_the_real_server(prompt, answer):
    import json
    import re

    from orchestrator.comfy.schema import schemas_from_object_info
    from tests.conftest import shared_path

    schemas = schemas_from_object_info(json.loads(shared_path("comfyui", "object_info.json").read_text()))
    lines = validate_prompt(prompt, schemas)
    errors = answer.get("node_errors") or {}
    if errors:
        expected = {(nid, e["extra_info"].get("input_name")) for nid, n in errors.items() for e in n["errors"]}
        got = set()
        for line in lines:
            m = re.match(r"node (\S+) \([^)]*\) input (\S+):", line)
            assert m, line
            got.add((m.group(1), m.group(2)))
        # same nodes; same inputs wherever the server names one (a link to a missing node or slot
        # comes back as a KeyError/IndexError without the input's name)
        assert {nid for nid, _ in got} == {nid for nid, _ in expected}
        named = {pair for pair in expected if pair[1] is not None}
        assert named <= got and len(got) == len(expected)
    elif answer.get("error", {}).get("type") == "prompt_no_outputs":
        assert lines == ["the prompt has no output node (such as SaveImage), so the server would run nothing"]
    else:
        node = re.search(r"Node ID '#(\S+)'", answer["error"]["details"]).group(1)
        assert lines and all(line.startswith(f"node {node}: ") for line in lines)
