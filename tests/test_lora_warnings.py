"""`lora key not loaded`: ComfyUI's log over /internal/logs/raw, and generate / batch failing such jobs."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from orchestrator.batch.manifest import MANIFEST_NAME, read_manifest
from orchestrator.comfy.serverlog import LOG_CAPACITY, LogEntry, ServerLog, lora_problem, lora_warnings, zone_offset_ms
from tests.comfy_double import DEFAULT_MODELS, ComfyDouble

REAL_COMFYUI = "/work/.mirror/pollockjj+ComfyUI/repo"
LORAS = ["flux_dreambooth.safetensors", "sdxl_style.safetensors"]
BAD = "sdxl_style.safetensors"


def _source(path: str) -> str:
    r = subprocess.run(["git", "-C", REAL_COMFYUI, "show", f"3cd7b32f:{path}"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"ComfyUI source not available ({r.stderr.strip()[:80]})")
    return r.stdout


def test_the_log_routes_have_the_shape_of_comfyui_0_8():
    """What the double copies, checked against ComfyUI 0.8.0's source (skipped without it)."""
    routes = _source("api_server/routes/internal/internal_routes.py")
    assert "@self.routes.get('/logs/raw')" in routes and '"entries": list(app.logger.get_logs())' in routes
    assert '"size": {"cols": self.terminal_service.cols, "rows": self.terminal_service.rows}' in routes
    assert 'web.json_response("".join([(l["t"] + " - " + l["m"]) for l in app.logger.get_logs()]))' in routes
    assert "self.app.add_subapp('/internal', self.internal_routes.get_app())" in _source("server.py")
    logger = _source("app/logger.py")
    assert 'entry = {"t": datetime.now().isoformat(), "m": data}' in logger and "capacity: int = 300" in logger
    assert 'logging.warning("lora key not loaded: {}".format(x))' in _source("comfy/lora.py")


