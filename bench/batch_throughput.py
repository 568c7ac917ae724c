"""Batch throughput: N ComfyUI doubles with a fixed simulated time per image, depth 1 vs 2.

    python bench/batch_throughput.py [--seconds 0.4] [--per-server 10]

Prints, for N = 1, 2, 4 servers and queue depth 1 and 2: images/s achieved, the ideal N / t,
their ratio (goal >= 0.98 with depth >= 2: the GPUs never wait on us), and our orchestration
overhead per job (time our worker threads spent building, submitting, polling and saving,
divided by the jobs: work done while the GPU is busy with the next image when depth >= 2).
Everything runs in-process on loopback (real HTTP, real client, the test double as server).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
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

STEPS = 4


def measure(n: int, depth: int, seconds: float, per_server: int, poll: float) -> tuple[float, float, float]:
    """(images per second, ideal, overhead seconds per job) for one configuration."""
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
        t0 = time.perf_counter()
        summary = run_batch(jf, tmp / "out", servers, builder.build, Settings(depth=depth, poll=poll),
                            on_progress=lambda p: busy.append(p.busy))
        wall = time.perf_counter() - t0
        assert summary.done == n * per_server, summary
        for s in servers:
            s.close()
        return summary.done / wall, n / seconds, (busy[-1] if busy else 0.0) / summary.done
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
    print(f"{'servers':>7} {'depth':>5} {'img/s':>7} {'ideal':>7} {'ratio':>6} {'overhead/job':>13}")
    for n in (1, 2, 4):
        for depth in (1, 2):
            rate, ideal, overhead = measure(n, depth, args.seconds, args.per_server, args.poll)
            print(f"{n:>7} {depth:>5} {rate:>7.2f} {ideal:>7.2f} {rate / ideal:>6.3f} {overhead * 1000:>10.1f} ms",
                  flush=True)
    print("ratio counts the whole batch (first submit to last file saved), so it includes one poll of")
    print("latency at the start and the last image's download; goal >= 0.98 with depth >= 2.")


if __name__ == "__main__":
    main()
