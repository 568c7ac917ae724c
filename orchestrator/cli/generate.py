"""`generate "prompt"`: make images headlessly through ComfyUI's API; prints the saved paths."""

from __future__ import annotations

import argparse
import os
import re
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


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt text")
    parser.add_argument("--lora", metavar="NAME|none",
                        help="a LoRA file in models/loras (uses workflows/finetuned_flux.json); "
                             "default none (workflows/base_flux.json)")
    parser.add_argument("--strength", type=argtypes.finite_float, metavar="S", help="LoRA strength for model and CLIP (default 1.0)")
    parser.add_argument("--seed", metavar="N|random", default="random",
                        help="seed of the first image (the next ones count up); default random")
    parser.add_argument("--steps", type=int, metavar="N", help="sampling steps (workflow default: 28)")
    parser.add_argument("--size", metavar="WxH", help="image size, multiples of 16 (default 1024x1024)")
    parser.add_argument("--guidance", type=argtypes.finite_float, metavar="G", help="FLUX guidance (default 3.5)")
    parser.add_argument("--sampler", metavar="S", help="sampler name (default dpmpp_2m)")
    parser.add_argument("--scheduler", metavar="S", help="scheduler name (default sgm_uniform)")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="how many images (default 1)")
    parser.add_argument("--workflow", metavar="FILE", help="another workflow (UI or API format, or a ComfyUI PNG)")
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


def parse_size(value: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768); UsageError unless both are positive multiples of 16."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not m:
        raise UsageError(f"--size {value!r}: expected WIDTHxHEIGHT, e.g. 1024x1024")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 64 or h < 64 or w % 16 or h % 16 or w > 4096 or h > 4096:
        raise UsageError(f"--size {value}: width and height must be multiples of 16 between 64 and 4096",
                         hint="FLUX works on 16-pixel patches; e.g. 1024x1024, 1152x896, 896x1152")
    return w, h


def parse_seed(value: str) -> int | None:
    """'random' -> None; a non-negative integer otherwise."""
    if value.strip().lower() == "random":
        return None
    try:
        seed = int(value)
    except ValueError:
        raise UsageError(f"--seed {value!r}: expected a whole number or 'random'") from None
    if seed < 0 or seed >= 2**64:
        raise UsageError(f"--seed {value}: must be between 0 and 2^64-1")
    return seed


def build_request(args: argparse.Namespace, ctx: Context) -> Any:
    """The GenerateRequest of the command line (UsageError for bad values)."""
    from orchestrator.comfy.patch import parse_set
    from orchestrator.generate import GenerateRequest

    if not args.prompt.strip():
        raise UsageError("the prompt is empty", hint='e.g. generate "a tjtoy toy on a desk"')
    if args.count < 1 or args.count > 1000:
        raise UsageError(f"--count {args.count}: must be between 1 and 1000")
    if args.steps is not None and not 1 <= args.steps <= 10000:
        raise UsageError(f"--steps {args.steps}: must be between 1 and 10000")
    if args.lora is not None and not args.lora.strip():
        raise UsageError("--lora is empty: give a LoRA file in models/loras, or none",
                         hint="e.g. --lora flux_dreambooth.safetensors")
    lora = None if args.lora is None or args.lora.strip().lower() == "none" else args.lora.strip()
    if lora and not Path(lora).suffix:
        lora += ".safetensors"
    if args.strength is not None and lora is None and args.workflow is None:
        raise UsageError("--strength needs --lora NAME", hint="e.g. --lora flux_dreambooth.safetensors --strength 0.8")
    size = parse_size(args.size) if args.size else (None, None)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and not out.is_absolute():
        out = Path.cwd() / out
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    workflow = Path(args.workflow).expanduser() if args.workflow else None
    seed = parse_seed(args.seed)
    if seed is not None and seed + args.count - 1 >= 2**64:
        raise UsageError(f"--seed {seed} --count {args.count}: the images use seeds {seed}..{seed + args.count - 1}, "
                         "past the largest seed 2^64-1", hint=f"use --seed {2**64 - args.count} or lower")
    req = GenerateRequest(prompt=args.prompt, lora=lora, strength=args.strength, seed=seed,
                          steps=args.steps, width=size[0], height=size[1], guidance=args.guidance,
                          sampler=args.sampler, scheduler=args.scheduler, count=args.count, workflow=workflow,
                          sets=tuple(parse_set(s) for s in args.sets), out_dir=out)
    if workflow is not None:
        from orchestrator.generate import choose_workflow

        choose_workflow(req, ctx.layout)   # a missing or broken --workflow file is named before a server is asked
    return req


def _start_server(url: str, ctx: Context) -> str:
    """`comfyui up` on the port of `url`; returns the URL of the started server."""
    from urllib.parse import urlsplit

    from orchestrator.comfy import server
    from orchestrator.comfy.serverspec import ServerOptions
    from orchestrator.engine import connect

    port = urlsplit(url).port or 8188
    ctx.log(f"no ComfyUI at {url}: starting one (`comfyui up --port {port}`)")
    result = server.up(connect(), ctx.layout, ServerOptions(port=port), reporter=ctx.status)
    return result.urls[0]


def _discover(ctx: Context) -> str | None:
    """The URL of this project's running ComfyUI container (started on another port), if any."""
    from orchestrator.comfy.server import discover_servers
    from orchestrator.engine import connect
    from orchestrator.errors import OrchestratorError

    try:
        urls = discover_servers(connect(), ctx.layout)
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
