"""Job -> API prompt: our workflows patched per job, problems found before anything is queued."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.batch.jobs import load_job_file
from orchestrator.batch.prompts import PromptBuilder
from orchestrator.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def jobs_of(project, text):
    for name in ("base_flux.json", "finetuned_flux.json"):
        shutil.copy(REPO / "workflows" / name, project.workflows / name)
    path = project.root / "jobs.yaml"
    path.write_text(text)
    return load_job_file(path).jobs


def by_type(prompt):
    return {n["class_type"]: n["inputs"] for n in prompt.values()}


def test_every_setting_lands_in_its_node(project):
    (job,) = jobs_of(project, "jobs:\n  - {prompt: a toy, seed: 7, lora: x.safetensors, strength: 0.7, size: 512x768,"
                              " steps: 20, guidance: 4, sampler: euler, scheduler: simple}\n")
    payload = PromptBuilder(project).build(job)
    n = by_type(payload.prompt)
    assert n["CLIPTextEncode"]["text"] == "a toy" and n["RandomNoise"]["noise_seed"] == 7
    assert (n["LoraLoader"]["lora_name"], n["LoraLoader"]["strength_model"], n["LoraLoader"]["strength_clip"]) == (
        "x.safetensors", 0.7, 0.7)
    assert (n["EmptyLatentImage"]["width"], n["EmptyLatentImage"]["height"]) == (512, 768)
    assert (n["ModelSamplingFlux"]["width"], n["ModelSamplingFlux"]["height"]) == (512, 768)
    assert n["BasicScheduler"]["steps"] == 20 and n["BasicScheduler"]["scheduler"] == "simple"
    assert n["FluxGuidance"]["guidance"] == 4 and n["KSamplerSelect"]["sampler_name"] == "euler"
    assert n["SaveImage"]["filename_prefix"] == f"batch/{job.name}"
    assert payload.workflow is not None and "nodes" in payload.workflow   # UI JSON for the PNG metadata
    ui = {node["type"]: node["widgets_values"] for node in payload.workflow["nodes"]}
    assert ui["CLIPTextEncode"][0] == "a toy" and ui["RandomNoise"][0] == 7   # shows this image's values
    assert ui["LoraLoader"] == ["x.safetensors", 0.7, 0.7]


def test_no_lora_uses_the_base_workflow_or_strength_zero(project):
    base, zero = jobs_of(project, "jobs:\n  - {prompt: a, lora: none}\n"
                                  "  - {prompt: b, lora: none, workflow: workflows/finetuned_flux.json}\n")
    b = PromptBuilder(project)
    assert "LoraLoader" not in by_type(b.build(base).prompt)
    lora = by_type(b.build(zero).prompt)["LoraLoader"]
    assert lora["strength_model"] == 0 and lora["strength_clip"] == 0


def test_set_overrides_any_input_and_our_prefix(project):
    (job,) = jobs_of(project, 'jobs:\n  - {prompt: a, set: {"SaveImage.filename_prefix": "x", "BasicScheduler.denoise": 0.5}}\n')
    n = by_type(PromptBuilder(project).build(job).prompt)
    assert n["SaveImage"]["filename_prefix"] == "x" and n["BasicScheduler"]["denoise"] == 0.5


def test_check_reports_problems_before_anything_runs(project):
    jobs = jobs_of(project, "jobs:\n  - {prompt: a, lora: x.safetensors, workflow: workflows/base_flux.json}\n"
                            '  - {prompt: b, set: {"Nope.steps": 3}}\n  - {prompt: c, workflow: workflows/gone.json}\n')
    with pytest.raises(ConfigError) as e:
        PromptBuilder(project).check(jobs)
    text = "\n".join(e.value.details)
    assert "has no LoraLoader" in text and "Nope" in text and "workflow file workflows/gone.json does not exist" in text
    assert e.value.exit_code == 2
