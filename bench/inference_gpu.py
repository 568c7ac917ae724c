#!/usr/bin/env python3
"""Seconds per image on a real GPU: the product's own `comfyui up` + `generate` + `batch run`.

For each mode (`--mode LABEL[:FLAG,FLAG][+easycache][+lora]`; FLAGs are ComfyUI main.py flags given to
`comfyui up --comfy-arg`, `+easycache` inserts ComfyUI's EasyCache node into the workflow, `+lora` adds the LoRA measurements) it
measures, from the server's own "Prompt executed in" lines and NVML:
- `comfyui up` -> ready; the first image (cold: loads T5, FLUX, AE); steady seconds per image and
  per step for the base workflow and (with --lora) the finetuned one; GPU busy % and power;
- the cost of a LoRA switch (base <-> LoRA jobs alternating) and of a strength change;
- `lora key not loaded` lines in the server log (a LoRA that does not fit the model);
- the PSNR of each mode's image against the first mode's (bf16) at the same seed;
- images per hour of a LoRA x strength x seed sweep through `batch run`;
- the ratio to the floor (28 steps x 74.4 TFLOP at --peak-tflops).
Local runtime only (the ComfyUI checkout and its Python are given):
  python3 bench/inference_gpu.py --project-dir P --comfyui /opt/ComfyUI --python /opt/comfy/bin/python \
      --lora flux_dreambooth --mode bf16 --mode fp8:--fast,fp8_matrix_mult,--fp8_e4m3fn-unet --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_gpu import NvmlSampler, _git, flux_forward_tflop  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXEC = re.compile(r"Prompt executed in ([\d.]+) seconds")
PROMPT = "a tjtoy toy holding a sparkgpu gpu in a datacenter"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.project = Path(args.project_dir)
        self.log = self.project / ".comfyui" / "local" / "comfyui.log"
        self.orc = [sys.executable, "-m", "orchestrator", "--project-dir", str(self.project)]
        self.out = Path(args.out_dir)

    def cli(self, *words: str, timeout: float = 300) -> tuple[int, float, str]:
        t = time.time()
        r = subprocess.run([*self.orc, *words], capture_output=True, text=True, timeout=timeout, cwd=REPO)
        return r.returncode, time.time() - t, r.stdout + r.stderr

    def exec_times(self) -> list[float]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [float(x) for x in EXEC.findall(text)]

    def log_count(self, needle: str) -> int:
        return self.log.read_text(errors="replace").count(needle) if self.log.exists() else 0

    def gen(self, *extra: str, workflow: str | None = None) -> dict:
        before = len(self.exec_times())
        words = ["generate", PROMPT, "--timeout", "600", *extra]
        if workflow:
            words += ["--workflow", workflow]
        rc, wall, text = self.cli(*words, timeout=900)
        times = self.exec_times()[before:]
        pngs = re.findall(r"(\S+\.png)", text)
        return {"rc": rc, "wall_s": round(wall, 2), "server_s": times, "pngs": pngs,
                "tail": text.strip().splitlines()[-2:] if rc else []}


def easycache_workflow(b: Bench, base_json: Path) -> Path:
    """The base workflow in API form with ComfyUI's EasyCache node after ModelSamplingFlux."""
    api = b.out / "base_api.json"
    rc, _, text = b.cli("workflow", "convert", str(base_json), "--out", str(api))
    if rc:
        raise SystemExit(f"workflow convert failed: {text}")
    prompt = json.loads(api.read_text())
    src = next(k for k, v in prompt.items() if v["class_type"] == "ModelSamplingFlux")
    prompt["900"] = {"class_type": "EasyCache", "inputs": {"model": [src, 0], "reuse_threshold": 0.2,
                                                          "start_percent": 0.15, "end_percent": 0.95,
                                                          "verbose": False}}
    for k, v in prompt.items():
        if k != "900" and v["inputs"].get("model") == [src, 0]:
            v["inputs"]["model"] = ["900", 0]
    path = b.out / "base_easycache_api.json"
    path.write_text(json.dumps(prompt))
    return path


def psnr(a: Path, b: Path) -> float | None:
    try:
        import numpy as np
        from PIL import Image
        x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
        y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    except Exception:
        return None
    mse = float(((x - y) ** 2).mean())
    return round(10 * math.log10(255 ** 2 / mse), 2) if mse > 0 else float("inf")


