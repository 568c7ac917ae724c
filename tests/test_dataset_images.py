"""Per-image checks on real files made with Pillow: each test fails if its check is removed."""

from __future__ import annotations

import pytest
from PIL import Image

from orchestrator.dataset import check_dataset
from tests.dataset_images import codes, concept, exif_rotated, photo, save, truncated, write_toml


@pytest.fixture
def toy(project):
    """flux_data/toy with 5 valid 256px images and a data.toml for it."""
    concept(project.flux_data / "toy", 5)
    write_toml(project)
    return project.flux_data / "toy"


def _problem(report, code, path=None):
    found = [p for p in report.problems if p.code == code and (path is None or p.path == path)]
    assert found, f"no {code} for {path}: {[(p.code, str(p.path)) for p in report.problems]}"
    return found[0]


def test_clean_folder_has_no_problems(project, toy):
    report = check_dataset(project)
    assert report.problems == ()
    assert report.subsets[0].images == 5


def test_renamed_non_image_is_an_error(project, toy):
    fake = toy / "notes.jpg"
    fake.write_text("this is not a picture")
    report = check_dataset(project)
    p = _problem(report, "not-an-image", fake)
    assert p.severity == "error" and "extension" in p.message
    assert report.subsets[0].images == 5  # not counted


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp")])
def test_truncated_file_is_an_error_without_decoding(project, toy, fmt, ext):
    bad = truncated(toy / f"cut{ext}", fmt)
    p = _problem(check_dataset(project), "truncated", bad)
    assert p.severity == "error"


def test_truncated_jpeg_is_suspect_then_an_error_with_verify(project, toy):
    bad = truncated(toy / "cut.jpg", "JPEG", keep=0.6)
    assert _problem(check_dataset(project), "maybe-truncated", bad).severity == "warning"
    p = _problem(check_dataset(project, verify=True), "undecodable", bad)
    assert p.severity == "error"


def test_verify_decodes_corrupt_data_the_header_does_not_show(project, toy):
    path = save(toy / "garbled.png", photo((256, 256), 5), format="PNG")
    data = bytearray(path.read_bytes())
    for i in range(200, len(data) - 40, 50):  # damage the compressed pixels, keep the end chunk
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "undecodable" not in codes(check_dataset(project), path)
    assert _problem(check_dataset(project, verify=True), "undecodable", path).severity == "error"


def test_exif_rotated_photo_is_a_warning(project, toy):
    rot = exif_rotated(toy / "rot.jpg", 6, size=(320, 256))
    p = _problem(check_dataset(project), "exif-rotated", rot)
    assert p.severity == "warning" and "--fix-orientation" in p.hint


def test_exif_orientation_in_png_is_read_without_decoding(project, toy):
    exif = Image.Exif()
    exif[0x0112] = 3
    rot = save(toy / "rot.png", photo((256, 256), 8), format="PNG", exif=exif.tobytes())
    assert "exif-rotated" in codes(check_dataset(project), rot)


def test_cmyk_is_a_warning(project, toy):
    p = save(toy / "print.jpg", photo((256, 256), 9, mode="CMYK"), format="JPEG")
    assert _problem(check_dataset(project), "cmyk", p).severity == "warning"


def test_16_bit_grayscale_is_a_warning(project, toy):
    im = photo((256, 256), 10).convert("I").point(lambda v: v * 256).convert("I;16")
    p = save(toy / "deep.png", im, format="PNG")
    prob = _problem(check_dataset(project), "high-bit-depth", p)
    assert "16-bit" in prob.message


def test_alpha_is_a_warning_unless_alpha_mask(project, toy):
    p = save(toy / "cutout.png", photo((256, 256), 11, mode="RGBA"), format="PNG")
    assert _problem(check_dataset(project), "alpha", p).severity == "warning"
    write_toml(project, subset_extra="  alpha_mask = true\n")
    assert "alpha" not in codes(check_dataset(project), p)


def test_tiny_image_is_reported_as_upscaled(project, toy):
    p = save(toy / "tiny.png", photo((64, 64), 12), format="PNG")
    prob = _problem(check_dataset(project), "upscaled", p)
    assert "x4.00" in prob.message  # 64x64 -> the 256x256 bucket at resolution 256


def test_too_small_for_a_bucket_without_upscale_is_an_error(project, toy):
    write_toml(project, dataset_extra="bucket_no_upscale = true\n")
    p = save(toy / "tiny.png", photo((40, 40), 13), format="PNG")
    assert _problem(check_dataset(project), "too-small", p).severity == "error"


def test_extreme_aspect_ratio_is_a_warning(project, toy):
    p = save(toy / "panorama.png", photo((1200, 200), 14), format="PNG")
    prob = _problem(check_dataset(project), "extreme-aspect", p)
    assert "crops away" in prob.message


def test_exact_duplicate(project, toy):
    copy = toy / "zz_copy.png"
    copy.write_bytes((toy / "img01.png").read_bytes())
    prob = _problem(check_dataset(project), "duplicate", copy)
    assert "img01.png" in prob.message


