"""`generate` end to end through the CLI against the ComfyUI test double."""

from __future__ import annotations

import json
import socket
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.comfy.builtin import builtin_workflows
from tests.comfy_double import ComfyDouble


@pytest.fixture
def double():
    with ComfyDouble(steps=3) as d:
        yield d


def posted_inputs(double: ComfyDouble, class_type: str, index: int = -1) -> dict:
    prompt = double.posted[index]["prompt"]
    return next(n["inputs"] for n in prompt.values() if n["class_type"] == class_type)


def test_generate_with_lora_writes_images_and_sidecars(run_cli, project, double):
    r = run_cli("generate", "A tjtoy toy, on a desk!", "--lora", "flux_dreambooth", "--count", "2", "--seed", "7",
                "--server", double.url)
    assert r.code == 0, r.err
    paths = [Path(p) for p in r.out.splitlines()]
    folder = project.outputs / date.today().isoformat()
    assert len(paths) == 2 and all(p.parent == folder and p.is_file() for p in paths)
    assert [p.name[7:] for p in paths] == ["a-tjtoy-toy-on-a-desk-s7.png", "a-tjtoy-toy-on-a-desk-s8.png"]
    meta = json.loads(paths[0].with_suffix(".json").read_text())
    assert {k: meta[k] for k in ("prompt", "seed", "lora", "strength", "width", "height", "steps", "guidance",
                                 "sampler", "scheduler", "workflow", "server", "cached")} == {
        "prompt": "A tjtoy toy, on a desk!", "seed": 7, "lora": "flux_dreambooth.safetensors", "strength": 1,
        "width": 1024, "height": 1024, "steps": 28, "guidance": 3.5, "sampler": "dpmpp_2m",
        "scheduler": "sgm_uniform", "workflow": "builtin:finetuned_flux.json", "server": double.url,
        "cached": False}
    assert meta["prompt_id"] == double.posted[0]["prompt_id"] and set(meta["timings"]) >= {"total_s", "wall_s"}
    assert posted_inputs(double, "CLIPTextEncode", 0)["text"] == "A tjtoy toy, on a desk!"
    assert [posted_inputs(double, "RandomNoise", i)["noise_seed"] for i in (0, 1)] == [7, 8]
    png = Image.open(paths[1])
    reopened = {n["type"]: n for n in json.loads(png.text["workflow"])["nodes"]}   # as the browser will show it
    assert reopened["RandomNoise"]["widgets_values"] == [8, "randomize"]
    assert reopened["CLIPTextEncode"]["widgets_values"] == ["A tjtoy toy, on a desk!"]
    assert json.loads(png.text["prompt"]) == double.posted[1]["prompt"]
    assert "image 2/2 done in" in r.err


def test_generate_base_workflow_with_size_steps_and_set(run_cli, project, double):
    out = project.root / "shots"
    r = run_cli("generate", "a red fox", "--size", "512x768", "--steps", "4", "--guidance", "2.5", "--seed", "1",
                "--sampler", "euler", "--set", "BasicScheduler.denoise=0.75", "--out", str(out),
                "--server", double.url)
    assert r.code == 0, r.err
    assert Path(r.out.strip()).parent == out
    assert not any(n["class_type"] == "LoraLoader" for n in double.posted[0]["prompt"].values())
    assert posted_inputs(double, "EmptyLatentImage")["width"] == 512
    assert (posted_inputs(double, "ModelSamplingFlux")["width"], posted_inputs(double, "ModelSamplingFlux")["height"]) \
        == (512, 768)
    assert posted_inputs(double, "BasicScheduler") == {**posted_inputs(double, "BasicScheduler"), "steps": 4,
                                                       "denoise": 0.75}
    meta = json.loads(Path(r.out.strip()).with_suffix(".json").read_text())
    assert (meta["width"], meta["height"], meta["steps"], meta["lora"], meta["sampler"]) == (512, 768, 4, None, "euler")
    assert meta["sets"] == [["BasicScheduler", "denoise", "0.75"]]


