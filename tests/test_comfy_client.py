"""ComfyClient against the ComfyUI test double: results, caching, every failure mode, no hangs."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from orchestrator.comfy import events as ev
from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.workflow import load_workflow, to_api_prompt
from orchestrator.errors import ComfyError, ComfyFailed, ComfyInterrupted, ComfyRejected, ComfyUnavailable
from tests.comfy_double import ComfyDouble

ROOT = Path(__file__).resolve().parents[1]
UI = json.loads((ROOT / "workflows" / "finetuned_flux.json").read_text())
PROMPT = to_api_prompt(load_workflow(UI))


def node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def with_seed(seed: int) -> dict:
    p = copy.deepcopy(PROMPT)
    p[node_of(p, "RandomNoise")]["inputs"]["noise_seed"] = seed
    return p


@pytest.fixture
def double():
    with ComfyDouble(steps=4) as d:
        yield d


@pytest.fixture
def client(double):
    c = ComfyClient(double.url, timeout=5, idle_check=0.5, reconnect_window=10.0)   # reconnects have room under load
    yield c
    c.close()


def test_success_events_outputs_and_submit_body(double, client, tmp_path):
    got: list[ev.Event] = []
    pid = client.submit(PROMPT, prompt_id="our-id-1", workflow=UI)
    result = client.wait(pid, on_event=got.append)
    body = double.posted[-1]
    assert pid == "our-id-1" and body["prompt_id"] == "our-id-1" and body["client_id"] == client.client_id
    assert body["extra_data"]["extra_pnginfo"]["workflow"] == UI
    sampler = node_of(PROMPT, "SamplerCustomAdvanced")
    assert [(e.node, e.value, e.max) for e in got if isinstance(e, ev.Progress)] == [(sampler, i, 4) for i in (1, 2, 3, 4)]
    assert isinstance(got[0], ev.ExecutionStart) and isinstance(got[-1], ev.Executing) and got[-1].node is None
    states = [e for e in got if isinstance(e, ev.ProgressState)]
    assert states[-1].nodes[sampler].state == "finished"
    save = node_of(PROMPT, "SaveImage")
    assert result.outputs == {save: (ev.OutputImage("flux_finetuned_00001_.png", "", "output"),)}
    assert not result.cached and result.history["status"]["status_str"] == "success"
    assert set(result.timings) == {"total", "queued", "execution"}
    paths = client.fetch_outputs(result, tmp_path)
    assert paths == [tmp_path / "flux_finetuned_00001_.png"] and paths[0].read_bytes().startswith(b"\x89PNG")
    from PIL import Image
    assert json.loads(Image.open(paths[0]).text["workflow"]) == UI


def test_cached_rerun_still_delivers_outputs(client, tmp_path):
    first = client.run(PROMPT)
    again = client.run(PROMPT)
    assert again.cached and again.outputs == first.outputs and set(again.cached_nodes) == set(PROMPT)
    assert client.fetch_outputs(again, tmp_path)[0].name == "flux_finetuned_00001_.png"


def test_partially_cached_run(client):
    client.run(with_seed(1))
    got: list[ev.Event] = []
    result = client.run(with_seed(2), on_event=got.append)
    assert not result.cached and result.images[0].filename == "flux_finetuned_00002_.png"
    assert node_of(PROMPT, "CheckpointLoaderSimple") in result.cached_nodes
    assert node_of(PROMPT, "RandomNoise") not in result.cached_nodes
    assert any(isinstance(e, ev.Progress) for e in got)


def test_validation_error_is_readable(client):
    bad = copy.deepcopy(PROMPT)
    lora = node_of(bad, "LoraLoader")
    bad[lora]["inputs"]["lora_name"] = "nope.safetensors"
    bad[node_of(bad, "BasicScheduler")]["inputs"]["steps"] = 0
    with pytest.raises(ComfyRejected) as info:
        client.submit(bad)
    err = info.value
    assert err.exit_code == 2 and "rejected the prompt: 2 problems in 2 nodes" in err.message
    assert f"node {lora} (LoraLoader, 'Load LoRA') lora_name: 'nope.safetensors' is not on the server; " \
           "available: flux_dreambooth.safetensors" in err.details
    assert any("steps: Value 0 smaller than min of 1" in line for line in err.details)


def test_check_models_names_missing_files(double, client):
    client.check_models(PROMPT)
    bad = copy.deepcopy(PROMPT)
    bad[node_of(bad, "LoraLoader")]["inputs"]["lora_name"] = "x.safetensors"
    with pytest.raises(ComfyRejected) as info:
        client.check_models(bad)
    assert info.value.message.startswith("LoRA 'x.safetensors' not found; available: flux_dreambooth.safetensors")
    double.models["vae"] = []
    with pytest.raises(ComfyRejected) as info:
        client.check_models(bad)
    assert info.value.details == ["VAE 'ae.safetensors' not found; available: (none)",
                                  "LoRA 'x.safetensors' not found; available: flux_dreambooth.safetensors"]


def test_execution_error(double, client):
    double.fail_next("error", node_type="VAELoader")
    with pytest.raises(ComfyFailed) as info:
        client.run(PROMPT)
    vae = node_of(PROMPT, "VAELoader")
    assert info.value.message == (f"ComfyUI failed at node {vae} (VAELoader, 'Load VAE'): "
                                  "Error while deserializing header: header too large")
    assert "input vae_name = ae.safetensors" in info.value.details
    assert "damaged" in info.value.hint
    assert client.run(with_seed(5)).images          # the client is usable afterwards


def test_interrupt(double, client):
    double.step_time = 0.05
    double.steps = 2000                         # 100 s: cancelled long before the end, however slow the machine

    def on_event(e: ev.Event) -> None:
        if isinstance(e, ev.Progress) and e.value == 2:
            client.cancel([e.prompt_id])

    with pytest.raises(ComfyInterrupted) as info:
        client.run(PROMPT, on_event=on_event)
    assert "interrupted at node" in info.value.message and "SamplerCustomAdvanced" in info.value.message


def test_websocket_dropped_mid_job_is_recovered(double, client):
    double.step_time = 0.02
    double.drop_websocket_after(8)
    got: list[ev.Event] = []
    result = client.run(PROMPT, on_event=got.append)
    assert result.images[0].filename == "flux_finetuned_00001_.png"
    double.drop_websocket_after(2)
    double.node_time = 0.05
    assert client.run(with_seed(9)).images                  # dropped again, reconnected again


def test_websocket_dropped_and_job_finished_meanwhile(double):
    client = ComfyClient(double.url, timeout=5, idle_check=30)    # recovery must not wait for an idle check
    double.drop_websocket_after(3)
    started = time.monotonic()
    assert client.run(PROMPT).images
    assert time.monotonic() - started < 20                 # well under the 30 s idle check: it did not wait for it
    client.close()


def test_server_gone_mid_job_is_unavailable_not_a_hang(double):
    client = ComfyClient(double.url, timeout=5, idle_check=0.5, reconnect_window=1.0)   # gives up after 1 s
    double.step_time = 0.05
    double.steps = 200
    stopper: list[threading.Thread] = []

    def on_event(e: ev.Event) -> None:
        if isinstance(e, ev.Progress) and not stopper:
            stopper.append(threading.Thread(target=double.stop))
            stopper[0].start()

    started = time.monotonic()
    with pytest.raises(ComfyUnavailable) as info:
        client.run(PROMPT, on_event=on_event)
    assert time.monotonic() - started < 30                 # a hang guard: the job alone would run 10 s, the wait forever
    assert double.url in info.value.message and "comfyui status" in info.value.hint
    stopper[0].join()
    client.close()


def test_server_restarted_mid_job_lost_the_job(double, client):
    double.step_time = 0.05
    double.steps = 200
    restarter: list[threading.Thread] = []

    def on_event(e: ev.Event) -> None:
        if isinstance(e, ev.Progress) and not restarter:
            restarter.append(threading.Thread(target=double.restart))
            restarter[0].start()

    with pytest.raises(ComfyError) as info:
        client.run(PROMPT, on_event=on_event)
    restarter[0].join()
    assert "no longer knows prompt" in info.value.message and "queue it again" in info.value.hint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server():
    url = f"http://127.0.0.1:{free_port()}"
    client = ComfyClient(url, timeout=2)
    for call in (client.system_stats, lambda: client.submit(PROMPT)):
        with pytest.raises(ComfyUnavailable) as info:
            call()
        assert info.value.message.startswith(f"no ComfyUI server answers at {url}")
        assert "comfyui up" in info.value.hint


def test_slow_server_times_out(double):
    client = ComfyClient(double.url, timeout=0.3)
    double.slow_responses(30)                       # each answer would take 30 s if the 0.3 s timeout were ignored
    started = time.monotonic()
    with pytest.raises(ComfyUnavailable) as info:
        client.system_stats()
    assert time.monotonic() - started < 10
    assert info.value.message == f"ComfyUI at {double.url} did not answer GET /system_stats within 0.3s"
    started = time.monotonic()
    with pytest.raises(ComfyUnavailable):
        client.submit(PROMPT)                       # the websocket handshake is slow too
    assert time.monotonic() - started < 10
    double.slow_responses(0)


def test_http_500(double, client):
    double.http_500_next(1)
    with pytest.raises(ComfyError) as info:
        client.submit(PROMPT)
    assert info.value.message == f"ComfyUI at {double.url} answered HTTP 500 to POST /prompt"
    assert info.value.details == ["500 Internal Server Error", "", "Server got itself in trouble"]


def test_wait_timeout(double, client):
    double.step_time = 0.05
    double.steps = 100
    pid = client.submit(PROMPT)
    with pytest.raises(ComfyError, match="still running"):
        client.wait(pid, timeout=0.3)
    client.cancel([pid])


def test_several_prompts_in_flight(double):
    client = ComfyClient(double.url, timeout=5, idle_check=30)    # no idle check may rescue a lost event
    double.step_time = 0.01
    ids = [client.submit(with_seed(s)) for s in (11, 12, 13)]
    started = time.monotonic()
    results = [client.wait(pid) for pid in reversed(ids)]
    assert time.monotonic() - started < 20                 # under the 30 s idle check: events of the others were kept
    assert sorted(r.images[0].filename for r in results) == [f"flux_finetuned_0000{i}_.png" for i in (1, 2, 3)]
    client.close()


def test_other_clients_prompts_are_ignored(double, client):
    import requests

    double.step_time = 0.01
    foreign = requests.post(double.url + "/prompt", json={"prompt": with_seed(77)}, timeout=5).json()["prompt_id"]
    got: list[ev.Event] = []
    result = client.run(with_seed(78), on_event=got.append)
    assert {getattr(e, "prompt_id", None) for e in got} == {result.prompt_id}
    assert foreign != result.prompt_id


def test_wait_for_a_prompt_already_done(double, client):
    pid = client.run(PROMPT).prompt_id
    other = ComfyClient(double.url, timeout=5)
    assert other.wait(pid).outputs                      # straight from /history
    other.close()


def test_previews_are_events(double, client):
    double.preview_method = "latent2rgb"
    got: list[ev.Event] = []
    result = client.run(PROMPT, on_event=got.append)
    previews = [e for e in got if isinstance(e, ev.Preview)]
    assert len(previews) == 4 and previews[0].event_type == 4 and previews[0].prompt_id == result.prompt_id
    assert previews[0].image.startswith(b"\xff\xd8") and previews[0].mime == "image/jpeg"


def test_partial_prompt_is_rejected_and_cancelled(double, client):
    p = copy.deepcopy(PROMPT)
    p["900"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}}
    p["901"] = {"class_type": "VAEDecode", "inputs": {"samples": [node_of(p, "SamplerCustomAdvanced"), 0],
                                                      "vae": ["900", 2]}}
    p["902"] = {"class_type": "SaveImage", "inputs": {"images": ["901", 0], "filename_prefix": "other"}}
    with pytest.raises(ComfyRejected, match="rejected part of the prompt"):
        client.submit(p)
    assert client.queue()["queue_pending"] == []


def test_history_polling_callers_can_drain_and_forget(double, client):
    """The batch helper's way: submit, drain the socket as a doorbell, read /history, forget."""
    pid = client.submit(PROMPT)
    seen: list[ev.Event] = []
    while not (seen and isinstance(seen[-1], ev.Executing) and seen[-1].node is None):
        event = client.next_event(2.0)
        assert event is not None
        seen.append(event)
    assert client.history(pid)["status"]["status_str"] == "success"
    client.forget(pid)
    assert client.next_event(0.05) is None and client.connected
    double.drop_websocket_after(1)
    client.submit(with_seed(3))
    while client.connected:
        client.next_event(1.0)                           # the drop closes the socket quietly
    client.delete_pending(["nope"])


def test_another_web_server_at_the_url_is_named_as_not_comfyui(tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with ComfyClient(f"http://127.0.0.1:{httpd.server_address[1]}", timeout=5) as client:
            with pytest.raises(ComfyError) as e:
                client.system_stats()
        assert "does not look like ComfyUI: HTTP 404 for GET /system_stats" in e.value.message
        assert "another program answers there" in (e.value.hint or "")
        assert not any("DOCTYPE" in d for d in e.value.details)
    finally:
        httpd.shutdown()
        httpd.server_close()
