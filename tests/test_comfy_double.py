"""The ComfyUI test double behaves as the recorded server: routes, bodies, message order, misbehaviour."""

from __future__ import annotations

import json
import struct
import threading

import pytest
import requests
import websocket

from tests.comfy_double import ComfyDouble

SIMPLE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 255}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lab_a"}}}
ERROR = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev.safetensors"}},
         "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
         "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "lab_d"}}}
CHAIN = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 123}},
         "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "width": 40,
                                                      "height": 40, "crop": "disabled"}},
         "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "lanczos", "width": 39,
                                                      "height": 39, "crop": "disabled"}},
         "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "lab_interrupt"}}}
SAMPLING = {"10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "12": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "13": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["12", 0], "guider": ["9", 0],
                   "sampler": ["10", 0], "sigmas": ["11", 0], "latent_image": ["6", 0]}},
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev.safetensors"}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a dog", "clip": ["1", 1]}},
            "9": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["3", 0]}},
            "11": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 3,
                                                              "denoise": 1.0}},
            "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["1", 2]}},
            "16": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "lab_adv"}}}


class Socket:
    """A raw websocket on the double that records every frame."""

    def __init__(self, double: ComfyDouble, client_id: str, *, metadata: bool | None = None) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{double.port}/ws?clientId={client_id}", timeout=5)
        self.client_id = client_id
        self.frames: list[object] = [json.loads(self.ws.recv())]
        if metadata is not None:
            self.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": metadata}}))
            self.frames.append(json.loads(self.ws.recv()))

    def until_done(self, prompt_id: str) -> list[object]:
        """Frames up to and including executing{node: null} of the prompt."""
        got: list[object] = []
        while True:
            frame = self.ws.recv()
            got.append(frame if isinstance(frame, bytes) else json.loads(frame))
            if isinstance(got[-1], dict) and got[-1]["type"] == "executing" \
                    and got[-1]["data"] == {"node": None, "prompt_id": prompt_id}:
                return got

    def until_idle(self) -> list[object]:
        """Frames up to the status saying the queue is empty again, then any that follow within 0.5 s."""
        got: list[object] = []
        while not (got and isinstance(got[-1], dict) and got[-1]["type"] == "status"
                   and got[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0):
            frame = self.ws.recv()
            got.append(frame if isinstance(frame, bytes) else json.loads(frame))
        self.ws.settimeout(0.5)
        try:
            while True:
                frame = self.ws.recv()
                got.append(frame if isinstance(frame, bytes) else json.loads(frame))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(5)
        return got

    def close(self) -> None:
        self.ws.close()


def types(frames: list[object]) -> list[str]:
    return ["binary" if isinstance(f, bytes) else f["type"] for f in frames]  # type: ignore[index]


def post(double: ComfyDouble, prompt: dict, client_id: str | None = "c1", **extra) -> requests.Response:
    body = {"prompt": prompt, **extra}
    if client_id:
        body["client_id"] = client_id
    return requests.post(double.url + "/prompt", json=body, timeout=5)


def run(double: ComfyDouble, sock: Socket, prompt: dict, **extra) -> list[object]:
    r = post(double, prompt, sock.client_id, **extra)
    assert r.status_code == 200, r.text
    return sock.until_done(r.json()["prompt_id"])


SUCCESS_TYPES = ["status", "status", "execution_start", "execution_cached", "progress_state", "executing",
                 "progress_state", "progress_state", "executing", "executed", "progress_state", "execution_success",
                 "status", "executing"]
CACHED_TYPES = ["status", "status", "execution_start", "execution_cached", "executed", "progress_state",
                "execution_success", "status", "executing"]
ERROR_TYPES = ["status", "status", "execution_start", "execution_cached", "progress_state", "executing",
               "execution_error", "status", "executing"]
INTERRUPT_TYPES = ["status", "status", "execution_start", "execution_cached", "progress_state", "executing",
                   "progress_state", "progress_state", "executing", "progress_state", "progress_state", "executing",
                   "execution_interrupted", "status", "executing"]


@pytest.fixture
def double():
    with ComfyDouble() as d:
        yield d


def test_success_then_cached_then_partially_cached(double):
    sock = Socket(double, "c1", metadata=True)
    frames = run(double, sock, SIMPLE)
    assert types(frames) == SUCCESS_TYPES
    executed = next(f for f in frames if f["type"] == "executed")
    assert executed["data"]["output"] == {"images": [{"filename": "lab_a_00001_.png", "subfolder": "",
                                                      "type": "output"}]}
    again = run(double, sock, SIMPLE)
    assert types(again) == CACHED_TYPES
    assert again[3]["data"]["nodes"] == ["1", "2"]
    assert again[4]["data"]["output"] == executed["data"]["output"]      # the old file, re-sent
    assert again[5]["data"]["nodes"]["2"]["value"] == 1
    partial = {**SIMPLE, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b2"}}}
    frames = run(double, sock, partial, prompt_id="11111111-2222-4333-8444-555555555555")
    assert types(frames) == ["status", "status", "execution_start", "execution_cached", "progress_state",
                             "executing", "executed", "progress_state", "execution_success", "status", "executing"]
    assert frames[3]["data"] == {"nodes": ["1"], "prompt_id": "11111111-2222-4333-8444-555555555555",
                                 "timestamp": frames[3]["data"]["timestamp"]}
    sock.close()


def test_history_empty_until_done_and_view(double):
    release = double.hold_node("2")
    sock = Socket(double, "c1")
    pid = post(double, SIMPLE).json()["prompt_id"]
    assert requests.get(f"{double.url}/history/{pid}", timeout=5).json() == {}
    running = requests.get(f"{double.url}/api/queue", timeout=5).json()
    assert [e[1] for e in running["queue_running"] + running["queue_pending"]] == [pid]
    release.set()
    sock.until_done(pid)
    entry = requests.get(f"{double.url}/history/{pid}", timeout=5).json()[pid]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["prompt"][1] == pid and entry["prompt"][4] == ["2"]
    image = entry["outputs"]["2"]["images"][0]
    r = requests.get(double.url + "/view", params=image, timeout=5)
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG") and r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Disposition"] == 'filename="lab_a_00001_.png"'
    missing = requests.get(double.url + "/view", params={"filename": "nope.png", "type": "output"}, timeout=5)
    assert missing.status_code == 404 and missing.content == b""
    assert list(requests.get(double.url + "/history?max_items=1", timeout=5).json()) == [pid]


def test_png_carries_prompt_and_workflow(double):
    from PIL import Image

    sock = Socket(double, "c1")
    frames = run(double, sock, SIMPLE, extra_data={"extra_pnginfo": {"workflow": {"nodes": [], "links": []}}})
    image = next(f for f in frames if f["type"] == "executed")["data"]["output"]["images"][0]
    png = Image.open(double.root / "output" / image["filename"])
    assert json.loads(png.text["prompt"]) == SIMPLE and json.loads(png.text["workflow"]) == {"nodes": [], "links": []}


def test_messages_only_to_the_named_client(double):
    ours, other = Socket(double, "c1"), Socket(double, "c2")
    frames = run(double, ours, SIMPLE)
    assert "executed" in types(frames)
    other.ws.settimeout(0.3)
    seen = []
    try:
        while True:
            seen.append(json.loads(other.ws.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    assert set(seen) == {"status"}


def test_prompt_without_client_id_broadcasts_only_progress(double):
    sock = Socket(double, "c1")
    pid = post(double, SIMPLE, client_id=None).json()["prompt_id"]
    seen = sock.until_idle()
    assert types(seen) == ["status", "status", "progress_state", "progress_state", "progress_state",
                           "progress_state", "status"]
    assert {f["data"]["prompt_id"] for f in seen if f["type"] == "progress_state"} == {pid}


def test_execution_error(double):
    sock = Socket(double, "c1")
    double.fail_next("error", node_type="CheckpointLoaderSimple")
    frames = run(double, sock, ERROR)
    assert types(frames) == ERROR_TYPES
    err = frames[6]["data"]
    assert err["node_id"] == "1" and err["node_type"] == "CheckpointLoaderSimple" and err["executed"] == []
    assert err["exception_message"].startswith("Error while deserializing header")
    assert err["current_inputs"] == {"ckpt_name": ["flux1-dev.safetensors"]}
    entry = requests.get(f"{double.url}/history/{err['prompt_id']}", timeout=5).json()[err["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error"


def test_fail_next_interrupt(double):
    sock = Socket(double, "c1")
    double.fail_next("interrupt", node_type="ImageScale")
    frames = run(double, sock, CHAIN)
    data = frames[-3]["data"]
    assert frames[-3]["type"] == "execution_interrupted" and (data["node_id"], data["executed"]) == ("2", ["1"])
    with pytest.raises(ValueError, match="unknown kind"):
        double.fail_next("explode")


def test_interrupt_between_nodes(double):
    double.hold_node("2")                       # node 2 runs until the interrupt arrives
    sock = Socket(double, "c1")
    pid = post(double, CHAIN).json()["prompt_id"]
    frames = []
    while not (frames and frames[-1]["type"] == "executing" and frames[-1]["data"].get("node") == "2"):
        frames.append(json.loads(sock.ws.recv()))
    requests.post(double.url + "/interrupt", json={"prompt_id": pid}, timeout=5)
    frames += sock.until_done(pid)
    assert types(frames) == INTERRUPT_TYPES
    data = frames[-3]["data"]
    assert (data["node_id"], data["node_type"], data["executed"]) == ("3", "ImageScale", ["1", "2"])


def test_sampling_progress_and_previews(double):
    double.preview_method = "latent2rgb"
    meta, legacy = Socket(double, "c1", metadata=True), Socket(double, "c1")
    frames = run(double, meta, SAMPLING)
    legacy_frames = legacy.until_done(frames[-1]["data"]["prompt_id"])
    order = [f["data"]["node"] for f in frames if isinstance(f, dict) and f["type"] == "executing"]
    assert order[-3:] == ["14", "16", None] and sorted(order[:-1]) == sorted(SAMPLING)
    for node_id, node in SAMPLING.items():      # dependencies first
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert order.index(value[0]) < order.index(node_id)
    i = types(frames).index("progress")
    assert types(frames)[i - 2:i + 1] == ["progress_state", "binary", "progress"]       # type 4 before progress
    kind, n = struct.unpack(">II", frames[i - 1][:8])
    assert kind == 4 and json.loads(frames[i - 1][8:8 + n])["node_id"] == "13"
    assert frames[i - 1][8 + n:].startswith(b"\xff\xd8")
    j = types(legacy_frames).index("progress")
    assert types(legacy_frames)[j:j + 2] == ["progress", "binary"]                      # type 1 after it
    assert struct.unpack(">II", legacy_frames[j + 1][:8]) == (1, 1)
    assert [f["data"]["value"] for f in frames if isinstance(f, dict) and f["type"] == "progress"] == [1, 2, 3]
    no_preview = Socket(double, "c3")
    changed = json.loads(json.dumps(SAMPLING))
    changed["12"]["inputs"]["noise_seed"] = 8
    frames = run(double, no_preview, changed, extra_data={"preview_method": "none"})
    assert "binary" not in types(frames) and types(frames).count("progress") == 3
    assert set(frames[3]["data"]["nodes"]) >= {"1", "6", "10", "11", "3", "9"}


VALIDATION = [
    ({"1": {"class_type": "NoSuchNode", "inputs": {}}, **{k: v for k, v in SIMPLE.items() if k == "2"}},
     {"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.",
                "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}}),
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}},
     {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
      "node_errors": {}}),
]


@pytest.mark.parametrize("prompt,body", VALIDATION)
def test_validation_bodies(double, prompt, body):
    r = post(double, prompt)
    assert r.status_code == 400 and r.json() == body


def test_validation_node_errors(double):
    bad = json.loads(json.dumps(ERROR))
    bad["1"]["inputs"]["ckpt_name"] = "missing.safetensors"
    r = post(double, bad)
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed "
                                 "validation", "details": "", "extra_info": {}}
    assert r.json()["node_errors"] == {"1": {"errors": [{
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "ckpt_name: 'missing.safetensors' not in ['flux1-dev.safetensors']",
        "extra_info": {"input_name": "ckpt_name", "input_config": [["flux1-dev.safetensors"], {
                       "tooltip": "The name of the checkpoint (model) to load."}],
                       "received_value": "missing.safetensors"}}], "dependent_outputs": ["4"],
        "class_type": "CheckpointLoaderSimple"}}
    r = post(double, {"1": SIMPLE["1"], "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}})
    assert r.json()["error"]["details"] == "Required input is missing: images"
    r = post(double, {"1": {**SIMPLE["1"], "inputs": {**SIMPLE["1"]["inputs"], "width": 0, "height": "x"}},
                      "2": SIMPLE["2"]})
    errors = r.json()["node_errors"]["1"]["errors"]
    assert {e["type"] for e in errors} == {"value_smaller_than_min", "invalid_input_type"}
    assert {e["details"] for e in errors} == {"width", "height, x, could not convert string to float: 'x'"} or \
        {e["details"] for e in errors} == {"width", "height, x, invalid literal for int() with base 10: 'x'"}
    r = post(double, {**SIMPLE, "2": {"class_type": "SaveImage", "inputs": {"images": ["99", 0],
                                                                            "filename_prefix": "x"}}})
    assert r.json()["error"]["details"] == "Exception when validating node: '99'"
    r = post(double, {**SIMPLE, "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["4", 0]}},
                      "4": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
                      "2": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}})
    assert r.json()["node_errors"]["3"]["errors"][0]["details"] == \
        "samples, received_type(IMAGE) mismatch input_type(LATENT)"


def test_partial_validation_is_200_and_runs_the_good_output(double):
    sock = Socket(double, "c1")
    bad_branch = {k: v for k, v in json.loads(json.dumps(ERROR)).items()}
    bad_branch["1"]["inputs"]["ckpt_name"] = "nope.safetensors"
    prompt = {**SIMPLE, **{str(int(k) + 10): v for k, v in bad_branch.items()}}
    prompt["13"]["inputs"] = {"samples": ["12", 0], "vae": ["11", 2]}
    prompt["14"]["inputs"]["images"] = ["13", 0]
    r = post(double, prompt)
    assert r.status_code == 200 and list(r.json()["node_errors"]) == ["11"]
    frames = sock.until_done(r.json()["prompt_id"])
    assert [f["data"]["node"] for f in frames if f["type"] == "executed"] == ["2"]


def test_invalid_json_and_prompt_not_object_are_plain_500(double):
    for data in (b"this is not json", json.dumps({"prompt": [1, 2, 3]}).encode()):
        r = requests.post(double.url + "/prompt", data=data, timeout=5)
        assert r.status_code == 500 and r.text == "500 Internal Server Error\n\nServer got itself in trouble"
        assert r.headers["Content-Type"].startswith("text/plain")
    r = requests.post(double.url + "/prompt", json={"client_id": "x"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"
    numbers = [post(double, SIMPLE).json()["number"] for _ in range(2)]
    assert numbers[1] == numbers[0] + 1 and numbers[0] == 2     # a parsed POST counts, even a rejected one


def test_info_routes(double):
    get = lambda path: requests.get(double.url + path, timeout=5)  # noqa: E731
    assert get("/models/loras").json() == ["flux_dreambooth.safetensors"]
    assert get("/api/models/loras").json() == ["flux_dreambooth.safetensors"]
    assert get("/models/nope").status_code == 404
    assert "checkpoints" in get("/models").json()
    assert get("/object_info/NoSuchNode").json() == {}
    assert get("/object_info/RandomNoise").json()["RandomNoise"]["input_order"] == {"required": ["noise_seed"]}
    assert get("/system_stats").json()["system"]["comfyui_version"] == "0.8.0"
    assert get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    assert get("/api/userdata?dir=workflows").json() == []
    assert get("/api/userdata?dir=nope").status_code == 404


def test_queue_delete_clear_and_global_interrupt(double):
    double.hold_node("2")                       # the first prompt runs until the interrupt arrives
    sock = Socket(double, "c1")
    ids = [post(double, {**CHAIN, "1": {**CHAIN["1"], "inputs": {**CHAIN["1"]["inputs"], "color": i}}})
           .json()["prompt_id"] for i in range(3)]
    front = post(double, {**CHAIN, "1": {**CHAIN["1"], "inputs": {**CHAIN["1"]["inputs"], "color": 9}}}, front=True)
    assert front.json()["number"] < 0
    q = requests.get(double.url + "/queue", timeout=5).json()
    assert q["queue_pending"][0][1] == front.json()["prompt_id"]
    assert requests.post(double.url + "/queue", json={"delete": [ids[2]]}, timeout=5).content == b""
    requests.post(double.url + "/queue", json={"clear": True}, timeout=5)
    requests.post(double.url + "/interrupt", json={}, timeout=5)
    frames = sock.until_done(ids[0])
    assert "execution_interrupted" in types(frames)
    assert requests.get(f"{double.url}/history/{ids[1]}", timeout=5).json() == {}


def test_upload_and_loadimage(double):
    png = b"\x89PNG\r\n\x1a\nfake"
    up = lambda data, **f: requests.post(double.url + "/upload/image", files={"image": ("in.png", data)},  # noqa
                                          data=f, timeout=5).json()
    assert up(png) == {"name": "in.png", "subfolder": "", "type": "input"}
    assert up(png + b"2")["name"] == "in (1).png"
    assert up(png)["name"] == "in.png"
    assert requests.post(double.url + "/upload/image", files={"x": ("a", b"")}, timeout=5).status_code == 400
    info = requests.get(double.url + "/object_info/LoadImage", timeout=5).json()["LoadImage"]
    assert info["input"]["required"]["image"][0] == ["in (1).png", "in.png"]
    r = post(double, {"1": {"class_type": "LoadImage", "inputs": {"image": "no.png"}},
                      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}})
    assert r.json()["node_errors"]["1"]["errors"][0]["details"] == "image - Invalid image file: no.png"


def test_misbehaviour_500_slow_drop_restart(double):
    double.http_500_next(1)
    assert requests.get(double.url + "/system_stats", timeout=5).status_code == 500
    assert requests.get(double.url + "/system_stats", timeout=5).status_code == 200
    double.slow_responses(0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(double.url + "/system_stats", timeout=0.2)
    double.slow_responses(0)
    sock = Socket(double, "c1")
    double.drop_websocket_after(2)
    pid = post(double, SIMPLE).json()["prompt_id"]
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        sock.until_done(pid)
    port = double.port
    double.restart()
    assert double.port == port
    assert requests.get(f"{double.url}/history/{pid}", timeout=5).json() == {}
    sock2 = Socket(double, "c1")
    assert types(run(double, sock2, SIMPLE))[-1] == "executing"


def test_several_doubles_at_once():
    with ComfyDouble() as a, ComfyDouble() as b:
        assert a.port != b.port
        results = {}

        def go(d: ComfyDouble, key: str) -> None:
            sock = Socket(d, key)
            results[key] = types(run(d, sock, SIMPLE))

        threads = [threading.Thread(target=go, args=(d, k)) for d, k in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == {"a": SUCCESS_TYPES, "b": SUCCESS_TYPES}
