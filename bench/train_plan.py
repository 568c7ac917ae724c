"""Time `python -m orchestrator train --plan` on a dataset like the seed's (goal: < 1 s).

13 images of 1024x1024 in two concepts (6 x1 repeat, 7 x2 repeats), model files of the right names
(sparse), cached tokenizers. Prints the wall time of the whole command (Python start-up included)
for the docker runtime (engine probe included) and the local runtime, plus an in-process breakdown.
Run from the repository root: `python bench/train_plan.py`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.layout import Layout  # noqa: E402
from tests.train_project import make_seed_project  # noqa: E402

RUNS = 5


ENV = dict(os.environ)


def wall(argv: list[str]) -> tuple[float, int, float]:
    """Wall time, exit code, and CPU time (user + sys) of one run of `argv`."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, env=ENV)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, r.returncode, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_wall(argv: list[str]) -> tuple[float, int, float]:
    wall(argv)   # warm the OS file cache (and the bytecode cache when it is on)
    results = [wall(argv) for _ in range(RUNS)]
    return (statistics.median(r[0] for r in results), results[-1][1], statistics.median(r[2] for r in results))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        layout = Layout.at(Path(d) / "project")
        make_seed_project(layout)
        fake = Path(d) / "sd-scripts"
        fake.mkdir()
        (fake / "flux_train_network.py").write_text("")
        base = [sys.executable, "-m", "orchestrator", "--project-dir", str(layout.root), "train", "--plan"]
        py = [sys.executable, "-c", "pass"]
        print(f"dataset: 13 images 1024x1024 (6 x1 + 7 x2 repeats); median of {RUNS} runs; load {os.getloadavg()[0]:.1f}"
              " (exit 2 = a check failed: no NVIDIA runtime on this machine)")
        cache = Path(d) / "pycache"
        for title, env in (("bytecode cache on (a normal install)", {"PYTHONPYCACHEPREFIX": str(cache)}),
                           ("PYTHONDONTWRITEBYTECODE=1 (every module compiled at each start)",
                            {"PYTHONDONTWRITEBYTECODE": "1"})):
            ENV.clear()
            ENV.update({k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, **env)
            print(title + ":")
            print(f"  python start-up alone                 {median_wall(py)[0] * 1000:6.0f} ms")
            print(f"  python -m orchestrator --help         {median_wall(base[:5] + ['--help'])[0] * 1000:6.0f} ms")
            for label, extra in (("train --plan (docker, engine probe)", []),
                                 ("train --plan --json (docker)", ["--json"]),
                                 ("train --plan (local runtime)", ["--runtime", "local", "--sd-scripts", str(fake),
                                                                   "--python", sys.executable])):
                t, code, cpu = median_wall(base + extra)
                print(f"  {label:<37} {t * 1000:6.0f} ms wall, {cpu * 1000:5.0f} ms CPU   (exit {code})")
        breakdown(layout)


def breakdown(layout: Layout) -> None:
    """Where the time goes, in-process (second call, warm imports)."""
    from datetime import datetime

    from orchestrator.dataset import check_dataset
    from orchestrator.train import preflight
    from orchestrator.train.config import load_config
    from orchestrator.runtimes import RuntimeEnv, train_runtime
    from orchestrator.train.plan import build_plan

    for _ in range(2):
        t0 = time.perf_counter()
        config = load_config("default")
        t1 = time.perf_counter()
        dataset = check_dataset(layout, trainer_flags={"cache_latents": True, "resolution": None})
        t2 = time.perf_counter()
        runtime = train_runtime("docker", RuntimeEnv(layout), {"image": "flux-train:x"})
        plan, _ = build_plan(layout, config, dataset=dataset, now=datetime.now(), runtime=runtime)
        t3 = time.perf_counter()
        preflight.preflight(plan, layout, dataset, processes=1, visible_gpus=None, runtime=runtime)
        t4 = time.perf_counter()
    print("  in-process: config {:.0f} ms, dataset check {:.0f} ms, build plan {:.0f} ms, preflight {:.0f} ms".format(
        (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, (t4 - t3) * 1000))


if __name__ == "__main__":
    main()
