"""`comfyui up | down | status | logs`: ComfyUI in a container (or from a local checkout)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orchestrator.cli import argtypes
from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options
from orchestrator.progress import Event
from orchestrator.errors import OrchestratorError, UsageError

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
    p.add_argument("--workers", type=int, default=1, help="one ComfyUI per GPU, on ports PORT, PORT+1, ...")
    p.add_argument("--timeout", type=argtypes.seconds, default=300.0,
                   help="seconds to wait for ComfyUI to answer (default 300)")
    p.add_argument("--foreground", action="store_true", help="stream the logs; Ctrl+C stops and removes ComfyUI")
    p.add_argument("--recreate", action="store_true", help="restart a running ComfyUI whose settings changed")
    p.add_argument("--rebuild", action="store_true", help="rebuild the image even if it exists")
    p.add_argument("--no-build", action="store_true", help="fail instead of building a missing image")
    p.add_argument("--image", metavar="TAG", help="advanced: use a pre-built image instead of ours")
    p.add_argument("--runtime", choices=("docker", "local"), default="docker",
                   help="docker (default) or local: run main.py from a ComfyUI checkout (--comfyui)")
    p.add_argument("--comfyui", metavar="DIR", help="ComfyUI checkout for --runtime local")
    p.add_argument("--python", metavar="PY", help="Python interpreter for --runtime local (default: this one)")
    add_event_options(p)
    p.set_defaults(handler=run_up)

    p = sub.add_parser("down", help="stop and remove ComfyUI (every worker)")
    p.set_defaults(handler=run_down)
    p = sub.add_parser("status", help="URL, state, GPU, queue length and uptime of each ComfyUI")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run_status)
    p = sub.add_parser("logs", help="show ComfyUI's log ([comfy] prefix)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines (Ctrl+C ends)")
    p.add_argument("--tail", type=argtypes.count, metavar="N", help="only the last N lines")
    p.add_argument("--worker", type=argtypes.count, metavar="I", help="only worker I (default: all)")
    p.set_defaults(handler=run_logs)


# -- up ----------------------------------------------------------------------------------------

def run_up(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy.serverspec import ServerOptions

    options = ServerOptions(listen=args.listen, port=args.port, gpus=args.gpus, workers=args.workers)
    options.validate()
    if options.exposed:
        _warn_exposed(ctx, options)
    _ensure_workflows(ctx)
    if args.runtime == "local":
        return _up_local(args, ctx, options)
    if args.comfyui or args.python:
        raise UsageError("--comfyui and --python need --runtime local")
    from orchestrator.comfy import server
    from orchestrator.engine import connect

    engine = connect()
    result = server.up(engine, ctx.layout, options, image=args.image, build=not args.no_build,
                       rebuild=args.rebuild, recreate=args.recreate, timeout=args.timeout,
                       reporter=ctx.status, on_build_line=_build_printer(ctx))
    for s in result.servers:
        note = "started" if s.index in result.started else "already running"
        ctx.log(f"ComfyUI worker {s.index} {note}: {s.url} (GPU {s.gpu})")
    for url in result.urls:
        ctx.out(url)
    if result.started and not args.foreground:
        ctx.log("open the URL in a browser; the Workflows sidebar (key w) lists workflows/. "
                "`comfyui down` stops it.")
    if not args.foreground:
        return 0
    ctx.log("streaming the log; Ctrl+C stops ComfyUI")
    try:
        for index, line in server.log_lines(engine, ctx.layout, follow=True):
            ctx.log(f"{_prefix(index, len(result.servers))} {line}")
    except KeyboardInterrupt:
        ctx.log("stopping ComfyUI ...")
        server.down(engine, ctx.layout)
        raise
    gone = server.down(engine, ctx.layout)
    codes = ", ".join(f"worker {s.index}: exit code {s.exit_code}" for s in gone)
    raise OrchestratorError(f"ComfyUI stopped by itself ({codes or 'no container left'})",
                            hint="the log above says why; `comfyui up` starts it again")


def _up_local(args: argparse.Namespace, ctx: Context, options: Any) -> int:
    from orchestrator.comfy import localserver

    if not args.comfyui:
        raise UsageError("--runtime local needs --comfyui DIR (your ComfyUI checkout)",
                         hint="e.g. `comfyui up --runtime local --comfyui ~/ComfyUI --python ~/ComfyUI/venv/bin/python`")
    if args.image or args.rebuild or args.no_build or args.recreate:
        raise UsageError("--image, --rebuild, --no-build and --recreate apply to the docker runtime only")
    srv, started = localserver.up(ctx.layout, options, Path(args.comfyui), python=args.python,
                                  timeout=args.timeout, reporter=ctx.status)
    ctx.log(f"ComfyUI (local, pid {srv.pid}) {'started' if started else 'already running'}: {srv.url}")
    ctx.out(srv.url)
    if not args.foreground:
        return 0
    ctx.log("streaming the log; Ctrl+C stops ComfyUI")
    try:
        for line in localserver.log_lines(ctx.layout, follow=True):
            ctx.log(f"[comfy] {line}")
    except KeyboardInterrupt:
        ctx.log("stopping ComfyUI ...")
        localserver.down(ctx.layout)
        raise
    localserver.down(ctx.layout)
    raise OrchestratorError("ComfyUI stopped by itself", hint="the log above says why")


def _ensure_workflows(ctx: Context) -> None:
    """Put our two workflows into workflows/ when missing, so the browser's sidebar lists them."""
    try:
        from orchestrator.comfy.builtin import ensure_builtin_workflows
    except ImportError:  # the workflow package is not part of this checkout
        return
    for path in ensure_builtin_workflows(ctx.layout.workflows):
        ctx.log(f"wrote {path.relative_to(ctx.layout.root)} (one of our workflows)")