def test_same_seed_again_is_cached_and_names_stay_unique(run_cli, double):
    first = run_cli("generate", "a red fox", "--seed", "3", "--server", double.url)
    again = run_cli("generate", "a red fox", "--seed", "3", "--server", double.url)
    assert first.code == again.code == 0, again.err
    a, b = Path(first.out.strip()), Path(again.out.strip())
    assert a != b and a.read_bytes() == b.read_bytes()
    assert json.loads(b.with_suffix(".json").read_text())["cached"] is True
    assert "(cached)" in again.err


def test_generate_uses_the_projects_workflow_file(run_cli, project, double):
    doc = builtin_workflows()["base_flux.json"]
    next(n for n in doc["nodes"] if n["type"] == "SaveImage")["widgets_values"] = ["mine"]
    (project.workflows / "base_flux.json").write_text(json.dumps(doc))
    r = run_cli("generate", "a fox", "--server", double.url)
    assert r.code == 0, r.err
    assert posted_inputs(double, "SaveImage")["filename_prefix"] == "mine"
    assert json.loads(Path(r.out.strip()).with_suffix(".json").read_text())["workflow"] == \
        str(project.workflows / "base_flux.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_says_how_to_start_one(run_cli, project):
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli("generate", "a fox", "--server", url)
    assert r.code == 1 and r.out == ""
    assert f"error: no ComfyUI server answers at {url}" in r.err
    assert "hint: start one with `python -m orchestrator comfyui up` (or add --up here)" in r.err
    assert "Traceback" not in r.err and not project.outputs.exists()


def test_a_missing_workflow_file_is_named_before_the_server_is_asked(run_cli, project):
    r = run_cli("generate", "a castle", "--workflow", "my_graph.json", "--server", f"http://127.0.0.1:{free_port()}")
    assert r.code == 2 and "my_graph.json does not exist" in r.err
    assert "no ComfyUI server answers" not in r.err

def test_missing_lora_is_named_with_the_available_ones(run_cli, project, double):
    r = run_cli("generate", "a fox", "--lora", "nope", "--server", double.url)
    assert r.code == 2
    assert f"error: LoRA 'nope' not found on ComfyUI at {double.url}" in r.err
    assert "hint: available: flux_dreambooth.safetensors." in r.err
    assert double.posted == [] and not project.outputs.exists()


def test_rejected_and_failed_prompts_are_rendered(run_cli, project, double):
    r = run_cli("generate", "a fox", "--set", "BasicScheduler.denoise=5", "--server", double.url)
    assert r.code == 2
    assert "rejected the prompt: 1 problem in 1 node" in r.err
    assert "  node 12 (BasicScheduler) denoise: Value 5.0 bigger than max of 1.0" in r.err
    double.fail_next("error", node_type="CheckpointLoaderSimple")
    r = run_cli("generate", "a fox", "--server", double.url)
    assert r.code == 1
    assert "error: ComfyUI failed at node 1 (CheckpointLoaderSimple, 'Load Checkpoint'): Error while " \
           "deserializing header: header too large" in r.err
    assert not project.outputs.exists()


@pytest.mark.parametrize("argv,message", [
    (["--size", "1000x1000"], "--size: '1000x1000' is not a size WxH with width and height multiples of 16"),
    (["--size", "big"], "--size: 'big' is not a size WxH"),
    (["--seed", "abc"], "--seed: 'abc' is not a seed (a whole number from 0 to 2^64-1) or 'random'"),
    (["--count", "0"], "--count: 0 is not a count (a whole number from 1 to 10000)"),
    (["--steps", "x"], "--steps: 'x' is not a whole number of steps from 1 to 10000"),
    (["--strength", "0.5"], "--strength: a strength needs a LoRA"),
    (["--set", "nodot"], "--set 'nodot': expected NODE.INPUT=VALUE"),
    (["--lora", " "], "--lora: ' ' is not a LoRA name"),
    (["--seed", str(2**64 - 1), "--count", "2"], f"--seed {2**64 - 1} --count 2: the images use seeds"),
])
def test_usage_errors(run_cli, argv, message):
    r = run_cli("generate", "a fox", *argv)
    assert r.code == 2 and f"error: {message}" in r.err


def test_set_naming_an_unknown_node(run_cli, double):
    r = run_cli("generate", "a fox", "--set", "Nope.x=1", "--server", double.url)
    assert r.code == 2 and "the workflow has no node 'Nope'" in r.err


def test_ctrl_c_cancels_the_running_prompt_and_writes_nothing(project, double):
    import time

    from orchestrator.comfy.client import ComfyClient
    from orchestrator.generate import GenerateRequest, generate
    from orchestrator.progress import RecordingSink

    class CtrlCAtFirstStep(ComfyClient):
        """Stands in for a user pressing Ctrl+C while the first image samples."""

        def wait(self, prompt_id, *, on_event=None, timeout=None):
            def hook(event):
                if type(event).__name__ == "Progress":
                    raise KeyboardInterrupt
                on_event(event)
            return super().wait(prompt_id, on_event=hook, timeout=timeout)

    double.step_time, double.steps = 0.05, 100
    client = CtrlCAtFirstStep(double.url, timeout=5)
    with pytest.raises(KeyboardInterrupt):
        generate(GenerateRequest("a fox", seed=1, count=3), project, client, RecordingSink())
    pid = double.posted[0]["prompt_id"]
    deadline = time.monotonic() + 30                  # the interrupt lands within a step; 30 s is a hang guard
    while not (entry := client.history(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entry, f"prompt {pid} never reached the history"
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    assert len(double.posted) == 1 and not project.outputs.exists()
    client.close()


def test_progress_lines(project, double):
    from orchestrator.comfy.client import ComfyClient
    from orchestrator.generate import GenerateRequest, generate
    from orchestrator.progress import RecordingSink

    rec = RecordingSink()
    with ComfyClient(double.url, timeout=5) as client:
        made = generate(GenerateRequest("a fox", seed=5, count=2), project, client, rec)
    assert [m.seed for m in made] == [5, 6]
    live = [e for e in rec.events if e.live]
    assert "image 1/2: Load Checkpoint" in rec.updates
    assert any(e.message == "image 1/2: step 1/3" and (e.step, e.total, e.unit) == (1, 3, "step") for e in live)
    assert "image 2/2: step 3/3" in rec.updates
    assert len(rec.milestones) == 2 and rec.milestones[1].startswith("image 2/2 done in")
    # after the last step, VAE decode and Save Image keep the bar where the steps left it
    after = live[[e.message for e in live].index("image 1/2: step 3/3") + 1:]
    first_after = next(e for e in after if "step" not in e.message)
    assert first_after.message.startswith("image 1/2: ") and (first_after.step, first_after.total) == (3, 3)
    assert rec.phases() == ["start", "queued", "running", "image", "queued", "running", "image", "end"]
    images = [e for e in rec.events if e.phase == "image"]
    assert [e.files for e in images] == [(str(m.path),) for m in made]
    assert [e for e in rec.events if e.phase == "end"][0].files == tuple(str(m.path) for m in made)


def test_workflow_by_name_from_the_project_and_missing_file(run_cli, project, double):
    doc = builtin_workflows()["base_flux.json"]
    (project.workflows / "mine.json").write_text(json.dumps(doc))
    r = run_cli("generate", "a fox", "--workflow", "mine", "--server", double.url)
    assert r.code == 0, r.err
    assert json.loads(Path(r.out.strip()).with_suffix(".json").read_text())["workflow"] == \
        str(project.workflows / "mine.json")
    r = run_cli("generate", "a fox", "--workflow", "nope.json", "--server", double.url)
    assert r.code == 2 and "error: workflow file nope.json does not exist" in r.err



@pytest.mark.docker
def test_without_server_the_projects_running_comfyui_comes_first(run_cli, project, engine, busybox_image,
                                                                   monkeypatch):
    from tests.comfy_standin import standin_image

    monkeypatch.delenv("COMFYUI_URL", raising=False)
    port = free_port()
    r = run_cli("comfyui", "up", "--image", standin_image(engine, "ok", 0.0), "--no-build", "--gpus", "none",
                "--port", str(port))
    assert r.code == 0, r.err
    r = run_cli("generate", "a fox")
    # the stand-in answers /system_stats but is no full ComfyUI: what matters is which server was asked
    # (before: 127.0.0.1:8188 first, whatever holds that port, and this project's server only if nothing did)
    assert f"using this project's ComfyUI at http://127.0.0.1:{port}" in r.err
    assert "127.0.0.1:8188" not in r.err and "Traceback" not in r.err
