"""`train`: plan, check and run a FLUX.1-dev LoRA training with sd-scripts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options
from orchestrator.errors import ConfigError, OrchestratorError

HELP = "Train a FLUX.1-dev LoRA with sd-scripts in a container (plan, run, resume)"
EXAMPLES = """train --plan
train --preset default --set network_dim=32
train --preset 24gb --name tjtoy_v2
train --config train.yaml --plan --json
train --gpus 2
train --runtime local --sd-scripts ~/sd-scripts --python ~/sd-scripts/venv/bin/python
train --resume"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", "--dry-run", dest="plan", action="store_true",
                        help="print the resolved config, command line, container, steps, LoRA size and every "
                             "check; start nothing")
    parser.add_argument("--json", action="store_true",
                        help="with --plan: one JSON object on stdout; progress as JSON lines on stderr (README: "
                             "Progress for scripts)")
    parser.add_argument("--preset", metavar="NAME",
                        help="playbook, default, 24gb, 16gb or 12gb (default: default, or `preset:` in the config)")
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="YAML file of overrides (default: train.yaml in the project folder, if present)")
    parser.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", default=[],
                        help="override one key, e.g. --set network_dim=32 --set network_args.train_blocks=single "
                             "(repeatable; applied last)")
    parser.add_argument("--name", metavar="NAME", help="output name of the LoRA (models/loras/NAME.safetensors)")
    parser.add_argument("--gpus", metavar="all|N|0,1",
                        help="GPUs: all, a count, or ids (one id: device=1); more than one trains data-parallel "
                             "(default: 1; none: no GPU, for stand-in trainers)")
    parser.add_argument("--runtime", choices=("docker", "local"), default="docker",
                        help="docker (default): the flux-train image; local: an sd-scripts checkout here")
    parser.add_argument("--sd-scripts", metavar="DIR", type=Path, help="sd-scripts checkout (local runtime)")
    parser.add_argument("--python", metavar="PY", help="python of the sd-scripts environment (local runtime)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the training image first")
    parser.add_argument("--image", metavar="TAG",
                        help="use this (local) training image instead of flux-train built from Dockerfile.train")
    parser.add_argument("--resume", metavar="RUN", nargs="?", const="", default=None,
                        help="continue the newest run (or RUN) from its newest saved state")
    add_event_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from datetime import datetime

    from orchestrator.train import preflight
    from orchestrator.train.prepare import PlanRequest, plan_json, prepare

    if args.runtime == "local" and args.sd_scripts is None:
        raise ConfigError("--runtime local needs --sd-scripts DIR (an sd-scripts checkout)",
                          hint="train --runtime local --sd-scripts ~/sd-scripts --python ~/sd-scripts/venv/bin/python")
    if args.runtime == "docker" and (args.sd_scripts or args.python):
        raise ConfigError("--sd-scripts and --python are for --runtime local")
    if args.runtime == "local" and (args.image or args.rebuild):
        raise ConfigError("--image and --rebuild are for --runtime docker")
    req = PlanRequest(preset=args.preset, config_file=args.config, sets=tuple(args.sets), name=args.name,
                      gpus=args.gpus, runtime=args.runtime,
                      sd_scripts=args.sd_scripts.expanduser().resolve() if args.sd_scripts else None,
                      python=args.python, resume=args.resume)
    image = None
    engine_box: dict[str, Any] = {}
    if args.runtime == "docker":
        from orchestrator.images import train_image

        image = args.image or train_image()
    try:
        prepared = prepare(ctx.layout, req, now=datetime.now(), image=image,
                           engine=(lambda: _probe(image, engine_box)) if image else None,
                           visible_gpus=preflight.count_gpus(), memory=preflight.host_memory(),
                           latest_state=_latest_state())
    except OrchestratorError as e:
        if args.plan and args.json:   # scripts still get one JSON object; the error is also on stderr
            ctx.out_json({"ok": False, "error": {"message": e.message, "hint": e.hint, "details": e.details},
                          "checks": []})
        raise
    if args.plan:
        if args.json:
            ctx.out_json(plan_json(prepared))
        else:
            from orchestrator.cli.train_view import render_plan

            ctx.out(render_plan(prepared, ctx.layout.root, verbose=ctx.verbose))
        return 0 if prepared.ok else 2
    return _run(args, ctx, prepared, engine_box.get("engine"))


