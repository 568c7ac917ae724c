"""`dataset`: concept folders under flux_data/ and sd-scripts' data.toml (init, sync, add, check)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.context import Context
from orchestrator.errors import DatasetError, UsageError

HELP = "Check concept folders under flux_data/ and keep sd-scripts' data.toml in sync"
EXAMPLES = ('dataset check\n'
            'dataset add tjtoy --from ~/photos/toy --trigger "tjtoy toy"\n'
            'dataset sync --balance\n'
            'dataset init\n'
            'dataset check --verify --json')


def register(parser: argparse.ArgumentParser) -> None:
    from orchestrator.cli import _common_options  # --project-dir / -v / --debug after the subcommand too

    sub = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND", parser_class=type(parser))
    common = [_common_options(defaults=False)]
    p = sub.add_parser("init", parents=common,
                       help="create flux_data/data.toml from the template and add every concept folder",
                       description="Create flux_data/data.toml (if missing) and add a subset per concept folder.")
    p.set_defaults(handler=run_init, creates_project=True)
    p = sub.add_parser("sync", parents=common,
                       help="add subsets for new concept folders; report (or --prune) vanished ones",
                       description="Bring data.toml in step with the folders in flux_data/, keeping your edits.")
    p.add_argument("--prune", action="store_true", help="remove subsets whose folder no longer exists")
    p.add_argument("--balance", action="store_true",
                   help="set num_repeats so every concept contributes about equally per epoch")
    p.add_argument("--dry-run", action="store_true", help="show the change as a diff; write nothing")
    p.set_defaults(handler=run_sync)
    p = sub.add_parser("add", parents=common,
                       help="copy (or hard-link) a folder of photos into flux_data/NAME and register it",
                       description="Bring photos into a new concept folder; nothing is converted.")
    p.add_argument("name", metavar="NAME", help="the concept's folder name, e.g. tjtoy")
    p.add_argument("--from", dest="source", metavar="DIR", required=True, help="folder holding the photos")
    p.add_argument("--trigger", metavar="WORDS", help='class_tokens: trigger word and class, e.g. "tjtoy toy" '
                   "(default: NAME)")
    p.add_argument("--link", action="store_true", help="hard-link instead of copying (same filesystem only)")
    p.set_defaults(handler=run_add)
    p = sub.add_parser("check", parents=common, help="check data.toml and every image the trainer will read",
                       description="Check data.toml and every concept folder; exit 2 when training would fail.")
    p.add_argument("--verify", action="store_true", help="decode every image fully (slower; finds damaged files)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--fix-orientation", action="store_true",
                   help="write upright copies of EXIF-rotated photos (originals kept in flux_data/.originals/)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="batch size for the batches-per-epoch figure (data.toml's batch_size wins; default 1)")
    p.set_defaults(handler=run_check)
    parser.set_defaults(handler=_no_subcommand)


def _no_subcommand(args: argparse.Namespace, ctx: Context) -> int:
    raise UsageError("choose a subcommand: init, sync, add or check", hint="see `python -m orchestrator dataset --help`")


def run_init(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.dataset.edit import sync_dataset

    existed = ctx.layout.data_toml.exists()
    if existed:
        ctx.log(f"{_rel(ctx, ctx.layout.data_toml)} exists: adding new concept folders only")
    result = sync_dataset(ctx.layout)
    _print_sync(ctx, result)
    return 0


def run_sync(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.dataset.edit import sync_dataset

    if not ctx.layout.data_toml.exists():
        raise DatasetError(f"{_rel(ctx, ctx.layout.data_toml)} does not exist",
                           hint="create it with `python -m orchestrator dataset init`")
    before = ctx.layout.data_toml.read_text(encoding="utf-8", errors="replace")
    result = sync_dataset(ctx.layout, prune=args.prune, balance=args.balance, dry_run=args.dry_run)
    if args.dry_run:
        import difflib

        diff = difflib.unified_diff(before.splitlines(keepends=True), result.text.splitlines(keepends=True),
                                    "data.toml", "data.toml (after sync)")
        ctx.stdout.write("".join(diff))
    _print_sync(ctx, result, dry_run=args.dry_run)
    return 0


def _print_sync(ctx: Context, result, *, dry_run: bool = False) -> None:
    toml = _rel(ctx, ctx.layout.data_toml)
    verb = "would " if dry_run else ""
    if result.created:
        ctx.out(f"created {toml}")
    for value in result.added:
        ctx.out(f"{verb}add subset image_dir = \"{value}\"")
    for value, old, new in result.repeats:
        ctx.out(f"{verb}set num_repeats {old} -> {new} for \"{value}\"")
    for value in result.removed:
        ctx.out(f"{verb}remove subset image_dir = \"{value}\" (folder is gone)")
    for value, line in result.missing:
        if value not in result.removed:
            ctx.warn(f"{toml}:{line}: image_dir \"{value}\" does not exist; the trainer would skip it "
                     "(`dataset sync --prune` removes the subset)")
    if not result.changed:
        ctx.out(f"{toml} is up to date")
    elif not dry_run and result.created and not result.added:   # a new data.toml with no concept yet
        ctx.log("next: put 5-20 photos of each concept in flux_data/<concept>/ and run "
                "`python -m orchestrator dataset sync`, or `python -m orchestrator dataset add NAME --from DIR "
                "--trigger \"word class\"`")
    elif not dry_run:
        ctx.log("next: python -m orchestrator dataset check")


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.dataset.add import add_concept

    result = add_concept(ctx.layout, args.name, Path(args.source), trigger=args.trigger, link=args.link)
    how = "hard-linked" if result.linked else "copied"
    ctx.out(f"{how} {len(result.images)} image(s) and {len(result.captions)} caption(s) into "
            f"{_rel(ctx, result.folder)}")
    for old, new in result.renamed:
        ctx.out(f"renamed {old} -> {new} (the trainer skips mixed-case extensions)")
    for path, why in result.skipped:
        ctx.warn(f"left out {path}: {why}")
    _print_sync(ctx, result.sync)
    return 0


def run_check(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.dataset import check_dataset
    from orchestrator.dataset.render import render_report

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    report = check_dataset(ctx.layout, verify=args.verify, reporter=ctx.status)
    if args.fix_orientation:
        report = _fix_orientation(ctx, report, args.verify)
    if args.json:
        ctx.out_json(report.to_json(args.batch_size))
    else:
        ctx.out(render_report(report, ctx.layout.root, args.batch_size))
    errors = report.errors()
    if errors:
        details: list[str] = []
        if not args.json:
            for p in errors:
                details.append(p.render(ctx.layout.root).replace("\n    fix:", "\n    fix:"))
        raise DatasetError(f"{len(errors)} error(s) in the dataset: training would fail or skip data",
                           hint="fix them, then run `python -m orchestrator dataset check` again",
                           details=[line for d in details for line in d.split("\n")])
    return 0


def _fix_orientation(ctx: Context, report, verify: bool):
    from orchestrator.dataset import check_dataset
    from orchestrator.dataset.fix import fix_orientation

    rotated = [p.path for p in report.problems if p.code == "exif-rotated" and p.path]
    if not rotated:
        ctx.log("no EXIF-rotated photos to fix")
        return report
    fixed = fix_orientation(ctx.layout, rotated)
    for f in fixed:
        ctx.log(f"turned {_rel(ctx, f.path)} upright (original: {_rel(ctx, f.original)})")
    return check_dataset(ctx.layout, verify=verify, reporter=ctx.status)


def _rel(ctx: Context, path: Path) -> str:
    try:
        return str(path.relative_to(ctx.layout.root))
    except ValueError:
        return str(path)
