"""A DatasetReport as text for the terminal: one row per concept, then the problems."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from orchestrator.table import render_table
from orchestrator.dataset.report import DatasetReport, Problem, SubsetSummary


def _size(wh: tuple[int, int] | None) -> str:
    return f"{wh[0]}x{wh[1]}" if wh else "-"


def _buckets(s: SubsetSummary) -> str:
    if not s.buckets:
        return "-"
    if len(s.buckets) > 3:
        return f"{len(s.buckets)} buckets"
    return " ".join(f"{w}x{h}:{n}" for (w, h), n in s.buckets)


def _grouped(problems: list[Problem], root: Path, show: int = 3) -> list[str]:
    """Each problem with its fix; past `show` of one kind in one folder, a count instead."""
    seen: Counter[tuple[str, str]] = Counter()
    totals = Counter((p.code, str(p.path.parent if p.path else "")) for p in problems)
    lines: list[str] = []
    for p in problems:
        key = (p.code, str(p.path.parent if p.path else ""))
        seen[key] += 1
        if seen[key] <= show or totals[key] == show + 1:
            lines.append("  " + p.render(root).replace("\n", "\n  "))
        elif seen[key] == show + 1:
            lines.append(f"  ... and {totals[key] - show} more like this in {_rel(Path(key[1]), root)} "
                         "(`dataset check --json` lists all)")
    return lines


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def render_report(report: DatasetReport, root: Path, batch_size: int = 1) -> str:
    """The table, the epoch arithmetic, then warnings (errors are rendered by the CLI's error path)."""
    lines: list[str] = []
    if report.subsets:
        rows = []
        for s in report.subsets:
            name = s.name + (" (reg)" if s.is_reg else "")
            formats = " ".join(f"{f} {n}" for f, n in s.formats) or "-"
            sizes = _size(s.min_size) if s.min_size == s.max_size else f"{_size(s.min_size)}..{_size(s.max_size)}"
            per_epoch = s.skipped and f"skipped: {s.skipped}" or str(s.image_steps)
            rows.append([name, s.images, formats, sizes, _buckets(s), f"{s.captions}/{s.images}",
                         s.num_repeats, per_epoch])
        lines.append(render_table(["concept", "images", "formats", "size", "buckets", "captions", "repeats",
                                   "per epoch"], rows))
        ds_bs = {d.batch_size for d in report.datasets if d.batch_size}
        which = f"data.toml's batch_size {', '.join(map(str, sorted(ds_bs)))}" if ds_bs else f"batch size {batch_size}"
        lines.append("")
        lines.append(f"{report.image_steps_per_epoch()} image-steps per epoch = "
                     f"{report.batches_per_epoch(batch_size)} batches per epoch at {which}")
    warnings = report.warnings()
    if warnings:
        lines += [""] if lines else []
        lines.append(f"{len(warnings)} warning(s):")
        lines += _grouped(warnings, root)
    for note in report.notes:
        lines += ["", f"note: {note}"]
    errors = report.errors()
    if lines:
        lines.append("")
    lines.append(f"{len(errors)} error(s), {len(warnings)} warning(s)" if errors or warnings else "no problems found")
    return "\n".join(lines)
