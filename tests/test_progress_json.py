"""`--json` progress events of every long-running command: each stderr line is one event of the documented
schema (README: "Progress for scripts"), the phases come in the documented order, files are real."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.comfy_double import DEFAULT_MODELS, ComfyDouble
from tests.comfy_standin import fake_checkout
from tests.standin import make_local_trainer
from tests.test_batch_cli import copy_workflows, write_jobs
from tests.test_comfy_server import free_ports, standins, up_cli  # noqa: F401  (standins: a fixture)
from tests.test_download import TOKEN, hub  # noqa: F401  (the local Hub fixture)
from tests.train_project import make_seed_project

FIELDS = {"time": str, "kind": str, "phase": str, "live": bool, "message": str, "step": (int, float, type(None)),
          "total": (int, float, type(None)), "unit": (str, type(None)), "rate": (int, float, type(None)),
          "eta": (int, float, type(None)), "files": list}
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section() -> str:
    text = README.read_text()
    return text[text.index("## Progress for scripts"):].split("\n## ", 1)[0]


def readme_phases() -> dict[str, set[str]]:
    """kind -> the phases the README documents for it (its table), plus the common ones."""
    section = readme_section()
    common = set(re.findall(r"`(\w+)`", section[section.index("Every command starts"):section.index("In between")]))
    out: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `[^`]+` \| `(\w+)` \| (.+) \|$", section, re.M):
        kind, phases = row
        out[kind] = common | set(re.findall(r"(?:^|, )`(\w+)`", phases))
    return out


PHASES = readme_phases()


def test_the_readme_documents_every_field_and_its_example_is_valid():
    section = readme_section()
    table = section[section.index("| field | meaning |"):].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", table, re.M))
    assert {name for pair in documented for name in pair if name} == set(FIELDS)
    assert set(PHASES) == {"train", "download", "batch", "generate", "server"}
    assert {"start", "end", "failed", "log"} <= PHASES["batch"] and "checkpoint" in PHASES["train"]
    example = re.search(r"```json\n(.+?)\n```", section, re.S).group(1)
    [event] = events(example, "train")
    assert event["live"] and event["phase"] == "training"


def events(stderr: str, kind: str) -> list[dict]:
    """Every stderr line parsed and checked against the schema."""
    out = []
    for line in stderr.splitlines():
        doc = json.loads(line)   # nothing but JSON lines on stderr
        assert set(doc) == set(FIELDS), line
        for key, types in FIELDS.items():
            assert isinstance(doc[key], types), (key, line)
        assert doc["kind"] == kind and doc["phase"] in PHASES[kind], line
        assert doc["time"].endswith("+00:00") and all(isinstance(f, str) for f in doc["files"])
        out.append(doc)
    return out


def milestones(evs: list[dict]) -> list[str]:
    """The phases of the milestones, without log lines and warnings, repeats collapsed."""
    seq: list[str] = []
    for e in evs:
        if not e["live"] and e["phase"] not in ("log", "warning") and (not seq or seq[-1] != e["phase"]):
            seq.append(e["phase"])
    return seq


def test_train_events(project, run_cli, tmp_path):
    make_seed_project(project, size=(256, 256))
    checkout, python = make_local_trainer(tmp_path / "trainer")
    r = run_cli("train", "--runtime", "local", "--sd-scripts", str(checkout), "--python", str(python),
                "--set", "max_train_epochs=2", "--json")
    assert r.code == 0, r.err
    evs = events(r.err, "train")
    seq = milestones(evs)
    assert seq[0] == "start" and seq[-1] == "end" and "training" in seq and "checkpoint" in seq
    assert seq.index("training") < seq.index("checkpoint")
    final = project.loras / "flux_dreambooth.safetensors"
    checkpoints = [f for e in evs if e["phase"] == "checkpoint" for f in e["files"]]
    assert str(project.loras / "flux_dreambooth-000001.safetensors") in checkpoints
    assert all(Path(f).is_file() for f in checkpoints)
    end = [e for e in evs if e["phase"] == "end"][-1]
    assert end["files"][0] == str(final) and all(Path(f).is_file() for f in end["files"])
    steps = [e for e in evs if e["live"] and e["phase"] == "training" and e["step"] is not None]
    assert steps and all(e["unit"] == "step" and e["total"] == 40 and 0 <= e["step"] <= 40 for e in steps)
    assert r.out.strip() == str(final)   # the result stays alone on stdout


def test_download_events(hub, run_cli, project, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = run_cli("download", "--only", "ae", "clip_l", "--json")
    assert r.code == 0, r.err
    evs = events(r.err, "download")
    assert milestones(evs) == ["start", "end"]   # files under 1 MiB: no per-file milestones
    start, end = (e for e in evs if e["phase"] in ("start", "end"))
    assert start["unit"] == "byte" and start["total"] == 70_000 + 50_000 and len(start["files"]) == 2
    assert sorted(end["files"]) == sorted(start["files"]) and all(Path(f).is_file() for f in end["files"])
    live = [e for e in evs if e["live"]]
    assert live and {e["phase"] for e in live} <= {"inspect", "download"}
    assert TOKEN not in r.err and "ae" in r.out   # the table stays on stdout


def test_batch_run_events(run_cli, project):
    copy_workflows(project)
    path = write_jobs(project, "defaults: {size: 64x64, steps: 2}\njobs:\n  - prompt: a cat\n    count: 3\n")
    with ComfyDouble(models=DEFAULT_MODELS) as d:
        r = run_cli("batch", "run", str(path), "--server", d.url, "--json", "--poll", "0.05")
    assert r.code == 0, r.err
    evs = events(r.err, "batch")
    assert milestones(evs) == ["start", "image", "end"]
    images = [e for e in evs if e["phase"] == "image"]
    assert [e["step"] for e in images] == [1, 2, 3] and all(e["total"] == 3 for e in images)
    assert all(len(e["files"]) == 1 and Path(e["files"][0]).is_file() for e in images)
    end = evs[-1]
    assert end["phase"] == "end" and end["step"] == 3 and any(f.endswith("index.html") for f in end["files"])
    assert json.loads(r.out)["done"] == 3        # the summary stays one JSON document on stdout


def test_generate_events_and_a_failure_as_an_event(run_cli, project):
    with ComfyDouble(steps=3) as d:
        r = run_cli("generate", "a red fox", "--count", "2", "--seed", "1", "--server", d.url, "--json")
    assert r.code == 0, r.err
    evs = events(r.err, "generate")
    assert milestones(evs) == ["start", "image", "end"]
    made = r.out.split()
    assert [f for e in evs if e["phase"] == "image" for f in e["files"]] == made == evs[-1]["files"]
    assert all(e["phase"] in ("queued", "running") and e["unit"] == "step" for e in evs if e["live"])

    r = run_cli("generate", "a red fox", "--server", f"http://127.0.0.1:{free_ports()}", "--json")
    assert r.code == 1 and r.out == ""
    [failed] = events(r.err, "generate")
    assert failed["phase"] == "failed" and failed["message"].startswith("error: ") and "hint: " in failed["message"]


def test_comfyui_up_events(project, run_cli, tmp_path):
    from orchestrator.runtimes import local_comfyui as localserver

    checkout = fake_checkout(tmp_path / "ComfyUI")
    port = free_ports()
    argv = ("comfyui", "up", "--runtime", "local", "--comfyui", str(checkout), "--python", sys.executable,
            "--gpus", "none", "--port", str(port), "--json")
    try:
        r = run_cli(*argv)
        assert r.code == 0, r.err
        evs = events(r.err, "server")
        assert milestones(evs) == ["start", "starting", "ready", "end"]
        assert any(e["phase"] == "log" and f"started: http://127.0.0.1:{port}" in e["message"] for e in evs)
        assert all(e["phase"] == "waiting" and e["unit"] == "second" for e in evs if e["live"])
        r = run_cli(*argv)                               # already running
        assert r.code == 0 and milestones(events(r.err, "server")) == ["start", "end"]
    finally:
        localserver.down(project, grace=2)


@pytest.mark.parametrize("argv", [("download", "--only", "nope"), ("batch", "run", "missing.yaml")])
def test_usage_errors_are_json_too(run_cli, argv):
    r = run_cli(*argv, "--json")
    assert r.code == 2
    [failed] = [json.loads(line) for line in r.err.splitlines()]
    assert failed["phase"] == "failed" and failed["message"].startswith("error: ")


@pytest.mark.docker
def test_comfyui_up_events_with_the_standin_image(engine, standins, project, run_cli):  # noqa: F811
    port = free_ports()
    r = up_cli(run_cli, standins["slow"], port, "--json")
    assert r.code == 0, r.err
    evs = events(r.err, "server")
    assert milestones(evs) == ["start", "starting", "ready", "end"]
    ready = [e["message"] for e in evs if e["phase"] == "ready"]
    assert ready == [f"ComfyUI worker 0 is ready at http://127.0.0.1:{port}"]
    assert all(e["phase"] == "waiting" and e["unit"] == "second" for e in evs if e["live"])
    assert r.out == f"http://127.0.0.1:{port}\n"
    run_cli("comfyui", "down")
    r = up_cli(run_cli, standins["crash"], free_ports(), "--json")
    assert r.code == 1
    evs = events(r.err, "server")
    assert milestones(evs) == ["start", "starting", "failed"] and "exit code" in evs[-1]["message"]