def test_near_duplicate_reencoded_and_resized(project, toy):
    near = save(toy / "zz_near.jpg", Image.open(toy / "img02.png").resize((200, 200)), format="JPEG", quality=80)
    prob = _problem(check_dataset(project), "near-duplicate", near)
    assert "img02.png" in prob.message
    assert "near-duplicate" not in codes(check_dataset(project), toy / "img03.png")


def test_mixed_case_extension_is_skipped_by_the_trainer(project, toy):
    p = save(toy / "odd.Jpg", photo((256, 256), 15), format="JPEG")
    report = check_dataset(project)
    assert _problem(report, "mixed-case-extension", p).severity == "warning"
    assert report.subsets[0].images == 5
    upper = save(toy / "UPPER.JPG", photo((256, 256), 16), format="JPEG")
    report = check_dataset(project)
    assert report.subsets[0].images == 6 and not codes(report, upper)


def test_unsupported_format_and_subfolder_and_stray_file(project, toy):
    gif = save(toy / "anim.gif", photo((64, 64), 17), format="GIF")
    sub = toy / "more"
    save(sub / "x.png", photo((256, 256), 18), format="PNG")
    stray = toy / "notes.md"
    stray.write_text("hi")
    report = check_dataset(project)
    assert "unsupported-format" in codes(report, gif)
    assert "subfolder-ignored" in codes(report, sub)
    assert "stray-file" in codes(report, stray)


def test_trainer_caches_are_not_reported(project, toy):
    (toy / "img00_0256x0256_flux.npz").write_bytes(b"x")
    (toy / "img00_flux_te.npz").write_bytes(b"x")
    (toy / "metadata_cache.json").write_text("{}")
    assert check_dataset(project).problems == ()


def test_fewer_than_five_images_is_a_warning(project):
    concept(project.flux_data / "toy", 3)
    write_toml(project)
    report = check_dataset(project)
    assert _problem(report, "few-images").severity == "warning"
    assert report.ok


def test_no_images_is_an_error(project):
    (project.flux_data / "toy").mkdir()
    write_toml(project)
    report = check_dataset(project)
    assert _problem(report, "no-images").severity == "error"
    assert "nothing-to-train" in codes(report)


@pytest.mark.parametrize("kind", ["lossy", "lossless", "alpha", "alpha-lossless", "exif"])
def test_webp_header_parse_matches_pillow(project, toy, kind):
    from orchestrator.dataset.scan import read_header

    im = photo((333, 217), 21, mode="RGBA" if "alpha" in kind else "RGB")
    if "alpha" in kind:
        im.putalpha(Image.new("L", im.size, 90))
    exif = Image.Exif()
    exif[0x0112] = 8
    kwargs = {"lossless": True} if "lossless" in kind else {"quality": 80}
    if kind == "exif":
        kwargs["exif"] = exif.tobytes()
    p = save(toy / f"w_{kind}.webp", im, format="WEBP", **kwargs)
    info = read_header(p)
    with Image.open(p) as ref:
        assert (info.format, info.size, info.has_alpha) == ("WEBP", ref.size, ref.mode == "RGBA")
        assert info.orientation == ref.getexif().get(0x0112, 1)


def test_non_jpegs_beyond_the_hash_budget_are_skipped_and_noted(toy):
    from orchestrator.dataset.images import check_duplicates
    from orchestrator.dataset.scan import read_header

    near = save(toy / "zz_near.png", Image.open(toy / "img02.png").resize((250, 250)), format="PNG")
    infos = [read_header(p) for p in sorted(toy.iterdir())]
    found, notes = check_duplicates(infos, verify=False)
    assert [p.path for p in found if p.code == "near-duplicate"] == [near] and notes == []
    found, notes = check_duplicates(infos, verify=False, pixel_budget=256 * 256 * 2)
    assert found == [] and notes and "skipped for 4 " in notes[0]
    found, notes = check_duplicates(infos, verify=True, pixel_budget=0)
    assert [p.path for p in found] == [near] and notes == []


def test_small_image_without_upscaling_is_a_warning(project, toy):
    write_toml(project, dataset_extra="bucket_no_upscale = true\n")
    p = save(toy / "small.png", photo((100, 100), 30), format="PNG")
    prob = _problem(check_dataset(project), "small", p)
    assert "trains at only 64x64" in prob.message


def test_16_bit_rgb_png_is_a_warning(project, toy):
    import struct
    import zlib

    w = h = 64

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 4 % 256, 0) * 3) for _ in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    p = toy / "deep_rgb.png"
    p.write_bytes(png)
    prob = _problem(check_dataset(project), "high-bit-depth", p)
    assert "16-bit per channel" in prob.message


def test_heic_named_jpg_is_explained(project, toy):
    fake = toy / "IMG_0001.jpg"
    fake.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200)
    p = _problem(check_dataset(project), "not-an-image", fake)
    assert "HEIC" in p.message and "convert" in p.hint
