"""data.toml against sd-scripts' schema (rules as data), each problem with file:line."""

from __future__ import annotations

import re

import pytest

from orchestrator.dataset import check_dataset
from orchestrator.dataset import rules as R
from tests.conftest import shared_path
from tests.dataset_images import concept, write_toml


@pytest.fixture
def toy(project):
    concept(project.flux_data / "toy", 5)
    write_toml(project)
    return project.flux_data / "toy"


def _only(report, code):
    found = [p for p in report.problems if p.code == code]
    assert len(found) == 1, [(p.code, p.line, p.message) for p in report.problems]
    return found[0]


def _line_of(project, needle: str) -> int:
    return next(n for n, line in enumerate(project.data_toml.read_text().splitlines(), 1) if needle in line)


def test_syntax_error_has_file_and_line(project, toy):
    text = project.data_toml.read_text().replace("num_repeats = 1", "num_repeats = ")
    project.data_toml.write_text(text)
    p = _only(check_dataset(project), "toml-syntax")
    assert p.path == project.data_toml and p.line == _line_of(project, "num_repeats =")
    assert p.severity == "error"


def test_unclosed_value_at_the_end_is_explained(project, toy):
    project.data_toml.write_text(project.data_toml.read_text() + 'extra = ["a"\n')
    p = _only(check_dataset(project), "toml-syntax")
    assert "ends in the middle of a value" in p.message and "\\x00" not in p.message


def test_repeated_key_has_file_and_line(project, toy):
    write_toml(project, subset_extra="  num_repeats = 3\n")
    p = _only(check_dataset(project), "toml-syntax")
    assert "already exists" in p.message and p.line == _line_of(project, "num_repeats = 3")


def test_unknown_key_with_suggestion(project, toy):
    write_toml(project, subset_extra="  num_repeat = 2\n")
    p = _only(check_dataset(project), "unknown-key")
    assert p.line == _line_of(project, "num_repeat = 2") and "num_repeats" in p.hint


def test_rejected_key_names_the_real_one(project, toy):
    write_toml(project, dataset_extra='interpolation_type = "lanczos"\n')
    p = _only(check_dataset(project), "unknown-key")
    assert "resize_interpolation" in p.message and p.line == _line_of(project, "interpolation_type")


@pytest.mark.parametrize("extra,key,fix", [
    ('  num_repeats = "2"\n', "num_repeats", "num_repeats = 2"),
    ("  flip_aug = 1\n", "flip_aug", "flip_aug = true"),
    ('  class_tokens = 5\n', "class_tokens", None),
    ("  caption_dropout_rate = true\n", "caption_dropout_rate", None),
    ("  face_crop_aug_range = [1, 2]\n", "face_crop_aug_range", None),
])
def test_wrong_types(project, toy, extra, key, fix):
    text = project.data_toml.read_text()
    text = re.sub(rf"  {key} = .*\n", "", text) + extra
    project.data_toml.write_text(text)
    p = _only(check_dataset(project), "wrong-type")
    assert p.line == _line_of(project, f"{key} =") and f"`{key}`" in p.message
    if fix:
        assert fix in p.hint


def test_float_keys_reject_integers(project, toy):
    write_toml(project, dataset_extra="network_multiplier = 1\nvalidation_split = 0\n")
    report = check_dataset(project)
    probs = [p for p in report.problems if p.code == "wrong-type"]
    assert {p.line for p in probs} == {_line_of(project, "network_multiplier"), _line_of(project, "validation_split")}
    assert any("network_multiplier = 1.0" in (p.hint or "") for p in probs)


def test_number_keys_accept_integers_and_floats(project, toy):
    write_toml(project, subset_extra="  caption_dropout_rate = 0\n  token_warmup_step = 0.0\n",
               dataset_extra="network_multiplier = 1.0\n")
    assert check_dataset(project).problems == ()


@pytest.mark.parametrize("where,extra,key", [
    ("subset", "  resolution = 512\n", "resolution"),
    ("subset", "  batch_size = 2\n", "batch_size"),
    ("dataset", 'image_dir = "x"\n', "image_dir"),
    ("dataset", "is_reg = true\n", "is_reg"),
])
def test_keys_at_the_wrong_level(project, toy, where, extra, key):
    write_toml(project, **({"subset_extra": extra} if where == "subset" else {"dataset_extra": extra}))
    p = _only(check_dataset(project), "wrong-level")
    assert p.line == _line_of(project, extra.strip()) and f"`{key}`" in p.message


def test_top_level_key_is_rejected(project, toy):
    project.data_toml.write_text("resolution = 1024\n" + project.data_toml.read_text())
    p = _only(check_dataset(project), "wrong-level")
    assert p.line == 1


