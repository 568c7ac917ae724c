"""`batch plan | run`: a YAML job file of prompts x seeds x LoRAs x strengths on one or many ComfyUI servers."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from orchestrator.cli import argtypes
from orchestrator.cli.context import Context
from orchestrator.cli.render import add_event_options
from orchestrator.errors import OrchestratorError, UsageError

HELP = "Run a YAML job file of many prompts, seeds and LoRAs on one or many ComfyUI servers"
EXAMPLES = """batch plan jobs.yaml
batch run jobs.yaml
batch run jobs.yaml --server http://127.0.0.1:8188 --server http://gpu2:8188
batch run jobs.yaml --depth 3 --out outputs/sweep --fail-fast"""
DEFAULT_URL = "http://127.0.0.1:8188"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("plan", help="check a job file and show what it expands to; runs nothing",
                       description="Validate a job file, print the number of images it expands to and a sample "
                                   "of them, and what an earlier run in the output folder already made.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_format_doc())
    p.add_argument("file", metavar="FILE", help="the YAML job file")
    p.add_argument("--out", metavar="DIR", help="output folder (default: `out` in the file, or outputs/batch-<name>)")
    p.add_argument("--sample", type=argtypes.count, default=12, metavar="N", help="jobs to list (default 12; 0 = all)")
    p.add_argument("--json", action="store_true", help="print every job as JSON")
    p.add_argument("--server", action="append", metavar="URL", default=[],
                   help="check the prompts against this ComfyUI server's nodes, as `batch run` does (default: "
                        "offline, against the built-in node schemas)")
    p.add_argument("--timeout", type=argtypes.seconds, default=30.0, metavar="S", help="HTTP timeout with --server")
    p.set_defaults(handler=run_plan)

    p = sub.add_parser("run", help="run (or resume) every job of a job file",
                       description="Run every job on the given ComfyUI servers (default: the ones `comfyui up` "
                                   "started), keeping each server's queue fed. Rerun the same command to resume: "
                                   "finished images are skipped and jobs finished while we were away are collected.")
    p.add_argument("file", metavar="FILE", help="the YAML job file")
    p.add_argument("--server", action="append", metavar="URL", default=[],
                   help="a ComfyUI server; repeat for several (default: $COMFYUI_URL, else this project's "
                        "running ComfyUI containers, else http://127.0.0.1:8188)")
    p.add_argument("--ray", metavar="ADDR",
                   help="run on the ComfyUI workers of the Ray cluster at ADDR (started with `comfyui up --runtime "
                        "ray`; default when --server is not given: the workers `comfyui up --runtime ray` recorded)")
    p.add_argument("--ray-namespace", metavar="NS", help="Ray namespace of those workers (default flux-orchestrator)")
    p.add_argument("--depth", type=int, default=2, metavar="K",
                   help="jobs kept queued per server: 1 running + K-1 waiting (default 2)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: `out` in the file, or outputs/batch-<name>)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed job (default: record it, go on)")
    p.add_argument("--poll", type=argtypes.seconds, default=0.2, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=argtypes.seconds, default=30.0, metavar="S", help="HTTP timeout per request (default 30)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout, and progress as JSON lines on stderr")
    add_event_options(p)
    p.set_defaults(handler=run_run)


def _format_doc() -> str:
    from orchestrator.batch.jobs import FORMAT
    from orchestrator.comfy.knobs import describe

    return ("job file format:\n" + "\n".join("  " + line for line in FORMAT.splitlines()) + "\n"
            "settings (the same rules as `generate`'s options):\n" + "\n".join("  " + line for line in describe())
            + "\n")


def _plan(args: argparse.Namespace, ctx: Context, servers=None):
    """The one planning function `plan` and `run` share (orchestrator.batch.plan)."""
    from orchestrator.batch.plan import plan_batch

    return plan_batch(ctx.layout, Path(args.file), out=args.out, servers=servers)


def run_plan(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.batch.jobs import lora_label
    from orchestrator.table import render_table

    servers = None
    if args.server:
        from orchestrator.batch.comfy_server import connect_servers

        urls = _server_urls(args, ctx)
        servers = lambda: connect_servers(urls, timeout=args.timeout)  # noqa: E731
    plan = _plan(args, ctx, servers)
    for s in plan.servers:
        s.close()
    jf, out, jobs, states = plan.job_file, plan.out, plan.jobs, plan.earlier
    if args.json:
        ctx.out_json({"file": str(jf.path), "out": str(out), "total": len(jobs),
                      "jobs": [{"key": j.key, **j.settings()} for j in jobs]})
        return 0
    per_group: dict[int, int] = {}
    for j in jobs:
        per_group[j.group] = per_group.get(j.group, 0) + 1
    ctx.out(f"{jf.path}: {len(jobs)} image{'s' if len(jobs) != 1 else ''} from {jf.groups} job entr"
            f"{'ies' if jf.groups != 1 else 'y'} -> {out}")
    for g, n in per_group.items():
        line = next(j.line for j in jobs if j.group == g)
        ctx.out(f"  entry {g + 1} (line {line}): {n}")
    for note in jf.duplicates:
        ctx.out(f"  note: {note}")
    shown = jobs if args.sample == 0 else _sample(jobs, args.sample)
    rows = [[j.index + 1, j.name, _short(j.prompt), j.seed, lora_label(j.lora), f"{j.strength:g}", j.size,
             j.steps or "", (states[j.key].state if j.key in states else "new")] for j in shown]
    ctx.out(render_table(["#", "name", "prompt", "seed", "lora", "strength", "size", "steps", "state"], rows))
    if len(shown) < len(jobs):
        ctx.out(f"... {len(jobs) - len(shown)} more (--sample 0 lists all)")
    if states:
        done = sum(1 for j in jobs if states.get(j.key) and states[j.key].state == "done")
        failed = sum(1 for j in jobs if states.get(j.key) and states[j.key].state == "failed")
        ctx.out(f"earlier runs in {out}: {done} done, {failed} failed, {len(jobs) - done} to make")
    return 0


def _sample(jobs, n: int):
    """The first jobs of every entry, up to n in all, in batch order."""
    if len(jobs) <= n:
        return list(jobs)
    groups = sorted({j.group for j in jobs})
    per = max(1, -(-n // len(groups)))
    picked = [j for g in groups for j in [x for x in jobs if x.group == g][:per]]
    return sorted(picked[:n] if len(picked) > n else picked, key=lambda j: j.index)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _server_urls(args: argparse.Namespace, ctx: Context) -> list[str]:
    """--server URLs, else $COMFYUI_URL (comma-separated), else our running containers, else the default."""
    from orchestrator.comfy.client import normalize_url

    given = args.server or [u for u in os.environ.get("COMFYUI_URL", "").split(",") if u.strip()]
    if given:
        source = "--server" if args.server else "$COMFYUI_URL"
        return list(dict.fromkeys(normalize_url(u, source) for u in given))
    from orchestrator.comfy import serve
    from orchestrator.runtimes import RuntimeEnv

    try:
        urls = serve.endpoints(RuntimeEnv(ctx.layout))
    except OrchestratorError as e:
        ctx.log(f"no --server given and cannot look for ComfyUI containers ({e.message}): using {DEFAULT_URL}")
        return [DEFAULT_URL]
    if not urls:
        ctx.log(f"no --server given and no ComfyUI container of this project runs: using {DEFAULT_URL}")
        return [DEFAULT_URL]
    ctx.log(f"found {len(urls)} ComfyUI server{'s' if len(urls) != 1 else ''}: {', '.join(urls)}")
    return urls


def _servers(args: argparse.Namespace, ctx: Context) -> list[Any]:
    """The batch's servers: --server URLs; --ray's workers; else every runtime's (URLs and Ray workers)."""
    from orchestrator.batch.comfy_server import connect_servers
    from orchestrator.comfy import serve
    from orchestrator.runtimes import RuntimeEnv

    env = RuntimeEnv(ctx.layout)
    if args.ray and args.server:
        raise UsageError("give --server or --ray, not both")
    if args.ray:
        from orchestrator.runtimes.ray import batch_workers

        workers = batch_workers(env, args.ray, args.ray_namespace, timeout=args.timeout)
        ctx.log(f"{len(workers)} Ray worker{'s' if len(workers) != 1 else ''} at {args.ray}: "
                f"{', '.join(w.url for w in workers)}")
        return workers
    workers = []
    if not args.server and not os.environ.get("COMFYUI_URL", "").strip():
        try:
            workers = serve.dispatchers(env, timeout=args.timeout)
        except OrchestratorError as e:
            ctx.log(f"cannot reach the recorded Ray workers ({e.message}); looking for other servers")
        if workers:
            ctx.log(f"found {len(workers)} Ray worker{'s' if len(workers) != 1 else ''}: "
                    f"{', '.join(w.url for w in workers)}")
            try:
                urls = serve.endpoints(env)
            except OrchestratorError:
                urls = []
            return workers + (connect_servers(urls, timeout=args.timeout) if urls else [])
    return connect_servers(_server_urls(args, ctx), timeout=args.timeout)


