"""Captions as the trainer reads them: `<stem><caption_extension>`, first line, UTF-8."""

from __future__ import annotations

import pytest

from orchestrator.dataset import check_dataset
from tests.dataset_images import TOML_ONE, codes, concept, write_toml


@pytest.fixture
def toy(project):
    concept(project.flux_data / "toy", 5)
    write_toml(project)
    return project.flux_data / "toy"


def test_captions_are_counted(project, toy):
    (toy / "img00.txt").write_text("a photo of tjtoy toy on a desk\n")
    (toy / "img01.txt").write_text("tjtoy toy in the garden")
    report = check_dataset(project)
    assert report.problems == ()
    assert report.subsets[0].captions == 2


def test_txt_captions_ignored_without_caption_extension(project, toy):
    write_toml(project, text=TOML_ONE.replace('caption_extension = ".txt"\n', "").format(
        name="toy", tokens="tjtoy toy", dataset_extra="", subset_extra=""))
    (toy / "img00.txt").write_text("tjtoy toy")
    report = check_dataset(project)
    (p,) = [p for p in report.problems if p.code == "captions-ignored"]
    assert p.path == toy and 'caption_extension = ".txt"' in p.hint
    assert report.subsets[0].captions == 0


def test_empty_caption_file_is_an_error(project, toy):
    (toy / "img00.txt").write_bytes(b"")
    report = check_dataset(project)
    assert "empty-caption" in codes(report, toy / "img00.txt")
    assert not report.ok


def test_non_utf8_caption_is_an_error(project, toy):
    (toy / "img00.txt").write_bytes("tjtoy caf\xe9".encode("latin-1"))
    assert "caption-encoding" in codes(check_dataset(project), toy / "img00.txt")


def test_blank_first_line_is_a_warning(project, toy):
    (toy / "img00.txt").write_text("\ntjtoy toy on the second line\n")
    report = check_dataset(project)
    assert "blank-caption" in codes(report, toy / "img00.txt")
    assert report.ok


def test_caption_without_trigger_is_a_warning(project, toy):
    (toy / "img00.txt").write_text("a toy on a desk")
    (toy / "img01.txt").write_text("TJTOY, toy on a shelf")  # case-insensitive, punctuation ok
    (toy / "img02.txt").write_text("tjtoys everywhere")      # a different word
    report = check_dataset(project)
    assert "caption-no-trigger" in codes(report, toy / "img00.txt")
    assert "caption-no-trigger" not in codes(report, toy / "img01.txt")
    assert "caption-no-trigger" in codes(report, toy / "img02.txt")


def test_no_caption_and_no_class_tokens_is_a_warning(project, toy):
    write_toml(project, text=TOML_ONE.replace('  class_tokens = "{tokens}"\n', "").format(
        name="toy", dataset_extra="", subset_extra=""))
    report = check_dataset(project)
    assert "no-caption" in codes(report, toy / "img00.png")


def test_orphan_caption_is_a_warning(project, toy):
    (toy / "gone.txt").write_text("tjtoy toy")
    assert "orphan-caption" in codes(check_dataset(project), toy / "gone.txt")


def test_caption_extension_without_dot(project, toy):
    write_toml(project, subset_extra='  caption_extension = "caption"\n')
    (toy / "img00.caption").write_text("tjtoy toy")
    report = check_dataset(project)
    assert report.subsets[0].captions == 1
    assert report.subsets[0].caption_extension == ".caption"


def test_reg_captions_need_no_trigger(project, toy):
    write_toml(project, subset_extra="  is_reg = true\n")
    concept(project.flux_data / "train", 5, seed=4)
    text = project.data_toml.read_text() + '\n  [[datasets.subsets]]\n  image_dir = "flux_data/train"\n'
    project.data_toml.write_text(text)
    (toy / "img00.txt").write_text("a toy on a desk")
    assert "caption-no-trigger" not in codes(check_dataset(project))
