"""Benchmark: `batch plan` of big job files (goals: 10,000 jobs < 1 s, 100,000 seeds < 5 s).

    python bench/batch_plan.py [--runs 3] [--sizes 10,1000,10000,100000]

For each size, two job files: `seeds` (one prompt, `count: N` seeds: the 100,000-seed case) and `grid`
(prompts x sizes x LoRA files x strengths x seeds, about N jobs, so a patch is really worked out per
distinct setting). Prints the median wall time of a fresh `python -m orchestrator batch plan FILE`
(Python start-up included) and of `batch plan --json` (every job printed), the time per job, and the
per-job ratio to the 10-job case, so cost growth is visible; then an in-process breakdown (load and
expand the file, check every prompt) for the largest size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seeds_file(n: int) -> str:
    return f"defaults: {{lora: flux_dreambooth.safetensors}}\njobs:\n  - prompt: a tjtoy toy on a desk\n    count: {n}\n"


def grid_file(n: int) -> str:
    """About n jobs: 4 prompts x 2 sizes x 2 LoRAs x 3 strengths x seeds."""
    seeds = max(1, round(n / 48))
    return ("defaults: {steps: 20}\njobs:\n"
            "  - prompts: [a tjtoy toy on a desk, a tjtoy toy in the snow, a tjtoy toy on the moon, a tjtoy toy]\n"
            "    sizes: [1024x1024, 768x1344]\n"
            "    loras: [flux_dreambooth-000025.safetensors, flux_dreambooth.safetensors]\n"
            "    strengths: [0.6, 0.8, 1.0]\n"
            f"    count: {seeds}\n"
            '    name: "{slug}-{lora}-{strength}-{size}-{seed}"\n')


def timed(root: Path, path: Path, *extra: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--project-dir", str(root), "batch", "plan", str(path),
                        *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"batch plan {path.name} failed ({r.returncode}): {r.stderr}")
    return took


def count_jobs(path: Path) -> int:
    from orchestrator.batch.jobs import load_job_file

    return len(load_job_file(path).jobs)


def in_process(root: Path, path: Path) -> tuple[int, float, float]:
    """(jobs, seconds to load + expand, seconds to check every prompt) in this process."""
    from orchestrator.batch.jobs import load_job_file
    from orchestrator.batch.prompts import PromptBuilder
    from orchestrator.layout import Layout

    t0 = time.perf_counter()
    jf = load_job_file(path)
    t1 = time.perf_counter()
    PromptBuilder(Layout.at(root)).check(jf.jobs)
    return len(jf.jobs), t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is printed")
    ap.add_argument("--sizes", default="10,1000,10000,100000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-batch-plan-") as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "workflows", root / "workflows")
        print(f"batch plan: medians of {args.runs} runs. CLI = a fresh `python -m orchestrator batch plan` "
              "(start-up included);")
        print("in-process = load_job_file + PromptBuilder.check (no start-up): its time per job, and that "
              "over the smallest case's")
        for kind, make in (("seeds", seeds_file), ("grid", grid_file)):
            first: float | None = None
            for n in sizes:
                path = root / f"{kind}-{n}.yaml"
                path.write_text(make(n))
                cli = {}
                for label, extra in (("plan", ()), ("--json", ("--json",))):
                    timed(root, path, *extra)  # warm the bytecode and page caches
                    cli[label] = statistics.median(timed(root, path, *extra) for _ in range(args.runs))
                runs = [in_process(root, path) for _ in range(args.runs)]
                jobs = runs[0][0]
                load = statistics.median(r[1] for r in runs)
                check = statistics.median(r[2] for r in runs)
                per = (load + check) / jobs
                first = first or per
                goal = {10_000: "  goal < 1 s", 100_000: "  goal < 5 s"}.get(n, "")
                print(f"  {kind:5s} {jobs:7d} jobs: CLI plan {cli['plan']:5.2f} s, plan --json {cli['--json']:5.2f} s"
                      f"{goal}; in-process {load + check:6.3f} s (load+expand {load:6.3f}, check {check:6.3f}) = "
                      f"{per * 1e6:7.1f} us/job, x{per / first:.2f} per job vs {sizes[0]}")


if __name__ == "__main__":
    main()
