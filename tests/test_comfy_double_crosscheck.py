"""Cross-checks of the ComfyUI test double with the traffic recorded from a real server (skip when absent)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.comfy_double import ComfyDouble
from tests.conftest import shared_path
from tests.test_comfy_double import CHAIN, ERROR, SIMPLE, Socket, post, run, types


@pytest.fixture
def double():
    with ComfyDouble() as d:
        yield d


def _recorded_types(name: str) -> list[str]:
    data = json.loads(shared_path("comfyui", "transcripts", name).read_text())
    posted = next(i for i, e in enumerate(data) if e["direction"] == "http_request" and e["path"] == "/prompt")
    return [e["type"] for e in data[posted:] if e["direction"] == "ws_recv"]


@pytest.mark.parametrize("name,prompt,setup", [
    ("a_success.json", SIMPLE, None),
    ("d1_execution_error_garbage_checkpoint.json", ERROR, "error"),
    ("d3_interrupted.json", CHAIN, "interrupt"),
    ("a2_no_client_id.json", SIMPLE, "no_client_id"),
])
def test_cross_check_with_recorded_transcripts(double, name, prompt, setup):
    recorded = _recorded_types(name)
    sock = Socket(double, "c1")
    if setup == "error":
        double.fail_next("error", node_type="CheckpointLoaderSimple")
    if setup == "no_client_id":
        post(double, prompt, client_id=None)
        frames = sock.until_idle()
    elif setup == "interrupt":
        double.hold_node("2")                   # node 2 runs until the interrupt arrives
        pid = post(double, prompt).json()["prompt_id"]
        frames = []
        while not (frames and frames[-1]["type"] == "executing" and frames[-1]["data"].get("node") == "2"):
            frames.append(json.loads(sock.ws.recv()))
        requests.post(double.url + "/interrupt", json={"prompt_id": pid}, timeout=5)
        frames += sock.until_done(pid)
    else:
        frames = run(double, sock, prompt)
    assert types(frames) == recorded
    if name == "a_success.json":
        assert types(run(double, sock, prompt)) == _recorded_types("b_cached.json")
        partial = {**prompt, "2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "filename_prefix": "b2"}}}
        assert types(run(double, sock, partial)) == _recorded_types("b2_partially_cached_custom_prompt_id.json")


def _without_tracebacks(obj):
    if isinstance(obj, dict):
        return {k: _without_tracebacks(v) for k, v in obj.items() if k != "traceback"}
    if isinstance(obj, list):
        return [_without_tracebacks(v) for v in obj]
    return obj


def _normalised(body):
    """Error lists sorted: ComfyUI walks a node's inputs in set order, so their order is arbitrary."""
    body = _without_tracebacks(body)
    errors = body.get("node_errors") if isinstance(body, dict) else None
    for entry in (errors or {}).values():
        entry["errors"] = sorted(entry["errors"], key=lambda e: json.dumps(e, sort_keys=True))
    return body


def test_cross_check_validation_bodies_with_recorded_ones():
    cases = json.loads(shared_path("comfyui", "transcripts", "c_validation_errors.json").read_text())
    models = {"checkpoints": [], "text_encoders": [], "vae": [], "loras": [], "diffusion_models": []}
    with ComfyDouble(models=models) as d:
        for case in cases:
            req = next(e for e in case["transcript"] if e["direction"] == "http_request")
            resp = next(e for e in case["transcript"] if e["direction"] == "http_response")
            raw = json.dumps(req["body"]).encode() if req.get("body") is not None else b"this is not json"
            r = requests.post(d.url + "/prompt", data=raw, timeout=5)
            assert r.status_code == resp["status"], case["case"]
            if resp["status"] == 500:
                assert r.text == resp["body"], case["case"]
            elif resp["status"] == 200:
                assert _normalised(r.json())["node_errors"] == _normalised(resp["body"])["node_errors"], case["case"]
            else:
                assert _normalised(r.json()) == _normalised(resp["body"]), case["case"]


def test_cross_check_flux_lora_prompt_without_model_files():
    """The browser-converted FLUX + LoRA prompt against empty model folders: 5 errors on 4 nodes (f0)."""
    data = json.loads(shared_path("comfyui", "transcripts", "f0_flux_lora_no_model_files.json").read_text())
    req = next(e for e in data if e["direction"] == "http_request" and e["path"] == "/prompt")
    resp = next(e for e in data if e["direction"] == "http_response" and e["path"] == "/prompt")
    models = {"checkpoints": [], "text_encoders": [], "vae": [], "loras": [], "diffusion_models": []}
    with ComfyDouble(models=models) as d:
        r = requests.post(d.url + "/prompt", json=req["body"], timeout=5)
    assert r.status_code == resp["status"] == 400
    assert _normalised(r.json()) == _normalised(resp["body"])
