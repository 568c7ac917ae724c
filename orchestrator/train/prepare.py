"""The `train` use case up to the point where something would start: config, dataset, plan, checks.

`prepare` composes the pure parts (config, build_plan, rules) with the few reads they need (the
dataset check, model sizes, free disk, the engine probe passed in). `write_inputs` puts the plan's
input files into the run folder just before a run starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from orchestrator.dataset import check_dataset
from orchestrator.errors import ConfigError
from orchestrator.gpus import GpuInventory, lr_scaling
from orchestrator.layout import Layout, atomic_write_text
from orchestrator.train import arith, preflight
from orchestrator.train.checks import Check
from orchestrator.train.config import TrainConfig, coerce, load_config, parse_set, samples_off
from orchestrator.train.outputs import check_resumable
from orchestrator.train.plan import TrainPlan, build_plan
from orchestrator.train.schema import BY_NAME

if TYPE_CHECKING:
    from orchestrator.dataset import DatasetReport
    from orchestrator.runtimes.base import TrainRuntime

PLAN_FILE = "plan.json"
TRAINER_FLAGS = ("cache_latents", "cache_latents_to_disk", "cache_text_encoder_outputs",
                 "cache_text_encoder_outputs_to_disk", "resolution", "train_batch_size")


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for on the command line."""

    preset: str | None = None
    config_file: Path | None = None
    sets: tuple[str, ...] = ()
    name: str | None = None
    gpus: str | None = None
    resume: str | None = None        # None: a new run; "": the newest run; else a run id or folder


@dataclass(frozen=True)
class Prepared:
    """A plan with everything shown by `train --plan`."""

    plan: TrainPlan
    steps: arith.Steps
    config: TrainConfig
    dataset: "DatasetReport"
    checks: tuple[Check, ...]
    lora: arith.LoraSize
    processes: int
    runtime: "TrainRuntime"
    inventory: GpuInventory = GpuInventory(None)

    @property
    def ok(self) -> bool:
        return not any(c.status == "error" for c in self.checks)


def prepare(layout: Layout, req: PlanRequest, *, runtime: "TrainRuntime", now: datetime,
            probe: Callable[[], Any] | None, visible_gpus: int | None,
            disk_free: Callable[[Path], int] | None = None, memory: int | None = None,
            latest_state: Callable[[Path], Path | None] | None = None,
            inventory: GpuInventory | None = None, inherited_devices: tuple[str, ...] | None = None,
            port_free: Callable[[int], bool] | None = None) -> Prepared:
    """Resolve config and dataset, build the plan for `runtime`, run every preflight check (`probe`: the
    runtime's backend probe, run in the background meanwhile). Raises ConfigError for a config that
    cannot be read; everything else is a check. `inventory` (what gpuprobe counted) names the source in
    the GPU check; `inherited_devices` is this process's CUDA_VISIBLE_DEVICES."""
    probe = _in_background(probe) if probe is not None else None   # the backend answers while we read
    state: Path | None = None
    if req.resume is not None:
        config, state = _resume_config(layout, req, latest_state or newest_state)
    else:
        config_file = req.config_file
        if config_file is None and (layout.root / "train.yaml").is_file():
            config_file = layout.root / "train.yaml"
        config = load_config(req.preset, config_file, req.sets)
    flags: dict[str, Any] = {k: config.get(k) for k in TRAINER_FLAGS}
    flags["masked_loss"] = False
    dataset = check_dataset(layout, trainer_flags=flags)
    prompts_file = read_prompts_file(layout, config.get("sample_prompts"))
    plan, steps = build_plan(layout, config, dataset=dataset, now=now, runtime=runtime, gpus=req.gpus,
                             name=req.name, resume=state, visible_gpus=visible_gpus, prompts_file=prompts_file,
                             inherited_devices=inherited_devices)
    processes = steps.processes
    if state is not None:
        _check_same_dataset(plan, steps)
    checks = preflight.preflight(plan, layout, dataset, processes=processes, visible_gpus=visible_gpus,
                                 runtime=runtime, probe=probe, disk_free=disk_free, memory=memory,
                                 inventory=inventory, inherited=inherited_devices, port_free=port_free)
    sources = {k: f"auto ({src})" if config.get(k) == "auto" else src for k, src in config.sources.items()}
    if req.name:
        sources["output_name"] = "--name"
    resolved = TrainConfig(config.preset, MappingProxyType(dict(plan.config)), MappingProxyType(sources))
    return Prepared(plan, steps, resolved, dataset, tuple(checks), arith.lora_size(plan.config), processes,
                    runtime, inventory or GpuInventory(visible_gpus, "driver" if visible_gpus is not None else "unknown"))


