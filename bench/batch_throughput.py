"""Batch throughput: N ComfyUI doubles with a fixed simulated time per image, depth 1 vs 2.

    python bench/batch_throughput.py [--seconds 0.4] [--per-server 10]

Prints, for N = 1, 2, 4 servers and queue depth 1 and 2:
  img/s     images per second over the scheduling (first submit to last file saved; contact
            sheets and index.html come after and are not counted)
  ideal     N / t, where t is the time the double really spends per image (its execution span
            from execution_start to the end, measured from its history: the double has some
            fixed cost per job on top of the simulated sampling time)
  ratio     img/s / ideal (goal >= 0.98 with depth >= 2: the GPUs never wait on us)
  gpu busy  time the servers spent executing / (N x span from their first start to last end)
  overhead  our worker threads' time per job (build, submit, poll, download, write, manifest):
            wall time, an upper bound (the doubles run in the same process and compete for the
            GIL and the 2 cores), and the CPU time of our threads; with depth >= 2 it overlaps
            the next image, so it costs no GPU time
Everything runs in-process on loopback: real HTTP, the real client, the ComfyUI double as server
(with TCP_NODELAY on the double's sockets: its unbuffered http.server otherwise adds the
~40 ms Nagle/delayed-ACK stall to each reply, which real ComfyUI (aiohttp) does not have).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.batch.comfy_server import ComfyServer  # noqa: E402
from orchestrator.batch.jobs import load_job_file  # noqa: E402
from orchestrator.batch.prompts import PromptBuilder  # noqa: E402
from orchestrator.batch.run import run_batch  # noqa: E402
from orchestrator.batch.scheduler import Settings  # noqa: E402
from orchestrator.layout import Layout  # noqa: E402
from tests.comfy_double import ComfyDouble  # noqa: E402
from tests.comfy_double_http import Handler  # noqa: E402

Handler.disable_nagle_algorithm = True

STEPS = 4


def _spans(double: ComfyDouble) -> list[tuple[float, float]]:
    """(start, end) in seconds of every job the double ran, from its history messages."""
    spans = []
    for job in double.history.values():
        stamps = {kind: data.get("timestamp") for kind, data in job.messages}
        if stamps.get("execution_start") and stamps.get("execution_success"):
            spans.append((stamps["execution_start"] / 1000, stamps["execution_success"] / 1000))
    return spans


def measure(n: int, depth: int, seconds: float, per_server: int,
            poll: float) -> tuple[float, float, float, float, float]:
    """(images/s, ideal, gpu busy fraction, wall and CPU overhead seconds per job) for one configuration."""
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    layout = Layout.at(tmp)
    shutil.copytree(ROOT / "workflows", layout.workflows)
    jobs = tmp / "jobs.yaml"
    jobs.write_text("defaults: {lora: flux_dreambooth.safetensors, size: 64x64, steps: %d}\n"
                    "jobs:\n  - prompt: a tjtoy toy on a desk\n    count: %d\n    seed: 1\n" % (STEPS, n * per_server))
    doubles = [ComfyDouble(step_time=seconds / STEPS, steps=STEPS).start() for _ in range(n)]
    try:
        servers = [ComfyServer.connect(d.url) for d in doubles]
        builder = PromptBuilder(layout, servers[0].client.object_info)
        jf = load_job_file(jobs)
        builder.check(jf.jobs)
        busy = []
        summary = run_batch(jf, tmp / "out", servers, builder.build, Settings(depth=depth, poll=poll),
                            on_progress=lambda p: busy.append((p.busy, p.cpu)))
        assert summary.done == n * per_server, summary
        for s in servers:
            s.close()
        spans = [_spans(d) for d in doubles]
        per_job = sum(e - s for sp in spans for s, e in sp) / summary.done
        util = sum(sum(e - s for s, e in sp) / (max(e for _, e in sp) - min(s for s, _ in sp)) for sp in spans) / n
        wall_busy, cpu = busy[-1] if busy else (0.0, 0.0)
        return summary.done / summary.wall, n / per_job, util, wall_busy / summary.done, cpu / summary.done
    finally:
        for d in doubles:
            d.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.4, help="simulated seconds per image (default 0.4)")
    ap.add_argument("--per-server", type=int, default=10, help="images per server (default 10)")
    ap.add_argument("--poll", type=float, default=0.1, help="scheduler poll interval (default 0.1)")
    args = ap.parse_args()
    print(f"t = {args.seconds:.2f} s/image, {args.per_server} images per server, poll {args.poll:.2f} s")
    print(f"{'servers':>7} {'depth':>5} {'img/s':>7} {'ideal':>7} {'ratio':>6} {'gpu busy':>9} "
          f"{'overhead/job wall':>18} {'cpu':>8}")
    for n in (1, 2, 4):
        for depth in (1, 2):
            rate, ideal, util, wall, cpu = measure(n, depth, args.seconds, args.per_server, args.poll)
            print(f"{n:>7} {depth:>5} {rate:>7.2f} {ideal:>7.2f} {rate / ideal:>6.3f} {util:>9.3f} "
                  f"{wall * 1000:>15.1f} ms {cpu * 1000:>5.1f} ms", flush=True)
    print("ratio covers the whole batch, including the first submit and the last download (a fixed cost")
    print("that shrinks with longer batches); gpu busy is the steady state. Goal >= 0.98 with depth >= 2.")


if __name__ == "__main__":
    main()