def test_bad_choice(project, toy):
    write_toml(project, dataset_extra='resize_interpolation = "fancy"\n')
    assert _only(check_dataset(project), "bad-value").line == _line_of(project, "resize_interpolation")


def test_image_dir_missing_in_subset(project, toy):
    project.data_toml.write_text(project.data_toml.read_text().replace('  image_dir = "flux_data/toy"\n', ""))
    p = _only(check_dataset(project), "image-dir-missing")
    assert p.line == _line_of(project, "[[datasets.subsets]]")


def test_image_dir_pointing_nowhere(project, toy):
    write_toml(project, name="nothere")
    report = check_dataset(project)
    p = next(p for p in report.problems if p.code == "image-dir-missing")
    assert p.line == _line_of(project, "image_dir") and "silently skips" in p.message
    assert report.subsets[0].skipped == "folder missing"


def test_image_dir_with_tilde(project, toy):
    write_toml(project, text=project.data_toml.read_text().replace('"flux_data/toy"', '"~/photos/toy"'))
    assert "image-dir-tilde" in {p.code for p in check_dataset(project).problems}


def test_no_datasets_and_no_subsets(project, toy):
    project.data_toml.write_text('[general]\ncaption_extension = ".txt"\n')
    assert "no-datasets" in {p.code for p in check_dataset(project).problems}
    project.data_toml.write_text("[[datasets]]\nresolution = 1024\n")
    p = _only(check_dataset(project), "no-subsets")
    assert p.line == 1


def test_num_repeats_below_one(project, toy):
    write_toml(project, text=project.data_toml.read_text().replace("num_repeats = 1", "num_repeats = 0"))
    report = check_dataset(project)
    assert _only(report, "num-repeats").line == _line_of(project, "num_repeats")
    assert report.subsets[0].skipped


def test_duplicate_image_dir(project, toy):
    text = project.data_toml.read_text()
    block = text[text.index("  [[datasets.subsets]]"):]
    project.data_toml.write_text(text + "\n" + block)
    p = _only(check_dataset(project), "duplicate-image-dir")
    assert p.line == len(project.data_toml.read_text().splitlines()) - 2


def test_bucket_steps_and_range(project, toy):
    write_toml(project, dataset_extra="bucket_reso_steps = 32\n")
    assert _only(check_dataset(project), "bucket-steps").line == _line_of(project, "bucket_reso_steps")
    text = project.data_toml.read_text().replace("bucket_reso_steps = 32\n", "").replace(
        "max_bucket_reso = 512", "max_bucket_reso = 192")
    project.data_toml.write_text(text)
    assert _only(check_dataset(project), "bucket-range").line == _line_of(project, "max_bucket_reso")


def test_every_key_in_the_reference_is_encoded():
    """Cross-check with ../shared/kohya/README.md §2: each backticked key there is known or rejected."""
    text = shared_path("kohya", "README.md").read_text()
    section = text[text.index("## 2. Dataset config"):text.index("## 3.")]
    names = set(re.findall(r"`([a-z_]+)`", section)) - {"true", "false", "float"}
    assert names, "the reference section moved"
    assert sorted(n for n in names if n not in R.KEYS and n not in R.REJECTED_KEYS) == []


def test_trainer_option_in_toml_points_to_the_training_config(project, toy):
    write_toml(project, dataset_extra="cache_latents = true\n")
    p = _only(check_dataset(project), "unknown-key")
    assert "training config" in p.message and p.line == _line_of(project, "cache_latents")


def test_image_dir_pointing_at_a_file(project, toy):
    (project.flux_data / "afile").write_text("x")
    write_toml(project, name="afile")
    assert "image-dir-not-folder" in {p.code for p in check_dataset(project).problems}


def test_structure_errors(project, toy):
    project.data_toml.write_text('general = "x"\n\n[[datasets]]\nresolution = 1024\nsubsets = 3\n')
    report = check_dataset(project)
    assert [(p.code, p.line) for p in report.problems if p.code == "toml-structure"] == [
        ("toml-structure", 1), ("toml-structure", 5)]


def test_finetune_subsets_are_noted_and_styles_cannot_mix(project, toy):
    write_toml(project)
    project.data_toml.write_text(project.data_toml.read_text()
                                 + '\n  [[datasets.subsets]]\n  metadata_file = "meta.json"\n')
    codes = {p.code for p in check_dataset(project).problems}
    assert {"finetune-subset", "mixed-styles"} <= codes


def test_non_utf8_toml(project, toy):
    project.data_toml.write_bytes(b'[general]\ncaption_extension = "\xff"\n')
    (p,) = check_dataset(project).problems
    assert p.code == "toml-unreadable" and "UTF-8" in p.message