def _in_background(probe: Callable[[], Any]) -> Callable[[], Any]:
    """Start `probe` in a thread now; the returned callable waits for its answer."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-probe")
    future = pool.submit(probe)
    pool.shutdown(wait=False)
    return future.result


def read_prompts_file(layout: Layout, value: Any) -> tuple[str, str] | None:
    """(extension, text) of a sample prompts file named in the config (relative to the project)."""
    if not isinstance(value, str) or value == "auto":
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else layout.root / path
    ext = path.suffix.lower()
    if ext not in (".txt", ".toml", ".json"):
        return (ext, "")   # the samples:extension rule explains it
    try:
        text = path.read_text(encoding="utf-8")
        _check_prompts_syntax(path, ext, text)
        return ext, text
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError(f"sample_prompts: {path}:{line} is not UTF-8 text",
                          hint="save the prompts file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"sample_prompts: cannot read {path}: {e.strerror or e}",
                          hint="give a prompts file that exists (relative to the project folder)") from None


def _check_prompts_syntax(path: Path, ext: str, text: str) -> None:
    """ConfigError (with the line) for a .toml/.json prompts file sd-scripts could not parse: it would crash at
    the first sampling point, after training for a while."""
    try:
        if ext == ".toml":
            tomlkit.parse(text)
        elif ext == ".json":
            json.loads(text)
    except TOMLKitError as e:
        raise ConfigError(f"sample_prompts: {path}: not valid TOML: {e}",
                          hint="fix the file; the trainer would crash at its first sample") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"sample_prompts: {path}:{e.lineno}: not valid JSON: {e.msg}",
                          hint="fix the file; the trainer would crash at its first sample") from None


def find_run(layout: Layout, which: str) -> Path:
    """The run folder named by `--resume [RUN]` (newest with a plan when RUN is empty)."""
    if which:
        p = Path(which).expanduser()
        run = p if p.is_absolute() else layout.runs / which if p.parent == Path(".") else layout.root / p
        if not (run / PLAN_FILE).is_file():
            known = sorted(d.name for d in layout.runs.glob("*") if (d / PLAN_FILE).is_file())[-5:]
            raise ConfigError(f"no training run {which!r} in {layout.runs}",
                              hint="runs: " + ", ".join(known) if known else "start one with `train`")
        return run
    runs = sorted(d for d in layout.runs.glob("*") if (d / PLAN_FILE).is_file())
    if not runs:
        raise ConfigError("there is no earlier training run to resume", hint="start one with `train`")
    return runs[-1]


def newest_state(run_dir: Path) -> Path | None:
    """Newest `*-state` dir in the run's output folder (by its train_state.json step, then time)."""
    def key(d: Path) -> tuple[int, float]:
        try:
            step = int(json.loads((d / "train_state.json").read_text()).get("current_step", 0))
        except (OSError, ValueError, AttributeError):
            step = -1
        return step, d.stat().st_mtime

    states = [d for d in (run_dir / "output").glob("*-state") if d.is_dir()]
    return max(states, key=key) if states else None


