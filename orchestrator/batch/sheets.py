"""Contact sheets (a labelled PNG grid per sweep) and index.html showing every image of a batch."""

from __future__ import annotations

import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.batch.jobs import Job, lora_label, _slug
from orchestrator.layout import atomic_write_bytes, atomic_write_text

CELL = 256          # longest side of a thumbnail
PAD = 8
FONT_SIZE = 16
BG = (255, 255, 255)
FG = (20, 20, 20)
MISSING = (225, 225, 225)


@dataclass(frozen=True)
class Sheet:
    """One contact sheet: where it is, its labels and where each thing was drawn (for checks)."""

    path: Path
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[tuple[Job | None, ...], ...]                 # [row][column]
    cell_boxes: tuple[tuple[tuple[int, int, int, int], ...], ...]  # (x0, y0, x1, y1)
    row_label_boxes: tuple[tuple[int, int, int, int], ...]
    column_label_boxes: tuple[tuple[int, int, int, int], ...]
    title_box: tuple[int, int, int, int]


def group_sheets(jobs: Sequence[Job]) -> list[tuple[str, list[Job]]]:
    """Jobs grouped per sheet: one sheet per job entry, prompt and size, when it holds > 1 image."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.group, job.prompt, job.size), []).append(job)
    out: list[tuple[str, list[Job]]] = []
    used: set[str] = set()
    for (g, prompt, size), members in groups.items():
        if len(members) > 1:
            name = base = f"{g + 1:02d}-{_slug(prompt, 30)}-{size}"
            n = 1
            while name in used:  # two long prompts that start alike
                n += 1
                name = f"{base}-{n}"
            used.add(name)
            out.append((name, members))
    return out


def sheet_subtitle(first: Job, vary_lora: bool, vary_strength: bool) -> str:
    """`1024x1024  steps 28  guidance 3.5  LoRA x @ 0.8`: the settings every cell of a sheet shares."""
    subtitle = f"{first.size}  steps {first.steps or '-'}  guidance {first.guidance if first.guidance is not None else '-'}"
    if not vary_lora:
        subtitle += f"  LoRA {lora_label(first.lora)}"
    if not vary_strength and first.lora is not None:
        subtitle += f" @ {first.strength:g}" if not vary_lora else f"  strength {first.strength:g}"
    return subtitle


def _row_label(job: Job, vary_lora: bool, vary_strength: bool) -> str:
    if vary_lora and vary_strength:
        return f"{lora_label(job.lora)} @ {job.strength:g}"
    if vary_lora:
        return lora_label(job.lora)
    return f"strength {job.strength:g}"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def render_sheet(name: str, jobs: Sequence[Job], images: Mapping[str, Path], out_dir: Path) -> Sheet:
    """Draw rows = LoRA files / strengths, columns = seeds; a grey cell where an image is missing."""
    from PIL import Image, ImageDraw

    vary_lora = len({j.lora for j in jobs}) > 1
    vary_strength = len({j.strength for j in jobs}) > 1
    rows: list[tuple[str | None, float]] = []
    cols: list[int] = []
    for j in jobs:
        row = (j.lora, j.strength)
        if row not in rows:
            rows.append(row)
        if j.seed not in cols:
            cols.append(j.seed)
    grid: list[list[Job | None]] = [[None] * len(cols) for _ in rows]
    for j in jobs:
        grid[rows.index((j.lora, j.strength))][cols.index(j.seed)] = j
    first = jobs[0]
    scale = CELL / max(first.width, first.height)
    cw, ch = max(1, round(first.width * scale)), max(1, round(first.height * scale))
    font, title_font = _font(FONT_SIZE), _font(FONT_SIZE + 2)
    row_labels = [_row_label(next(j for j in grid[i] if j), vary_lora, vary_strength) for i in range(len(rows))]
    col_labels = [f"seed {s}" for s in cols]
    title = first.prompt if len(first.prompt) <= 90 else first.prompt[:89] + "…"
    subtitle = sheet_subtitle(first, vary_lora, vary_strength)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str, f) -> tuple[int, int]:
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=f)
        return int(x1 - x0), int(y1 - y0)

    label_w = max(text_size(t, font)[0] for t in row_labels) + 2 * PAD
    line_h = text_size("Ag", font)[1] + PAD
    title_h = 2 * (text_size("Ag", title_font)[1] + PAD) + PAD
    x_grid, y_grid = label_w, title_h + line_h
    width = max(x_grid + len(cols) * (cw + PAD) + PAD, text_size(title, title_font)[0] + 2 * PAD)
    height = y_grid + len(rows) * (ch + PAD) + PAD
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), title, fill=FG, font=title_font)
    draw.text((PAD, PAD + title_h // 2), subtitle, fill=FG, font=font)
    title_box = (0, 0, width, title_h)
    col_boxes = []
    for c, label in enumerate(col_labels):
        x = x_grid + c * (cw + PAD)
        draw.text((x + (cw - text_size(label, font)[0]) // 2, title_h), label, fill=FG, font=font)
        col_boxes.append((x, title_h, x + cw, title_h + line_h))
    row_boxes, cell_boxes = [], []
    for r, label in enumerate(row_labels):
        y = y_grid + r * (ch + PAD)
        draw.text((PAD, y + (ch - line_h) // 2), label, fill=FG, font=font)
        row_boxes.append((0, y, label_w, y + ch))
        boxes = []
        for c, job in enumerate(grid[r]):
            x = x_grid + c * (cw + PAD)
            box = (x, y, x + cw, y + ch)
            boxes.append(box)
            path = images.get(job.key) if job else None
            if path is not None and path.exists():
                with Image.open(path) as im:
                    sheet.paste(im.convert("RGB").resize((cw, ch)), (x, y))
            else:
                draw.rectangle(box, fill=MISSING)
                draw.text((x + PAD, y + PAD), "missing" if job else "-", fill=(160, 0, 0), font=font)
        cell_boxes.append(tuple(boxes))
    path = out_dir / "sheets" / f"{name}.png"
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Sheet(path=path, title=first.prompt, rows=tuple(row_labels), columns=tuple(col_labels),
                 cells=tuple(tuple(r) for r in grid), cell_boxes=tuple(cell_boxes),
                 row_label_boxes=tuple(row_boxes), column_label_boxes=tuple(col_boxes), title_box=title_box)


def make_sheets(jobs: Sequence[Job], images: Mapping[str, Path], out_dir: Path) -> list[Sheet]:
    """A contact sheet for every grid in the batch."""
    return [render_sheet(name, members, images, out_dir) for name, members in group_sheets(jobs)]


def write_index(out_dir: Path, title: str, jobs: Sequence[Job], images: Mapping[str, Path],
                states: Mapping[str, tuple[str, str | None, str | None]], sheets: Sequence[Sheet]) -> Path:
    """index.html: every sheet, then every image with its settings (states: key -> (state, server, error))."""
    e = html.escape

    def rel(p: Path) -> str:
        return e(os.path.relpath(p, out_dir).replace(os.sep, "/"), quote=True)

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;margin:1.5em}}"
        "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:left;vertical-align:top}.failed{color:#a00}figure{margin:0 0 2em}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if sheets:
        parts.append("<h2>Contact sheets</h2>")
        for s in sheets:
            parts.append(f"<figure><a href='{rel(s.path)}'><img src='{rel(s.path)}' alt='{e(s.title, quote=True)}'>"
                         f"</a><figcaption>{e(s.title)}: rows {e(', '.join(s.rows))}; "
                         f"columns {e(', '.join(s.columns))}</figcaption></figure>")
    parts.append("<h2>Images</h2><table><tr><th>image</th><th>name</th><th>prompt</th><th>seed</th><th>LoRA</th>"
                 "<th>strength</th><th>size</th><th>steps</th><th>guidance</th><th>state</th></tr>")
    for job in jobs:
        state, server, error = states.get(job.key, ("pending", None, None))
        path = images.get(job.key)
        cell = (f"<a href='{rel(path)}'><img src='{rel(path)}' width='160' alt='{e(job.name, quote=True)}'></a>"
                if path is not None and path.exists() else "")
        status = e(state) + (f" on {e(server)}" if server and state == "done" else "")
        if error:
            status += f"<div class='failed'>{e(error)}</div>"
        parts.append(
            f"<tr class='{e(state)}'><td>{cell}</td><td>{e(job.name)}</td><td>{e(job.prompt)}</td><td>{job.seed}</td>"
            f"<td>{e(job.lora or 'none')}</td><td>{job.strength:g}</td><td>{job.size}</td><td>{job.steps or ''}</td>"
            f"<td>{'' if job.guidance is None else f'{job.guidance:g}'}</td><td>{status}</td></tr>")
    parts.append("</table></body></html>\n")
    path = out_dir / "index.html"
    atomic_write_text(path, "\n".join(parts))
    return path
