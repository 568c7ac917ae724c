"""`train`: plan, check and run a FLUX.1-dev LoRA training with sd-scripts."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from orchestrator.cli import argtypes
from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.runtimes import REGISTRY
from orchestrator.runtimes.base import RuntimeEnv

if TYPE_CHECKING:
    from orchestrator.train.checks import Check
    from orchestrator.train.prepare import Prepared

HELP = "Train a FLUX.1-dev LoRA with sd-scripts in a container (plan, run, resume)"
EXAMPLES = """train --plan
train --preset default --set network_dim=32
train --set sample_prompts=none --unset seed
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
                             "(repeatable; applied last). none, null, false or off turn an optional feature off: "
                             "--set sample_prompts=none makes no samples (and drops the preset's sample schedule); "
                             "an empty value (KEY=) is an error")
    parser.add_argument("--unset", dest="sets", metavar="KEY", action=_Unset, default=[],
                        help="remove one key (same as --set KEY=null): sd-scripts' own default applies; "
                             "KEY.SUB removes one entry of network_args/optimizer_args (repeatable)")
    parser.add_argument("--name", metavar="NAME", help="output name of the LoRA (models/loras/NAME.safetensors)")
    parser.add_argument("--gpus", metavar="all|N|0,1",
                        help="GPUs: all, a count N (the first N), or ids like 0,1 / 2,3 (one id: device=1); more "
                             "than one trains data-parallel, one process per GPU (default: 1; none: no GPU, for "
                             "stand-in trainers)")
    argtypes.add_runtime_options(parser, "train", help="where sd-scripts runs: " + ", ".join(
        f"{e.name}" for e in REGISTRY if e.train) + " (default docker: the flux-train image; local: an "
        "sd-scripts checkout here)")
    parser.add_argument("--resume", metavar="RUN", nargs="?", const="", default=None,
                        help="continue the newest run (or RUN) from its newest saved state")
    add_event_options(parser)
    parser.set_defaults(handler=run)


class _Unset(argparse.Action):
    """`--unset KEY` is `--set KEY=null`, kept in order with the --set options."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        key = str(values).strip()
        if not key or "=" in key:
            raise ConfigError(f"--unset {values!r}: expected a key name without a value",
                              hint="e.g. --unset network_dim (to set a value: --set KEY=VALUE)")
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(f"{key}=null")
        setattr(namespace, self.dest, items)


def run(args: argparse.Namespace, ctx: Context) -> int:
    # deferred: the planner's modules cost ~70 ms, kept off every `--help` (bench/cli_startup.py)
    from orchestrator.cli.train_view import render_plan
    from orchestrator.train.api import TrainOptions, plan_training
    from orchestrator.train.checks import blocking_error
    from orchestrator.train.prepare import plan_json

    options = TrainOptions(preset=args.preset, config_file=args.config, sets=tuple(args.sets), name=args.name,
                           gpus=args.gpus, resume=args.resume, runtime=args.runtime,
                           settings=argtypes.runtime_settings(args, "train"))
    env = RuntimeEnv(ctx.layout, reporter=ctx.status, verbose=ctx.verbose)
    try:
        prepared = plan_training(env, options)
    except OrchestratorError as e:
        if args.plan and args.json:   # scripts still get one JSON object; the error is also on stderr
            ctx.out_json({"ok": False, "error": {"message": e.message, "hint": e.hint, "details": e.details},
                          "checks": []})
        raise
    # --plan and the run share prepare() and this verdict, so a plan that passes is a run that starts
    failure = blocking_error(prepared.checks)
    if args.plan:
        if args.json:
            ctx.out_json(plan_json(prepared))
        else:
            ctx.out(render_plan(prepared, ctx.layout.root, verbose=ctx.verbose))
    if failure is not None:
        raise failure
    return 0 if args.plan else _run(ctx, env, prepared)


def _run(ctx: Context, env: RuntimeEnv, prepared: Prepared) -> int:
    from orchestrator.train.api import run_training  # deferred with the planner (see run)
    from orchestrator.train.checks import errors, warnings

    if not errors(prepared.checks):
        _warn(ctx, warnings(prepared.checks))
    plan, s = prepared.plan, prepared.steps
    on = f", {s.processes} GPUs data-parallel ({', '.join(plan.devices or ('all',))})" if s.processes > 1 else ""
    ctx.log(f"run {plan.run_id}: {s.epochs} epochs, {s.total_steps} steps, {len(plan.expected_outputs)} LoRA file(s)"
            + on + (f", resuming from {Path(str(plan.resume_from)).name}" if plan.resume_from else ""))
    raw_line = (lambda line: ctx.log(f"[train] {line}")) if ctx.verbose else None
    result = run_training(env, prepared, raw_line=raw_line)
    if result.status == "followed":
        return 0 if result.exit_code == 0 else 1
    if result.final_lora is not None:
        ctx.out(str(result.final_lora))
    if result.report is not None:
        ctx.log(f"report: {result.report}")
    return 0


def _warn(ctx: Context, warns: list[Check]) -> None:
    """The checks' warnings, two of a kind (all with -v)."""
    seen: dict[str, int] = {}
    for c in warns:
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] <= 2 or ctx.verbose:
            ctx.warn(c.message + (f" ({c.hint})" if c.hint else ""))
        elif seen[c.name] == 3:
            ctx.warn(f"... and {sum(1 for w in warns if w.name == c.name) - 2} more {c.name} warnings "
                     "(`train --plan -v` shows all)")
