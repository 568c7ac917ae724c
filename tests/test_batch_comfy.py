"""Batches against several ComfyUI test doubles (real HTTP, websocket, client): faults and resume."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.batch.comfy_server import ComfyServer
from orchestrator.batch.jobs import load_job_file
from orchestrator.batch.manifest import MANIFEST_NAME
from orchestrator.batch.prompts import PromptBuilder
from orchestrator.batch.run import run_batch
from orchestrator.batch.scheduler import FailFast, Settings
from tests.comfy_double import DEFAULT_MODELS, ComfyDouble
from tests.test_batch_scheduler import check_manifest

REPO = Path(__file__).resolve().parents[1]
LORAS = ["flux_dreambooth.safetensors", "flux_dreambooth-000025.safetensors"]
FAST = Settings(depth=2, poll=0.05, retry_down=0.05, down_timeout=10)
SWEEP = ("defaults: {lora: flux_dreambooth.safetensors, size: 64x64, steps: 4}\n"
         "jobs:\n  - prompt: a tjtoy toy on a desk\n    seeds: [1, 2, 3, 4]\n"
         "    strengths: [0.6, 0.8, 1.0]\n    name: \"toy-{strength}-{seed}\"\n")


@pytest.fixture
def doubles(monkeypatch):
    from tests.comfy_double_http import Handler

    # the double's unbuffered http.server otherwise stalls ~40 ms per reply (Nagle + delayed ACK)
    monkeypatch.setattr(Handler, "disable_nagle_algorithm", True, raising=False)
    made: list[ComfyDouble] = []

    def make(n: int, step_time: float = 0.01, steps: int = 4) -> list[ComfyDouble]:
        for _ in range(n):
            made.append(ComfyDouble(models={**DEFAULT_MODELS, "loras": LORAS}, step_time=step_time,
                                    steps=steps).start())
        return made[-n:]

    yield make
    for d in made:
        d.close()


@pytest.fixture
def batch(project):
    for name in ("base_flux.json", "finetuned_flux.json"):
        shutil.copy(REPO / "workflows" / name, project.workflows / name)

    def setup(text: str = SWEEP):
        path = project.root / "jobs.yaml"
        path.write_text(text)
        return load_job_file(path), project.root / "out"

    return setup


def run(project, jf, out, ds, settings=FAST, **kw):
    servers = [ComfyServer.connect(d.url, timeout=5) for d in ds]
    builder = PromptBuilder(project, servers[0].client.object_info)
    try:
        return run_batch(jf, out, servers, builder.build, settings, **kw)
    finally:
        for s in servers:
            s.close()


def seed_color(seed: int) -> tuple[int, int, int]:
    """The colour the double paints for a seed."""
    rng = random.Random(f"{seed}-0")
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def check_files(out: Path, jobs) -> None:
    """Every job's PNG exists once, and it is the image of *that* job (the prompt in its metadata)."""
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{j.name}.png" for j in jobs)
    for job in jobs:
        with Image.open(out / f"{job.name}.png") as im:
            prompt = json.loads(im.text["prompt"])
            assert im.getpixel((5, 5)) == seed_color(job.seed)
        inputs = {n["class_type"]: n["inputs"] for n in prompt.values()}
        assert inputs["RandomNoise"]["noise_seed"] == job.seed
        assert inputs["LoraLoader"]["strength_model"] == job.strength
        assert inputs["CLIPTextEncode"]["text"] == job.prompt
        assert "workflow" in im.text                     # the UI workflow rides along for the browser


def test_fan_out_over_three_servers(project, batch, doubles):
    jf, out = batch()
    ds = doubles(3)
    summary = run(project, jf, out, ds)
    assert (summary.done, summary.failed) == (12, 0)
    assert sum(len(d.posted) for d in ds) == 12 and all(len(d.posted) >= 2 for d in ds)
    assert {s.url for s in summary.servers if s.done} == {d.url for d in ds}
    check_manifest(out, jf.jobs, finished=True)
    check_files(out, jf.jobs)
    side = json.loads((out / "toy-0.8-2.json").read_text())
    assert side["seed"] == 2 and side["server"] in {d.url for d in ds} and side["files"] == ["toy-0.8-2.png"]


def test_server_killed_mid_batch(project, batch, doubles):
    jf, out = batch()
    a, b = doubles(2, step_time=0.04)
    killed = []

    def on_progress(p):
        if p.done >= 2 and not killed:
            b.stop()
            killed.append(True)

    summary = run(project, jf, out, [a, b], on_progress=on_progress)
    assert killed and (summary.done, summary.failed) == (12, 0)
    assert "is down" in (out / MANIFEST_NAME).read_text()
    check_manifest(out, jf.jobs, finished=True)
    check_files(out, jf.jobs)