def _connect(url: str, timeout: float) -> Any:
    """A server an earlier run queued a job on (to collect it); only URLs can be reached this way."""
    from orchestrator.batch.comfy_server import ComfyServer
    from orchestrator.errors import ComfyUnavailable

    if not url.startswith(("http://", "https://")):
        raise ComfyUnavailable(f"{url} is not part of this run")
    return ComfyServer.connect(url, timeout=timeout)


def format_progress(p: Any) -> str:
    """`batch 7/48 · 1 failed · 3.1 img/min · ETA 13m · :8188 5 done +2 queued · gpu2:8188 ...` (a terminal
    draws the bar in front of it from the event's step and total)."""
    from orchestrator.progress import format_duration

    parts = [f"batch {p.done + p.skipped}/{p.total}"]
    if p.failed:
        parts.append(f"{p.failed} failed")
    parts.append(f"{p.per_minute:.1f} img/min")
    parts.append(f"ETA {format_duration(p.eta)}")
    for s in p.servers:
        name = s.url.split("//", 1)[-1]
        for local in ("127.0.0.1:", "localhost:"):
            name = name.replace(local, ":", 1) if name.startswith(local) else name
        parts.append(f"{name} {s.done} done " + ("down" if not s.up else f"+{s.outstanding} queued"))
    return " · ".join(parts)


