"""`generate "prompt"`: make images headlessly through ComfyUI's API; prints the saved paths."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from orchestrator.cli import argtypes
from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options
from orchestrator.errors import UsageError

HELP = "Generate images headlessly through ComfyUI's API"
EXAMPLES = ('generate "a tjtoy toy on a desk" --lora flux_dreambooth.safetensors --count 4\n'
            'generate "a red fox in the snow" --seed 42 --steps 20 --size 1152x896\n'
            'generate "a tjtoy toy" --lora flux_dreambooth --strength 0.8 --seed random --out shots/\n'
            'generate "a castle" --workflow my_graph.json --set "KSampler.cfg=4.5" --server http://gpu-box:8188')
DEFAULT_SERVER = "http://127.0.0.1:8188"


# generate's options that are knobs, in --help order (their rules and help: orchestrator.comfy.knobs)
KNOB_OPTIONS = ("lora", "strength", "strength_clip", "seed", "steps", "size", "guidance", "sampler", "scheduler",
                "count")


def register(parser: argparse.ArgumentParser) -> None:
    from orchestrator.comfy.knobs import KNOBS

    parser.add_argument("prompt", help=KNOBS["prompt"].help)
    for name in KNOB_OPTIONS:
        knob = KNOBS[name]
        flag = "--" + name.replace("_", "-")
        if name == "seed":
            parser.add_argument(flag, metavar="N|random", default="random",
                                help="seed of the first image (the next ones count up); default random")
        elif name == "lora":
            parser.add_argument(flag, metavar=knob.metavar, help=knob.help + " (uses workflows/finetuned_flux.json; "
                                "default none: workflows/base_flux.json)")
        else:
            parser.add_argument(flag, dest=name, metavar=knob.metavar, help=knob.help)
    parser.add_argument("--workflow", metavar="FILE", help="another workflow: a path, a name in workflows/, "
                        "base_flux or finetuned_flux (UI or API format, or a ComfyUI PNG)")
    parser.add_argument("--server", metavar="URL",
                        help=f"ComfyUI server (default $COMFYUI_URL, else this project's running ComfyUI, "
                             f"else {DEFAULT_SERVER})")
    parser.add_argument("--out", metavar="DIR", help="folder for the images (default outputs/<date>/)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="change any input (node id, title or type); repeatable")
    parser.add_argument("--timeout", type=argtypes.seconds, default=30.0, metavar="SECONDS",
                        help="give up on a server that does not answer within SECONDS (default 30)")
    parser.add_argument("--up", action="store_true", help="start ComfyUI (`comfyui up`) when none is running")
    add_event_options(parser)
    parser.set_defaults(handler=run)


def knob_value(args: argparse.Namespace, name: str) -> Any:
    """The parsed value of option --NAME (None when not given); UsageError with the knob's rule otherwise."""
    from orchestrator.comfy.knobs import KNOBS, KnobError

    raw = getattr(args, name)
    if raw is None:
        return None
    try:
        return KNOBS[name].parse(raw)
    except KnobError as e:
        raise UsageError(f"--{name.replace('_', '-')}: {e.problem}") from None


def parse_seed(value: str) -> int | None:
    """'random' -> None; a seed otherwise (the seed knob's rule)."""
    from orchestrator.comfy.knobs import KNOBS, KnobError

    if value.strip().lower() == "random":
        return None
    try:
        return KNOBS["seed"].parse(value)
    except KnobError as e:
        raise UsageError(f"--seed: {e.problem} or 'random'") from None


