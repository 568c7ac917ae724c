"""Conversion time of our two workflows (goal: < 20 ms per conversion). Prints figures, asserts nothing.

    python bench/workflow_convert.py [--repeat N]

Per workflow: load (read + parse + detect), convert (UI -> API with the shipped schema), patch
(prompt text, seed, size, steps, LoRA) and validate; plus the one-off cost of loading the
shipped schema, and the recorded browser conversions when ../shared is present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.comfy import schema as schema_mod  # noqa: E402
from orchestrator.comfy.patch import PromptParams, patch_prompt  # noqa: E402
from orchestrator.comfy.validate import validate_prompt  # noqa: E402
from orchestrator.comfy.workflow import load_workflow, to_api_prompt  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=200)
    n = ap.parse_args().repeat

    t0 = time.perf_counter()
    schema_mod._BUILTIN = None
    schema = schema_mod.load_builtin_schema()
    print(f"load shipped schema (once per process): {(time.perf_counter() - t0) * 1000:.2f} ms")

    params = PromptParams(text="a tjtoy toy on a desk", seed=42, width=832, height=1216, steps=28)
    print(f"{'workflow':<22} {'load':>12} {'convert':>12} {'patch':>12} {'validate':>12} {'all four':>12}"
          "   (median / p95, ms)")
    for name in ("base_flux.json", "finetuned_flux.json"):
        path = ROOT / "workflows" / name
        wf = load_workflow(path)
        prompt = to_api_prompt(wf, schema)
        patched = patch_prompt(prompt, params)
        if name == "finetuned_flux.json":
            params_l = PromptParams(lora_name="flux_dreambooth.safetensors", strength_model=0.8)
            patched = patch_prompt(patched, params_l)

        def everything() -> None:
            p = to_api_prompt(load_workflow(path), schema)
            validate_prompt(patch_prompt(p, params), schema)

        cols = [timed(lambda: load_workflow(path), n), timed(lambda: to_api_prompt(wf, schema), n),
                timed(lambda: patch_prompt(prompt, params), n), timed(lambda: validate_prompt(patched, schema), n),
                timed(everything, n)]
        print(f"{name:<22} " + " ".join(f"{m:6.2f}/{p:5.2f}" for m, p in cols))

    conv = ROOT.parent / "shared" / "comfyui" / "conversion"
    info = ROOT.parent / "shared" / "comfyui" / "object_info.json"
    if conv.is_dir() and info.exists():
        live = schema_mod.schemas_from_object_info(json.loads(info.read_text()))
        for f in sorted(conv.glob("*_ui.json")):
            wf = load_workflow(f)
            m, p = timed(lambda: to_api_prompt(wf, live), n)
            print(f"{f.name:<22} convert {m:6.2f}/{p:5.2f}   (recorded browser input, server schema)")
    print("goal: < 20 ms per conversion")


if __name__ == "__main__":
    main()
