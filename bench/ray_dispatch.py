"""Batch dispatch through Ray: images per minute on 1 and 2 CPU workers, and our overhead per job.

    python bench/ray_dispatch.py [--seconds 1.0] [--per-worker 10]

Starts a real Ray cluster on this machine (a head and a second node, `ray start` processes as in the
tests: tests/ray_cluster.py), places two CPU ComfyUI workers with `--runtime ray` (the ComfyUI double
as their ComfyUI, each image taking a fixed `--seconds`), then runs a batch on 1 worker and on 2:
  img/min    images per minute over the scheduling (first submit to last file saved)
  ideal      workers x 60 / seconds-per-image (what the workers could do if we never made them wait)
  ratio      img/min / ideal
  dispatch   our scheduler threads' time per job (build the prompt, submit, poll, collect, fetch the
             image through Ray's object store, write it and the sidecar, the manifest): wall time and
             CPU time; with depth 2 it overlaps the next image, so it costs no GPU time. Target < 20 ms.
  ray/job    of that, the actor round trips per job and the time spent in them (submit, queue_ids,
             result with the image bytes; not `idle`, the doorbell wait): the part that goes through Ray
  call       the round trip of one actor call (`queue_ids`: driver -> actor -> its ComfyUI's /queue)
Everything is on this machine: Ray's calls go over loopback gRPC, not a network.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.batch.jobs import load_job_file  # noqa: E402
from orchestrator.batch.prompts import PromptBuilder  # noqa: E402
from orchestrator.batch.run import run_batch  # noqa: E402
from orchestrator.batch.scheduler import Settings  # noqa: E402
from orchestrator.comfy.serverspec import ServerOptions  # noqa: E402
from orchestrator.layout import Layout  # noqa: E402
from orchestrator.runtimes.base import RuntimeEnv, ServerRequest  # noqa: E402
from orchestrator.runtimes.ray import RayServer, RayServerRuntime, disconnect  # noqa: E402
from tests.ray_cluster import Cluster, double_checkout  # noqa: E402


BY_METHOD: dict[str, list[float]] = {}


def count_calls(server: RayServer) -> RayServer:
    """Make `server` count its actor round trips and the time spent in them (the doorbell wait excluded)."""
    call = server._call
    server.calls, server.seconds = 0, 0.0  # type: ignore[attr-defined]

    def timed(method: str, *args, **kwargs):
        t = time.perf_counter()
        try:
            return call(method, *args, **kwargs)
        finally:
            if method != "idle":
                took = time.perf_counter() - t
                server.calls += 1  # type: ignore[attr-defined]
                server.seconds += took  # type: ignore[attr-defined]
                BY_METHOD.setdefault(method, []).append(took)

    server._call = timed  # type: ignore[method-assign]
    return server


def measure(servers: list, layout: Layout, tmp: Path, n: int,
            seconds: float) -> tuple[float, float, float, float, float, float]:
    """(img/min, ideal img/min, wall and CPU dispatch s/job, actor calls/job, s in them/job) for n images."""
    jobs = tmp / f"jobs-{len(servers)}.yaml"
    jobs.write_text("defaults: {lora: flux_dreambooth.safetensors, size: 64x64, steps: 4}\n"
                    f"jobs:\n  - prompt: a tjtoy toy on a desk\n    count: {n}\n    seed: 1\n")
    builder = PromptBuilder(layout, servers[0].client.object_info)
    jf = load_job_file(jobs)
    builder.check(jf.jobs)
    busy: list[tuple[float, float]] = []
    summary = run_batch(jf, tmp / f"out-{len(servers)}", servers, builder.build, Settings(depth=2, poll=0.1),
                        on_progress=lambda p: busy.append((p.busy, p.cpu)))
    assert summary.done == n, summary
    wall, cpu = busy[-1] if busy else (0.0, 0.0)
    return (summary.done / summary.wall * 60, len(servers) * 60 / seconds, wall / n, cpu / n,
            sum(s.calls for s in servers) / n, sum(s.seconds for s in servers) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="simulated seconds per image (default 1.0)")
    ap.add_argument("--per-worker", type=int, default=10, help="images per worker (default 10)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    cluster = Cluster.start(tmp / "cluster", workers=1, cpus=2)
    try:
        layout = Layout.at(tmp / "project")
        layout.ensure_dirs(*layout.model_dirs().values())
        shutil.copytree(ROOT / "workflows", layout.workflows)
        runtime = RayServerRuntime(RuntimeEnv(layout), {
            "address": cluster.address, "namespace": "bench", "worker_gpus": "0", "work_dir": tmp / "work",
            "comfyui": double_checkout(tmp / "ComfyUI", seconds_per_image=args.seconds)})
        t0 = time.perf_counter()
        runtime.up(ServerRequest(ServerOptions(workers=2), timeout=120))
        print(f"2 workers placed and answering in {time.perf_counter() - t0:.1f} s")
        servers = [count_calls(s) for s in runtime.batch_servers()]
        calls = []
        for _ in range(200):
            t = time.perf_counter()
            servers[0].queue_ids()
            calls.append(time.perf_counter() - t)
        print(f"t = {args.seconds:.2f} s/image, {args.per_worker} images per worker, depth 2")
        print(f"{'workers':>7} {'img/min':>8} {'ideal':>7} {'ratio':>6} {'dispatch/job wall':>18} {'cpu':>8} "
              f"{'ray/job calls':>14} {'time':>8}")
        BY_METHOD.clear()
        for k in (1, 2):
            for s in servers:
                s.calls, s.seconds = 0, 0.0
            rate, ideal, wall, cpu, per_job, in_ray = measure(servers[:k], layout, tmp, k * args.per_worker,
                                                            args.seconds)
            print(f"{k:>7} {rate:>8.1f} {ideal:>7.1f} {rate / ideal:>6.3f} {wall * 1000:>15.1f} ms "
                  f"{cpu * 1000:>5.1f} ms {per_job:>14.1f} {in_ray * 1000:>5.1f} ms", flush=True)
        print("actor calls, median:", ", ".join(f"{k} {statistics.median(v) * 1000:.1f} ms ({len(v)}x)"
                                                for k, v in BY_METHOD.items()))
        print(f"one actor call (queue_ids): median {statistics.median(calls) * 1000:.2f} ms, "
              f"p95 {sorted(calls)[int(len(calls) * 0.95)] * 1000:.2f} ms")
        runtime.down(grace=5)
    finally:
        disconnect()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
