"""The human-readable `train --plan`: config, dataset, steps, LoRA, files, container, command, checks."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from orchestrator.progress import format_bytes, format_duration
from orchestrator.train.arith import state_dirs
from orchestrator.train.prepare import Prepared, estimate

_MARK = {"ok": "ok   ", "warn": "warn ", "error": "ERROR"}


def _rel(p: Path | str, root: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "{}"
    if isinstance(v, list):
        return " | ".join(str(x) for x in v)
    return str(v)


def command_lines(words: list[str], script: str) -> str:
    """argv as a shell-quoted command, one option (with its values) per line."""
    groups: list[list[str]] = []
    for w in words:
        if not groups or w.startswith("--") or w == script:
            groups.append([])
        groups[-1].append(w)
    return " \\\n    ".join(shlex.join(g) for g in groups)


def render_plan(p: Prepared, root: Path, *, verbose: bool = False) -> str:
    """The plan as text (what `train --plan` prints on stdout)."""
    plan = p.plan
    out: list[str] = [f"plan for run {_rel(plan.run_dir, root)}  (preset {p.config.preset}, runtime {plan.runtime})",
                      "", "config:"]
    for key, value in plan.config.items():
        if not verbose and value in (None, False):
            continue
        out.append(f"  {key:<36} {_value(value):<28} {p.config.sources.get(key, '')}")
    out += ["", *_dataset_and_steps(p, root), "", *_files(p, root), "", *_where(p)]
    out += ["", "command:", "  " + command_lines(plan.argv(), plan.script), "", "checks:", *_checks(p, verbose)]
    errors = sum(1 for c in p.checks if c.status == "error")
    warns = sum(1 for c in p.checks if c.status == "warn")
    verdict = "the run would not start: fix the errors above" if errors else \
        "ready: the same command without --plan starts it"
    out += ["", f"{errors} error(s), {warns} warning(s): {verdict}"]
    return "\n".join(out)


def _dataset_and_steps(p: Prepared, root: Path) -> list[str]:
    s = p.steps
    out = [f"dataset: {_rel(p.dataset.toml_path, root) if p.dataset.toml_path else 'data.toml'}"]
    for sub in p.dataset.subsets:
        kind = " (reg)" if sub.is_reg else ""
        skipped = f"  SKIPPED: {sub.skipped}" if getattr(sub, "skipped", None) else ""
        out.append(f"  {sub.image_dir.name + kind:<24} {sub.images:>4} images x {sub.num_repeats} repeats = "
                   f"{sub.images * sub.num_repeats}{skipped}")
    return out + ["", "steps:",
                  f"  {s.image_steps} images x repeats per epoch -> {s.batches_per_epoch} batches of {s.batch_size} "
                  "per epoch",
                  f"  {s.processes} GPU process(es), gradient accumulation {s.accumulation} -> {s.steps_per_epoch} "
                  f"optimizer steps per epoch (effective batch {s.effective_batch})",
                  f"  {s.epochs} epochs -> {s.total_steps} optimizer steps",
                  f"  about {format_duration(estimate(p))} on one H100 at 1024 px (measured figures; memory presets "
                  "and smaller GPUs take longer)"]


def _files(p: Prepared, root: Path) -> list[str]:
    plan, lora = p.plan, p.lora
    n = len(plan.expected_outputs)
    out = [f"LoRA: {lora.modules} modules, {lora.parameters / 1e6:.1f} M parameters in {lora.dtype} -> about "
           f"{format_bytes(lora.bytes)} per file, {n} file(s), {format_bytes(lora.bytes * n)} in all", "",
           "files:", f"  {_rel(plan.run_dir, root)}/: plan.json, data.toml"
           + "".join(f", {name}" for name in plan.files) + ", the log, manifest.json, report.html"]
    for name in plan.expected_outputs:
        out.append(f"  {_rel(plan.output_dir, root)}/{name}  -> linked into {_rel(plan.lora_dir, root)}/")
    for d in state_dirs(plan.config, plan.epochs):
        out.append(f"  {_rel(plan.output_dir, root)}/{d}/  (optimizer state for --resume)")
    if plan.config.get("sample_prompts"):
        out.append(f"  {_rel(plan.output_dir, root)}/sample/  (sample images)")
    if plan.config.get("cache_latents_to_disk") or plan.config.get("cache_text_encoder_outputs_to_disk"):
        out.append("  next to each image: <name>_<W>x<H>_flux.npz / <name>_flux_te.npz caches")
    return out


def _where(p: Prepared) -> list[str]:
    """Where the trainer runs, as its runtime describes it."""
    plan = p.plan
    where = p.runtime.describe(plan)
    if where is None:
        out = [f"{plan.runtime} process in {plan.workdir}"]
    else:
        out = [f"container: image {where['image']}, GPUs {where['gpus']}, user {where['user']}, "
               f"workdir {where['workdir']}", "  mounts:"]
        out += [f"    {m.source} -> {m.target} ({'ro' if m.read_only else 'rw'})" for m in plan.mounts]
    return out + ["  environment: " + " ".join(f"{k}={v}" for k, v in plan.environment.items())]


def _checks(p: Prepared, verbose: bool) -> list[str]:
    """One line per check; long runs of the same warning (e.g. one per image): the first two, then a count."""
    out: list[str] = []
    total: dict[tuple[str, str], int] = {}
    for c in p.checks:
        total[(c.name, c.status)] = total.get((c.name, c.status), 0) + 1
    shown: dict[tuple[str, str], int] = {}
    for c in p.checks:
        key = (c.name, c.status)
        shown[key] = shown.get(key, 0) + 1
        if c.status == "warn" and shown[key] > 2 and not verbose:
            if shown[key] == 3:
                out.append(f"  warn  {c.name:<24} ... and {total[key] - 2} more like these (-v shows all)")
            continue
        out.append(f"  {_MARK.get(c.status, c.status)} {c.name:<24} {c.message}")
        if c.hint and c.status != "ok":
            out.append(f"  {'':<30} hint: {c.hint}")
    return out
