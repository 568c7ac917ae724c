"""execute() with the Docker runtime against the real engine and the stand-in trainer image."""

from __future__ import annotations

import json
import os
import re
import time
import uuid

import pytest

from orchestrator.containers import LABEL_CONFIG, LABEL_PROJECT, LABEL_ROLE, LABEL_RUN, invoking_user, project_id
from orchestrator.errors import DockerError, TrainingFailed
from orchestrator.progress import RecordingSink
from orchestrator.train import logparse as lp
from orchestrator.train.outputs import latest_state
from orchestrator.train.run import execute
from orchestrator.runtimes.docker_train import ULIMITS
from tests.standin import STANDIN_COMMIT, ensure_standin_trainer
from tests.train_plans import GateOpener, docker_trainer, make_plan

USER = "12345:12346"  # not ours: proves the container writes as the requested uid:gid


@pytest.fixture(scope="session")
def standin(session_engine, busybox_image) -> str:
    return ensure_standin_trainer(session_engine)


def writable(plan):
    """The CLI runs as the user who owns the project; the tests run as root with another container uid."""
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(plan.output_dir, 0o777)
    return plan


def containers(engine, project, all=True):
    return engine.find({LABEL_PROJECT: project_id(project.root)}, all=all)


def interrupt_at(pattern: str):
    def raw_line(line: str) -> None:
        if re.search(pattern, line):
            raise KeyboardInterrupt
    return raw_line


@pytest.mark.docker
def test_a_docker_run_uses_mounts_user_labels_and_links_the_loras(engine, project, standin):
    plan = writable(make_plan(project, image=standin))
    reporter = RecordingSink()
    runner = docker_trainer(engine, project, user=USER, reporter=reporter)  # the CLI shares one reporter
    seen = {}

    def raw_line(line: str) -> None:
        if not seen:
            (c,) = containers(engine, project)   # running or (a fast stand-in) already exited
            attrs = engine.client.containers.get(c.id).attrs   # what the engine itself recorded
            seen.update(labels=c.labels, host=attrs["HostConfig"], config=attrs["Config"])

    events = []
    result = execute(plan, runner, reporter, raw_line=raw_line, on_event=events.append)

    assert result.status == "succeeded"
    assert seen["labels"][LABEL_ROLE] == "train" and seen["labels"][LABEL_RUN] == plan.run_id
    assert seen["labels"][LABEL_CONFIG] == plan.config_hash
    assert seen["config"]["User"] == USER and seen["config"]["WorkingDir"] == "/opt/sd-scripts"
    assert "PYTHONUNBUFFERED=1" in seen["config"]["Env"]
    assert seen["host"]["IpcMode"] == "host"
    limits = {u["Name"]: u["Hard"] for u in seen["host"]["Ulimits"]}
    assert limits["stack"] == ULIMITS["stack"][1]
    if "memlock" in limits:
        assert limits["memlock"] == -1
    else:  # this engine's hard limit refuses memlock=-1 (as here): we ran without it and said so
        assert any("refuses `--ulimit memlock=-1`" in m for m in reporter.milestones)
    assert f"{project.flux_data}:/data/flux_data:rw" in seen["host"]["Binds"]
    assert f"{plan.run_dir}:/run:rw" in seen["host"]["Binds"]
    assert "found directory /data/flux_data/toy contains 3 image files" in (plan.run_dir / "train.log").read_text()

    uid, gid = (int(x) for x in USER.split(":"))
    for f in [plan.output_dir / "toy.safetensors", plan.output_dir / "toy-000002-state" / "train_state.json",
              *(plan.output_dir / "sample").iterdir()]:
        assert (f.stat().st_uid, f.stat().st_gid) == (uid, gid)
    assert [p.name for p in result.loras] == ["toy-000002.safetensors", "toy.safetensors"]
    published, written = project.loras / "toy.safetensors", plan.output_dir / "toy.safetensors"
    if os.geteuid() == 0:
        assert os.path.samefile(published, written)
    else:  # the kernel (fs.protected_hardlinks) refuses a normal user a link to another uid's file: a copy
        assert published.read_bytes() == written.read_bytes() and not os.path.samefile(published, written)
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    assert manifest["image_id"].startswith("sha256:") and manifest["sd_scripts_commit"] == STANDIN_COMMIT
    assert [e.step for e in events if isinstance(e, lp.StepProgress)][-1] == 12
    assert containers(engine, project) == []  # removed after the end


@pytest.mark.docker
def test_the_default_container_user_is_the_invoking_user(engine, project, standin):
    spec = docker_trainer(engine, project).container_spec(make_plan(project, image=standin, gpus="all"))
    assert spec.user == invoking_user() and spec.ipc_host and spec.gpus == "all"
    assert spec.command[:2] == ("accelerate", "launch") and spec.stop_signal == "SIGINT"


@pytest.mark.docker
@pytest.mark.parametrize("marker,message", [("oom", "out of GPU memory"), ("nodata", "No data found")])
def test_docker_failures_are_explained_and_leave_no_container(engine, project, standin, marker, message):
    plan = writable(make_plan(project, image=standin, marker=marker))
    with pytest.raises(TrainingFailed) as e:
        execute(plan, docker_trainer(engine, project, user=USER), RecordingSink())
    assert message in e.value.message
    assert any("CUDA out of memory" in d or "No data found" in d for d in e.value.details)
    assert containers(engine, project) == []


