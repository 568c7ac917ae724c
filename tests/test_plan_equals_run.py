"""plan = run: the same bad input fails `batch plan` and `batch run`, `train --plan` and `train`, with the
same exit code and the same error text (both call the same planning function)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.comfy_double import DEFAULT_MODELS, ComfyDouble
from tests.standin import make_local_trainer
from tests.train_project import make_seed_project

REPO = Path(__file__).resolve().parents[1]
GOOD = "jobs:\n  - prompt: a tjtoy toy\n    lora: flux_dreambooth.safetensors\n    seeds: [1, 2]\n"


def _done_record(project, name: str) -> None:
    """An earlier run in the default output folder made `name` with other settings."""
    out = project.root / "outputs" / "batch-jobs"
    out.mkdir(parents=True)
    (out / "manifest.jsonl").write_text(json.dumps({"key": "0123456789abcdef", "name": name, "state": "pending"})
                                        + "\n" + json.dumps({"key": "0123456789abcdef", "state": "queued"}) + "\n"
                                        + json.dumps({"key": "0123456789abcdef", "state": "done",
                                                      "files": [f"{name}.png"]}) + "\n")


def _folder_workflow(project) -> str:
    (project.workflows / "folder.json").mkdir()
    return "jobs:\n  - prompt: a\n    workflow: workflows/folder.json\n"


BATCH_CASES = {
    "yaml syntax": lambda p: "jobs:\n  - prompt: [a\n",
    "bad seed": lambda p: "jobs:\n  - prompt: a\n    seeds: [1, x]\n",
    "unknown key": lambda p: "jobs:\n  - prompt: a\n    seeds: [1]\n    colour: red\n",
    "workflow is a folder": _folder_workflow,
    "workflow missing": lambda p: "jobs:\n  - prompt: a\n    workflow: workflows/nope.json\n",
    "lora on the base workflow": lambda p: "jobs:\n  - prompt: a\n    lora: x.safetensors\n"
                                           "    workflow: workflows/base_flux.json\n",
    "set on no node": lambda p: 'jobs:\n  - prompt: a\n    set: {"Nope.steps": 3}\n',
    "set not a number": lambda p: 'jobs:\n  - prompt: a\n    set: {"BasicScheduler.denoise": lots}\n',
    "name taken by an earlier run": lambda p: (_done_record(p, "a-tjtoy-toy-flux_dreambooth-1.0-1024x1024-1"), GOOD)[1],
    "out is a file": lambda p: ((p.root / "outputs").mkdir(), (p.root / "outputs" / "batch-jobs").write_text("x"),
                                GOOD)[2],
}


@pytest.fixture(scope="module")
def comfy():
    double = ComfyDouble(models=DEFAULT_MODELS).start()
    yield double
    double.stop()


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_batch_plan_fails_exactly_as_batch_run(case, run_cli, project, comfy):
    for name in ("base_flux.json", "finetuned_flux.json"):
        shutil.copy(REPO / "workflows" / name, project.workflows / name)
    path = project.root / "jobs.yaml"
    path.write_text(BATCH_CASES[case](project))
    plan = run_cli("batch", "plan", str(path))
    run = run_cli("batch", "run", str(path), "--server", comfy.url)
    assert plan.code == 2, plan.err
    assert (run.code, run.err) == (plan.code, plan.err)
    assert plan.out == run.out == "" and "Traceback" not in plan.err
    assert comfy.history == {}                          # run queued nothing
    down = run_cli("batch", "run", str(path), "--server", "http://127.0.0.1:9")
    assert (down.code, down.err) == (plan.code, plan.err)   # no server up: the file's problem still comes first


def test_batch_plan_and_run_agree_on_a_good_file(run_cli, project, comfy):
    """The control: the same file passes both (so the cases above fail for their reason, not the set-up)."""
    for name in ("base_flux.json", "finetuned_flux.json"):
        shutil.copy(REPO / "workflows" / name, project.workflows / name)
    (project.root / "jobs.yaml").write_text(GOOD.replace("lora: flux_dreambooth.safetensors", "lora: none"))
    plan = run_cli("batch", "plan", str(project.root / "jobs.yaml"))
    also = run_cli("batch", "plan", str(project.root / "jobs.yaml"), "--server", comfy.url)
    run = run_cli("batch", "run", str(project.root / "jobs.yaml"), "--server", comfy.url, "--poll", "0.05")
    assert plan.code == also.code == run.code == 0, (plan.err, run.err)
    assert plan.out == also.out and "2 made" in run.out


def _missing_checkpoint(p) -> tuple[str, ...]:
    (p.checkpoints / "flux1-dev.safetensors").unlink()
    return ()


def _lora_exists(p) -> tuple[str, ...]:
    (p.loras / "flux_dreambooth.safetensors").write_bytes(b"an earlier LoRA")
    return ()


def _missing_folder(p) -> tuple[str, ...]:
    shutil.rmtree(p.flux_data / "sparkgpu")
    return ()


TRAIN_CASES = {
    "model missing": _missing_checkpoint,
    "LoRA would be overwritten": _lora_exists,
    "dataset folder missing": _missing_folder,
    "unknown --set key": lambda p: ("--set", "network_dimm=4"),
    "bad --set value": lambda p: ("--set", "lr_scheduler=cosin"),
    "nothing to resume": lambda p: ("--resume",),
    "no data.toml": lambda p: (p.data_toml.unlink(), ())[1],
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_plan_fails_exactly_as_train(case, run_cli, project, tmp_path):
    make_seed_project(project, size=(256, 256))
    checkout, python = make_local_trainer(tmp_path / "trainer")
    local = ("--runtime", "local", "--sd-scripts", str(checkout), "--python", str(python))
    extra = TRAIN_CASES[case](project)
    plan = run_cli("train", "--plan", *local, *extra)
    run = run_cli("train", *local, *extra)
    assert plan.code == 2, plan.err
    assert (run.code, run.err) == (plan.code, plan.err)
    assert run.out == "" and "Traceback" not in plan.err
    assert not project.runs.exists() or not [d for d in project.runs.iterdir() if not d.name.startswith(".")]