def test_server_restart_loses_its_queue(project, batch, doubles):
    jf, out = batch()
    a, b = doubles(2, step_time=0.02)
    restarted = []

    def on_progress(p):
        if p.done >= 3 and not restarted:
            b.restart()
            restarted.append(True)

    summary = run(project, jf, out, [a, b], on_progress=on_progress)
    assert restarted and (summary.done, summary.failed) == (12, 0)
    check_manifest(out, jf.jobs, finished=True)
    check_files(out, jf.jobs)


def test_dropped_websockets_and_http_500s_cost_nothing(project, batch, doubles):
    jf, out = batch()
    a, b = doubles(2)
    a.drop_websocket_after(5)
    b.drop_websocket_after(12)
    b.http_500_next(2)
    summary = run(project, jf, out, [a, b])
    assert (summary.done, summary.failed) == (12, 0)
    check_manifest(out, jf.jobs, finished=True)
    check_files(out, jf.jobs)


def test_rejected_and_failed_jobs_are_recorded_and_the_batch_goes_on(project, batch, doubles):
    jf, out = batch(SWEEP + "  - prompt: a toy\n    lora: missing.safetensors\n    seed: 9\n")
    (a,) = doubles(1)
    a.fail_next("error", node_type="VAEDecode", message="CUDA out of memory")
    summary = run(project, jf, out, [a])
    assert summary.failed == 2 and summary.done == 11
    errors = dict(summary.failures)
    lora_job = next(j for j in jf.jobs if j.lora == "missing.safetensors")
    assert "missing.safetensors" in errors[lora_job.name]
    assert any("VAEDecode" in e and "CUDA out of memory" in e for e in errors.values())
    states = check_manifest(out, jf.jobs, finished=True)
    assert states[lora_job.key].state == "failed"


def test_fail_fast_stops_and_leaves_nothing_pending_on_the_server(project, batch, doubles):
    jf, out = batch("defaults: {lora: missing.safetensors, size: 64x64}\njobs:\n  - prompt: a\n    count: 6\n")
    (a,) = doubles(1)
    with pytest.raises(FailFast):
        run(project, jf, out, [a], Settings(depth=2, poll=0.05, fail_fast=True))
    assert len(a.posted) <= 2 and not a.pending
    check_manifest(out, jf.jobs, finished=False)


def test_ctrl_c_then_rerun_collects_what_finished_while_away(project, batch, doubles):
    jf, out = batch()
    a, b = doubles(2, step_time=0.05)

    def interrupt(p):
        if p.done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(project, jf, out, [a, b], on_progress=interrupt)
    states = check_manifest(out, jf.jobs, finished=False)
    assert not a.pending and not b.pending                    # our waiting jobs were deleted
    queued = [r for r in states.values() if r.state == "queued"]
    assert queued, "a running job stays queued, to be collected by the next run"
    made = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}  # a rewrite: new inode
    deadline = time.monotonic() + 10
    while (a.running or b.running) and time.monotonic() < deadline:
        time.sleep(0.02)                                      # they finish while we are away
    posted_before = len(a.posted) + len(b.posted)

    summary = run(project, jf, out, [a, b])
    assert summary.skipped == len(made) and summary.done + summary.skipped == 12
    assert len(a.posted) + len(b.posted) == posted_before + 12 - len(made) - len(queued)  # not run twice
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png") if p.name in made} == made
    check_manifest(out, jf.jobs, finished=True)
    check_files(out, jf.jobs)


@pytest.mark.slow
def test_real_sigint_and_sigkill_of_the_cli_then_rerun(project, batch, doubles):
    """A real Ctrl+C (SIGINT) and a hard kill (SIGKILL) of `batch run`, then a rerun: every image exactly once."""
    import os
    import signal
    import subprocess
    import sys

    jf, out = batch()
    a, b = doubles(2, step_time=0.05)
    argv = [sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "batch", "run",
            str(jf.path), "--server", a.url, "--server", b.url, "--out", str(out), "--poll", "0.05"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run_until(n_images: int, sig: int) -> tuple[int, str]:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while len(list(out.glob("*.png"))) < n_images and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        holds = [a.hold_node("*"), b.hold_node("*")]   # nothing more finishes before the signal lands
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            for hold in holds:
                hold.set()                             # what was running finishes while we are away
        return proc.returncode, err.decode()

    code, err = run_until(3, signal.SIGINT)
    assert code == 130, err
    assert "Run the same command again" in err and "Traceback" not in err
    check_manifest(out, jf.jobs, finished=False)
    assert not a.pending and not b.pending
    code, _ = run_until(7, signal.SIGKILL)
    assert code == -signal.SIGKILL
    check_manifest(out, jf.jobs, finished=False)             # readable and consistent after a hard kill
    summary = run(project, jf, out, [a, b])
    assert summary.done + summary.skipped == 12 and summary.failed == 0
    check_manifest(out, jf.jobs, finished=True)
    check_files(out, jf.jobs)
