"""The batch pipeline's output stays byte-for-byte what it was before the speed-ups (bench/batch_plan.py).

tests/golden/batch/small.json was recorded with the code before them (commit 4e4e4f2: a deep copy of
the whole prompt per job); regenerate it only on purpose: `GOLDEN_REGEN=1 python3 -m pytest tests/test_batch_golden.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

from orchestrator.batch.jobs import load_job_file
from orchestrator.batch.prompts import PromptBuilder
from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.layout import Layout

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "batch" / "small.json"

GOOD = """\
defaults:
  lora: flux_dreambooth.safetensors
  steps: 20
jobs:
  - prompt: ["a tjtoy toy on a desk", "a tjtoy toy in the snow"]
    seeds: [1, 2]
    strengths: [0.6, 1.0]
    sizes: [1024x1024, 768x512]
    name: "toy-{slug}-{strength}-{size}-{seed}"
  - prompt: a red fox
    lora: none
    count: 3
    seed: 40
    guidance: 4
    sampler: euler
    scheduler: simple
    set: {"SaveImage.filename_prefix": "fox", "BasicScheduler.denoise": "0.9"}
  - prompt: a castle
    loras: [flux_dreambooth-000025.safetensors, flux_dreambooth.safetensors]
    set: {"Load LoRA.strength_clip": 0.5}
"""

BAD = {
    "lora_on_base": "jobs:\n  - prompt: a\n    lora: x.safetensors\n    workflow: workflows/base_flux.json\n    count: 3\n",
    "unknown_node": "jobs:\n  - prompt: a\n    seeds: [1, 2]\n    set: {\"Nope.steps\": 3}\n",
    "unknown_input": "jobs:\n  - prompt: a\n    set: {\"BasicScheduler.nope\": 3}\n",
    "not_a_number": "jobs:\n  - prompt: a\n    count: 2\n    set: {\"BasicScheduler.denoise\": \"lots\"}\n",
    "mixed": ("jobs:\n  - prompt: a\n    set: {\"Nope.x\": 1}\n  - prompt: b\n    lora: y.safetensors\n"
              "    workflow: workflows/base_flux.json\n  - prompt: c\n    count: 2\n"),
}


def _project(tmp_path: Path) -> Layout:
    layout = Layout.at(tmp_path)
    shutil.copytree(REPO / "workflows", layout.workflows)
    return layout


def snapshot(tmp_path: Path) -> dict:
    """Every job's key, settings, patched prompt and browser workflow; every bad file's error."""
    layout = _project(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    jf = load_job_file(good)
    builder = PromptBuilder(layout)
    builder.check(jf.jobs)
    jobs = []
    for job in jf.jobs:
        payload = builder.build(job)
        jobs.append({"key": job.key, "settings": job.settings(), "prompt": payload.prompt,
                     "workflow_sha256": _digest(payload.workflow)})
    errors = {}
    for name, text in BAD.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        try:
            PromptBuilder(layout).check(load_job_file(path).jobs)
        except ConfigError as e:
            errors[name] = {"message": e.message, "hint": e.hint, "details": list(e.details)}
        else:
            errors[name] = None
    cli = {name: _cli(layout, "batch", "plan", str(good), *extra)
           for name, extra in (("plan", ("--sample", "0")), ("plan_json", ("--json",)))}
    return json.loads(json.dumps({"jobs": jobs, "errors": errors, "cli": cli}).replace(str(tmp_path), "<tmp>"))


def _digest(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _cli(layout: Layout, *argv: str) -> dict:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--project-dir", str(layout.root), *argv], stdout=out, stderr=err)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def test_batch_output_is_what_it_was_before_the_speed_ups(tmp_path):
    got = snapshot(tmp_path)
    if os.environ.get("GOLDEN_REGEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert len(want["jobs"]) == 21 and all(want["errors"].values())   # the golden covers what it claims
    assert got["errors"] == want["errors"]
    assert got["cli"] == want["cli"]
    for g, w in zip(got["jobs"], want["jobs"], strict=True):
        assert g == w, g["settings"]["name"]


def test_built_prompts_do_not_share_state(tmp_path):
    """Patching a job never changes the template or another job's prompt (the template is shared)."""
    layout = _project(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    jobs = load_job_file(good).jobs
    builder = PromptBuilder(layout)
    first = builder.build(jobs[0]).prompt
    before = json.dumps(first, sort_keys=True)
    second = builder.build(jobs[1]).prompt
    for node in second.values():          # scribble over every node of the second prompt
        for k in list(node.get("inputs", {})):
            node["inputs"][k] = "scribbled"
    assert json.dumps(first, sort_keys=True) == before
    assert builder.build(jobs[0]).prompt == first


def test_a_list_value_in_set_is_checked_too(tmp_path):
    """`set:` values may be lists (unhashable): the check still builds those jobs."""
    layout = _project(tmp_path)
    path = tmp_path / "list.yaml"
    path.write_text('jobs:\n  - prompt: a\n    seeds: [1, 2]\n    set: {"Nope.x": [1, 2]}\n')
    try:
        PromptBuilder(layout).check(load_job_file(path).jobs)
    except ConfigError as e:
        assert e.message == "2 job(s) cannot be turned into a ComfyUI prompt" and "Nope" in e.details[1]
    else:
        raise AssertionError("a --set on a missing node must fail")
