"""Several GPUs of one host, measured with the product's own CLI (issue 15): training and ComfyUI workers.

On a machine with >= 2 NVIDIA GPUs, in a project that has the models and a dataset:
  train   `train --gpus 1` and `train --gpus 2` at the SAME effective batch (1 GPU: accumulation 2; 2 GPUs:
          accumulation 1, so both make the same optimizer steps on the same images): time to the final LoRA in
          models/loras, steady steps/s, the scaling ratio (target >= 1.8), each GPU's busy % (NVML sampling).
  comfy   `comfyui up --workers 1`, then `--workers 2`, each followed by a warm-up image per worker and a
          40-image `batch run` against the workers: images per minute and the ratio (target >= 1.9).
Writes bench/results/multigpu-<gpu>.json (merged with what an earlier phase wrote there) and prints a summary.
Without two GPUs it exits 2 and says so. Each phase fits one 10-minute device call (`--phase train|comfy`).

  python bench/multigpu.py --project-dir P --runtime local --sd-scripts DIR --python PY \
      --comfyui DIR --comfy-python PY [--phase all|train|comfy] [--epochs 2] [--images 40] [--steps 28]
  python bench/multigpu.py --project-dir P --plan       # the commands it would run, then exit
With the GPU kit: bench/multigpu_kit.sh (prepares the weights, dataset and environments, then runs this).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.gpuprobe import probe_gpus  # noqa: E402
from orchestrator.gpus import GpuInventory  # noqa: E402

TARGET_TRAIN, TARGET_BATCH = 1.8, 1.9


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project-dir", type=Path, required=True)
    p.add_argument("--phase", choices=("all", "train", "comfy"), default="all")
    p.add_argument("--runtime", choices=("docker", "local"), default="docker")
    p.add_argument("--sd-scripts", help="sd-scripts checkout (train, local runtime)")
    p.add_argument("--python", help="python of the sd-scripts environment (train, local runtime)")
    p.add_argument("--comfyui", help="ComfyUI checkout (comfy, local runtime)")
    p.add_argument("--comfy-python", help="python of the ComfyUI environment (comfy, local runtime)")
    p.add_argument("--preset", default="default")
    p.add_argument("--epochs", type=int, default=2, help="epochs per training run (default 2)")
    p.add_argument("--set", dest="sets", action="append", default=[], help="more train --set KEY=VALUE")
    p.add_argument("--images", type=int, default=40, help="images per batch run (default 40)")
    p.add_argument("--steps", type=int, default=28, help="sampling steps per image (default 28)")
    p.add_argument("--size", default="1024x1024")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--timeout", type=float, default=540.0, help="seconds allowed per train run / batch run")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--plan", action="store_true", help="print the commands and exit")
    return p.parse_args(argv)


# -- GPUs and sampling ---------------------------------------------------------------------------

def gpu_slug(inv: GpuInventory) -> str:
    """'NVIDIA H200' -> 'h200' (the results file name)."""
    name = (inv.names[0] if inv.names else "gpu").lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


class Sampler:
    """NVML utilisation, memory and power of every GPU every `period` s, in a thread (nvidia-smi otherwise)."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.rows = period, []          # (time, index, util %, mem MiB, power W)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

            def read() -> list[tuple[int, float, float, float]]:
                return [(i, float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                         pynvml.nvmlDeviceGetMemoryInfo(h).used / 2 ** 20,
                         pynvml.nvmlDeviceGetPowerUsage(h) / 1000) for i, h in enumerate(handles)]
        except Exception:   # no NVML: nvidia-smi once per sample (slower, same figures)
            def read() -> list[tuple[int, float, float, float]]:
                r = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used,power.draw",
                                    "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
                out = []
                for line in r.stdout.splitlines():
                    f = [x.strip() for x in line.split(",")]
                    try:
                        out.append((int(f[0]), float(f[1]), float(f[2]), float(f[3])))
                    except (ValueError, IndexError):
                        pass
                return out
        while not self._stop.is_set():
            t = time.time()
            try:
                self.rows += [(t, *row) for row in read()]
            except Exception:
                pass
            self._stop.wait(self.period)

    def busy(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        """Mean busy %, peak memory and mean power per GPU between t0 and t1."""
        out: dict[str, dict[str, float]] = {}
        for i in sorted({r[1] for r in self.rows}):
            rows = [r for r in self.rows if r[1] == i and t0 <= r[0] <= t1]
            if rows:
                out[str(i)] = {"busy_pct": round(statistics.mean(r[2] for r in rows), 1),
                               "peak_mem_gib": round(max(r[3] for r in rows) / 1024, 1),
                               "mean_power_w": round(statistics.mean(r[4] for r in rows), 1), "samples": len(rows)}
        return out


# -- the CLI ---------------------------------------------------------------------------------------

def orc(args: argparse.Namespace, *words: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "--project-dir", str(args.project_dir), *words]


def train_commands(args: argparse.Namespace) -> dict[int, list[str]]:
    """`train --gpus N` for N = 1, 2 at the same effective batch (accumulation 2 on one GPU, 1 on two)."""
    local = ["--runtime", "local", "--sd-scripts", str(args.sd_scripts), "--python", str(args.python)] \
        if args.runtime == "local" else []
    out = {}
    for n in (1, 2):
        sets = [f"max_train_epochs={args.epochs}", f"gradient_accumulation_steps={3 - n}", *args.sets]
        name = f"bench_mgpu{n}_{int(time.time())}"
        out[n] = orc(args, "train", "--preset", args.preset, "--gpus", str(n), "--name", name, *local,
                     *[w for s in sets for w in ("--set", s)])
    return out


def comfy_up(args: argparse.Namespace, workers: int) -> list[str]:
    local = ["--runtime", "local", "--comfyui", str(args.comfyui)] + (
        ["--python", str(args.comfy_python)] if args.comfy_python else []) if args.runtime == "local" else []
    return orc(args, "comfyui", "up", "--workers", str(workers), "--port", str(args.port), *local)


def jobs_yaml(count: int, steps: int, size: str, out: str) -> str:
    """`count` base-model images (no LoRA: the measurement does not depend on a training run)."""
    return (f"defaults: {{lora: none, steps: {steps}, size: {size}, out: {out}}}\n"
            f"jobs:\n  - prompt: \"a red fox in fresh snow, morning light\"\n    count: {count}\n    seed: 1000\n")


def steps_timeline(log: Path, lines_seen: list[str], timeline: list[tuple[float, int]], parser: Any) -> None:
    """Feed the new lines of train.log to the parser; record (wall time, optimizer step) at each new step."""
    from orchestrator.train.logparse import StepProgress

    try:
        text = log.read_text(errors="replace")
    except OSError:
        return
    lines = re.split(r"[\r\n]", text)
    new = lines[len(lines_seen):-1]     # the last piece may be a line still being written
    lines_seen[:] = lines[:-1]
    for line in new:
        for ev in parser.feed(line):
            if isinstance(ev, StepProgress) and (not timeline or ev.step > timeline[-1][1]):
                timeline.append((time.time(), ev.step))


def run_train(args: argparse.Namespace, n: int, cmd: list[str], sampler: Sampler) -> dict[str, Any]:
    from orchestrator.train.logparse import LogParser

    runs = args.project_dir / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timeline: list[tuple[float, int]] = []
    seen: list[str] = []
    parser = LogParser()
    log: Path | None = None
    final = args.project_dir / "models" / "loras" / f"{cmd[cmd.index('--name') + 1]}.safetensors"
    lora_at: float | None = None
    def new_log() -> Path | None:
        fresh = sorted(p for p in set(runs.glob("*")) - before if not p.name.startswith(".")) if runs.exists() else []
        return fresh[-1] / "train.log" if fresh else None

    while proc.poll() is None and time.time() - t0 < args.timeout:
        log = log or new_log()
        if log is not None:
            steps_timeline(log, seen, timeline, parser)
        if lora_at is None and final.exists():
            lora_at = time.time()
        time.sleep(0.25)
    if proc.poll() is None:
        proc.terminate()
    out, err = proc.communicate(timeout=60)
    t1 = time.time()
    log = log or new_log()
    if log is not None:
        steps_timeline(log, seen, timeline, parser)
    lora = Path(out.strip().splitlines()[-1]) if proc.returncode == 0 and out.strip() else None
    intervals = [b[0] - a[0] for a, b in zip(timeline, timeline[1:]) if b[1] == a[1] + 1]
    steady = 1 / statistics.median(intervals) if intervals else None
    first, last = (timeline[0], timeline[-1]) if timeline else (None, None)
    return {"gpus": n, "command": cmd[3:], "exit_code": proc.returncode, "lora": str(lora) if lora else None,
            "time_to_lora_s": round((lora_at or t1) - t0, 1) if lora and lora.exists() else None,
            "command_wall_s": round(t1 - t0, 1),
            "time_to_first_step_s": round(first[0] - t0, 1) if first else None,
            "optimizer_steps": last[1] if last else 0,
            "steady_steps_per_s": round(steady, 4) if steady else None,
            "steps_per_s_incl_saves": round((last[1] - first[1]) / (last[0] - first[0]), 4)
            if first and last and last[0] > first[0] else None,
            "gpu": sampler.busy(first[0], last[0]) if first and last else {},
            "stderr_tail": err.strip().splitlines()[-8:]}


def run_comfy(args: argparse.Namespace, workers: int, sampler: Sampler) -> dict[str, Any]:
    urls_cmd = comfy_up(args, workers)
    t0 = time.time()
    r = subprocess.run(urls_cmd, capture_output=True, text=True, timeout=args.timeout)
    up_s = time.time() - t0
    result: dict[str, Any] = {"workers": workers, "command": urls_cmd[3:], "up_exit_code": r.returncode,
                              "up_s": round(up_s, 1)}
    if r.returncode != 0:
        result["error"] = r.stderr.strip().splitlines()[-8:]
        return result
    urls = [u for u in r.stdout.split() if u.startswith("http")]
    servers = [w for u in urls for w in ("--server", u)]
    stamp = int(time.time())
    jobs = args.project_dir / f"bench-mgpu-{workers}.yaml"
    warm = args.project_dir / f"bench-mgpu-{workers}-warm.yaml"
    warm.write_text(jobs_yaml(workers, args.steps, args.size, f"outputs/bench-mgpu-{stamp}-{workers}-warm"))
    jobs.write_text(jobs_yaml(args.images, args.steps, args.size, f"outputs/bench-mgpu-{stamp}-{workers}"))
    try:
        t = time.time()
        w = subprocess.run(orc(args, "batch", "run", str(warm), *servers), capture_output=True, text=True,
                           timeout=args.timeout)
        result["warmup_s"], result["warmup_exit_code"] = round(time.time() - t, 1), w.returncode
        t = time.time()
        b = subprocess.run(orc(args, "batch", "run", str(jobs), "--json", *servers), capture_output=True, text=True,
                           timeout=args.timeout)
        wall = time.time() - t
    except subprocess.TimeoutExpired as e:
        result["error"] = f"timed out after {e.timeout:.0f} s: {' '.join(str(w) for w in e.cmd[3:])}"
        return result
    finally:
        subprocess.run(orc(args, "comfyui", "down"), capture_output=True, text=True, timeout=120)
    try:
        summary = json.loads(b.stdout)
    except ValueError:
        summary = {}
    made = int(summary.get("done") or 0)
    result.update(batch_exit_code=b.returncode, images=made, failed=summary.get("failed"), batch_wall_s=round(wall, 1),
                  images_per_min=round(made / wall * 60, 2) if wall > 0 else None, per_server=summary.get("servers"),
                  gpu=sampler.busy(t, t + wall), batch_stderr_tail=b.stderr.strip().splitlines()[-6:])
    return result


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    args = parse_args(argv)
    inv = probe_gpus()
    if inv.count is None or inv.count < 2:
        have = "no NVIDIA GPU could be found (no NVML, no nvidia-smi, none in the Docker engine's info)" \
            if inv.count is None else f"this machine has {inv.describe()}"
        print(f"error: bench/multigpu.py needs a machine with at least 2 NVIDIA GPUs; {have}.\n"
              "  hint: run it on a multi-GPU host (with the GPU kit: bench/multigpu_kit.sh); nothing was run "
              "or written", file=sys.stderr)
        return 2
    if not args.project_dir.is_dir():
        print(f"error: --project-dir {args.project_dir} does not exist", file=sys.stderr)
        return 2
    if args.runtime == "local" and args.phase in ("all", "train") and not (args.sd_scripts and args.python):
        print("error: --runtime local needs --sd-scripts DIR and --python PY for the train phase", file=sys.stderr)
        return 2
    if args.runtime == "local" and args.phase in ("all", "comfy") and not args.comfyui:
        print("error: --runtime local needs --comfyui DIR for the comfy phase", file=sys.stderr)
        return 2
    phases = ("train", "comfy") if args.phase == "all" else (args.phase,)
    if args.plan:
        if "train" in phases:
            for n, cmd in train_commands(args).items():
                print(f"train, {n} GPU(s): " + " ".join(cmd[3:]))
        if "comfy" in phases:
            for workers in (1, 2):
                print(f"comfy, {workers} worker(s): " + " ".join(comfy_up(args, workers)[3:])
                      + f"; then batch run of {args.images} images ({args.steps} steps, {args.size})")
        return 0
    path = args.out / f"multigpu-{gpu_slug(inv)}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.split() if shutil.which("nvidia-smi") else []
    result.update(gpu=inv.names[0] if inv.names else None, gpus=inv.count, gpu_names=list(inv.names),
                  driver=smi[0] if smi else None, counted_by=inv.source, product_commit=commit, runtime=args.runtime)
    with Sampler() as sampler:
        if "train" in phases:
            runs = {n: run_train(args, n, cmd, sampler) for n, cmd in train_commands(args).items()}
            one, two = runs[1].get("steady_steps_per_s"), runs[2].get("steady_steps_per_s")
            ratio = round(two / one, 3) if one and two else None
            result["train"] = {"preset": args.preset, "epochs": args.epochs, "effective_batch": "1 GPU: batch x 2 "
                               "accumulation; 2 GPUs: batch x 1 accumulation x 2", "runs": runs,
                               "scaling_ratio": ratio, "target": TARGET_TRAIN,
                               "met": ratio is not None and ratio >= TARGET_TRAIN, "measured_at": time.time()}
        if "comfy" in phases:
            runs = {w: run_comfy(args, w, sampler) for w in (1, 2)}
            one, two = runs[1].get("images_per_min"), runs[2].get("images_per_min")
            ratio = round(two / one, 3) if one and two else None
            result["comfy"] = {"images": args.images, "steps": args.steps, "size": args.size, "runs": runs,
                               "scaling_ratio": ratio, "target": TARGET_BATCH,
                               "met": ratio is not None and ratio >= TARGET_BATCH, "measured_at": time.time()}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    for key, unit in (("train", "steady steps/s"), ("comfy", "images/min")):
        if key in result and key in phases:
            part = result[key]
            figs = {k: (v.get("steady_steps_per_s") if key == "train" else v.get("images_per_min"))
                    for k, v in part["runs"].items()}
            print(f"{key}: {unit} {figs}, ratio {part['scaling_ratio']} (target {part['target']}, "
                  f"{'met' if part['met'] else 'NOT met'})")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
