"""Execute a `TrainPlan` with a `TrainRuntime`: run folder, live progress, LoRAs into models/loras, manifest,
report, recognised failures, and a clean stop on Ctrl+C."""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from orchestrator.errors import OrchestratorError
from orchestrator.files import atomic_write_text, file_lock, follow_umask
from orchestrator.progress import Event, Sink, format_bytes, format_duration
from orchestrator.train import logparse as lp
from orchestrator.train.diagnose import diagnose
from orchestrator.train.outputs import (dataset_fingerprint, dir_size, host_path, latest_state, link_lora,
                                        lora_files, recorded_exit_code, sample_files, sha256_file,
                                        state_dirs)
from orchestrator.train.plan import TrainPlan
from orchestrator.train.report import ReportData, render_report
from orchestrator.runtimes.base import TrainJob, TrainRuntime

TAIL_LINES = 30
LOG_NAME = "train.log"


@dataclass(frozen=True)
class RunResult:
    """What a finished (or followed) run left behind."""

    run_id: str
    run_dir: Path
    status: str                     # "succeeded" | "failed" | "interrupted" | "followed"
    exit_code: int | None
    final_lora: Path | None         # in lora_dir (or output_dir when it could not be linked)
    loras: tuple[Path, ...]         # every LoRA placed in lora_dir
    report: Path | None
    manifest: Path | None
    log: Path | None
    last_step: int | None
    last_loss: float | None
    duration: float
    warnings: tuple[str, ...] = ()


@dataclass
class _RunState:
    """Mutable run state built from events (private to one execute call)."""

    plan: TrainPlan
    phase: str = "starting"
    step: int | None = None
    total: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    rate: float | None = None
    eta: float | None = None
    offset: int = 0
    info: lp.TrainingInfo | None = None
    losses: dict[int, float] = field(default_factory=dict)
    earlier: dict[int, float] = field(default_factory=dict)  # loss.csv of the attempt this one resumes
    errors: list[lp.TrainerError] = field(default_factory=list)
    saves: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)   # saves announced, file maybe still being written
    hasher: ThreadPoolExecutor | None = None             # hashes linked LoRAs while training goes on
    finished: bool = False

    def line(self) -> str:
        """The live status line."""
        if self.phase == "training" and self.step is not None:
            parts = [f"training · step {self.step}/{self.total}"]
            if self.epoch is not None:
                parts.append(f"epoch {self.epoch}/{self.epochs}")
            if self.loss is not None:
                parts.append(f"loss {self.loss:.4f}")
            if self.rate is not None:
                parts.append(f"{self.rate:.2f} s/it")
            parts.append(f"ETA {format_duration(self.eta)}")
            return " · ".join(parts)
        if self.phase == "training":  # before the first step sd-scripts hashes the base model (minutes)
            return "starting training (sd-scripts hashes the base model first)…"
        return _PHASE_TEXT.get(self.phase, self.phase) + "…"

    def event(self) -> Event:
        """The live status as an event (steps, rate in steps per second, ETA)."""
        rate = 1.0 / self.rate if self.rate else None
        return Event("train", PHASES.get(self.phase, self.phase), self.line(), step=self.step, total=self.total,
                     unit="step", rate=rate, eta=self.eta, live=True)


_PHASE_TEXT = {"starting": "starting the trainer", "loading": "loading models", "caching latents":
               "caching latents", "caching text": "caching text-encoder outputs", "training": "training",
               "sampling": "generating sample images"}
# trainer phases (logparse) -> event phases
PHASES = {"starting": "start", "loading": "loading", "caching latents": "caching", "caching text": "caching",
          "training": "training", "sampling": "sampling"}


def _say(sink: Sink, phase: str, message: str, files: tuple[str, ...] = ()) -> None:
    sink.emit(Event("train", phase, message, files=files))