def run_mode(b: Bench, label: str, flags: list[str], easycache: bool, sampler: NvmlSampler,
             with_lora: bool) -> dict:
    a = b.args
    b.cli("comfyui", "down")
    up = ["comfyui", "up", "--runtime", "local", "--comfyui", a.comfyui, "--python", a.python]
    for f in flags:
        up.append(f"--comfy-arg={f}")
    rc, up_s, text = b.cli(*up, timeout=600)
    res: dict = {"label": label, "flags": flags, "easycache": easycache, "up_rc": rc, "up_s": round(up_s, 2)}
    if rc:
        res["error"] = text[-2000:]
        return res
    wf = str(easycache_workflow(b, REPO / "workflows" / "base_flux.json")) if easycache else None
    n = a.images
    first = b.gen("--lora", "none", "--seed", "1", workflow=wf)
    res["first_image_s"] = first["wall_s"]
    res["first_image_server_s"] = first["server_s"]
    t0 = time.time()
    steady = b.gen("--lora", "none", "--seed", "2", "--count", str(n), workflow=wf)
    t1 = time.time()
    res["steady_s"] = steady["server_s"]
    med = statistics.median(steady["server_s"]) if steady["server_s"] else None
    res["steady_image_s"] = med
    res["steady_step_s"] = round(med / a.steps, 4) if med else None
    res.update(sampler.window(t0 + 0.3 * (t1 - t0), t1))
    res["base_png_seed1"] = first["pngs"][:1]
    res["errors"] = [r["tail"] for r in (first, steady) if r["rc"]]
    if a.lora and with_lora:
        keys0 = b.log_count("lora key not loaded")
        lf = b.gen("--lora", a.lora, "--seed", "1")
        ls = b.gen("--lora", a.lora, "--seed", "2", "--count", str(n))
        res["lora_first_s"] = lf["wall_s"]
        res["lora_first_server_s"] = lf["server_s"]
        res["lora_steady_s"] = ls["server_s"]
        res["lora_steady_image_s"] = statistics.median(ls["server_s"]) if ls["server_s"] else None
        res["lora_png_seed1"] = lf["pngs"][:1]
        switch = []
        for i, lora in enumerate(["none", a.lora, "none"]):
            switch += b.gen("--lora", lora, "--seed", str(100 + i))["server_s"]
        res["switch_s"] = switch
        strength = []
        for i, s in enumerate(["0.5", "1.0"]):
            strength += b.gen("--lora", a.lora, "--strength", s, "--seed", str(200 + i))["server_s"]
        res["strength_change_s"] = strength
        res["lora_keys_not_loaded"] = b.log_count("lora key not loaded") - keys0
        res["errors"] += [r["tail"] for r in (lf, ls) if r["rc"]]
        if a.sweep:
            res["sweep"] = sweep(b, a)
    res["reloads_in_log"] = b.log_count("loaded completely")
    b.cli("comfyui", "down")
    if b.log.exists():
        (b.out / f"comfyui-{label}.log").write_text(b.log.read_text(errors="replace")[-200000:])
    return res


def sweep(b: Bench, a: argparse.Namespace) -> dict:
    """2 LoRAs x 3 strengths x N seeds through `batch run` (a copy of the LoRA is the second one)."""
    loras = b.project / "models" / "loras"
    second = loras / f"{a.lora}_copy.safetensors"
    if not second.exists():
        os.link(loras / f"{a.lora}.safetensors", second)
    jobs = b.out / "sweep.yaml"
    jobs.write_text(json.dumps({"jobs": [{"prompt": PROMPT, "lora": [a.lora, f"{a.lora}_copy"],
                                          "strengths": [0.5, 0.75, 1.0],
                                          "seeds": list(range(1, a.sweep + 1))}]}))
    before = len(b.exec_times())
    rc, wall, text = b.cli("batch", "run", str(jobs), "--out", str(b.out / "sweep"), timeout=1800)
    times = b.exec_times()[before:]
    n = len(times)
    return {"rc": rc, "images": n, "wall_s": round(wall, 1),
            "images_per_hour": round(3600 * n / wall, 1) if n else None,
            "server_s": times, "tail": text.strip().splitlines()[-3:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project-dir", required=True)
    p.add_argument("--comfyui", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("--mode", action="append", default=[])
    p.add_argument("--lora", default=None, help="a LoRA in models/loras (name without extension)")
    p.add_argument("--images", type=int, default=4, help="steady images per measurement")
    p.add_argument("--steps", type=int, default=28, help="the workflow's steps (for s/step)")
    p.add_argument("--sweep", type=int, default=0, help="seeds per LoRA x strength in the sweep (0: none)")
    p.add_argument("--peak-tflops", type=float, default=790.0)
    p.add_argument("--out-dir", default="/tmp/inf_out")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    b = Bench(args)
    sampler = NvmlSampler()
    sampler.start()
    lin, att = flux_forward_tflop(1024, 1024)
    floor = args.steps * (lin + att) / args.peak_tflops
    results = []
    for spec in args.mode or ["bf16"]:
        with_lora = spec.endswith("+lora")
        spec = spec.removesuffix("+lora")
        easy = spec.endswith("+easycache")
        spec = spec.removesuffix("+easycache")
        label, _, flags = spec.partition(":")
        label += "+easycache" if easy else ""
        r = run_mode(b, label, [f for f in flags.split(",") if f], easy, sampler, with_lora)
        if r.get("steady_image_s"):
            r["over_floor"] = round(r["steady_image_s"] / floor, 2)
        results.append(r)
        print(json.dumps(r), flush=True)
        ref = results[0]
        for key in ("base_png_seed1", "lora_png_seed1"):
            if r.get(key) and ref.get(key) and r is not ref:
                r[f"psnr_vs_{ref['label']}_{key.split('_')[0]}"] = psnr(Path(ref[key][0]), Path(r[key][0]))
        if args.json_out:
            meta = {**sampler.info, "floor_image_s": round(floor, 3), "peak_tflops_bf16": args.peak_tflops,
                    "product_commit": os.environ.get("FLUXO_COMMIT") or _git(REPO),
                    "date": time.strftime("%Y-%m-%d"), "steps": args.steps, "size": "1024x1024"}
            Path(args.json_out).write_text(json.dumps({"meta": meta, "modes": results}, indent=1))
    sampler.stop.set()
    cols = ["label", "up_s", "first_image_s", "steady_image_s", "lora_steady_image_s", "over_floor",
            "gpu_busy_pct", "switch_s", "lora_keys_not_loaded"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r.get(c)) for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
