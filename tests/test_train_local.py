"""execute() with the local runtime: the stand-in trainer as a real subprocess (busybox sh)."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from orchestrator.errors import TrainingFailed, UsageError
from orchestrator.progress import RecordingSink
from orchestrator.train import logparse as lp
from orchestrator.train.outputs import check_resumable, latest_state
from orchestrator.train.run import execute
from tests.standin import make_local_trainer
from tests.train_plans import GateOpener, local_trainer, make_plan


@pytest.fixture
def local(tmp_path, project):
    checkout, python = make_local_trainer(tmp_path / "tools")

    def plan(**kw):
        return make_plan(project, runtime="local", **{"workdir": str(checkout), **kw})

    return plan, local_trainer(checkout, str(python))


def test_a_local_run_leaves_loras_manifest_log_and_report(local, project):
    make, runner = local
    plan = make()
    reporter, events, raw = RecordingSink(), [], []
    result = execute(plan, runner, reporter, on_event=events.append, raw_line=raw.append)

    assert result.status == "succeeded" and result.exit_code == 0
    assert result.final_lora == project.loras / "toy.safetensors"
    assert [p.name for p in result.loras] == ["toy-000002.safetensors", "toy.safetensors"]
    for lora in result.loras:  # hard links of the run's files, not copies
        assert os.path.samefile(lora, plan.output_dir / lora.name)
    steps = [e for e in events if isinstance(e, lp.StepProgress)]
    assert steps[-1].step == steps[-1].total == plan.total_steps == 12
    assert [e.epoch for e in events if isinstance(e, lp.EpochStarted)] == [1, 2, 3, 4]
    assert any(line.startswith("running training") for line in raw)

    run = plan.run_dir
    assert {"data.toml", "config.json", "command.txt", "train.log", "manifest.json", "loss.csv",
            "report.html"} <= {p.name for p in run.iterdir()}
    assert (run / "data.toml").read_text() == plan.dataset_toml
    assert "flux_train_network.py --dataset_config" in (run / "command.txt").read_text()
    assert "avr_loss=" in (run / "train.log").read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["exit_code"] == 0
    assert manifest["dataset"]["images"] == 3 and len(manifest["dataset"]["sha256"]) == 64
    assert manifest["started_at"] <= manifest["ended_at"]
    final = next(o for o in manifest["outputs"] if o["name"] == "toy.safetensors")
    data = (plan.output_dir / "toy.safetensors").read_bytes()
    import hashlib
    assert final["size"] == len(data) and final["sha256"] == hashlib.sha256(data).hexdigest()
    assert final["linked"] == str(project.loras / "toy.safetensors")
    assert any(o.get("state") for o in manifest["outputs"])
    page = (run / "report.html").read_text()
    d = re.search(r'<path class="loss" d="([^"]+)"', page).group(1)
    assert len(re.findall(r"[ML]", d)) == 12            # one point per optimizer step
    assert len(re.findall(r"data:image/(?:webp|jpeg);base64,", page)) == 4    # thumbnails: 2 prompts x epochs 2, 4
    assert page.count('<a href="output/sample/') == 4                          # each links to its full image
    assert "<h3>epoch 2</h3>" in page and "<h3>epoch 4</h3>" in page

    text = "\n".join(reporter.milestones)
    for expected in ("loading models", "caching latents", "caching text-encoder outputs",
                     "training: 12 optimizer steps (4 epochs of 6 batches, accumulation 2, 6 images with repeats)",
                     "saved toy-000002.safetensors", "epoch 3/4", "done in"):
        assert expected in text
    assert any(u.startswith("training · step 12/12 · epoch 4/4 · loss 0.") and "s/it" in u
               for u in reporter.updates)


@pytest.mark.parametrize("marker,preset,message,hint", [
    ("oom", "default", "ran out of GPU memory", "--preset 24gb"),
    ("oom", "24gb", "ran out of GPU memory", "--preset 16gb"),
    ("oom", "12gb", "ran out of GPU memory", "smallest memory preset"),
    ("fail", "default", "(exit code 1): RuntimeError: stand-in failure", "full log"),
    ("hostoom", "default", "killed (SIGKILL)", "host RAM"),
    ("argparse", "default", "rejected its command line: flux_train_network.py: error: unrecognized", "--plan"),
    ("config", "default", "rejected the dataset config", "--plan"),
    ("nodata", "default", "No data found", "dataset check"),
])
def test_failures_name_their_cause_and_keep_the_evidence(local, marker, preset, message, hint):
    make, runner = local
    plan = make(marker=marker, config={"preset": preset})
    with pytest.raises(TrainingFailed) as e:
        execute(plan, runner, RecordingSink())
    err = e.value
    assert message in err.message and hint in err.hint
    assert any(line.startswith("last ") and "log lines" in line for line in err.details)
    assert len([d for d in err.details if d.startswith("  ")]) <= 30
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["cause"] == err.message
    assert (plan.run_dir / "report.html").is_file()
    assert not (plan.lora_dir / "toy.safetensors").exists()


def test_exit_zero_without_the_final_lora_is_a_failure(local, tmp_path):
    make, runner = local
    plan = make(marker="nodata")
    with pytest.raises(TrainingFailed) as e:
        execute(plan, runner, RecordingSink())
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    assert manifest["exit_code"] == 0 and manifest["status"] == "failed"
    assert "exited without training" in e.value.message


def interrupt_at(pattern: str):
    def raw_line(line: str) -> None:
        if re.search(pattern, line):
            raise KeyboardInterrupt
    return raw_line


def test_ctrl_c_stops_the_trainer_records_it_and_says_how_to_resume(local):
    make, runner = local
    plan = make(marker="hang", environment={"STANDIN_HANG_EPOCH": "3"})
    reporter = RecordingSink()
    with pytest.raises(KeyboardInterrupt):
        execute(plan, runner, reporter, raw_line=interrupt_at(r"^epoch 3/4"))
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    with pytest.raises(ProcessLookupError):
        os.kill(int(manifest["trainer_id"]), 0)
    assert latest_state(plan.run_dir) == plan.output_dir / "toy-000002-state"
    assert any(f"train --resume {plan.run_id}" in m for m in reporter.milestones)
    assert (plan.lora_dir / "toy-000002.safetensors").is_file()   # the save before the interruption is kept


def test_a_trainer_ignoring_sigint_is_killed_after_the_grace_period(local):
    make, runner = local
    plan = make(marker="hang-hard")
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        execute(plan, runner, RecordingSink(), raw_line=interrupt_at(r"^epoch 1/4"), grace=0.5)
    assert time.monotonic() - started < 30                       # a hang guard: hang-hard never exits by itself
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(int(manifest["trainer_id"]), 0)


def test_resume_continues_from_the_latest_state(local):
    make, runner = local
    first = make(marker="hang", environment={"STANDIN_HANG_EPOCH": "3"})
    with pytest.raises(KeyboardInterrupt):
        execute(first, runner, RecordingSink(), raw_line=interrupt_at(r"^epoch 3/4"))
    state = latest_state(first.run_dir)
    second = make(resume_from=str(state))
    check_resumable(first.config, second.config)
    events = []
    result = execute(second, runner, RecordingSink(), on_event=events.append)
    assert result.status == "succeeded" and result.last_step == 12
    epochs = [e.epoch for e in events if isinstance(e, lp.EpochStarted)]
    assert epochs == [3, 4]                                     # starts at the epoch after the saved state
    bars = [e for e in events if isinstance(e, lp.StepProgress)]
    assert bars[-1].total == 6                                  # the bar counts the remaining steps
    loss = (second.run_dir / "loss.csv").read_text().split()
    # the interrupted attempt's steps 1-6, then the resumed steps 7-12 (on the run's global step axis)
    assert [row.split(",")[0] for row in loss[1:]] == [str(s) for s in range(1, 13)]
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert manifest["resume_from"] == str(state)
    assert [a["status"] for a in manifest["previous_attempts"]] == ["interrupted"]
    assert "run started again" in (second.run_dir / "train.log").read_text()


def test_local_runner_explains_a_wrong_checkout_or_python(local, tmp_path):
    make, runner = local
    with pytest.raises(UsageError) as e:
        execute(make(workdir=str(tmp_path)), runner, RecordingSink())
    assert "not an sd-scripts checkout" in e.value.message and "--sd-scripts" in e.value.hint
    bad = local_trainer(runner.sd_scripts_dir, str(tmp_path / "no-python"))
    with pytest.raises(UsageError) as e:
        execute(make(run_id="20261126-071600-toy"), bad, RecordingSink())
    assert "--python" in e.value.hint
    assert not (tmp_path / "project" / "runs" / "20261126-071600-toy").exists()  # nothing ran: no run folder


def test_local_command_runs_accelerate_through_the_chosen_python(local):
    make, runner = local
    argv = runner.command(make())
    assert argv[:4] == [runner.python, "-m", "accelerate.commands.accelerate_cli", "launch"]
    assert "flux_train_network.py" in argv


def test_the_oom_hint_uses_the_preset_recorded_by_the_planner(local):
    make, runner = local
    plan = make(marker="oom", config={"network_dim": 16})            # the resolved config has no preset key
    (plan.run_dir / "plan.json").write_text(json.dumps({"preset": "16gb"}))
    with pytest.raises(TrainingFailed) as e:
        execute(plan, runner, RecordingSink())
    assert "--preset 12gb" in e.value.hint


def test_a_second_local_train_of_the_same_plan_follows_the_first(local):
    import threading

    make, runner = local
    plan = make(environment={"STANDIN_WAIT_FOR": "go"})             # the trainer holds its first step
    gate = plan.output_dir / "go"
    owner: dict = {}
    thread = threading.Thread(target=lambda: owner.update(result=execute(plan, runner, RecordingSink())))
    thread.start()
    try:
        record = plan.run_dir.parent / f".local-{plan.config_hash}.json"
        deadline = time.monotonic() + 30
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = local_trainer(runner.sd_scripts_dir, runner.python)       # another `train` process
        reporter, events = GateOpener(gate), []
        result = execute(plan, second, reporter, on_event=events.append)
    finally:
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.touch()
        thread.join(60)
    assert result.status == "followed" and result.exit_code == 0
    assert "already running" in reporter.milestones[0]
    assert [e.epoch for e in events if isinstance(e, lp.EpochStarted)] == [1, 2, 3, 4]
    assert owner["result"].status == "succeeded"
    assert not record.exists()                                           # forgotten once the trainer ended
    assert second.attach(plan) is None