def execute(plan: TrainPlan, runtime: TrainRuntime, reporter: Sink, *,
            on_event: Callable[[lp.Event], None] | None = None, raw_line: Callable[[str], None] | None = None,
            grace: float = 30.0, follow_existing: bool = True) -> RunResult:
    """Run `plan` to the end (see module doc); raises TrainingFailed, re-raises KeyboardInterrupt after cleanup."""
    if follow_existing:
        existing = runtime.attach(plan)
        if existing is not None:
            return _follow(plan, existing, reporter, on_event=on_event, raw_line=raw_line)
    # one writer per run folder: its manifest is read (earlier attempts) and rewritten all along the run
    with file_lock(plan.run_dir, timeout=5, what=f"train (run {plan.run_id})"):
        return _execute(plan, runtime, reporter, on_event=on_event, raw_line=raw_line, grace=grace)


def _execute(plan: TrainPlan, runtime: TrainRuntime, reporter: Sink, *, on_event: Callable[[lp.Event], None] | None,
             raw_line: Callable[[str], None] | None, grace: float) -> RunResult:
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    fresh = not (run_dir / LOG_NAME).exists() and not any(plan.output_dir.iterdir())
    atomic_write_text(run_dir / "data.toml", plan.dataset_toml)
    atomic_write_text(run_dir / "config.json", json.dumps(dict(plan.config), indent=2, default=str) + "\n")
    atomic_write_text(run_dir / "command.txt", shlex.join(plan.argv()) + "\n")
    manifest: dict[str, Any] = {
        "run_id": plan.run_id, "status": "starting", "runtime": plan.runtime, "image": plan.image,
        "image_id": None, "sd_scripts_commit": None, "config_hash": plan.config_hash, "argv": plan.argv(),
        "workdir": plan.workdir, "gpus": plan.gpus, "resume_from": plan.resume_from,
        "resume_from_host": str(host_path(plan, plan.resume_from)) if plan.resume_from else None,
        "dataset": dataset_fingerprint(plan), "started_at": _now(), "ended_at": None, "exit_code": None,
        "planned": {"epochs": plan.epochs, "total_steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch},
        "outputs": [], "loras": [], "cause": None, "previous_attempts": _previous(run_dir),
    }
    _write_manifest(run_dir, manifest)
    try:
        handle = runtime.start(plan)
    except BaseException:
        if fresh:  # nothing ever ran in this folder: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            manifest.update(status="failed to start", ended_at=_now())
            _write_manifest(run_dir, manifest)
        raise
    manifest.update(status="running", image_id=handle.image_id, sd_scripts_commit=handle.sd_scripts_commit,
                    trainer_id=handle.id)
    _write_manifest(run_dir, manifest)
    _say(reporter, "start", f"run {plan.run_id}: {plan.runtime} trainer started ({_short_id(handle.id)}); "
         f"log: {run_dir / LOG_NAME}", (str(run_dir / LOG_NAME),))

    state = _RunState(plan, earlier=_earlier_losses(run_dir) if plan.resume_from else {},
                      hasher=ThreadPoolExecutor(1, thread_name_prefix="lora-sha256"))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    warnings: list[str] = []
    linked: dict[str, Path] = {}
    started = time.monotonic()
    log_path = run_dir / LOG_NAME
    with log_path.open("a", encoding="utf-8", buffering=1) as log:
        if not fresh and log_path.stat().st_size:
            log.write(f"----- {_now()} run started again (resume from {plan.resume_from}) -----\n")
        try:
            code = _pump(plan, handle, state, log, tail, reporter, on_event, raw_line, linked, warnings)
        except Exception as e:  # lost the engine, a bug of ours...: record it; a later `train` follows the trainer
            manifest.update(status="error", ended_at=_now(), cause=f"{type(e).__name__}: {e}")
            _write_manifest(run_dir, manifest)
            raise
        except KeyboardInterrupt:
            _say(reporter, "log", "stopping the trainer (Ctrl+C) …")
            try:
                handle.stop(grace)
            except KeyboardInterrupt:  # a second Ctrl+C: do not wait for the grace period
                handle.stop(0)
            _link_pending(plan, state, linked, warnings, reporter, final=False)
            state_dir = latest_state(run_dir)
            manifest.update(status="interrupted", ended_at=_now(), cause="interrupted by the user")
            _finish(plan, manifest, state, tail, linked, started, quick=True)
            if state_dir is not None:
                _say(reporter, "log", f"interrupted; resume from {state_dir.name} with "
                     f"`python -m orchestrator train --resume {plan.run_id}`")
            else:
                _say(reporter, "log", "interrupted before any state was saved: nothing to resume; "
                     "`train` starts again from the beginning")
            raise
    handle.stop(0)  # the trainer has exited: this only removes the container
    runtime.outputs(plan)  # a runtime whose trainer has its own file system brings the outputs here first
    _link_pending(plan, state, linked, warnings, reporter, final=True)
    final = plan.output_dir / (plan.expected_outputs[-1] if plan.expected_outputs else f"{plan.output_name}.safetensors")
    failure = diagnose(plan, code, state.errors, final, run_dir / LOG_NAME)
    manifest.update(status="failed" if failure else "succeeded", exit_code=code, ended_at=_now(),
                    cause=failure.message if failure else None)
    result = _finish(plan, manifest, state, tail, linked, started, warnings=warnings, code=code)
    if failure is not None:
        failure.details = [*failure.details, f"last {len(tail)} log lines (full log: {log_path}):",
                           *[f"  {t}" for t in tail]]
        raise failure
    _say(reporter, "end", f"done in {format_duration(result.duration)}: {result.final_lora}",
         tuple(str(p) for p in (result.final_lora, result.report) if p is not None))
    return result


def _pump(plan: TrainPlan, handle: TrainJob, state: _RunState, log: TextIO, tail: deque[str], reporter: Sink,
          on_event: Callable[[lp.Event], None] | None, raw_line: Callable[[str], None] | None,
          linked: dict[str, Path], warnings: list[str]) -> int:
    parser = lp.LogParser()
    for line in handle.logs():
        log.write(line + "\n")
        if line.strip():
            tail.append(line)
        if raw_line is not None:
            raw_line(line)
        events = parser.feed(line)
        if state.pending and line.strip() and not any(isinstance(e, lp.CheckpointSaved) for e in events):
            _link_pending(plan, state, linked, warnings, reporter, final=False)
        for event in events:
            _apply(state, event, reporter)
            if on_event is not None:
                on_event(event)
            if not isinstance(event, lp.CacheProgress):
                reporter.emit(state.event())
    return handle.wait()


def _apply(state: _RunState, event: lp.Event, reporter: Sink) -> None:
    if isinstance(event, lp.PhaseChanged):
        state.phase = event.phase
        if event.phase == "training" and state.step is not None:
            return
        if event.phase != "sampling":
            _say(reporter, PHASES.get(event.phase, event.phase), _PHASE_TEXT.get(event.phase, event.phase))
    elif isinstance(event, lp.TrainingInfo):
        state.info = event
        _say(reporter, "training", f"training: {event.total_steps} optimizer steps ({event.epochs} epochs of "
             f"{event.batches_per_epoch} batches, accumulation {event.grad_accum}, "
             f"{event.images} images with repeats)")
    elif isinstance(event, lp.StepProgress):
        if state.total is None and event.total < state.plan.total_steps:
            state.offset = state.plan.total_steps - event.total  # resumed: the bar counts the remaining steps
        state.step, state.total = event.step + state.offset, event.total + state.offset
        state.rate, state.eta = event.seconds_per_step, event.eta
        if event.loss is not None:
            state.loss = event.loss
            if event.step > 0:
                state.losses[state.step] = event.loss
    elif isinstance(event, lp.EpochStarted):
        state.epoch, state.epochs = event.epoch, event.epochs
        every = max(1, -(-event.epochs // 20))
        if event.epoch == 1 or event.epoch % every == 0 or event.epoch == event.epochs:
            loss = f" · loss {state.loss:.4f}" if state.loss is not None else ""
            _say(reporter, "training", f"epoch {event.epoch}/{event.epochs} · step {state.step or 0}/"
                 f"{state.total or '?'}{loss} · ETA {format_duration(state.eta)}")
    elif isinstance(event, lp.CheckpointSaved):
        state.saves.append(event.path)
        state.pending.append(event.path)
    elif isinstance(event, lp.SampleStarted):
        _say(reporter, "sampling", f"generating sample images at step {event.step}")
    elif isinstance(event, lp.StateSaved):
        _say(reporter, "state", f"saved resumable state ({event.label})")
    elif isinstance(event, lp.Finished):
        state.finished = True
    elif isinstance(event, lp.TrainerError):
        state.errors.append(event)
    elif isinstance(event, lp.CacheProgress):
        reporter.emit(Event("train", "caching", f"{_PHASE_TEXT[event.phase]} {event.done}/{event.total} · "
                            f"ETA {format_duration(event.eta)}", step=event.done, total=event.total,
                            unit="item", eta=event.eta, live=True))


def _link_pending(plan: TrainPlan, state: _RunState, linked: dict[str, Path], warnings: list[str],
                  reporter: Sink, *, final: bool) -> None:
    """Link announced saves whose writing is over (later output arrived, or the trainer ended)."""
    names = [Path(p).name for p in state.pending]
    state.pending.clear()
    if final:
        names += [p.name for p in lora_files(plan.output_dir)]
    for name in names:
        src = plan.output_dir / name
        if name in linked or not src.is_file():
            continue
        result = link_lora(src, plan.lora_dir, allow_copy=final)
        if result is None:  # no hard link possible: copy it once the trainer is done with it
            state.pending.append(name)
            continue
        if result.target is None:
            warnings.append(result.note or "")
            _say(reporter, "warning", f"warning: {result.note}")
            linked[name] = src
        else:
            linked[name] = result.target
            if state.hasher is not None:
                state.hasher.submit(sha256_file, src)
            _say(reporter, "checkpoint", f"saved {name} ({format_bytes(src.stat().st_size)}) -> {result.target}",
                 (str(result.target),))


def _finish(plan: TrainPlan, manifest: dict[str, Any], state: _RunState, tail: deque[str], linked: dict[str, Path],
            started: float, *, warnings: list[str] | None = None, code: int | None = None,
            quick: bool = False) -> RunResult:
    """Manifest, loss.csv, report.html; `quick` (Ctrl+C) records only hashes already computed."""
    run_dir = plan.run_dir
    if state.hasher is not None:
        state.hasher.shutdown(wait=not quick, cancel_futures=quick)
    outputs = []
    for p in lora_files(plan.output_dir) + sample_files(plan.output_dir):
        follow_umask(p)  # the report shows the samples; ComfyUI reads the LoRAs, maybe as another user
        entry: dict[str, Any] = {"name": p.name, "path": p.relative_to(run_dir).as_posix(), "size": p.stat().st_size,
                                 "sha256": sha256_file(p, cached_only=quick)}
        if p.name in linked and p.parent == plan.output_dir:
            entry["linked"] = str(linked[p.name])
        outputs.append(entry)
    for d in state_dirs(plan.output_dir):
        outputs.append({"name": d.name, "path": d.relative_to(run_dir).as_posix(), "size": dir_size(d), "state": True})
    manifest.update(outputs=outputs, loras=[str(p) for p in linked.values()], last_step=state.step,
                    last_epoch=state.epoch, last_loss=state.loss, warnings=list(warnings or []))
    _write_manifest(run_dir, manifest)
    # a resumed run continues the curve of the attempt it resumes (up to the step of the saved state)
    first = min(state.losses, default=None)
    points = {**{s: v for s, v in state.earlier.items() if first is None or s < first}, **state.losses}
    atomic_write_text(run_dir / "loss.csv", "step,loss\n" + "".join(f"{s},{v}\n" for s, v in sorted(points.items())))
    report = run_dir / "report.html"
    facts = [("run", plan.run_id), ("status", manifest["status"]), ("started", manifest["started_at"]),
             ("ended", manifest.get("ended_at") or ""), ("runtime", plan.runtime), ("image", plan.image or "-"),
             ("sd-scripts commit", manifest.get("sd_scripts_commit") or "?"),
             ("steps", f"{state.step or 0}/{state.total or plan.total_steps}"),
             ("duration", format_duration(time.monotonic() - started)),
             ("epochs", f"{state.epoch or 0}/{plan.epochs}"), ("last loss", f"{state.loss:.4f}" if state.loss else "-"),
             ("dataset", f"{manifest['dataset'].get('images')} images, sha256 {manifest['dataset'].get('sha256')}")]
    if manifest.get("cause"):
        facts.append(("cause", str(manifest["cause"])))
    sizes = [(o["name"], format_bytes(o["size"])) for o in outputs]
    atomic_write_text(report, render_report(ReportData(
        title=f"Training run {plan.run_id}", facts=facts, loss=sorted(points.items()),
        samples=sample_files(plan.output_dir), outputs=sizes, config=plan.config,
        log_tail=list(tail) if manifest["status"] != "succeeded" else ()), run_dir))
    final_name = plan.expected_outputs[-1] if plan.expected_outputs else f"{plan.output_name}.safetensors"
    in_lora_dir = tuple(p for p in linked.values() if p.parent == plan.lora_dir)
    return RunResult(run_id=plan.run_id, run_dir=run_dir, status=manifest["status"], exit_code=code,
                     final_lora=linked.get(final_name), loras=in_lora_dir, report=report,
                     manifest=run_dir / "manifest.json", log=run_dir / LOG_NAME, last_step=state.step,
                     last_loss=state.loss, duration=time.monotonic() - started, warnings=tuple(warnings or ()))


def _follow(plan: TrainPlan, handle: TrainJob, reporter: Sink, *, on_event: Callable[[lp.Event], None] | None,
            raw_line: Callable[[str], None] | None) -> RunResult:
    """Show the progress of a trainer started earlier for the same plan (Ctrl+C leaves it running)."""
    run_id = handle.run_id or plan.run_id
    _say(reporter, "start", f"a training with the same plan is already running (run {run_id}, "
         f"{_short_id(handle.id)}): following it instead of starting another; Ctrl+C stops following, not the training")
    state = _RunState(plan)
    parser = lp.LogParser()
    started = time.monotonic()
    for line in handle.logs():
        if raw_line is not None:
            raw_line(line)
        for event in parser.feed(line):
            _apply(state, event, reporter)
            if on_event is not None:
                on_event(event)
        reporter.emit(state.event())
    try:
        code = handle.wait()
    except OrchestratorError:  # the owning `train` removed the container first: read what it recorded
        code = recorded_exit_code(plan.run_dir.parent / run_id)
    _say(reporter, "end", f"run {run_id} ended with exit code {code}; its folder: {plan.run_dir.parent / run_id}",
         (str(plan.run_dir.parent / run_id),))
    return RunResult(run_id=run_id, run_dir=plan.run_dir.parent / run_id, status="followed", exit_code=code,
                     final_lora=None, loras=(), report=None, manifest=None, log=None, last_step=state.step,
                     last_loss=state.loss, duration=time.monotonic() - started)


def _earlier_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss from a run folder's loss.csv ({} when absent or unreadable)."""
    points: dict[int, float] = {}
    try:
        for row in (run_dir / "loss.csv").read_text().splitlines()[1:]:
            step, value = row.split(",")
            points[int(step)] = float(value)
    except (OSError, ValueError):
        return {}
    return points


def _previous(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "manifest.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    keep = {k: old.get(k) for k in ("status", "started_at", "ended_at", "exit_code", "resume_from", "last_step")}
    return [*old.get("previous_attempts", []), keep]


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short_id(ident: str) -> str:
    return ident[:12]


__all__ = ["RunResult", "execute", "latest_state", "OrchestratorError"]
