"""`workflow convert | check`: turn a browser-saved workflow into the API prompt, or check it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orchestrator.cli.context import Context
from orchestrator.errors import ConfigError, UsageError

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


def resolve_workflow_path(value: str, workflows_dir: Path) -> Path:
    """FILE as given, else the same name in the project's workflows/ folder (with or without .json)."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    for candidate in (workflows_dir / value, workflows_dir / f"{value}.json"):
        if candidate.exists():
            return candidate
    return path


def _shipped(value: str) -> dict[str, Any] | None:
    """Our workflow document for `base_flux(.json)` / `workflows/finetuned_flux.json` style names, else None."""
    from orchestrator.comfy.builtin import builtin_workflows

    given = Path(value)
    name = given.name if given.name.endswith(".json") else f"{given.name}.json"
    if str(given.parent) not in (".", "workflows"):
        return None
    return builtin_workflows().get(name)


def _server_client(url: str) -> Any:
    from orchestrator.comfy.client import ComfyClient, normalize_url

    return ComfyClient(normalize_url(url))


def _load(args: argparse.Namespace, ctx: Context, client: Any) -> tuple[Any, dict[str, Any], Any]:
    from orchestrator.comfy.patch import PromptParams, parse_set, patch_prompt
    from orchestrator.comfy.schema import load_builtin_schema, schemas_from_object_info
    from orchestrator.comfy.workflow import load_workflow, to_api_prompt

    path = resolve_workflow_path(args.file, ctx.layout.workflows)
    shipped = _shipped(args.file) if not path.exists() else None
    if shipped is not None:   # as generate does: our workflow when the project has no copy yet
        ctx.log(f"{args.file}: not in {ctx.layout.workflows}: using the shipped one (`workflow init` writes it there)")
        wf = load_workflow(shipped)
    else:
        wf = load_workflow(path)
    if client is not None:
        schema = schemas_from_object_info(client.object_info(), source=args.server)
    else:
        schema = load_builtin_schema()
    prompt = to_api_prompt(wf, schema)
    if args.sets:
        prompt = patch_prompt(prompt, PromptParams(sets=tuple(parse_set(s) for s in args.sets)))
    return wf, prompt, schema


def _model_problems(prompt: dict[str, Any], client: Any, problems: list[str]) -> list[str]:
    """Model files the server does not list (unless validation already said so)."""
    from orchestrator.comfy.patch import required_models

    found = []
    for folder, names in required_models(prompt).items():
        if not names:
            continue
        available = list(client.models(folder))
        for name in names:
            if name not in available and not any(f"{name!r} not in list" in p for p in problems):
                shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "") or "none"
                found.append(f"{folder}: {name!r} not found on the server; available: {shown}")
    return found


def _missing_local_models(prompt: dict[str, Any], ctx: Context) -> list[str]:
    from orchestrator.comfy.patch import required_models

    return [f"{folder}/{name}" for folder, names in required_models(prompt).items() for name in names
            if not (ctx.layout.models / folder / name).exists()]


def _init(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy.builtin import FILES, ensure_builtin_workflows

    written = ensure_builtin_workflows(ctx.layout.workflows, force=args.force)
    for path in written:
        ctx.out(str(path))
    kept = [name for name in FILES.values() if ctx.layout.workflows / name not in written]
    if kept:
        ctx.log(f"kept your {', '.join(kept)} in {ctx.layout.workflows} (--force overwrites)")
    return 0


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.action == "init":
        return _init(args, ctx)
    if getattr(args, "out", None) and Path(args.out).expanduser().is_dir():
        raise UsageError(f"--out {args.out} is a folder; give the file to write, e.g. --out {Path(args.out) / 'prompt.json'}")
    client = _server_client(args.server) if args.server else None
    try:
        return _convert_or_check(args, ctx, client)
    finally:
        if client is not None:
            client.close()


def _convert_or_check(args: argparse.Namespace, ctx: Context, client: Any) -> int:
    import json

    from orchestrator.comfy.validate import validate_prompt
    from orchestrator.layout import atomic_write_text

    wf, prompt, schema = _load(args, ctx, client)
    if args.action == "convert":
        text = json.dumps(prompt, indent=2, ensure_ascii=False)
        if args.out:
            out = Path(args.out).expanduser()
            atomic_write_text(out, text + "\n")
            ctx.log(f"wrote the API prompt of {wf.path or args.file} ({len(prompt)} nodes)")
            ctx.out(str(out))
        else:
            ctx.out(text)
        return 0

    problems = validate_prompt(prompt, schema)
    if client is not None:
        problems += _model_problems(prompt, client, problems)
    elif missing := _missing_local_models(prompt, ctx):
        ctx.warn(f"not in {ctx.layout.models} yet: " + ", ".join(missing)
                 + " (`download` fetches the base models; LoRAs come from `train`)")
    where = f"the server at {args.server}" if client is not None else "the shipped schema, offline"
    if problems:
        raise ConfigError(f"{wf.path or args.file}: {len(problems)} problem{'s' if len(problems) != 1 else ''} "
                          f"(checked against {where})", details=problems,
                          hint="fix them in the browser or the file, or override values with --set NODE.INPUT=VALUE")
    ctx.out(f"ok: {wf.path or args.file} ({wf.kind} format) converts to a valid prompt of {len(prompt)} nodes "
            f"(checked against {where})")
    if client is None:
        ctx.log("model files were not checked against a server; add --server URL to do so")
    return 0
