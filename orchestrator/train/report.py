"""`report.html`: one small page per run (loss curve as inline SVG, sample thumbnails per epoch, facts).

Samples are embedded as 256 px WebP (or JPEG) thumbnails, each linking to its full-size PNG by a path
relative to the run folder: 20 samples at 1024 px make a page of a few hundred KB instead of 26 MB.
"""

from __future__ import annotations

import base64
import html
import io
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_POINTS = 1000          # the curve keeps at most this many points (bucket means beyond)
THUMB_PX = 256             # longest side of an embedded thumbnail (the page shows them at 220 px)
THUMB_QUALITY = 80         # WebP/JPEG quality: a 1024 px sample -> 5-20 KB
EMBED_BUDGET = 1_500_000   # bytes of embedded thumbnails per page; past it (hundreds of samples) the full images
#                            are shown by relative link only, so the page stays under 2 MB
_EPOCH_OF_SAMPLE = re.compile(r"_e(\d{6})_(\d{2})_")
_STEP_OF_SAMPLE = re.compile(r"_(\d{6})_(\d{2})_\d{14}")


@dataclass(frozen=True)
class ReportData:
    """What the page shows."""

    title: str
    facts: Sequence[tuple[str, str]]
    loss: Sequence[tuple[int, float]]          # (optimizer step, average loss)
    samples: Sequence[Path] = ()
    outputs: Sequence[tuple[str, str]] = ()    # (name, size text)
    config: Mapping[str, Any] = field(default_factory=dict)
    log_tail: Sequence[str] = ()


