"""`download` command: models and tokenizers from the Hugging Face Hub into models/."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options

HELP = 'Download FLUX.1-dev, its text encoders, VAE and tokenizers into models/'
EXAMPLES = 'download\ndownload --dry-run\ndownload --only flux1-dev ae --verify\ndownload --variant fp8'

NAMES_HELP = ("flux1-dev, ae, clip_l, t5xxl (the variant's), t5xxl_fp16, t5xxl_fp8, clip_l-tokenizer, "
              "t5xxl-tokenizer, tokenizers")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"fetch only these: {NAMES_HELP}")
    parser.add_argument("--variant", choices=("fp16", "fp8"), default="fp16",
                        help="T5-XXL text encoder: fp16 (9.8 GB, default) or fp8 (4.9 GB, for low-memory machines)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would be fetched (sizes, target paths, free disk) and fetch nothing")
    parser.add_argument("--verify", action="store_true",
                        help="also check the SHA-256 of files already present against the Hub "
                             "(corrupt files are downloaded again)")
    parser.add_argument("--token", metavar="TOKEN",
                        help="Hugging Face token to use (default: HF_TOKEN, else the `hf auth login` token file); "
                             "prefer those: a command-line argument is visible in the process list")
    parser.epilog = (parser.epilog or "") + (
        "\n\nFLUX.1-dev is gated: accept its licence at https://huggingface.co/black-forest-labs/FLUX.1-dev,\n"
        "then `hf auth login` or `export HF_TOKEN=hf_...`. Interrupted downloads resume on the next run.")
    add_event_options(parser)
    parser.set_defaults(handler=run, creates_project=True)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator import download as dl
    from orchestrator.hub import Hub

    items = dl.plan_items(ctx.layout, args.only, args.variant)
    hub = Hub.from_env(token=args.token)
    for warning in hub.token_warnings:
        ctx.warn(warning)
    if args.dry_run:
        return _dry_run(ctx, items, hub)
    try:
        results = dl.download(ctx.layout, items, hub, ctx.status, verify=args.verify)
    except KeyboardInterrupt:
        ctx.log("\ndownload interrupted: the bytes fetched so far are kept; run the same command to resume")
        raise
    rows = []
    for group, members in _groups(results).items():
        statuses = list(dict.fromkeys(r.status for r in members if r.status != "absent upstream"))
        size = _sum(r.size for r in members if r.status != "absent upstream")
        rows.append((group, ", ".join(statuses), _fmt(size), _where(members[0].item, ctx)))
    from orchestrator.table import render_table

    ctx.out(render_table(("NAME", "STATUS", "SIZE", "PATH"), rows))
    ctx.log("next: `python -m orchestrator doctor` checks Docker, the GPU runtime and these files")
    return 0


def _dry_run(ctx: Context, items: Sequence, hub) -> int:
    from orchestrator import download as dl
    from orchestrator.table import render_table
    from orchestrator.progress import format_bytes

    plan = dl.inspect_items(items, hub, ctx.status, tolerant=True)
    rows, problems = [], {}
    to_fetch = 0
    for group, members in _groups(plan).items():
        members = [m for m in members if m.problem != "absent upstream"]
        size = _sum(m.size for m in members)
        to_fetch += sum(m.missing_bytes for m in members)
        rows.append((group, _fmt(size), _state(members), members[0].item.repo, _where(members[0].item, ctx)))
        for m in members:
            if m.problem:
                problems.setdefault(m.problem, []).append(group)
    ctx.out(render_table(("NAME", "SIZE", "STATE", "FROM", "PATH"), rows))
    reached = all(m.remote is not None for m in plan if m.problem != "absent upstream")
    models_dir = _existing(ctx.layout.models)
    free = shutil.disk_usage(models_dir).free
    verdict = "enough" if free >= to_fetch else f"NOT enough: free {format_bytes(to_fetch - free)} first"
    if to_fetch:
        ctx.out(f"\nto download: {format_bytes(to_fetch)}; free in {models_dir}: {format_bytes(free)} ({verdict})")
    else:
        ctx.out(f"\nnothing to download; free in {models_dir}: {format_bytes(free)}")
    ctx.out("sizes: " + ("from the Hub" if reached else "approximate (catalogue) where the Hub could not be asked"))
    all_groups = set(_groups(plan))
    for problem, groups in problems.items():
        ctx.warn(problem if set(groups) == all_groups else f"{', '.join(dict.fromkeys(groups))}: {problem}")
    return 0


def _state(members: Sequence) -> str:
    if not any(m.remote for m in members):  # the Hub could not be asked: say what is on disk
        return "present (not checked)" if any(m.local_size for m in members) else "to download (?)"
    if all(m.complete for m in members):
        return "complete"
    partial = sum(m.partial_size for m in members)
    size = _sum(m.size for m in members)
    if partial and size:
        return f"partial {partial / size:.0%} (resumes)"
    if any(m.local_size and not m.complete for m in members):
        return "incomplete (replaced)"
    if any(m.complete for m in members):
        return "some files missing"
    return "to download"


def _groups(entries: Sequence) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in entries:
        out.setdefault(e.item.group, []).append(e)
    return out


def _where(item, ctx: Context) -> str:
    """A model's file, or a tokenizer's folder."""
    if item.group.endswith("tokenizer"):
        return _display(item.target.parent) + "/"
    return _display(item.target)


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _sum(values) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _fmt(size: int | None) -> str:
    from orchestrator.progress import format_bytes

    return format_bytes(size) if size is not None else "?"
