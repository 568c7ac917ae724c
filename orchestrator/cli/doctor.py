"""`doctor` command: one table of checks, a fix for each problem, exit 1 when something blocks."""

from __future__ import annotations

import argparse

from orchestrator.cli import argtypes
from orchestrator.cli.context import Context

HELP = 'Check this machine: Python and its packages, Docker, NVIDIA runtime, GPUs, disk, models, port 8188'
EXAMPLES = 'doctor\ndoctor --json\ndoctor --online'

MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "info": "info"}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--online", action="store_true",
                        help="also check the Hugging Face token and FLUX.1-dev access with the Hub")
    parser.add_argument("--token", metavar="TOKEN",
                        help="Hugging Face token to use (default: HF_TOKEN, else the `hf auth login` token file); "
                             "prefer those: a command-line argument is visible in the process list")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON (for scripts)")
    parser.add_argument("--variant", choices=("fp16", "fp8"), default=None,
                        help="which T5-XXL to expect (default: the one present, else fp16)")
    parser.add_argument("--port", type=argtypes.port, default=8188, help="the ComfyUI port to check (default: 8188)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator import doctor
    from orchestrator.table import render_table
    from orchestrator.engine import connect
    from orchestrator.hub import Hub

    probes = doctor.Probes(connect=lambda: connect(timeout=5), hub=lambda: Hub.from_env(token=args.token))
    checks = doctor.run_checks(ctx.layout, probes, variant=args.variant, port=args.port, online=args.online)
    blocking = [c for c in checks if c.blocking]
    if args.json:
        ctx.out_json({"ok": not blocking, "project": str(ctx.layout.root), "checks": [c.to_json() for c in checks]})
        return 1 if blocking else 0
    ctx.out(render_table(("CHECK", "STATUS", "RESULT"), [(c.name, MARK[c.status], c.summary) for c in checks]))
    fixes: dict[str, list[str]] = {}
    for c in checks:
        if c.fix and c.status in ("fail", "warn"):
            fixes.setdefault(c.fix, []).append(c.name)
    if fixes:
        ctx.out("\nto fix:")
        for fix, names in fixes.items():
            ctx.out(f"  {', '.join(names)}: {fix}")
    warns = sum(c.status == "warn" for c in checks)
    ctx.out(f"\n{len(blocking)} blocking, {warns} warning{'s' if warns != 1 else ''}"
            + (": not ready (fix the FAIL lines first)" if blocking else ": ready"))
    return 1 if blocking else 0
