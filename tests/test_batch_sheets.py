"""Contact sheets and index.html: geometry, the pixels of each cell, and text in the label regions."""

from __future__ import annotations

from PIL import Image, ImageDraw

from orchestrator.batch.jobs import load_job_file
from orchestrator.batch.sheets import CELL, MISSING, _font, make_sheets, write_index
from tests.batch_fakes import color_for, png


def sweep(tmp_path, extra=""):
    path = tmp_path / "jobs.yaml"
    path.write_text("defaults: {lora: toy.safetensors, size: 512x768, steps: 4}\njobs:\n"
                    '  - prompt: "a tjtoy toy <on> a desk"\n    seeds: [1, 2, 3, 4]\n'
                    '    strengths: [0.6, 0.8, 1.0]\n    name: "toy-{strength}-{seed}"\n' + extra)
    return load_job_file(path)


def dark_pixels(img: Image.Image, box) -> int:
    return sum(1 for p in img.crop(box).convert("L").tobytes() if p < 100)


def dark_width(img: Image.Image, box) -> int:
    crop = img.crop(box).convert("L").point(lambda v: 255 if v < 100 else 0)
    bbox = crop.getbbox()
    return 0 if bbox is None else bbox[2] - bbox[0]


def test_sheet_grid_cells_and_labels(tmp_path):
    jf = sweep(tmp_path)
    out = tmp_path / "out"
    images = {}
    for job in jf.jobs:
        if job.name == "toy-0.8-3":
            continue  # a failed job: its cell must say so
        p = out / f"{job.name}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png(color_for(job.seed, job.strength), (512, 768)))
        images[job.key] = p
    (sheet,) = make_sheets(jf.jobs, images, out)
    assert sheet.path == out / "sheets" / "01-a-tjtoy-toy-on-a-desk-512x768.png"
    assert sheet.rows == ("strength 0.6", "strength 0.8", "strength 1")
    assert sheet.columns == ("seed 1", "seed 2", "seed 3", "seed 4")
    img = Image.open(sheet.path)
    assert img.size[0] >= 4 * CELL * 512 // 768 and img.size[1] >= 3 * CELL
    for r, row in enumerate(sheet.cells):
        for c, job in enumerate(row):
            x0, y0, x1, y1 = sheet.cell_boxes[r][c]
            assert (x1 - x0, y1 - y0) == (round(512 * CELL / 768), CELL)   # aspect ratio kept
            centre = img.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))
            if job.name == "toy-0.8-3":
                assert centre == MISSING
                red = img.crop((x0, y0, x1, y0 + 30)).tobytes()
                assert sum(1 for i in range(0, len(red), 3) if red[i] > 120 and red[i + 1] < 60) > 20  # "missing"
            else:
                assert (job.seed, job.strength) == (c + 1, (0.6, 0.8, 1.0)[r])
                assert centre == color_for(job.seed, job.strength)
    # each label region holds text as wide as the label rendered in the same font; gaps hold none
    font = _font(16)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for label, box in [*zip(sheet.rows, sheet.row_label_boxes), *zip(sheet.columns, sheet.column_label_boxes)]:
        x0, _, x1, _ = probe.textbbox((0, 0), label, font=font)
        assert abs(dark_width(img, box) - (x1 - x0)) <= 6, label  # antialiased edges
    assert dark_pixels(img, sheet.title_box) > 50
    gap = (sheet.cell_boxes[0][0][2], sheet.cell_boxes[0][0][1], sheet.cell_boxes[0][1][0], sheet.cell_boxes[0][0][3])
    assert dark_pixels(img, gap) == 0


def test_rows_are_lora_files_when_they_vary_and_single_images_get_no_sheet(tmp_path):
    jf = sweep(tmp_path, "  - prompt: other\n    loras: [a-000001.safetensors, a.safetensors]\n    seeds: [5, 6]\n"
                         "  - prompt: lonely\n")
    sheets = make_sheets(jf.jobs, {}, tmp_path / "out")
    assert len(sheets) == 2
    assert sheets[1].rows == ("a-000001", "a") and sheets[1].columns == ("seed 5", "seed 6")
    img = Image.open(sheets[1].path)
    box = sheets[1].cell_boxes[0][0]
    assert img.getpixel((box[0] + 100, box[1] + 100)) == MISSING


def test_index_lists_sheets_and_every_image_with_settings(tmp_path):
    jf = sweep(tmp_path)
    out = tmp_path / "out"
    job = jf.jobs[0]
    (out / f"{job.name}.png").parent.mkdir(parents=True)
    (out / f"{job.name}.png").write_bytes(png((1, 2, 3)))
    images = {job.key: out / f"{job.name}.png"}
    sheets = make_sheets(jf.jobs, images, out)
    states = {job.key: ("done", "http://s1", None), jf.jobs[1].key: ("failed", "http://s1", "boom <oops>")}
    index = write_index(out, "batch jobs.yaml", jf.jobs, images, states, sheets)
    html = index.read_text()
    assert "src='sheets/01-a-tjtoy-toy-on-a-desk-512x768.png'" in html
    assert f"src='{job.name}.png'" in html
    assert "a tjtoy toy &lt;on&gt; a desk" in html and "<on>" not in html
    assert "boom &lt;oops&gt;" in html and "done on http://s1" in html
    assert html.count("<tr class=") == 12


def test_sheet_subtitle_names_the_shared_strength_when_loras_vary(tmp_path):
    from orchestrator.batch.sheets import sheet_subtitle

    jf = sweep(tmp_path)
    first = jf.jobs[0]
    assert sheet_subtitle(first, vary_lora=False, vary_strength=True) == "512x768  steps 4  guidance -  LoRA toy"
    assert sheet_subtitle(first, vary_lora=False, vary_strength=False).endswith("LoRA toy @ 0.6")
    # rows are LoRA files at one strength: no dangling '@ 0.6' without a LoRA name before it
    assert sheet_subtitle(first, vary_lora=True, vary_strength=False).endswith("guidance -  strength 0.6")