def run_run(args: argparse.Namespace, ctx: Context) -> int:
    from orchestrator.batch.prompts import make_lora_check
    from orchestrator.batch.run import run_batch
    from orchestrator.batch.scheduler import Settings

    if args.depth < 1:
        raise UsageError(f"--depth {args.depth}: must be at least 1 (2 keeps the GPU busy between images)")
    plan = _plan(args, ctx, lambda: _servers(args, ctx))
    jf, out, builder, servers = plan.job_file, plan.out, plan.builder, list(plan.servers)
    settings = Settings(depth=args.depth, poll=args.poll, fail_fast=args.fail_fast)
    ctx.log(f"{len(jf.jobs)} images -> {out} on {len(servers)} server{'s' if len(servers) != 1 else ''} "
            f"(depth {args.depth})")
    last = [0]
    tty = ctx.tty

    def on_progress(p) -> None:
        line = format_progress(p)
        finished = p.done + p.skipped + p.failed
        rate = p.done / p.elapsed if p.elapsed > 0 else None
        ctx.emit("progress", line, step=finished, total=p.total, unit="image", rate=rate, eta=p.eta, live=True)
        if not tty and p.done and p.done % 10 == 0 and p.done != last[0]:
            last[0] = p.done  # without a terminal: a milestone line every 10 images
            ctx.emit("progress", line, step=finished, total=p.total, unit="image", rate=rate, eta=p.eta)

    try:
        summary = run_batch(jf, out, servers, builder.build, settings,
                            connect=lambda url: _connect(url, args.timeout),
                            on_progress=on_progress, log=ctx.log, verify=make_lora_check(builder), sink=ctx.status)
    except KeyboardInterrupt:
        ctx.log(f"stopped: our waiting jobs were removed from the servers; {out / 'manifest.jsonl'} is consistent. "
                "Run the same command again to continue.")
        raise
    finally:
        for s in servers:
            s.close()
    _print_summary(summary, args, ctx)
    if summary.failed:
        raise OrchestratorError(
            f"{summary.failed} of {summary.total} images failed",
            details=[f"{name}: {err}" for name, err in summary.failures[:10]],
            hint="fix the cause and run the same command again: finished images are skipped")
    return 0


def _print_summary(s: Any, args: argparse.Namespace, ctx: Context) -> None:
    from orchestrator.progress import format_duration

    if args.json:
        ctx.out_json({"total": s.total, "done": s.done, "skipped": s.skipped, "failed": s.failed,
                      "pending": s.pending, "wall_seconds": round(s.wall, 3),
                      "servers": [{"url": x.url, "done": x.done, "per_minute": round(x.per_minute, 2)}
                                  for x in s.servers],
                      "out": str(s.out_dir), "index": str(s.index), "sheets": [str(p) for p in s.sheets],
                      "manifest": str(s.manifest), "failures": [list(f) for f in s.failures]})
        return
    ctx.out(f"{s.done} made, {s.skipped} skipped (done before), {s.failed} failed, {s.pending} left "
            f"of {s.total} in {format_duration(s.wall)}")
    for x in s.servers:
        ctx.out(f"  {x.url}: {x.done} images, {x.per_minute:.1f}/min")
    ctx.out(f"images:   {s.out_dir}")
    for p in s.sheets:
        ctx.out(f"sheet:    {p}")
    ctx.out(f"index:    {s.index}")
    ctx.out(f"manifest: {s.manifest}")