def downsample(points: Sequence[tuple[int, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most `limit` points: the mean of equal consecutive buckets when there are more."""
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) <= limit:
        return pts
    out = []
    size = len(pts) / limit
    for i in range(limit):
        chunk = pts[int(i * size): int((i + 1) * size)] or [pts[-1]]
        out.append((sum(p[0] for p in chunk) / len(chunk), sum(p[1] for p in chunk) / len(chunk)))
    return out


def loss_svg(points: Sequence[tuple[int, float]], *, width: int = 720, height: int = 260) -> str:
    """An inline SVG line chart of loss over steps (one path point per kept sample)."""
    pts = [(x, y) for x, y in downsample(points) if y == y and abs(y) != float("inf")]
    if not pts:
        return '<p class="muted">No loss values were reported.</p>'
    left, right, top, bottom = 56, 12, 12, 32
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5 * abs(y0 or 1), y1 + 0.5 * abs(y1 or 1)
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
    ticks = []
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        ticks.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        ticks.append(f'<text x="{sx(xv):.1f}" y="{height - 10}" text-anchor="middle">{xv:.0f}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="average loss by optimizer step">'
            + "".join(ticks)
            + f'<path class="loss" d="{d}" fill="none" stroke="#2b6cb0" stroke-width="1.5"/>'
            + f'<text x="{left + pw / 2:.0f}" y="{height}" text-anchor="middle" class="muted">step</text></svg>')


def sample_groups(samples: Sequence[Path]) -> list[tuple[str, list[Path]]]:
    """Samples grouped by epoch (or step) from sd-scripts' file names, in training order."""
    groups: dict[tuple[int, str], list[Path]] = {}
    for p in samples:
        m = _EPOCH_OF_SAMPLE.search(p.name)
        if m:
            key = (int(m.group(1)), f"epoch {int(m.group(1))}" if int(m.group(1)) else "before training")
        else:
            m2 = _STEP_OF_SAMPLE.search(p.name)
            key = (int(m2.group(1)), f"step {int(m2.group(1))}") if m2 else (1 << 30, "other")
        groups.setdefault(key, []).append(p)
    return [(label, sorted(files)) for (_, label), files in sorted(groups.items())]


def thumbnail_uri(path: Path, px: int = THUMB_PX) -> tuple[str, int, int] | None:
    """(data URI, width, height) of a `px` thumbnail of an image file; None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError, features

    try:
        with Image.open(path) as im:
            im.draft("RGB", (px, px))      # JPEG sources decode at a reduced size directly
            im.thumbnail((px, px))
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    fmt = "WEBP" if features.check("webp") else "JPEG"
    buf = io.BytesIO()
    rgb.save(buf, fmt, quality=THUMB_QUALITY)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"data:image/{fmt.lower()};base64,{data}", rgb.width, rgb.height


def _href(path: Path, base: Path) -> str:
    try:
        return html.escape(urllib.parse.quote(path.relative_to(base).as_posix()))
    except ValueError:
        return html.escape(path.as_uri())


def _img(path: Path, base: Path, thumb_px: int, budget: list[int]) -> str:
    alt = html.escape(path.name)
    href = _href(path, base)
    if not path.is_file():
        return f'<span class="muted">{alt} (missing)</span>'
    thumb = thumbnail_uri(path, thumb_px) if budget[0] > 0 else None
    if thumb is not None and len(thumb[0]) <= budget[0]:
        budget[0] -= len(thumb[0])
        src, size = thumb[0], f' width="{thumb[1]}" height="{thumb[2]}"'
    else:   # over the budget (or unreadable): the full image by its relative path, fetched only when scrolled to
        src, size = href, ' loading="lazy"'
    return (f'<figure><a href="{href}"><img src="{src}"{size} alt="{alt}" title="{alt} (click for full size)">'
            f'</a><figcaption>{alt}</figcaption></figure>')


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#1a202c;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse}td,th{padding:3px 10px;
border-bottom:1px solid #e2e8f0;text-align:left;vertical-align:top}th{color:#4a5568;font-weight:600}
svg text{font-size:11px;fill:#4a5568}.grid{stroke:#edf2f7}.muted{color:#718096}figure{display:inline-block;
margin:4px}img{max-width:220px;max-height:220px;width:auto;height:auto;border:1px solid #e2e8f0}
figcaption{font-size:11px;color:#718096;
max-width:220px;overflow-wrap:anywhere}pre{background:#f7fafc;padding:8px;overflow-x:auto;font-size:12px}"""


def render_report(data: ReportData, base: Path, *, thumb_px: int = THUMB_PX, embed_budget: int = EMBED_BUDGET) -> str:
    """The HTML page: sample thumbnails inline while the budget lasts (newest epochs first), each linking to its
    full image relative to `base` (the run folder), so the page works next to its output/ folder."""
    e = html.escape
    budget = [embed_budget]
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in data.facts)
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>{e(data.title)}</title>",
             f"<style>{_CSS}</style><h1>{e(data.title)}</h1><table>{facts}</table>",
             "<h2>Loss</h2>", loss_svg(data.loss)]
    parts.append("<h2>Samples</h2>")
    groups = sample_groups(data.samples)
    if not groups:
        parts.append('<p class="muted">No sample images (set sample prompts to see the LoRA learn).</p>')
    rendered = {}
    for label, files in reversed(groups):  # the latest samples matter most: they get the inline budget first
        rendered[label] = "".join(_img(p, base, thumb_px, budget) for p in files)
    for label, _ in groups:
        parts.append(f"<h3>{e(label)}</h3><div>{rendered[label]}</div>")
    if data.outputs:
        rows = "".join(f"<tr><td>{e(n)}</td><td>{e(s)}</td></tr>" for n, s in data.outputs)
        parts.append(f"<h2>Files</h2><table><tr><th>file</th><th>size</th></tr>{rows}</table>")
    if data.config:
        rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in sorted(data.config.items()))
        parts.append(f"<h2>Configuration</h2><table>{rows}</table>")
    if data.log_tail:
        parts.append("<h2>Last log lines</h2><pre>" + e("\n".join(data.log_tail)) + "</pre>")
    parts.append("</html>\n")
    return "".join(parts)
