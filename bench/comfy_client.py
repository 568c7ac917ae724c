"""Benchmark: ComfyClient overhead per job against the test double, and workflow conversion time.

    python bench/comfy_client.py [--jobs 40] [--conversions 200]

The double runs in a separate process with zero simulated compute, so the figures are the
client's own cost on loopback: submit -> first event -> outputs saved (wall time, and CPU time of
this process, which excludes the server). Goals: < 50 ms per job of our own time, < 20 ms per
conversion (UI workflow -> API prompt, plus patching).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.comfy import events as ev  # noqa: E402
from orchestrator.comfy.client import ComfyClient  # noqa: E402
from orchestrator.comfy.patch import PromptParams, patch_prompt  # noqa: E402
from orchestrator.comfy.schema import load_builtin_schema  # noqa: E402
from orchestrator.comfy.workflow import load_workflow, to_api_prompt  # noqa: E402

SERVER = ("import sys; sys.path.insert(0, %r)\n"
          "from tests.comfy_double import ComfyDouble\n"
          "d = ComfyDouble(steps=4).start(); print(d.url, flush=True); sys.stdin.read(); d.close()\n")


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values) * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms"


def bench_jobs(n: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER % str(ROOT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        ui = json.loads((ROOT / "workflows" / "finetuned_flux.json").read_text())
        base = to_api_prompt(load_workflow(ui))
        noise = next(k for k, v in base.items() if v["class_type"] == "RandomNoise")
        walls, firsts, cpus = [], [], []
        with ComfyClient(url, timeout=10) as client, tempfile.TemporaryDirectory() as out:
            for i in range(n + 3):
                prompt = copy.deepcopy(base)
                prompt[noise]["inputs"]["noise_seed"] = i
                first: list[float] = []
                cpu0, t0 = time.process_time(), time.perf_counter()
                pid = client.submit(prompt, workflow=ui)
                result = client.wait(pid, on_event=lambda e: first or first.append(time.perf_counter()))
                client.fetch_outputs(result, Path(out), name=lambda img, k: f"{pid}-{k}.png")
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                if i >= 3:   # warm-up: connections, imports
                    walls.append(wall)
                    cpus.append(cpu)
                    firsts.append(first[0] - t0)
                assert isinstance(result.images[0], ev.OutputImage)
        print(f"jobs ({n}, 4 steps, zero compute, double in another process)")
        print(f"  submit -> outputs saved, wall : {ms(walls)}")
        print(f"  submit -> first event, wall   : {ms(firsts)}")
        print(f"  client CPU per job (our time) : {ms(cpus)}   goal < 50 ms")
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)


def bench_conversion(n: int) -> None:
    schema = load_builtin_schema()
    for name in ("base_flux.json", "finetuned_flux.json"):
        wf = load_workflow(ROOT / "workflows" / name)
        rng = random.Random(0)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            prompt = to_api_prompt(wf, schema, rng=rng)
            patch_prompt(prompt, PromptParams(text="a tjtoy toy", seed=i, steps=20, width=768, height=1024))
            times.append(time.perf_counter() - t0)
        print(f"conversion + patch {name:20}: {ms(times)}   goal < 20 ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--conversions", type=int, default=200)
    args = p.parse_args()
    bench_conversion(args.conversions)
    bench_jobs(args.jobs)


if __name__ == "__main__":
    main()
