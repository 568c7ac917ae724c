#!/usr/bin/env python3
"""Time to a LoRA on a real GPU: runs the product's own `train` and says where the time went.

Runs `python -m orchestrator train` in an existing project (models downloaded or the GPU kit's
random weights, a dataset in flux_data/) once per variant (`--variant LABEL[:KEY=VALUE,...]`,
side by side in one run), and prints / writes per variant:
- wall time from the command's start to the final LoRA in models/loras;
- time to the first optimizer step, split into phases (imports, model loads, hashing, latent and
  text-encoder caching, network build, accelerate.prepare), from a probe in the trainer process;
- steady seconds per step (median of the steps that are not next to a save/sample round), GPU busy %
  and mean power during those steps (NVML), peak GPU memory, seconds per save + sample round;
- the ratio of the step to the compute floor (FLUX.1-dev FLOPs counted below, at --peak-tflops).
With `--profile START:COUNT`, a torch.profiler table and a Python sampling profile of COUNT steps.

Local runtime (needs the trainer's Python, which gets the probe on its PYTHONPATH):
  python3 bench/train_gpu.py --project-dir P --sd-scripts /opt/sd-scripts --python /opt/sd/bin/python \
      --variant default --variant playbook:preset=playbook --max-steps 60 --json bench/results/train.json
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# FLUX.1-dev transformer: 19 double blocks (image and text streams each), 38 single blocks, width 3072.
D = 3072
MACS_PER_TOKEN = D * 3 * D + D * D + D * 4 * D + 4 * D * D   # qkv, proj, mlp in/out: 113.2 M
BLOCKS = 19 + 38                                               # every token passes 57 blocks once
TXT_TOKENS = 512                                               # T5 max length for dev


def flux_forward_tflop(height: int, width: int, batch: int = 1) -> tuple[float, float]:
    """Forward TFLOP of one FLUX.1-dev pass (linear layers, attention) at a resolution."""
    tokens = (height // 16) * (width // 16) + TXT_TOKENS
    linear = 2 * MACS_PER_TOKEN * tokens * BLOCKS
    attention = 2 * 2 * tokens * tokens * D * BLOCKS
    return batch * linear / 1e12, batch * attention / 1e12


def train_step_tflop(height: int, width: int, batch: int, checkpointing: bool) -> float:
    """A LoRA step on a frozen base: forward, backward for the inputs only (no weight gradients
    of the base: same MACs as the forward for linears, twice for attention), plus one more
    forward when activations are recomputed (gradient checkpointing)."""
    lin, att = flux_forward_tflop(height, width, batch)
    fwd = lin + att
    return fwd + lin + 2 * att + (fwd if checkpointing else 0.0)


class NvmlSampler(threading.Thread):
    """GPU utilisation (% of time a kernel ran), power and memory every 100 ms through NVML."""

    def __init__(self, index: int = 0) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, float, float]] = []
        self.stop = threading.Event()
        self.info: dict[str, str] = {}
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(self.handle)
            self.info = {"gpu": name.decode() if isinstance(name, bytes) else name,
                         "driver": _s(pynvml.nvmlSystemGetDriverVersion())}
        except Exception as e:  # no NVML: figures without GPU busy / power
            self.nvml = None
            self.info = {"nvml_error": repr(e)}

    def run(self) -> None:
        if self.nvml is None:
            return
        n = self.nvml
        while not self.stop.wait(0.1):
            try:
                util = n.nvmlDeviceGetUtilizationRates(self.handle).gpu
                power = n.nvmlDeviceGetPowerUsage(self.handle) / 1000
                mem = n.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
            except Exception:
                continue
            self.samples.append((time.time(), util, power, mem))

    def window(self, t0: float, t1: float) -> dict[str, float | None]:
        rows = [s for s in self.samples if t0 <= s[0] <= t1]
        if not rows:
            return {"gpu_busy_pct": None, "power_w": None}
        return {"gpu_busy_pct": round(statistics.mean(r[1] for r in rows), 1),
                "power_w": round(statistics.mean(r[2] for r in rows), 1)}

    def peak_used_gib(self, t0: float, t1: float) -> float | None:
        rows = [s[3] for s in self.samples if t0 <= s[0] <= t1]
        return round(max(rows), 2) if rows else None


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def set_resolution(data_toml: Path, res: int) -> str:
    """Point the dataset at another resolution (bench only); returns the original text."""
    text = data_toml.read_text()
    new = re.sub(r"(?m)^(\s*resolution\s*=\s*)\d+", rf"\g<1>{res}", text)
    new = re.sub(r"(?m)^(\s*max_bucket_reso\s*=\s*)\d+", rf"\g<1>{max(res, 256)}", new)
    data_toml.write_text(new)
    return text


def run_variant(args: argparse.Namespace, label: str, sets: dict[str, str], sampler: NvmlSampler,
                out_dir: Path) -> dict:
    probe_dir = Path(tempfile.mkdtemp(prefix=f"probe-{label}-"))
    project = Path(args.project_dir)
    preset = sets.pop("preset", args.preset)
    resolution = int(sets.pop("resolution", args.resolution))
    batch = int(sets.get("train_batch_size", 1))
    steps_cap = sets.pop("max_steps", None) or args.max_steps
    name = f"bench_{label}_{int(time.time())}"
    env = {**os.environ, "FLUXO_PROBE_DIR": str(probe_dir), "PYTHONUNBUFFERED": "1"}
    if args.profile:
        env["FLUXO_PROBE_PROFILE"] = args.profile
    if sets.pop("skip_grad_norms", None):
        env["FLUXO_PROBE_SKIP_GRAD_NORMS"] = "1"
    mem_gb = sets.pop("mem_gb", None) or args.mem_gb
    if mem_gb:
        env["FLUXO_PROBE_MEM_GB"] = str(mem_gb)
    wrapper = probe_dir / "python"
    wrapper.write_text("#!/bin/sh\nPYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH} exec %s \"$@\"\n"
                       % (HERE / "trainer_probe", args.python))
    wrapper.chmod(0o755)
    cmd = [sys.executable, "-m", "orchestrator", "--project-dir", str(project), "train",
           "--runtime", "local", "--sd-scripts", args.sd_scripts, "--python", str(wrapper),
           "--name", name]
    if preset:
        cmd += ["--preset", preset]
    if steps_cap:
        sets.setdefault("max_train_steps", str(steps_cap))
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    data_toml = project / "flux_data" / "data.toml"
    original = set_resolution(data_toml, resolution) if resolution != 1024 else None
    lora = project / "models" / "loras" / f"{name}.safetensors"
    log_path = out_dir / f"train-{label}.log"
    t_start = time.time()
    lora_at = None
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    cwd=REPO, text=True, errors="replace", start_new_session=True)
            # a hard bound per variant: the whole process group goes (trainer and launcher)
            watchdog = threading.Timer(args.timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
            watchdog.start()
            for line in proc.stdout:
                log.write(f"{time.time() - t_start:8.2f} {line}")
                log.flush()
                if lora_at is None and lora.exists():
                    lora_at = time.time()
            rc = proc.wait()
            watchdog.cancel()
    finally:
        if original is not None:
            data_toml.write_text(original)
    t_end = time.time()
    if lora_at is None and lora.exists():
        lora_at = t_end
    probes = [json.loads(Path(p).read_text()) for p in glob.glob(str(probe_dir / "probe-*.json"))]
    probe = max(probes, key=lambda p: len(p["step_times_s"]), default={"step_times_s": [], "phases": []})
    for f in glob.glob(str(probe_dir / "p*.txt")):
        Path(out_dir / f"{label}-{Path(f).name.split('-')[0]}-{Path(f).name.split('-')[1]}.txt").write_text(
            Path(f).read_text())
    steps = [probe["t0_unix"] + s for s in probe["step_times_s"]] if probe.get("t0_unix") else []
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    med = statistics.median(gaps[3:]) if len(gaps) > 5 else (statistics.median(gaps) if gaps else None)
    steady = [(a, b) for a, b in zip(steps[3:], steps[4:]) if med and (b - a) < 2.5 * med]
    rounds = [round(g - med, 2) for g in gaps if med and g > 5 * med]
    busy = {"gpu_busy_pct": None, "power_w": None}
    if steady:
        # NVML averages over its own sample period: use the middle of the steady stretch
        busy = sampler.window(steady[len(steady) // 4][0], steady[-1][1])
    ckpt = sets.get("gradient_checkpointing", "true" if preset != "none" else "true").lower() not in ("false", "0", "no")
    floor_s = train_step_tflop(resolution, resolution, batch, ckpt) / args.peak_tflops
    res = {
        "label": label, "preset": preset or "default", "sets": sets, "mem_cap_gib": mem_gb, "resolution": resolution,
        "batch": batch, "rc": rc, "command": " ".join(cmd),
        "wall_s": round(t_end - t_start, 1),
        "to_lora_s": round(lora_at - t_start, 1) if lora_at else None,
        "to_first_step_s": round(steps[0] - t_start, 1) if steps else None,
        "trainer_start_s": round(probe["t0_unix"] - t_start, 1) if probe.get("t0_unix") else None,
        "phases_s": _phases(probe),
        "steps": len(steps),
        "step_s_median": round(med, 4) if med else None,
        "step_floor_s": round(floor_s, 4),
        "step_over_floor": round(med / floor_s, 2) if med else None,
        "save_sample_rounds_s": rounds,
        "peak_alloc_gib": round(probe.get("cuda_max_allocated_gib", 0), 2) or None,
        "peak_used_gib_nvml": sampler.peak_used_gib(t_start, t_end),
        "profile": probe.get("profile"),
        **busy,
    }
    return res


def _phases(probe: dict) -> dict[str, float]:
    """Seconds per probed phase (summed over calls), plus the trainer's import time."""
    out: dict[str, float] = {}
    first = None
    for name, a, b in probe.get("phases", []):
        out[name] = round(out.get(name, 0.0) + (b - a), 2)
        first = a if first is None else min(first, a)
    if first is not None:
        out["imports_until_first_load"] = round(first, 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project-dir", required=True)
    p.add_argument("--sd-scripts", required=True)
    p.add_argument("--python", required=True, help="the trainer's python (or a wrapper script)")
    p.add_argument("--variant", action="append", default=[],
                   help="LABEL or LABEL:key=value,key=value (preset=, resolution=, max_steps= are the bench's own)")
    p.add_argument("--preset", default=None)
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--profile", default=None, help="START:COUNT optimizer steps to profile")
    p.add_argument("--mem-gb", type=float, default=None, help="cap the trainer to this many GiB")
    p.add_argument("--peak-tflops", type=float, default=790.0,
                   help="bf16 dense matrix rate used for the floor (790: measured on an H200 here)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out-dir", default=".")
    p.add_argument("--json", dest="json_out", default=None)
    p.add_argument("--product-commit", default=os.environ.get("FLUXO_COMMIT"))
    p.add_argument("--sd-scripts-commit", default=os.environ.get("SD_SCRIPTS_COMMIT"))
    args = p.parse_args()
    if not args.variant:
        args.variant = ["default"]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = NvmlSampler()
    sampler.start()
    results = []
    for spec in args.variant:
        label, _, rest = spec.partition(":")
        sets = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        r = run_variant(args, label, sets, sampler, out_dir)
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.json_out:
            _write(args, sampler, results)
    sampler.stop.set()
    cols = ["label", "rc", "to_lora_s", "to_first_step_s", "step_s_median", "step_over_floor",
            "gpu_busy_pct", "power_w", "peak_alloc_gib", "save_sample_rounds_s"]
    print("\n" + " | ".join(cols))
    for r in results:
        print(" | ".join(str(r.get(c)) for c in cols))
    return 0 if all(r["rc"] == 0 for r in results) else 1


def _write(args, sampler, results) -> None:
    meta = {**sampler.info, "peak_tflops_bf16": args.peak_tflops, "date": time.strftime("%Y-%m-%d"),
            "product_commit": args.product_commit or _git(REPO),
            "sd_scripts_commit": args.sd_scripts_commit or _git(Path(args.sd_scripts))}
    try:
        out = subprocess.run([args.python, "-c", "import torch;print(torch.__version__)"],
                             capture_output=True, text=True, timeout=60)
        meta["torch"] = out.stdout.strip()
    except Exception:
        pass
    Path(args.json_out).write_text(json.dumps({"meta": meta, "variants": results}, indent=1))


def _git(path: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