def _resume_config(layout: Layout, req: PlanRequest,
                   latest_state: Callable[[Path], Path | None]) -> tuple[TrainConfig, Path]:
    if req.preset or req.config_file:
        raise ConfigError("--resume continues a run with its own config: --preset and --config do not apply",
                          hint="change what may change with --set (e.g. --set max_train_epochs=80)")
    run = find_run(layout, req.resume or "")
    where = f"{run / PLAN_FILE}"
    try:
        saved = json.loads((run / PLAN_FILE).read_text(encoding="utf-8"))
        saved["config"].items()
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise ConfigError(f"{where} is unreadable ({e}): cannot resume run {run.name}",
                          hint="start a new run with `train`") from None
    values = {k: coerce(BY_NAME[k], v, where) for k, v in saved["config"].items() if k in BY_NAME}
    base = TrainConfig(saved.get("preset", "?"), MappingProxyType(values),
                       MappingProxyType({k: f"run {run.name}" for k in values}))
    config = _apply_sets(base, req.sets)
    check_resumable(base.as_dict(), config.as_dict())
    if req.name and req.name != values.get("output_name"):
        raise ConfigError("--name cannot change when resuming", hint=f"the run's name is {values.get('output_name')}")
    state = latest_state(run)
    if state is None:
        name = values.get("output_name") or "NAME"
        again = f"start it again with `python -m orchestrator train --name {name}`"
        raise ConfigError(f"run {run.name} has no saved state to resume from",
                          hint=f"it stopped before its first save: {again}" if values.get("save_state") else
                          f"runs save state only with save_state: true (the default preset does); {again}")
    return config, state


def _check_same_dataset(plan: TrainPlan, steps: arith.Steps) -> None:
    """A resumed run must see the same batches per epoch (the saved step maps onto epochs)."""
    saved = json.loads((plan.run_dir / PLAN_FILE).read_text(encoding="utf-8")).get("steps", {})
    before = (saved.get("image_steps_per_epoch"), saved.get("batches_per_epoch"), saved.get("processes"))
    now = (steps.image_steps, steps.batches_per_epoch, steps.processes)
    if None not in before and before != now:
        raise ConfigError(f"cannot resume {plan.run_id}: the dataset or GPUs changed (images x repeats, batches per "
                          f"epoch, processes were {before}, now {now})",
                          hint="restore the dataset and --gpus of that run, or start a new run")


def _apply_sets(base: TrainConfig, sets: Sequence[str]) -> TrainConfig:
    if not sets:
        return base
    changes: dict[str, Any] = {}
    for item in sets:
        key, raw = parse_set(item)
        top, _, sub = key.partition(".")
        if top not in BY_NAME:
            load_config(sets=[item])   # raises the "unknown key / did you mean" error
        if sub:
            merged = dict(changes.get(top, base.get(top)) or {})
            if raw is None:
                merged.pop(sub, None)
            else:
                merged[sub] = raw
            raw = merged
        changes[top] = coerce(BY_NAME[top], raw, f"--set {item}")
    config = base.replace(changes, "--set")
    values, sources = dict(config.values), dict(config.sources)
    samples_off(values, sources)
    return TrainConfig(config.preset, MappingProxyType(values), MappingProxyType(sources))


def write_inputs(prepared: Prepared) -> None:
    """Write the run's inputs (plan.json, data.toml, sample prompts) into its run folder."""
    plan = prepared.plan
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    (plan.run_dir / "output").mkdir(exist_ok=True)
    atomic_write_text(plan.run_dir / "data.toml", plan.dataset_toml)
    for name, text in plan.files.items():
        atomic_write_text(plan.run_dir / name, text)
    atomic_write_text(plan.run_dir / PLAN_FILE, json.dumps(plan_json(prepared), indent=2, default=str) + "\n")