def build_request(args: argparse.Namespace, ctx: Context) -> Any:
    """The GenerateRequest of the command line (UsageError for bad values)."""
    from orchestrator.comfy.knobs import KNOBS, NEEDS_LORA, KnobError
    from orchestrator.comfy.patch import parse_set
    from orchestrator.generate import GenerateRequest

    try:
        prompt = KNOBS["prompt"].parse(args.prompt)
    except KnobError as e:
        raise UsageError(f"the prompt: {e.problem}", hint='e.g. generate "a tjtoy toy on a desk"') from None
    values = {name: knob_value(args, name) for name in KNOB_OPTIONS if name != "seed"}
    count = values["count"] if values["count"] is not None else 1
    lora = values["lora"]
    for name in ("strength", "strength_clip"):
        if values[name] is not None and lora is None and args.workflow is None:
            raise UsageError(f"--{name.replace('_', '-')}: {NEEDS_LORA}",
                             hint="e.g. --lora flux_dreambooth --strength 0.8")
    size = values["size"] or (None, None)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and not out.is_absolute():
        out = Path.cwd() / out
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    workflow = Path(args.workflow).expanduser() if args.workflow else None
    seed = parse_seed(args.seed)
    if seed is not None and seed + count - 1 >= 2**64:
        raise UsageError(f"--seed {seed} --count {count}: the images use seeds {seed}..{seed + count - 1}, "
                         "past the largest seed 2^64-1", hint=f"use --seed {2**64 - count} or lower")
    req = GenerateRequest(prompt=prompt, lora=lora, strength=values["strength"], seed=seed,
                          steps=values["steps"], width=size[0], height=size[1], guidance=values["guidance"],
                          sampler=values["sampler"], scheduler=values["scheduler"], count=count, workflow=workflow,
                          sets=tuple(parse_set(s) for s in args.sets), out_dir=out,
                          strength_clip=values["strength_clip"])
    if workflow is not None:
        from orchestrator.generate import choose_workflow

        choose_workflow(req, ctx.layout)   # a missing or broken --workflow file is named before a server is asked
    return req


def _start_server(url: str, ctx: Context) -> str:
    """`comfyui up` on the port of `url`; returns the URL of the started server."""
    from urllib.parse import urlsplit

    from orchestrator.comfy import serve
    from orchestrator.comfy.serverspec import ServerOptions
    from orchestrator.runtimes import RuntimeEnv

    port = urlsplit(url).port or 8188
    ctx.log(f"no ComfyUI at {url}: starting one (`comfyui up --port {port}`)")
    outcome = serve.up(RuntimeEnv(ctx.layout, reporter=ctx.status), serve.UpOptions(ServerOptions(port=port)))
    return outcome.result.urls[0]


def _discover(ctx: Context) -> str | None:
    """The URL of this project's running ComfyUI container (started on another port), if any."""
    from orchestrator.comfy import serve
    from orchestrator.errors import OrchestratorError
    from orchestrator.runtimes import RuntimeEnv

    try:
        urls = serve.endpoints(RuntimeEnv(ctx.layout))
    except OrchestratorError:
        return None
    return urls[0] if urls else None


def run(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy.client import ComfyClient, normalize_url
    from orchestrator.errors import ComfyUnavailable
    from orchestrator.generate import generate

    req = build_request(args, ctx)
    source = "--server" if args.server else "$COMFYUI_URL"
    url = normalize_url(args.server or os.environ.get("COMFYUI_URL") or DEFAULT_SERVER, source)
    client = ComfyClient(url, timeout=args.timeout)
    # no --server / $COMFYUI_URL: this project's running ComfyUI comes before whatever holds port 8188
    found = None if args.server or os.environ.get("COMFYUI_URL") else _discover(ctx)
    if found and found != url:
        ctx.log(f"using this project's ComfyUI at {found}")
        client.close()
        url, client = found, ComfyClient(found, timeout=args.timeout)
    try:
        try:
            client.system_stats()
        except ComfyUnavailable as e:
            if found:
                raise ComfyUnavailable(e.message, hint="this project's ComfyUI container runs but does not answer "
                                       "(still starting?): see `python -m orchestrator comfyui logs`",
                                       details=e.details) from None
            if not args.up:
                raise ComfyUnavailable(e.message, hint="start one with `python -m orchestrator comfyui up` "
                                       "(or add --up here), or pass --server URL of a running one",
                                       details=e.details) from None
            else:
                client.close()
                url = _start_server(url, ctx)
                client = ComfyClient(url, timeout=args.timeout)
        images = generate(req, ctx.layout, client, ctx.status)
    finally:
        client.close()
    for image in images:
        ctx.out(str(image.path))
    return 0
