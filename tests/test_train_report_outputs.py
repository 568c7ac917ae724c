"""report.html (inline SVG, samples per epoch) and run files (links into models/loras, states, resume check)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from orchestrator.errors import ConfigError
from orchestrator.layout import Layout
from orchestrator.train.outputs import (check_resumable, dataset_fingerprint, host_path, latest_state, link_lora,
                                        state_dirs)
from orchestrator.train.report import MAX_POINTS, ReportData, loss_svg, render_report, sample_groups
from tests.train_plans import make_plan

def write_sample(path: Path, w: int, h: int, *, noise: bool = False) -> None:
    """A sample PNG as sd-scripts saves them: noise (what random weights draw) or a smooth photo-like picture."""
    if noise:
        img = Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))
    else:
        img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for i in range(12):
            x, y = (i * 97) % w, (i * 61) % h
            draw.ellipse((x, y, x + w // 4, y + h // 5), fill=(40 * i % 256, 90, 200 - 10 * i))
    img.save(path, compress_level=1)


def embedded(page: str) -> list[Image.Image]:
    """The thumbnails embedded in a page, decoded."""
    found = re.findall(r'src="data:image/(?:webp|jpeg);base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(d))) for d in found]


PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


def path_points(svg: str) -> list[str]:
    d = re.search(r'<path class="loss" d="([^"]+)"', svg).group(1)
    return re.findall(r"[ML]([\d.]+,[\d.]+)", d)


def test_loss_curve_has_one_point_per_step_and_goes_down_when_loss_does():
    svg = loss_svg([(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.25)])
    pts = path_points(svg)
    assert len(pts) == 4
    ys = [float(p.split(",")[1]) for p in pts]
    assert ys == sorted(ys)  # SVG y grows downwards, so a falling loss has growing y values
    assert svg.startswith("<svg") and "</svg>" in svg


def test_long_curves_are_bucketed_and_nan_is_dropped():
    assert len(path_points(loss_svg([(i, 1 / (i + 1)) for i in range(5000)]))) == MAX_POINTS
    assert len(path_points(loss_svg([(1, 0.5), (2, float("nan")), (3, 0.4)]))) == 2
    assert "No loss values" in loss_svg([])


def test_report_embeds_thumbnails_grouped_by_epoch(tmp_path):
    sample = tmp_path / "output" / "sample"
    sample.mkdir(parents=True)
    names = ["toy_e000002_00_20261126071500_42.png", "toy_e000002_01_20261126071500_42.png",
             "toy_e000004_00_20261126073000_42.png", "toy_e000000_00_20261126070000.png"]
    for n in names:
        write_sample(sample / n, 640, 480)
    files = sorted(sample.iterdir())
    assert [label for label, _ in sample_groups(files)] == ["before training", "epoch 2", "epoch 4"]
    page = render_report(ReportData(title="Training run r1", facts=[("status", "succeeded")],
                                    loss=[(1, 0.5), (2, 0.4), (3, 0.3)], samples=files,
                                    config={"network_dim": 16}), tmp_path)
    thumbs = embedded(page)
    assert len(thumbs) == 4 and all(t.size == (256, 192) for t in thumbs)        # aspect kept, longest side 256
    for n in names:                                                               # each links to its full image
        assert f'<a href="output/sample/{n}">' in page
    assert len(path_points(page)) == 3
    assert "<h3>epoch 2</h3>" in page and "network_dim" in page and "src=\"http" not in page


def test_unreadable_samples_are_linked_not_embedded(tmp_path):
    p = tmp_path / "output" / "sample" / "toy e000001_00_20261126071500.png"     # a space: the link is quoted
    p.parent.mkdir(parents=True)
    p.write_bytes(PNG[:20])
    page = render_report(ReportData(title="t", facts=[], loss=[], samples=[p]), tmp_path)
    assert 'src="output/sample/toy%20e000001_00_20261126071500.png" loading="lazy"' in page
    missing = render_report(ReportData(title="t", facts=[], loss=[], samples=[tmp_path / "gone.png"]), tmp_path)
    assert "gone.png (missing)" in missing


def test_twenty_full_size_samples_make_a_small_report(tmp_path):
    """20 samples at 1024 px, as a GPU run leaves them (random-weight samples are noise: the worst case for
    compression; photo-like ones are far smaller): the page stays under 2 MB and links every full image."""
    sample = tmp_path / "output" / "sample"
    sample.mkdir(parents=True)
    for epoch in range(1, 11):
        for idx in range(2):
            write_sample(sample / f"flux_dreambooth_e{epoch:06d}_{idx:02d}_20261126071500_42.png", 1024, 1024,
                         noise=idx == 0)
    files = sorted(sample.iterdir())
    full = sum(f.stat().st_size for f in files)
    assert full > 26 * 10 ** 6                       # what the old page embedded, as measured on the GPU
    page = render_report(ReportData(title="t", facts=[], loss=[(1, 0.5)], samples=files), tmp_path)
    assert len(page.encode()) < 2 * 10 ** 6, len(page)
    assert len(embedded(page)) == 20
    assert all(f'<a href="output/sample/{f.name}">' in page for f in files)


def test_the_embed_budget_goes_to_the_latest_samples(tmp_path):
    sample = tmp_path / "output" / "sample"
    sample.mkdir(parents=True)
    for epoch in (1, 2, 3):
        write_sample(sample / f"toy_e{epoch:06d}_00_20261126071500.png", 512, 512)
    files = sorted(sample.iterdir())
    one = len(render_report(ReportData(title="t", facts=[], loss=[], samples=files[-1:]), tmp_path)) - \
        len(render_report(ReportData(title="t", facts=[], loss=[], samples=[]), tmp_path))
    page = render_report(ReportData(title="t", facts=[], loss=[], samples=files), tmp_path, embed_budget=2 * one)
    assert len(embedded(page)) == 2
    assert 'src="output/sample/toy_e000001_00_20261126071500.png" loading="lazy"' in page   # the oldest: linked


def test_link_lora_hard_links_and_never_overwrites(tmp_path):
    out, loras = tmp_path / "output", tmp_path / "loras"
    out.mkdir()
    src = out / "toy.safetensors"
    src.write_bytes(b"lora")
    first = link_lora(src, loras)
    assert first.target == loras / "toy.safetensors" and os.path.samefile(src, first.target)
    assert link_lora(src, loras).target == first.target            # idempotent
    other = tmp_path / "other" / "toy.safetensors"
    other.parent.mkdir()
    other.write_bytes(b"another lora")
    clash = link_lora(other, loras)
    assert clash.target is None and "already exists" in clash.note
    assert (loras / "toy.safetensors").read_bytes() == b"lora"      # untouched
    same = tmp_path / "same" / "toy.safetensors"
    same.parent.mkdir()
    same.write_bytes(b"lora")
    assert link_lora(same, loras).target == loras / "toy.safetensors"  # identical content is fine


@pytest.mark.skipif(not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
                    reason="needs a second file system for a cross-device link")
def test_link_lora_copies_across_file_systems(tmp_path):
    import tempfile

    src = tmp_path / "toy-000002.safetensors"
    src.write_bytes(b"lora bytes")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        assert link_lora(src, Path(d), allow_copy=False) is None   # while the trainer may still write it
        result = link_lora(src, Path(d))
        assert result.target.read_bytes() == b"lora bytes" and "copied" in result.note
        assert not os.path.samefile(src, result.target)


def test_latest_state_is_the_highest_step(tmp_path):
    out = tmp_path / "output"
    for name, step in [("toy-000002-state", 6), ("toy-000004-state", 12), ("toy-state", 15)]:
        (out / name).mkdir(parents=True)
        (out / name / "train_state.json").write_text(json.dumps({"current_epoch": 1, "current_step": step}))
    (out / "junk-state").mkdir()  # no train_state.json: not a state
    assert [p.name for p in state_dirs(out)] == ["toy-000002-state", "toy-000004-state", "toy-state"]
    assert latest_state(tmp_path) == out / "toy-state"
    assert latest_state(tmp_path / "nothing") is None


def test_check_resumable_refuses_changes_that_break_the_state():
    old = {"preset": "default", "network_dim": 16, "gradient_accumulation_steps": 4, "learning_rate": 1e-4,
           "dataset": {"subsets": [{"image_dir": "flux_data/toy", "num_repeats": 2}]}}
    check_resumable(old, {**old, "learning_rate": 5e-5, "sample_every_n_epochs": 2})  # harmless changes pass
    with pytest.raises(ConfigError) as e:
        check_resumable(old, {**old, "network_dim": 32, "dataset": {"subsets": [{"image_dir": "flux_data/toy",
                                                                                 "num_repeats": 3}]}})
    assert "network_dim: 16 -> 32" in e.value.details
    assert any(d.startswith("dataset.subsets") for d in e.value.details)
    assert "--resume" in e.value.hint


def test_host_path_maps_through_mounts_and_fingerprint_follows_content(tmp_path):
    layout = Layout.at(tmp_path / "p")
    plan = make_plan(layout)
    assert host_path(plan, "/data/flux_data/toy/img0.png") == layout.flux_data / "toy" / "img0.png"
    assert host_path(plan, "/run/output/toy-state") == plan.run_dir / "output" / "toy-state"
    first = dataset_fingerprint(plan)
    assert first["images"] == 3
    (layout.flux_data / "toy" / "img0.txt").write_text("a tjtoy toy")
    second = dataset_fingerprint(plan)
    assert second["sha256"] != first["sha256"]
    (layout.flux_data / "toy" / "img0_1024x1024_flux.npz").write_bytes(b"cache")  # caches do not count
    assert dataset_fingerprint(plan) == second


