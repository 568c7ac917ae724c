"""`batch plan` / `batch run` through the CLI, in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

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
    copy_workflows(project)
    r = run_cli("batch", "plan", str(write_jobs(project)), "--json")
    doc = json.loads(r.out)
    assert doc["total"] == 16 and len(doc["jobs"]) == 16
    assert doc["jobs"][0]["name"] == "toy-0.6-1" and doc["jobs"][0]["strength"] == 0.6


def test_plan_uses_the_shipped_workflows_until_the_project_has_its_own(run_cli, project):
    r = run_cli("batch", "plan", str(write_jobs(project)))    # no workflows/ in the project: as in generate
    assert r.code == 0 and r.err == ""


def test_plan_fails_on_a_missing_workflow_as_run_does(run_cli, project):
    r = run_cli("batch", "plan", str(write_jobs(project, "jobs:\n  - {prompt: a, workflow: workflows/mine.json}\n")))
    assert r.code == 2 and "workflow file workflows/mine.json does not exist" in r.err and r.out == ""


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


@pytest.mark.parametrize("action", ["plan", "run"])
def test_out_that_is_a_file_is_a_usage_error(run_cli, project, action):
    taken = project.root / "notes.txt"
    taken.write_text("mine\n")
    server = ["--server", "http://127.0.0.1:9"] if action == "run" else []
    r = run_cli("batch", action, str(write_jobs(project)), "--out", str(taken), *server)
    assert r.code == 2, r.err
    assert f"--out {taken} is a file, not a folder" in r.err
    assert taken.read_text() == "mine\n"


def _watch(out: Path, actions: dict[int, object], stop) -> None:
    """Run actions[n]() once `n` images exist in `out` (a user's Ctrl+C, a server restart)."""
    import time

    pending = dict(sorted(actions.items()))
    while pending and not stop.is_set():
        n = len(list(out.glob("*.png"))) if out.exists() else 0
        for at in [k for k in pending if k <= n]:
            pending.pop(at)()
        time.sleep(0.005)


def test_done_when_sweep_on_two_servers_restart_ctrl_c_and_rerun(run_cli, project, monkeypatch):
    """prompt x 4 seeds x 3 strengths on two servers; one restarts; Ctrl+C; rerun: every image once, sheets."""
    import _thread
    import threading

    from PIL import Image

    from orchestrator.batch.sheets import MISSING
    from tests.comfy_double import DEFAULT_MODELS, ComfyDouble
    from tests.comfy_double_http import Handler
    from tests.test_batch_comfy import SWEEP, check_files, seed_color
    from tests.test_batch_scheduler import check_manifest

    monkeypatch.setattr(Handler, "disable_nagle_algorithm", True, raising=False)
    copy_workflows(project)
    path = write_jobs(project, SWEEP)
    out = project.root / "outputs" / "sweep"
    a = ComfyDouble(models=DEFAULT_MODELS, step_time=0.05, steps=4).start()
    b = ComfyDouble(models=DEFAULT_MODELS, step_time=0.05, steps=4).start()
    stop = threading.Event()
    holds: list[threading.Event] = []

    def ctrl_c() -> None:
        """The user's Ctrl+C, with the servers' jobs in flight held so the batch cannot finish before it lands."""
        holds.extend([a.hold_node("*"), b.hold_node("*")])
        _thread.interrupt_main()

    try:
        argv = ["batch", "run", str(path), "--server", a.url, "--server", b.url, "--out", str(out), "--poll", "0.05"]
        watcher = threading.Thread(target=_watch, args=(out, {2: b.restart, 6: ctrl_c}, stop))
        watcher.start()
        r = run_cli(*argv)
        stop.set()
        watcher.join()
        assert r.code == 130, r.err
        assert "Run the same command again to continue" in r.err
        from orchestrator.batch.jobs import load_job_file

        jobs = load_job_file(path).jobs
        states = check_manifest(out, jobs, finished=False)
        assert sum(1 for s in states.values() if s.state == "done") >= 6
        assert not a.pending and not b.pending
        assert (out / "index.html").exists()
        for hold in holds:
            hold.set()                          # what was running finishes while we are away

        r = run_cli(*argv)
        assert r.code == 0, r.err
    finally:
        stop.set()
        a.close()
        b.close()
    check_manifest(out, jobs, finished=True)
    check_files(out, jobs)
    assert "skipped (done before), 0 failed, 0 left of 12" in r.out
    assert f"  {a.url}: " in r.out and f"  {b.url}: " in r.out
    sheet = out / "sheets" / "01-a-tjtoy-toy-on-a-desk-64x64.png"
    assert f"sheet:    {sheet}" in r.out and f"index:    {out / 'index.html'}" in r.out
    img = Image.open(sheet)
    # 3 rows (strengths) x 4 columns (seeds): each cell shows its seed's image, none is missing
    cell, pad = 256, 8
    right, bottom = img.size[0] - pad, img.size[1] - pad
    for r_i in range(3):
        for c_i in range(4):
            x = right - (4 - c_i) * (cell + pad) + pad + cell // 2
            y = bottom - (3 - r_i) * (cell + pad) + pad + cell // 2
            assert img.getpixel((x, y)) == seed_color(c_i + 1) != MISSING
    html = (out / "index.html").read_text()
    assert all(f"src='{j.name}.png'" in html for j in jobs)


def test_run_with_no_server_answering_is_a_clear_error(run_cli, project):
    copy_workflows(project)
    r = run_cli("batch", "run", str(write_jobs(project)), "--server", "http://127.0.0.1:9", "--timeout", "2")
    assert r.code == 1
    assert "error: no ComfyUI server answers" in r.err and "http://127.0.0.1:9" in r.err
    assert "comfyui up" in r.err and "Traceback" not in r.err


def test_run_json_summary_and_rerun_skips_everything(run_cli, project, monkeypatch):
    from tests.comfy_double import DEFAULT_MODELS, ComfyDouble
    from tests.comfy_double_http import Handler

    monkeypatch.setattr(Handler, "disable_nagle_algorithm", True, raising=False)
    copy_workflows(project)
    path = write_jobs(project, "defaults: {size: 64x64, steps: 2}\njobs:\n  - prompt: a cat\n    count: 3\n")
    with ComfyDouble(models=DEFAULT_MODELS) as d:
        r = run_cli("batch", "run", str(path), "--server", d.url, "--json", "--poll", "0.05")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert (doc["done"], doc["skipped"], doc["failed"], doc["total"]) == (3, 0, 0, 3)
        assert doc["servers"][0]["url"] == d.url and doc["servers"][0]["done"] == 3
        assert doc["sheets"] == [str(project.root / "outputs/batch-jobs/sheets/01-a-cat-64x64.png")]
        monkeypatch.setenv("COMFYUI_URL", d.url.removeprefix("http://"))   # host:port is enough
        r = run_cli("batch", "run", str(path), "--json", "--poll", "0.05")
        doc = json.loads(r.out)
        assert (doc["done"], doc["skipped"]) == (0, 3) and len(d.posted) == 3
        assert doc["servers"][0]["url"] == d.url
        r = run_cli("batch", "plan", str(path))
        assert "earlier runs in" in r.out and "3 done, 0 failed, 0 to make" in r.out


@pytest.mark.docker
def test_run_without_server_uses_the_workers_comfyui_up_started(engine, project, run_cli, monkeypatch,
                                                                 busybox_image):
    """`comfyui up --workers 2` then `batch run`: both workers are found (stand-in image, nothing submitted)."""
    from tests.comfy_standin import standin_image
    from tests.test_comfy_server import free_ports

    monkeypatch.delenv("COMFYUI_URL", raising=False)
    image = standin_image(engine, "ok", 0.0)
    port = free_ports(2)
    r = run_cli("comfyui", "up", "--image", image, "--no-build", "--gpus", "none", "--port", str(port),
                "--workers", "2")
    assert r.code == 0, r.err
    # the workflow is missing, so the run stops at the up-front check, after discovery and before any submit
    path = write_jobs(project, "jobs:\n  - {prompt: a, workflow: workflows/none.json}\n")
    r = run_cli("batch", "run", str(path))
    assert f"found 2 ComfyUI servers: http://127.0.0.1:{port}, http://127.0.0.1:{port + 1}" in r.err
    assert r.code == 2 and "workflow file workflows/none.json does not exist" in r.err
    run_cli("comfyui", "down")


def test_progress_line_shows_bar_rate_eta_and_each_server():
    from orchestrator.batch.protocol import ServerState, Snapshot
    from orchestrator.cli.batch import format_progress

    p = Snapshot(total=48, done=10, failed=1, skipped=2, elapsed=120.0,
                 servers=(ServerState("http://127.0.0.1:8188", True, 2, 6), ServerState("http://gpu2:8188", False, 0, 4)))
    line = format_progress(p)
    assert line == ("batch 12/48 · 1 failed · 5.0 img/min · ETA 7m00s · "
                    ":8188 6 done +2 queued · gpu2:8188 4 done down")


def test_plan_checks_the_prompts_offline(run_cli, project):
    copy_workflows(project)
    path = write_jobs(project, 'jobs:\n  - {prompt: a, set: {"Nope.steps": 3}}\n')
    r = run_cli("batch", "plan", str(path))
    assert r.code == 2 and r.out == ""           # what `batch run` would refuse: an error, not a warning
    assert "error: 1 job(s) cannot be turned into a ComfyUI prompt" in r.err
    assert "Nope" in r.err
    r = run_cli("batch", "plan", str(write_jobs(project)))
    assert r.err == ""
