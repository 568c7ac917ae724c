"""Jobs that share a model, LoRA and strengths run together: ComfyUI patches the model once per group."""

from __future__ import annotations

import json

from orchestrator.batch.jobs import expand, group_key, order_for_the_gpu
from orchestrator.batch.manifest import MANIFEST_NAME, read_manifest
from tests.comfy_double import DEFAULT_MODELS, ComfyDouble

TEXT = """jobs:
  - prompt: [a fox, a cat]
    loras: [a, b]
    strengths: [0.5, 1.0]
    seeds: [1, 2]
  - prompt: a dog
    lora: b
    strength: 0.5
  - prompt: a bird
    lora: none
"""
DATA = {"jobs": [{"prompt": ["a fox", "a cat"], "loras": ["a", "b"], "strengths": [0.5, 1.0], "seeds": [1, 2]},
                 {"prompt": "a dog", "lora": "b", "strength": 0.5}, {"prompt": "a bird", "lora": "none"}]}


def _jobs(tmp_path):
    return expand(DATA, {}, tmp_path / "jobs.yaml").jobs


def test_groups_in_order_of_first_appearance_seeds_innermost(tmp_path):
    jobs = _jobs(tmp_path)
    ordered = order_for_the_gpu(jobs)
    assert sorted(j.index for j in ordered) == list(range(len(jobs)))       # the same jobs, indexes untouched
    keys = [group_key(j) for j in ordered]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys)) == 5            # each (workflow, LoRA, strength) once: a, 0.5 ... none
    assert [(j.lora, j.strength) for j in ordered][:4] == [("a", 0.5)] * 4
    assert [(j.prompt, j.seed) for j in ordered][:4] == [("a fox", 1), ("a fox", 2), ("a cat", 1), ("a cat", 2)]
    b_half = [j.prompt for j in ordered if (j.lora, j.strength) == ("b", 0.5)]
    assert b_half == ["a fox", "a fox", "a cat", "a cat", "a dog"]   # the later entry joins its group
    assert order_for_the_gpu(ordered) == ordered                       # already grouped: kept as it is


def test_a_batch_switches_lora_once_per_group_and_keeps_its_manifest(run_cli, project):
    models = {**DEFAULT_MODELS, "loras": ["a.safetensors", "b.safetensors"]}
    path = project.root / "jobs.yaml"
    path.write_text(TEXT)
    out = project.root / "out"
    with ComfyDouble(steps=1, models=models) as d:
        r = run_cli("batch", "run", str(path), "--server", d.url, "--out", str(out), "--depth", "1")
        assert r.code == 0, r.err
        posted = [next(((n["inputs"]["lora_name"], n["inputs"]["strength_model"])
                        for n in p["prompt"].values() if n["class_type"] == "LoraLoader"), None) for p in d.posted]
        again = run_cli("batch", "run", str(path), "--server", d.url, "--out", str(out))
        assert again.code == 0 and "0 made, 18 skipped" in again.out, again.out + again.err   # resume as before
        assert len(d.posted) == 18
    switches = sum(1 for i in range(1, len(posted)) if posted[i] != posted[i - 1])
    assert switches == 4 and len(posted) == 18
    states, _ = read_manifest(out / MANIFEST_NAME)
    assert sorted(rec.state for rec in states.values()) == ["done"] * 18
    index = (out / "index.html").read_text()
    assert index.index("a-fox-a-0.5") < index.index("a-fox-b-0.5") < index.index("a-dog")   # file order kept
    assert json.loads((out / "a-fox-a-0.5-1024x1024-1.json").read_text())["lora"] == "a.safetensors"   # what ran
