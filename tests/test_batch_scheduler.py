"""The scheduler against in-memory fake servers: balancing, depth, faults, Ctrl+C, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.batch.jobs import load_job_file
from orchestrator.batch.manifest import ALLOWED, MANIFEST_NAME, read_manifest
from orchestrator.batch.run import run_batch
from orchestrator.batch.scheduler import FailFast, Payload, Settings
from tests.batch_fakes import FakeServer

FAST = Settings(depth=2, poll=0.005, retry_down=0.02, down_timeout=5)


def build(job):
    return Payload({"seed": job.seed, "strength": job.strength, "name": job.name})


def make_job_file(tmp_path: Path, seeds: int = 4, strengths=(0.6, 0.8, 1.0)) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "defaults: {lora: toy.safetensors, size: 64x64, steps: 4}\n"
        "jobs:\n"
        "  - prompt: a tjtoy toy on a desk\n"
        f"    seeds: {list(range(1, seeds + 1))}\n"
        f"    strengths: {list(strengths)}\n"
        '    name: "toy-{strength}-{seed}"\n')
    return path


def check_manifest(out: Path, jobs, *, finished: bool) -> dict:
    """Every transition legal, every done job's files present, at most one `done` per job."""
    lines = [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines() if x.strip()]
    last: dict[str, str | None] = {}
    done_count: Counter = Counter()
    for rec in lines:
        if "event" in rec:
            continue
        prev = last.get(rec["key"])
        assert rec["state"] in ALLOWED[prev], f"{prev} -> {rec['state']} for {rec['key']}"
        last[rec["key"]] = rec["state"]
        if rec["state"] == "done":
            done_count[rec["key"]] += 1
            for f in rec["files"]:
                assert (out / f).exists()
    assert all(n == 1 for n in done_count.values()), done_count
    states, _ = read_manifest(out / MANIFEST_NAME)
    assert {j.key for j in jobs} <= set(states)
    if finished:
        assert all(states[j.key].state in ("done", "failed") for j in jobs)
    return states


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(n: int, **kw) -> list[FakeServer]:
        new = [FakeServer(f"http://fake-{len(made) + i}", **kw) for i in range(n)]
        made.extend(new)
        return new

    yield make
    for s in made:
        s.close()


def test_fan_out_balances_and_keeps_queues_fed(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    a, b = servers(2, duration=0.25)     # a refill may come up to a job's length late and still never starve
    out = tmp_path / "out"
    summary = run_batch(jf, out, [a, b], build, FAST)
    assert summary.done == 12 and summary.failed == 0 and summary.skipped == 0
    assert abs(len(a.completed) - len(b.completed)) <= 2
    assert a.max_queue == 2 and b.max_queue == 2          # depth K respected, never exceeded
    assert a.starved == 0 and b.starved == 0              # the GPU never waited on us
    states = check_manifest(out, jf.jobs, finished=True)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"{j.name}.png" for j in jf.jobs)
    assert len(a.fetches) + len(b.fetches) == 12
    assert {states[j.key].server for j in jf.jobs} == {a.url, b.url}
    sidecar = json.loads((out / "toy-0.8-3.json").read_text())
    assert sidecar["seed"] == 3 and sidecar["strength"] == 0.8 and sidecar["prompt_id"]


def test_depth_one_starves_the_gpu(tmp_path, servers):
    """The contrast that shows the starvation counter measures something."""
    jf = load_job_file(make_job_file(tmp_path, seeds=4, strengths=(1.0,)))
    (a,) = servers(1, duration=0.03)
    run_batch(jf, tmp_path / "out", [a], build, Settings(depth=1, poll=0.01))
    assert a.max_queue == 1
    assert a.starved == 3


