"""`comfyui up | down | status | logs`: ComfyUI in a container (or from a local checkout)."""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING, Any

from orchestrator.cli import argtypes
from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options
from orchestrator.errors import OrchestratorError
from orchestrator.gpuprobe import require_gpus
from orchestrator.progress import format_duration
from orchestrator.runtimes import REGISTRY
from orchestrator.runtimes.base import RuntimeEnv, ServerRuntime
from orchestrator.table import render_table

if TYPE_CHECKING:
    from orchestrator.comfy import serve as serve_module
    from orchestrator.comfy.serverspec import ServerOptions


def _serve() -> "serve_module":
    """The use cases, imported on first use: they load the workflow and health modules, kept off `--help`."""
    from orchestrator.comfy import serve

    return serve

HELP = "Run ComfyUI in a container with our workflows (up, down, status, logs)"
EXAMPLES = """comfyui up
comfyui up --foreground
comfyui up --workers 2
comfyui up --listen 0.0.0.0 --port 8190
comfyui up --runtime local --comfyui ~/ComfyUI
comfyui status
comfyui logs -f
comfyui down"""

UP_EPILOG = """examples:
  python -m orchestrator comfyui up                      # http://127.0.0.1:8188, all GPUs
  python -m orchestrator comfyui up --foreground         # stream the log, Ctrl+C stops it
  python -m orchestrator comfyui up --workers 2          # GPU 0 on :8188, GPU 1 on :8189
  python -m orchestrator comfyui up --gpus device=1      # only GPU 1
  python -m orchestrator comfyui up --runtime local --comfyui ~/ComfyUI --python ~/ComfyUI/.venv/bin/python

from another computer, tunnel instead of --listen 0.0.0.0 (ComfyUI has no authentication):
  ssh -N -L 8188:127.0.0.1:8188 you@gpu-box    then open http://127.0.0.1:8188 locally"""


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("up", help="start ComfyUI (builds the image the first time) and wait until it answers",
                       description="Start ComfyUI on http://127.0.0.1:8188 with the project's models, workflows, "
                                   "outputs/ and input/; build the image first when it is missing.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=UP_EPILOG)
    p.add_argument("--port", type=int, default=8188, help="host port (worker i uses PORT+i; default 8188)")
    p.add_argument("--listen", metavar="ADDR", default="127.0.0.1",
                   help="host address to publish on (default 127.0.0.1; ComfyUI has NO authentication, "
                        "so anything else exposes it to your network)")
    p.add_argument("--gpus", default="all", help="'all' (default), ids like 0,1, a count, or 'none' (CPU only)")
    p.add_argument("--workers", type=int, default=1,
                   help="one ComfyUI per GPU (worker i: GPU i or the i-th of --gpus, port PORT+i); checked against "
                        "the GPUs this host has")
    p.add_argument("--speed", choices=("standard", "fast"), default="standard",
                   help="standard: bf16 (default); fast: fp8 FLUX weights and fp8 matrix products, about 10%% "
                        "faster with a slightly different image (see the README)")
    p.add_argument("--comfy-arg", dest="comfy_args", action="append", default=[], metavar="FLAG",
                   help="advanced: one more ComfyUI main.py flag, e.g. --comfy-arg=--highvram (repeatable)")
    p.add_argument("--timeout", type=argtypes.seconds, default=300.0,
                   help="seconds to wait for ComfyUI to answer (default 300)")
    p.add_argument("--foreground", action="store_true", help="stream the logs; Ctrl+C stops and removes ComfyUI")
    p.add_argument("--recreate", action="store_true", help="restart a running ComfyUI whose settings changed")
    argtypes.add_runtime_options(p, "server", help="where ComfyUI runs: " + ", ".join(
        f"{e.name} ({e.help})" for e in REGISTRY if e.server))
    add_event_options(p)
    p.set_defaults(handler=run_up)

    p = sub.add_parser("down", help="stop and remove ComfyUI (every worker)")
    _only_runtime(p)
    p.set_defaults(handler=run_down)
    p = sub.add_parser("status", help="URL, state, GPU, queue length and uptime of each ComfyUI")
    p.add_argument("--json", action="store_true", help="print JSON")
    _only_runtime(p)
    p.set_defaults(handler=run_status)
    p = sub.add_parser("logs", help="show ComfyUI's log ([comfy] prefix)")
    _only_runtime(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines (Ctrl+C ends)")
    p.add_argument("--tail", type=argtypes.count, metavar="N", help="only the last N lines")
    p.add_argument("--worker", type=argtypes.count, metavar="I", help="only worker I (default: all)")
    p.set_defaults(handler=run_logs)


# -- up ----------------------------------------------------------------------------------------

def run_up(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy.serverspec import ServerOptions  # deferred with the use cases (see _serve)

    from orchestrator.comfy.serverspec import SPEED_FLAGS

    options = ServerOptions(listen=args.listen, port=args.port, gpus=args.gpus, workers=args.workers,
                            extra_args=SPEED_FLAGS[args.speed] + tuple(args.comfy_args))
    options.validate()
    require_gpus(options.gpus, options.workers)   # the host's count; a local runtime also checks CUDA_VISIBLE_DEVICES
    if options.exposed:
        _warn_exposed(ctx, options)
    up = _serve().UpOptions(server=options, runtime=args.runtime, settings=argtypes.runtime_settings(args, "server"),
                         timeout=args.timeout, recreate=args.recreate)
    outcome = _serve().up(_env(ctx), up)
    for path in outcome.workflows_written:
        ctx.log(f"wrote {path.relative_to(ctx.layout.root)} (one of our workflows)")
    result = outcome.result
    for s in result.servers:
        note = "started" if s.worker in result.started else "already running"
        ctx.log(f"ComfyUI worker {s.worker} ({s.runtime}, {s.name}) {note}: {s.url} (GPU {s.gpu})")
    for url in result.urls:
        ctx.out(url)
    if result.started and not args.foreground:
        ctx.log("open the URL in a browser; the Workflows sidebar (key w) lists workflows/. "
                "`comfyui down` stops it.")
    if not args.foreground:
        return 0
    return _foreground(ctx, outcome.runtime, len(result.servers))


def _foreground(ctx: Context, runtime: ServerRuntime, count: int) -> int:
    """Stream the log until the servers stop (an error: they stopped by themselves) or Ctrl+C (stop them)."""
    ctx.log("streaming the log; Ctrl+C stops ComfyUI" + (" (every worker)" if count > 1 else ""))
    try:
        for line in runtime.logs(follow=True):
            ctx.log(f"{_prefix(line.worker, count)} {line.text}")
    except KeyboardInterrupt:
        ctx.log("stopping ComfyUI ...")
        runtime.down()
        raise
    gone = runtime.down()
    codes = ", ".join(f"worker {s.worker}: exit code {s.exit_code}" for s in gone if s.exit_code is not None)
    raise OrchestratorError(f"ComfyUI stopped by itself{f' ({codes})' if codes else ''}",
                            hint="the log above says why; `comfyui up` starts it again")


def _warn_exposed(ctx: Context, options: ServerOptions) -> None:
    ctx.warn(f"ComfyUI has NO authentication. Publishing it on {options.listen}:{options.port} lets anyone who "
             "can reach this machine run workflows, read your outputs and upload files.")
    ctx.warn("prefer the default (127.0.0.1) and an SSH tunnel from your laptop: "
             f"ssh -N -L {options.port}:127.0.0.1:{options.port} you@this-machine")


def _prefix(index: int, count: int) -> str:
    return "[comfy]" if count <= 1 else f"[comfy:{index}]"


def _env(ctx: Context) -> RuntimeEnv:
    return RuntimeEnv(ctx.layout, reporter=ctx.status, verbose=ctx.verbose)


# -- down / status / logs ----------------------------------------------------------------------

def _only_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=[e.name for e in REGISTRY if e.server], default=None,
                   help="only the servers of this runtime (default: every runtime)")


def _runtimes(args: argparse.Namespace, ctx: Context) -> Any:
    """The one runtime --runtime names (default settings: it finds its servers itself), or None for all."""
    if args.runtime is None:
        return None
    from orchestrator.runtimes import server_runtime

    return [server_runtime(args.runtime, _env(ctx))]


def run_down(args: argparse.Namespace, ctx: Context) -> int:
    gone = _serve().down(_env(ctx), runtimes=_runtimes(args, ctx))
    for s in gone:
        ctx.out(f"stopped {s.runtime} ComfyUI {s.name} ({s.url})")
    if not gone:
        ctx.log("ComfyUI was not running")
    return 0


def run_status(args: argparse.Namespace, ctx: Context) -> int:
    rows = _serve().status(_env(ctx), runtimes=_runtimes(args, ctx))
    if args.json:
        ctx.out_json([r.as_dict() for r in rows])
        return 0
    if not rows:
        ctx.out("ComfyUI is not running (start it with `comfyui up`)")
        return 0
    table = []
    for r in rows:
        i = r.info
        state = i.state if i.state != "exited" else f"exited ({i.exit_code})"
        if i.state == "running" and not r.responding:
            state = "running, not answering"
        queue = "-" if r.queue_running is None else f"{r.queue_running} running, {r.queue_pending} pending"
        gpu = ", ".join(r.devices) or ("CPU" if i.gpu == "none" else f"GPU {i.gpu}")
        table.append([str(i.worker), i.url, state, gpu, queue, format_duration(i.uptime_s), i.runtime, i.name])
    ctx.out(render_table(["WORKER", "URL", "STATE", "DEVICE", "QUEUE", "UPTIME", "RUNTIME", "NAME"], table))
    return 0


def run_logs(args: argparse.Namespace, ctx: Context) -> int:
    found = _serve().logs(_env(ctx), follow=args.follow, tail=args.tail, worker=args.worker,
                          runtimes=_runtimes(args, ctx))
    try:
        for line in found.lines:
            ctx.out(f"{_prefix(line.worker, found.servers)} {line.text}")
    except KeyboardInterrupt:
        return 0
    return 0