@pytest.mark.docker
@pytest.mark.slow
def test_ctrl_c_removes_the_container_and_resume_finishes_the_run(engine, project, standin):
    runner = docker_trainer(engine, project, user=USER)
    plan = writable(make_plan(project, image=standin, marker="hang", environment={"STANDIN_HANG_EPOCH": "3"}))
    reporter = RecordingSink()
    with pytest.raises(KeyboardInterrupt):
        execute(plan, runner, reporter, raw_line=interrupt_at(r"^epoch 3/4"), grace=10)
    assert containers(engine, project) == []
    assert json.loads((plan.run_dir / "manifest.json").read_text())["status"] == "interrupted"
    state = latest_state(plan.run_dir)
    assert state == plan.output_dir / "toy-000002-state"
    assert any(f"--resume {plan.run_id}" in m for m in reporter.milestones)

    resumed = make_plan(project, image=standin, resume_from=f"/run/output/{state.name}", config_hash="cfg-2")
    events = []
    result = execute(resumed, runner, RecordingSink(), on_event=events.append)
    assert result.status == "succeeded" and result.last_step == 12
    assert [e.epoch for e in events if isinstance(e, lp.EpochStarted)] == [3, 4]
    assert containers(engine, project) == []


@pytest.mark.docker
def test_a_trainer_ignoring_sigint_is_killed_and_removed(engine, project, standin):
    plan = writable(make_plan(project, image=standin, marker="hang-hard"))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        execute(plan, docker_trainer(engine, project, user=USER), RecordingSink(),
                raw_line=interrupt_at(r"^epoch 1/4"), grace=1)
    assert time.monotonic() - started < 30
    assert containers(engine, project) == []


@pytest.mark.docker
@pytest.mark.slow
def test_a_second_train_follows_the_running_one_instead_of_starting_another(engine, project, standin):
    import threading

    plan = writable(make_plan(project, image=standin, environment={"STANDIN_WAIT_FOR": "go"}))  # holds step 1
    gate = plan.output_dir / "go"
    owner: dict = {}
    thread = threading.Thread(target=lambda: owner.update(
        result=execute(plan, docker_trainer(engine, project, user=USER), RecordingSink())))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not containers(engine, project, all=False) and time.monotonic() < deadline:
            time.sleep(0.1)
        reporter, events, counts = GateOpener(gate), [], []
        result = execute(plan, docker_trainer(engine, project, user=USER), reporter, on_event=events.append,
                         raw_line=lambda _line: counts.append(len(containers(engine, project))) if not counts else None)
    finally:
        gate.touch()
        thread.join(60)
    assert result.status == "followed" and result.exit_code == 0 and result.run_id == plan.run_id
    assert counts == [1]                                   # no second container was started
    assert [e.epoch for e in events if isinstance(e, lp.EpochStarted)] == [1, 2, 3, 4]
    assert "already running" in reporter.milestones[0]
    assert owner["result"].status == "succeeded"           # the first `train` did the bookkeeping
    assert containers(engine, project) == []


@pytest.mark.docker
def test_requesting_a_gpu_without_the_nvidia_runtime_is_a_clear_error(engine, project, standin):
    if engine.has_nvidia_runtime():
        pytest.skip("this engine has the NVIDIA runtime")
    plan = make_plan(project, image=standin, gpus="all", run_id="20261126-080000-gpu")
    with pytest.raises(DockerError) as e:
        execute(plan, docker_trainer(engine, project), RecordingSink())
    assert "no NVIDIA runtime" in e.value.message and "nvidia-ctk" in e.value.hint
    assert not plan.run_dir.exists() and containers(engine, project) == []


@pytest.mark.docker
@pytest.mark.slow
def test_a_missing_image_is_built_with_a_step_counter_and_rebuilt_on_request(engine, project, busybox_image,
                                                                             tmp_path):
    tag = f"flux-orch-test/trainrun-build:{uuid.uuid4().hex[:8]}"
    dockerfile = tmp_path / "Dockerfile.train"
    dockerfile.write_text(f"FROM {busybox_image}\nRUN echo building the stand-in\nLABEL flux.test=1\n")
    try:
        reporter = RecordingSink()
        docker_trainer(engine, project, reporter=reporter, dockerfile=dockerfile).ensure_image(tag)
        assert engine.image_exists(tag)
        assert any(re.match(r"\[build\] step 1/\d+: FROM", m) for m in reporter.milestones)
        assert any(m.startswith("built ") for m in reporter.milestones)
        again = RecordingSink()
        docker_trainer(engine, project, reporter=again, dockerfile=dockerfile).ensure_image(tag)
        assert again.milestones == []                           # present: not rebuilt
        docker_trainer(engine, project, reporter=again, dockerfile=dockerfile, rebuild=True).ensure_image(tag)
        assert any(re.match(r"\[build\] step 2/\d+: RUN echo", m) for m in again.milestones)
    finally:
        engine.client.images.remove(tag, force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_another_plan_running_in_the_project_is_reported(engine, project, standin):
    reporter = RecordingSink()
    runner = docker_trainer(engine, project, user=USER, reporter=reporter)
    first = writable(make_plan(project, image=standin, marker="hang"))
    (first.run_dir / "data.toml").write_text(first.dataset_toml)
    handle = runner.start(first)
    try:
        second = writable(make_plan(project, image=standin, run_id="20261126-090000-other", config_hash="cfg-other"))
        assert runner.attach(second) is None            # a different plan is not a duplicate
        runner.start(second).stop(0)
        assert any(f"training run {first.run_id} is also running" in m for m in reporter.milestones)
    finally:
        handle.stop(0)
    assert containers(engine, project) == []