def _probe(image: str, box: dict[str, Any]) -> Any:
    """Engine facts for the preflight: stdlib HTTP on the local socket (fast), docker-py otherwise."""
    from orchestrator.engine import quick_facts
    from orchestrator.errors import DockerError
    from orchestrator.train.preflight import EngineFacts

    try:
        facts = quick_facts(image)
        if facts is not None:
            return EngineFacts(True, nvidia="nvidia" in facts["runtimes"], image_present=facts["image_present"])
        from orchestrator.engine import connect

        engine = connect()
        box["engine"] = engine
        return EngineFacts(True, nvidia=engine.has_nvidia_runtime(), image_present=engine.image_exists(image))
    except DockerError as e:
        return EngineFacts(False, error=e.message, hint=e.hint)


def _latest_state() -> Any:
    """The runner's latest_state (the newest saved state of a run)."""
    from orchestrator.train.outputs import latest_state

    return latest_state


def _run(args: argparse.Namespace, ctx: Context, prepared: Any, engine: Any) -> int:
    import shutil

    from orchestrator.train.checks import errors, warnings
    from orchestrator.train.prepare import write_inputs
    from orchestrator.train.run import execute

    blocking = errors(prepared.checks)
    if blocking:
        raise ConfigError(f"the training run would fail: {len(blocking)} check(s) failed",
                          details=[f"{c.name}: {c.message}" + (f" ({c.hint})" if c.hint else "") for c in blocking],
                          hint="fix them; `train --plan` shows the whole plan")
    seen: dict[str, int] = {}
    warns = warnings(prepared.checks)
    for c in warns:
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] <= 2 or ctx.verbose:
            ctx.warn(c.message + (f" ({c.hint})" if c.hint else ""))
        elif seen[c.name] == 3:
            ctx.warn(f"... and {sum(1 for w in warns if w.name == c.name) - 2} more {c.name} warnings "
                     "(`train --plan -v` shows all)")
    plan = prepared.plan
    if plan.runtime == "docker":
        from orchestrator.engine import connect
        from orchestrator.train.runners import DockerRunner

        runner: Any = DockerRunner(engine or connect(), ctx.layout, reporter=ctx.status, rebuild=args.rebuild)
    else:
        from orchestrator.train.runners import LocalRunner

        runner = LocalRunner(Path(plan.workdir), args.python or "python3")
    s = prepared.steps
    ctx.log(f"run {plan.run_id}: {s.epochs} epochs, {s.total_steps} steps, {len(plan.expected_outputs)} LoRA file(s)"
            + (f", resuming from {Path(str(plan.resume_from)).name}" if plan.resume_from else ""))
    created = not plan.run_dir.exists()
    if runner.find_running(plan) is None:   # else execute() follows the running one: write nothing new
        write_inputs(prepared)
    raw_line = (lambda line: ctx.log(f"[train] {line}")) if ctx.verbose else None
    try:
        result = execute(plan, runner, ctx.status, raw_line=raw_line)
    except OrchestratorError:
        if created and not (plan.run_dir / "train.log").exists():   # it never started: leave nothing behind
            shutil.rmtree(plan.run_dir, ignore_errors=True)
        raise
    if result.status == "followed":
        return 0 if result.exit_code == 0 else 1
    if result.final_lora is not None:
        ctx.out(str(result.final_lora))
    if result.report is not None:
        ctx.log(f"report: {result.report}")
    return 0