def test_server_killed_mid_batch_jobs_are_reassigned(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    (a,) = servers(1, duration=0.03)
    (b,) = servers(1, duration=0.03, die_after=2)          # dies as it finishes its 2nd job
    out = tmp_path / "out"
    notes: list[str] = []
    summary = run_batch(jf, out, [a, b], build, FAST, log=notes.append)
    assert not b.alive and summary.done == 12 and summary.failed == 0
    assert any(n.startswith(f"{b.url} is down") for n in notes), notes
    states = check_manifest(out, jf.jobs, finished=True)
    raw = (out / MANIFEST_NAME).read_text()
    assert "is down" in raw                               # b's outstanding jobs were handed back
    assert len(list(out.glob("*.png"))) == 12
    by_url = {s.url: s.done for s in summary.servers}
    assert by_url[b.url] <= 1 and by_url[a.url] == 12 - by_url[b.url]   # a took over b's share
    assert all(states[j.key].state == "done" for j in jf.jobs)


def test_server_restart_forgets_queue_and_jobs_are_resubmitted(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    (a,) = servers(1, duration=0.03)
    (b,) = servers(1, duration=0.03, restart_after=2)      # restarts as it finishes its 2nd job
    out = tmp_path / "out"
    summary = run_batch(jf, out, [a, b], build, FAST)
    assert summary.done == 12
    check_manifest(out, jf.jobs, finished=True)
    assert "forgot the job" in (out / MANIFEST_NAME).read_text()
    assert len(list(out.glob("*.png"))) == 12


def test_rejected_job_is_recorded_and_the_batch_goes_on(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    reject = lambda prompt: "LoraLoader 12: lora_name: 'x' not in [...]" if prompt["seed"] == 3 else None
    a, b = servers(2, reject=reject)
    out = tmp_path / "out"
    summary = run_batch(jf, out, [a, b], build, FAST)
    assert summary.failed == 3 and summary.done == 9
    assert {n for n, _ in summary.failures} == {"toy-0.6-3", "toy-0.8-3", "toy-1.0-3"}
    assert all("lora_name" in e for _, e in summary.failures)
    states = check_manifest(out, jf.jobs, finished=True)
    assert states[next(j.key for j in jf.jobs if j.name == "toy-0.6-3")].state == "failed"


def test_execution_error_is_recorded(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path, seeds=2, strengths=(1.0,)))
    (a,) = servers(1, fail=lambda p: "KSampler: CUDA out of memory" if p["seed"] == 2 else None)
    summary = run_batch(jf, tmp_path / "out", [a], build, FAST)
    assert summary.done == 1 and summary.failures == (("toy-1.0-2", "KSampler: CUDA out of memory"),)


def test_fail_fast_stops_submitting_and_drops_pending(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    (a,) = servers(1, duration=0.03, reject=lambda p: "bad" if p["seed"] == 2 else None)
    out = tmp_path / "out"
    with pytest.raises(FailFast) as e:
        run_batch(jf, out, [a], build, Settings(depth=2, poll=0.005, fail_fast=True))
    assert "toy-0.6-2" in e.value.message
    states = check_manifest(out, jf.jobs, finished=False)
    assert len(a.submitted) < 12
    assert not a.pending                                  # our waiting jobs were deleted
    assert Counter(r.state for r in states.values())["pending"] >= 8


def test_ctrl_c_then_rerun_every_image_exactly_once(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    a, b = servers(2, duration=0.03, hold_after=3)          # each runs 3, then holds its 4th (running)
    out = tmp_path / "out"

    def interrupt(p):
        if p.done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(jf, out, [a, b], build, FAST, on_progress=interrupt)
    states = check_manifest(out, jf.jobs, finished=False)
    assert not a.pending and not b.pending                # pending jobs dropped from the servers
    queued = {r.prompt_id for r in states.values() if r.state == "queued"}
    assert queued == {a.running, b.running}               # only the running ones stay queued
    assert "interrupted" in (out / MANIFEST_NAME).read_text()
    done_before = sum(1 for r in states.values() if r.state == "done")
    assert done_before == 6
    assert (out / "index.html").exists()
    a.release()
    b.release()

    summary = run_batch(jf, out, [a, b], build, FAST)       # rerun: skip done, collect the rest
    assert summary.skipped == done_before
    assert summary.skipped + summary.done == 12 and summary.failed == 0
    check_manifest(out, jf.jobs, finished=True)
    fetched = Counter(a.fetches + b.fetches)
    assert sum(fetched.values()) == 12 and set(fetched.values()) == {1}
    cancelled = (out / MANIFEST_NAME).read_text().count('"reason": "cancelled"')
    assert cancelled == 2                                 # the one waiting behind each running job
    assert len(a.submitted) + len(b.submitted) == 12 + cancelled   # only those were queued twice
    # a job that was running at Ctrl+C was collected from /history, not submitted again
    for pid in queued:
        assert pid.split(".")[0] in {f.split(".")[0] for f in fetched}
    assert len(list(out.glob("*.png"))) == 12


def test_all_servers_down_gives_up_with_a_clear_error(tmp_path, servers):
    from orchestrator.errors import ComfyUnavailable

    jf = load_job_file(make_job_file(tmp_path, seeds=2, strengths=(1.0,)))
    (a,) = servers(1)
    a.kill()
    with pytest.raises(ComfyUnavailable) as e:
        run_batch(jf, tmp_path / "out", [a], build, Settings(poll=0.005, retry_down=0.01, down_timeout=0.1))
    assert a.url in "\n".join(e.value.details)
    check_manifest(tmp_path / "out", jf.jobs, finished=False)


def test_a_crashing_worker_stops_the_batch_instead_of_hanging_it(tmp_path, servers):
    jf = load_job_file(make_job_file(tmp_path))
    (a,) = servers(1)
    calls = []

    def flaky_build(job):
        calls.append(job)
        if len(calls) == 3:
            raise RuntimeError("bug in a builder")
        return build(job)

    with pytest.raises(RuntimeError, match="bug in a builder"):
        run_batch(jf, tmp_path / "out", [a], flaky_build, FAST)
    check_manifest(tmp_path / "out", jf.jobs, finished=False)
    assert not a.pending


def test_crash_between_saving_and_the_manifest_does_not_write_again(tmp_path, servers):
    """The files and sidecar of a prompt are on disk but the manifest still says queued: collect, don't rewrite."""
    from orchestrator.batch.manifest import Manifest

    jf = load_job_file(make_job_file(tmp_path, seeds=2, strengths=(1.0,)))
    (a,) = servers(1)
    out = tmp_path / "out"
    run_batch(jf, out, [a], build, FAST)
    job = jf.jobs[0]
    states, _ = read_manifest(out / MANIFEST_NAME)
    pid = states[job.key].prompt_id
    # rewrite history: the last record of this job was `queued` (as if we died before `done`)
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    keep = [x for x in lines if not (f'"{job.key}"' in x and '"done"' in x)]
    (out / MANIFEST_NAME).write_text("\n".join(keep) + "\n")
    stamp = lambda st: (st.st_ino, st.st_mtime_ns)        # noqa: E731  (an atomic rewrite is a new inode)
    before = stamp((out / f"{job.name}.png").stat())
    fetched = len(a.fetches)
    summary = run_batch(jf, out, [a], build, FAST)
    assert summary.done == 1 and summary.skipped == 1
    assert len(a.fetches) == fetched                       # not downloaded again
    assert stamp((out / f"{job.name}.png").stat()) == before
    with Manifest(out / MANIFEST_NAME) as m:
        assert m.get(job.key).state == "done" and m.get(job.key).prompt_id == pid