def _warn_exposed(ctx: Context, options: Any) -> None:
    ctx.warn(f"ComfyUI has NO authentication. Publishing it on {options.listen}:{options.port} lets anyone who "
             "can reach this machine run workflows, read your outputs and upload files.")
    ctx.warn("prefer the default (127.0.0.1) and an SSH tunnel from your laptop: "
             f"ssh -N -L {options.port}:127.0.0.1:{options.port} you@this-machine")


def _build_printer(ctx: Context) -> Any:
    state = {"step": ""}

    def on_line(line: Any) -> None:
        if line.step is not None:
            state["step"] = f"step {line.step}/{line.total}"
            ctx.status.emit(Event("server", "build", f"[build] {line.text[:160]}", step=line.step, total=line.total))
        elif ctx.verbose:
            ctx.log(f"[build] {line.text}", phase="build")
        else:
            ctx.status.emit(Event("server", "build", f"building the ComfyUI image ({state['step'] or 'starting'}): "
                                  f"{line.text[:100]}", live=True))

    return on_line


def _prefix(index: int, count: int) -> str:
    return "[comfy]" if count <= 1 else f"[comfy:{index}]"


# -- down / status / logs ----------------------------------------------------------------------

def run_down(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy import localserver, server

    local = localserver.down(ctx.layout)
    if local is not None:
        ctx.out(f"stopped local ComfyUI (pid {local.pid}, {local.url})")
    engine = _engine(optional=local is not None)
    gone = server.down(engine, ctx.layout) if engine is not None else []
    for s in gone:
        ctx.out(f"stopped and removed {s.name} ({s.url})")
    if not gone and local is None:
        ctx.log("ComfyUI was not running")
    return 0


def run_status(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy import health, localserver
    from orchestrator.progress import format_duration

    rows: list[dict[str, Any]] = []
    local = localserver.running(ctx.layout)
    if local is not None:
        rows.append({"worker": 0, "runtime": "local", "name": f"pid {local.pid}", "url": local.url,
                     "state": "running", "gpu": "?", "uptime_s": local.uptime()})
    from orchestrator.comfy import server

    engine = _engine(optional=local is not None)
    for s in server.status(engine, ctx.layout) if engine is not None else []:
        rows.append({"worker": s.index, "runtime": "docker", "name": s.name, "url": s.url, "state": s.state,
                     "gpu": s.gpu, "uptime_s": s.uptime(), "exit_code": s.exit_code})
    for row in rows:
        row.update(responding=False, devices=[], queue_running=None, queue_pending=None)
        if row["state"] != "running":
            continue
        try:
            row["devices"] = health.device_names(health.system_stats(row["url"]))
            row["queue_running"], row["queue_pending"] = health.queue_length(row["url"])
            row["responding"] = True
        except health.NotReady:
            pass
    if args.json:
        ctx.out_json(rows)
        return 0
    if not rows:
        ctx.out("ComfyUI is not running (start it with `comfyui up`)")
        return 0
    from orchestrator.cli.table import render_table

    table = []
    for r in rows:
        state = r["state"] if r["state"] != "exited" else f"exited ({r.get('exit_code')})"
        if r["state"] == "running" and not r["responding"]:
            state = "running, not answering"
        queue = "-" if r["queue_running"] is None else f"{r['queue_running']} running, {r['queue_pending']} pending"
        gpu = ", ".join(r["devices"]) or ("CPU" if r["gpu"] == "none" else f"GPU {r['gpu']}")
        table.append([str(r["worker"]), r["url"], state, gpu, queue, format_duration(r["uptime_s"]), r["runtime"]])
    ctx.out(render_table(["WORKER", "URL", "STATE", "DEVICE", "QUEUE", "UPTIME", "RUNTIME"], table))
    return 0


def run_logs(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.comfy import localserver, server

    local_log = localserver.log_file(ctx.layout).exists()
    engine = _engine(optional=local_log)
    count = len(server.containers(engine, ctx.layout)) if engine is not None else 0
    try:
        if count and localserver.running(ctx.layout) is None:
            tail: int | str = args.tail if args.tail is not None else "all"
            for index, line in server.log_lines(engine, ctx.layout, follow=args.follow, tail=tail,
                                                worker=args.worker):
                ctx.out(f"{_prefix(index, count)} {line}")
        elif local_log:
            lines = localserver.log_lines(ctx.layout, follow=args.follow)
            if args.tail is not None and not args.follow:
                lines = iter(list(lines)[-args.tail:] if args.tail else [])
            for line in lines:
                ctx.out(f"[comfy] {line}")
        else:
            raise OrchestratorError("ComfyUI has not run in this project (no container, no local log)",
                                    hint="start it with `comfyui up`")
    except KeyboardInterrupt:
        return 0
    return 0


def _engine(optional: bool) -> Any:
    """The Docker engine; None when it is unreachable and `optional` (a local server was handled)."""
    from orchestrator.engine import connect
    from orchestrator.errors import DockerUnavailable

    try:
        return connect()
    except DockerUnavailable:
        if optional:
            return None
        raise
