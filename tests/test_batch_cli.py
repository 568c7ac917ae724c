"""`batch plan` / `batch run` through the CLI, in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.test_batch_jobs import EXAMPLE

REPO = Path(__file__).resolve().parents[1]


def write_jobs(project, text=EXAMPLE) -> Path:
    path = project.root / "jobs.yaml"
    path.write_text(text)
    return path


def copy_workflows(project) -> None:
    for name in ("base_flux.json", "finetuned_flux.json"):
        shutil.copy(REPO / "workflows" / name, project.workflows / name)


def test_plan_prints_count_entries_and_a_sample(run_cli, project):
    copy_workflows(project)
    r = run_cli("batch", "plan", str(write_jobs(project)), "--sample", "5")
    assert r.code == 0, r.err
    assert f"16 images from 2 job entries -> {project.root / 'outputs/batch-toy'}" in r.out
    assert "entry 1 (line 3): 12" in r.out and "entry 2 (line 7): 4" in r.out
    assert "toy-0.6-1" in r.out and "a tjtoy toy in the snow" in r.out
    assert "... 11 more" in r.out
    assert r.err == ""
    assert not (project.root / "outputs").exists()          # nothing run, nothing written


def test_plan_json_lists_every_job(run_cli, project):
    r = run_cli("batch", "plan", str(write_jobs(project)), "--json")
    doc = json.loads(r.out)
    assert doc["total"] == 16 and len(doc["jobs"]) == 16
    assert doc["jobs"][0]["name"] == "toy-0.6-1" and doc["jobs"][0]["strength"] == 0.6


def test_plan_warns_about_a_missing_workflow(run_cli, project):
    r = run_cli("batch", "plan", str(write_jobs(project)))
    assert r.code == 0 and "warning: workflow workflows/finetuned_flux.json not found" in r.err


def test_plan_bad_file_is_exit_2_with_lines(run_cli, project):
    path = write_jobs(project, "jobs:\n  - prompt: a\n    seeds: [1, -2]\n")
    r = run_cli("batch", "plan", str(path))
    assert r.code == 2
    assert f"error: job file {path} has 1 problem" in r.err
    assert f"{path}:3: jobs[0].seeds[1]: -2 is not a seed" in r.err
    assert "hint:" in r.err and "Traceback" not in r.err


def test_run_rejects_bad_depth(run_cli, project):
    r = run_cli("batch", "run", str(write_jobs(project)), "--depth", "0", "--server", "http://127.0.0.1:9")
    assert r.code == 2 and "--depth 0" in r.err
