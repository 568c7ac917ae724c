"""`workflow convert | check`: turn a browser-saved workflow into the API prompt, or check it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Context
from orchestrator.errors import ConfigError, UsageError
from orchestrator.layout import atomic_write_text

if TYPE_CHECKING:
    from orchestrator.comfy.convert import CheckReport, Converted, InitResult

HELP = 'Convert a browser-saved workflow to an API prompt, or check it against a server'
EXAMPLES = ('workflow convert workflows/finetuned_flux.json\n'
            'workflow init\n'
            'workflow check workflows/base_flux.json\n'
            'workflow convert base_flux.json --set Prompt.text="a red fox" --out prompt.json\n'
            'workflow check finetuned_flux.json --server http://127.0.0.1:8188')


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser), required=True)
    conv = sub.add_parser("convert", help="print the API prompt the browser would queue for FILE",
                          description="Print the API prompt the browser would queue for FILE (UI or API "
                          "format, or a PNG saved by ComfyUI). Node schemas come from --server, else from "
                          "the schema shipped for our workflows' nodes.")
    chk = sub.add_parser("check", help="list every problem the server would report for FILE",
                         description="Convert FILE and list every problem the server would report (unknown "
                         "nodes, missing inputs, bad links, values out of range or not in a list, model files "
                         "the server does not have). Exit code 2 when there are problems.")
    for p in (conv, chk):
        p.add_argument("file", metavar="FILE", help="workflow file (also looked up in the project's workflows/)")
        p.add_argument("--server", metavar="URL", help="a running ComfyUI: use its node schemas and model lists")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                       help="change one input first (node id, title or type); repeatable")
    conv.add_argument("--out", metavar="FILE", help="write the prompt to FILE instead of printing it")
    init = sub.add_parser("init", help="write our two workflows into the project's workflows/ folder",
                          description="Write base_flux.json and finetuned_flux.json into the project's "
                          "workflows/ folder when they are missing (--force: overwrite, losing your edits).")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(creates_project=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    # deferred: the workflow modules cost ~30 ms, kept off every `--help` (bench/cli_startup.py)
    from orchestrator.comfy import convert

    if args.action == "init":
        return _init(convert.init_workflows(ctx.layout, force=args.force), ctx)
    if getattr(args, "out", None) and Path(args.out).expanduser().is_dir():
        raise UsageError(f"--out {args.out} is a folder; give the file to write, e.g. --out {Path(args.out) / 'prompt.json'}")
    options = convert.ConvertOptions(args.file, sets=tuple(args.sets), server=args.server)
    client = _server_client(args.server) if args.server else None
    try:
        if args.action == "convert":
            return _convert(args, ctx, convert.convert(ctx.layout, options, client))
        return _check(args, ctx, convert.check(ctx.layout, options, client))
    finally:
        if client is not None:
            client.close()


def _server_client(url: str) -> Any:
    from orchestrator.comfy.client import ComfyClient, normalize_url  # deferred: requests, a seam (~80 ms)

    return ComfyClient(normalize_url(url))


def _shipped_note(ctx: Context, file: str, converted: Converted) -> None:
    if converted.shipped:   # as generate does: our workflow when the project has no copy yet
        ctx.log(f"{file}: not in {ctx.layout.workflows}: using the shipped one (`workflow init` writes it there)")


def _init(result: InitResult, ctx: Context) -> int:
    for path in result.written:
        ctx.out(str(path))
    if result.kept:
        ctx.log(f"kept your {', '.join(result.kept)} in {ctx.layout.workflows} (--force overwrites)")
    return 0


def _convert(args: argparse.Namespace, ctx: Context, converted: Converted) -> int:
    _shipped_note(ctx, args.file, converted)
    text = json.dumps(converted.prompt, indent=2, ensure_ascii=False)
    if not args.out:
        ctx.out(text)
        return 0
    out = Path(args.out).expanduser()
    atomic_write_text(out, text + "\n")
    ctx.log(f"wrote the API prompt of {converted.workflow.path or args.file} ({len(converted.prompt)} nodes)")
    ctx.out(str(out))
    return 0


def _check(args: argparse.Namespace, ctx: Context, report: CheckReport) -> int:
    c = report.converted
    _shipped_note(ctx, args.file, c)
    name = c.workflow.path or args.file
    if report.missing_locally:
        ctx.warn(f"not in {ctx.layout.models} yet: " + ", ".join(report.missing_locally)
                 + " (`download` fetches the base models; LoRAs come from `train`)")
    if report.problems:
        n = len(report.problems)
        raise ConfigError(f"{name}: {n} problem{'s' if n != 1 else ''} (checked against {c.source})",
                          details=list(report.problems),
                          hint="fix them in the browser or the file, or override values with --set NODE.INPUT=VALUE")
    ctx.out(f"ok: {name} ({c.workflow.kind} format) converts to a valid prompt of {len(c.prompt)} nodes "
            f"(checked against {c.source})")
    if args.server is None:
        ctx.log("model files were not checked against a server; add --server URL to do so")
    return 0