def estimate(p: Prepared) -> float:
    """The run's rough duration on one H100 (arith.estimate_h100_seconds) for this plan."""
    plan = p.plan
    values = plan.config
    every = values.get("sample_every_n_epochs")
    events = (plan.epochs // every if isinstance(every, int) else 0) + (1 if values.get("sample_at_first") else 0)
    prompts = 0
    for name, text in plan.files.items():
        if name.startswith("sample_prompts"):   # a .toml/.json file counts as one prompt: a rough estimate
            prompts = sum(1 for ln in text.splitlines() if ln.strip() and not ln.startswith("#")) \
                if name.endswith(".txt") else 1
    return arith.estimate_h100_seconds(values, p.steps, p.lora, saves=len(plan.expected_outputs),
                                       sample_events=events, prompts=prompts)


def gpu_plan(p: Prepared) -> dict[str, Any]:
    """The GPU side of a plan: which devices, processes, accelerate's options, batch arithmetic, learning rate."""
    plan, s = p.plan, p.steps
    words = list(plan.launcher_args)

    def opt(flag: str) -> str | None:
        return words[words.index(flag) + 1] if flag in words else None

    lr = lr_scaling(plan.config.get("optimizer_type"), plan.config.get("learning_rate"), s.processes,
                    s.accumulation, s.batch_size)
    return {
        "requested": plan.gpu_selection, "processes": s.processes,
        "devices": list(plan.devices) if plan.devices is not None else None,
        "cuda_visible_devices": plan.environment.get("CUDA_VISIBLE_DEVICES"),
        "container_gpus": plan.gpus if plan.image is not None else None,
        "available": p.inventory.count, "counted_by": p.inventory.source, "names": list(p.inventory.names),
        "multi_gpu": "--multi_gpu" in words, "gpu_ids": opt("--gpu_ids"),
        "main_process_port": plan.main_process_port, "mixed_precision": opt("--mixed_precision"),
        "per_process_batch": s.batch_size, "gradient_accumulation_steps": s.accumulation,
        "effective_batch": s.effective_batch,
        "batches_per_process_per_epoch": -(-s.batches_per_epoch // s.processes) if s.batches_per_epoch else 0,
        "steps_per_epoch": s.steps_per_epoch,
        "learning_rate": {"value": lr.learning_rate, "scaling": lr.rule, "applied": False,
                          "suggested": lr.suggested, "note": lr.note},
    }


def plan_json(p: Prepared) -> dict[str, Any]:
    """The plan as one JSON object (`train --plan --json`, and runs/<id>/plan.json)."""
    plan = p.plan
    container = p.runtime.describe(plan)
    s = p.steps
    return {
        "ok": p.ok, "run_id": plan.run_id, "run_dir": str(plan.run_dir), "preset": p.config.preset,
        "runtime": plan.runtime, "config": dict(plan.config), "sources": dict(p.config.sources),
        "launcher_args": list(plan.launcher_args), "script": plan.script, "trainer_args": list(plan.trainer_args),
        "argv": plan.argv(), "workdir": plan.workdir, "environment": dict(plan.environment),
        "dataset_toml": plan.dataset_toml, "files": dict(plan.files), "container": container,
        "steps": {"image_steps_per_epoch": s.image_steps, "batches_per_epoch": s.batches_per_epoch,
                  "batch_size": s.batch_size, "processes": s.processes, "gradient_accumulation_steps": s.accumulation,
                  "steps_per_epoch": s.steps_per_epoch, "epochs": s.epochs, "total_steps": s.total_steps,
                  "effective_batch": s.effective_batch},
        "gpus": gpu_plan(p),
        "lora": {"modules": p.lora.modules, "parameters": p.lora.parameters, "dtype": p.lora.dtype,
                 "bytes": p.lora.bytes},
        "estimate_h100_seconds": round(estimate(p)),
        "output_dir": str(plan.output_dir), "lora_dir": str(plan.lora_dir),
        "expected_outputs": list(plan.expected_outputs),
        "state_dirs": list(arith.state_dirs(plan.config, plan.epochs)),
        "resume_from": plan.resume_from, "config_hash": plan.config_hash,
        "checks": [c.as_dict() for c in p.checks],
    }
