"""Typed events from websocket frames, and ComfyUI error payloads as readable errors (pure code)."""

from __future__ import annotations

import json
import struct

from orchestrator.comfy import events as ev
from orchestrator.comfy.problems import failed_error, node_error_lines, rejected_error

PID = "d3afc367-f6cd-4b0b-964a-13375df13b93"


def test_text_messages():
    assert ev.parse_text('{"type":"status","data":{"status":{"exec_info":{"queue_remaining":1}},"sid":"abc"}}') \
        == ev.Status(1, "abc")
    assert ev.parse_text(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": PID}})) \
        == ev.Executing(PID, None)
    assert ev.parse_text(json.dumps({"type": "progress", "data": {"value": 3, "max": 28, "prompt_id": PID,
                                                                  "node": "13"}})) == ev.Progress(PID, "13", 3, 28)
    executed = ev.parse_text(json.dumps({"type": "executed", "data": {"node": "2", "display_node": "2", "output": {
        "images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]}, "prompt_id": PID}}))
    assert isinstance(executed, ev.Executed) and executed.images == (ev.OutputImage("a_00001_.png"),)
    state = ev.parse_text(json.dumps({"type": "progress_state", "data": {"prompt_id": PID, "nodes": {"6": {
        "value": 2, "max": 4, "state": "running", "node_id": "6"}}}}))
    assert state == ev.ProgressState(PID, {"6": ev.NodeState("6", "running", 2, 4)})
    err = ev.parse_text(json.dumps({"type": "execution_error", "data": {
        "prompt_id": PID, "node_id": "1", "node_type": "CheckpointLoaderSimple", "executed": [],
        "exception_message": "Error while deserializing header: header too large\n",
        "exception_type": "safetensors._safetensors_rust.SafetensorError", "traceback": ["  File x\n"],
        "current_inputs": {"ckpt_name": ["garbage.safetensors"]}, "current_outputs": ["1"], "timestamp": 1}}))
    assert isinstance(err, ev.ExecutionError) and err.exception_message.endswith("too large")
    assert ev.parse_text('{"type":"logs","data":{"entries":[]}}') == ev.Unknown("logs", {"entries": []})
    assert ev.parse_text("not json").type == "invalid"


def test_binary_frames():
    jpeg = b"\xff\xd8\xff\xe0rest"
    assert ev.parse_binary(struct.pack(">II", 1, 1) + jpeg) == ev.Preview(1, "image/jpeg", jpeg)
    meta = json.dumps({"node_id": "6", "prompt_id": PID, "image_type": "image/jpeg"}).encode()
    assert ev.parse_binary(struct.pack(">II", 4, len(meta)) + meta + jpeg) == ev.Preview(4, "image/jpeg", jpeg, PID, "6")
    assert ev.parse_binary(struct.pack(">II", 3, 2) + b"13" + "50%".encode()) == ev.ProgressText("13", "50%")
    assert ev.parse_binary(b"\0\0").type == "binary"


BODY_F0 = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                     "details": "", "extra_info": {}},
           "node_errors": {
               "3": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                 "details": "vae_name: 'ae.safetensors' not in ['pixel_space']",
                                 "extra_info": {"input_name": "vae_name", "input_config": [["pixel_space"], {}],
                                                "received_value": "ae.safetensors"}}],
                     "dependent_outputs": ["16"], "class_type": "VAELoader"},
               "2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                 "details": "clip_name2: 't5xxl_fp16.safetensors' not in []",
                                 "extra_info": {"input_name": "clip_name2", "input_config": [[], {}],
                                                "received_value": "t5xxl_fp16.safetensors"}},
                                {"type": "required_input_missing", "message": "Required input is missing",
                                 "details": "clip_name1", "extra_info": {"input_name": "clip_name1"}}],
                     "dependent_outputs": ["16"], "class_type": "DualCLIPLoader"},
               "9": {"errors": [{"type": "return_type_mismatch", "message": "Return type mismatch between linked "
                                 "nodes", "details": "samples, received_type(IMAGE) mismatch input_type(LATENT)",
                                 "extra_info": {"input_name": "samples", "input_config": ["LATENT", {}],
                                                "received_type": "IMAGE", "linked_node": ["1", 0]}}],
                     "dependent_outputs": ["16"], "class_type": "VAEDecode"}}}


def test_rejection_lines():
    prompt = {"3": {"class_type": "VAELoader", "_meta": {"title": "Load VAE"}}}
    err = rejected_error("http://h:8188", BODY_F0, prompt)
    assert err.message == "ComfyUI at http://h:8188 rejected the prompt: 4 problems in 3 nodes"
    assert err.details == [
        "node 3 (VAELoader, 'Load VAE') vae_name: 'ae.safetensors' is not on the server; available: pixel_space",
        "node 2 (DualCLIPLoader) clip_name2: 't5xxl_fp16.safetensors' is not on the server; available: (none)",
        "node 2 (DualCLIPLoader) clip_name1: required input is missing (not connected)",
        "node 9 (VAEDecode) samples: linked to node 1 which gives IMAGE, but the input takes LATENT"]
    assert "models/" in err.hint
    unknown = rejected_error("u", {"error": {"type": "invalid_prompt", "message": "Cannot execute because node X "
                                             "does not exist.", "details": "Node ID '#1'"}, "node_errors": {}})
    assert unknown.message.endswith("node X does not exist.") and unknown.details == ["Node ID '#1'"]
    long = {"1": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                              "details": "sampler_name: 'x' not in (list of length 44)",
                              "extra_info": {"input_name": "sampler_name", "input_config": None,
                                             "received_value": "x"}}], "class_type": "KSamplerSelect"}}
    assert node_error_lines(long) == ["node 1 (KSamplerSelect) sampler_name: 'x' is not on the server; "
                                      "(list of length 44)"]



def test_rejected_sampler_name_hint_does_not_blame_model_files():
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
            "node_errors": {"11": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                               "details": "sampler_name: 'bogus' not in ['euler']",
                                               "extra_info": {"input_name": "sampler_name",
                                                              "input_config": [["euler"], {}],
                                                              "received_value": "bogus"}}],
                                   "class_type": "KSamplerSelect"}}}
    err = rejected_error("u", body)
    assert "models/" not in err.hint and "download" not in err.hint
    assert "available names" in err.hint

def test_failure_message():
    err = failed_error("u", ev.ExecutionError(PID, "7", "SamplerCustomAdvanced", "CUDA out of memory. Tried...",
                                              "torch.OutOfMemoryError"))
    assert err.message == "ComfyUI failed at node 7 (SamplerCustomAdvanced): CUDA out of memory. Tried..."
    assert "smaller --size" in err.hint