def test_the_double_serves_its_log():
    with ComfyDouble(steps=1) as d:
        r = requests.post(d.url + "/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}, timeout=5)
        assert r.status_code == 400
        raw = requests.get(d.url + "/internal/logs/raw", timeout=5)
        text = requests.get(d.url + "/internal/logs", timeout=5).json()
        assert requests.get(d.url + "/api/internal/logs/raw", timeout=5).status_code == 404   # no /api twin
    body = raw.json()
    assert body["size"] == {"cols": 80, "rows": 24}
    assert [e["m"] for e in body["entries"]][:2] == ["got prompt\n", "invalid prompt: " + str(
        {"type": "invalid_prompt", "message": "Cannot execute because node Nope does not exist.",
         "details": "Node ID '#1'", "extra_info": {}}) + "\n"]
    assert all(datetime.fromisoformat(e["t"]).tzinfo is None for e in body["entries"])   # local, no zone
    assert text == "".join(f"{e['t']} - {e['m']}" for e in body["entries"])


def _entry(at: datetime, text: str) -> LogEntry:
    return LogEntry(at.isoformat(), text)


def test_lines_are_counted_in_the_job_window_whatever_the_servers_zone():
    now = datetime(2026, 12, 4, 21, 0, 0, tzinfo=timezone.utc)
    local = timedelta(hours=5, minutes=30)                # the server's clock, e.g. India

    def at(seconds: float) -> datetime:
        return (now + local + timedelta(seconds=seconds)).replace(tzinfo=None)

    log = ServerLog((_entry(at(-5), "lora key not loaded: earlier.job\n"), _entry(at(-2), "got prompt\n"),
                     _entry(at(0.5), "lora key not loaded: a.lora_down.weight\n"),
                     _entry(at(0.6), "lora key not loaded: b.lora_down.weight\n"),
                     _entry(at(3), "lora key not loaded: next.job\n"), _entry(at(4), "Prompt executed in 3.0 seconds\n")),
                    server_time_ms=(now.timestamp() + 4.7) * 1000)
    assert zone_offset_ms(log) == local.total_seconds() * 1000
    start = now.timestamp() * 1000
    found = lora_warnings(log, (start, start + 1000))
    assert (found.count, found.complete, found.sample) == (2, True, ("a.lora_down.weight", "b.lora_down.weight"))
    assert lora_warnings(log, (start + 1500, start + 2500)).count == 0
    assert lora_warnings(ServerLog(log.entries[2:], log.server_time_ms), (start - 100, start + 1000)).complete
    full = tuple(_entry(at(0.5 + i / 1000), f"lora key not loaded: k{i}\n") for i in range(LOG_CAPACITY))
    wrapped = lora_warnings(ServerLog(full, log.server_time_ms), (start, start + 1000))   # 300 kept, more dropped
    assert (wrapped.count, wrapped.complete) == (300, False)
    assert lora_problem("x.safetensors", wrapped).startswith(
        "LoRA x.safetensors did not apply: ComfyUI logged 'lora key not loaded' for at least 300 of its keys")


@pytest.fixture
def double():
    with ComfyDouble(steps=2, models={**DEFAULT_MODELS, "loras": LORAS}, lora_mismatch={BAD: 12},
                     log_utc_offset=timedelta(hours=-7)) as d:
        yield d


def test_generate_fails_a_job_whose_lora_did_not_apply(run_cli, project, double):
    r = run_cli("generate", "a tjtoy toy", "--lora", "sdxl_style", "--count", "2", "--seed", "1",
                "--server", double.url)
    assert r.code == 1, r.err
    assert ("error: LoRA sdxl_style.safetensors did not apply: ComfyUI logged 'lora key not loaded' for 12 of its "
            "keys (e.g. lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight") in r.err
    assert "hint: use a LoRA trained for this base model" in r.err and "Traceback" not in r.err
    assert len(double.posted) == 1 and r.out == "" and not project.outputs.exists()


def test_generate_with_a_matching_lora_is_clean(run_cli, project, double):
    r = run_cli("generate", "a tjtoy toy", "--lora", "flux_dreambooth", "--count", "2", "--seed", "1",
                "--server", double.url)
    assert r.code == 0, r.err
    assert len(r.out.splitlines()) == 2 and "did not apply" not in r.err
    assert any("Prompt executed" in e["m"] for e in double.logs)      # the log was there to read


def _jobs(project, text: str) -> Path:
    path = project.root / "jobs.yaml"
    path.write_text(text)
    return path


JOBS = """jobs:
  - prompt: a tjtoy toy
    loras: [sdxl_style, flux_dreambooth]
    seeds: [1, 2]
"""


def test_batch_records_bad_lora_jobs_as_failed_and_goes_on(run_cli, project, double):
    out = project.root / "out"
    r = run_cli("batch", "run", str(_jobs(project, JOBS)), "--server", double.url, "--out", str(out))
    assert r.code == 1 and "2 of 4 images failed" in r.err, r.err
    states, _ = read_manifest(out / MANIFEST_NAME)
    by_name = {rec.name: rec for rec in states.values()}
    bad = [n for n in by_name if "sdxl_style" in n]
    good = [n for n in by_name if "flux_dreambooth" in n]
    assert len(bad) == len(good) == 2
    assert all(by_name[n].state == "done" and (out / f"{n}.png").exists() for n in good)
    for name in bad:    # the second one's LoraLoader came from ComfyUI's cache: the first one's verdict holds
        assert by_name[name].state == "failed" and not (out / f"{name}.png").exists()
        assert by_name[name].error.startswith("LoRA sdxl_style.safetensors did not apply: ComfyUI logged 'lora key "
                                              "not loaded' for 12 of its keys")
    second = [p for p in double.posted if "sdxl" in json.dumps(p["prompt"])][1]
    history = double.history[second["prompt_id"]]
    cached = next(m[1]["nodes"] for m in history.messages if m[0] == "execution_cached")
    lora_node = next(i for i, n in second["prompt"].items() if n["class_type"] == "LoraLoader")
    assert lora_node in cached


def test_batch_fail_fast_stops_at_the_bad_lora(run_cli, project, double):
    out = project.root / "out"
    r = run_cli("batch", "run", str(_jobs(project, JOBS)), "--server", double.url, "--out", str(out),
                "--fail-fast", "--depth", "1")
    assert r.code == 1 and "did not apply" in r.err
    states, _ = read_manifest(out / MANIFEST_NAME)
    assert sum(rec.state == "done" for rec in states.values()) == 0


def test_batch_with_matching_loras_is_clean(run_cli, project, double):
    text = "jobs:\n  - prompt: a tjtoy toy\n    loras: [flux_dreambooth]\n    strengths: [0.5, 1.0]\n"
    out = project.root / "out"
    r = run_cli("batch", "run", str(_jobs(project, text)), "--server", double.url, "--out", str(out))
    assert r.code == 0, r.err
    assert "2 made, 0 skipped (done before), 0 failed" in r.out
