"""validate_prompt: the problems the server would report, one readable line each."""

from __future__ import annotations

import copy

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
