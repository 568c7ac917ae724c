"""Settings sd-scripts refuses together with the trainer's flags (README §1.9), via trainer_flags."""

from __future__ import annotations

import pytest

from orchestrator.dataset import check_dataset
from tests.dataset_images import concept, write_toml

TE = {"cache_text_encoder_outputs": True}


@pytest.fixture
def toy(project):
    concept(project.flux_data / "toy", 5)
    return project.flux_data / "toy"


def _codes(report):
    return [p.code for p in report.problems]


def _line(project, needle):
    return next(n for n, line in enumerate(project.data_toml.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("extra", ["shuffle_caption = true", "caption_dropout_rate = 0.1",
                                   "caption_tag_dropout_rate = 0.2", "token_warmup_step = 10"])
@pytest.mark.parametrize("flag", ["cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk"])
def test_text_encoder_caching_conflicts(project, toy, extra, flag):
    write_toml(project, subset_extra=f"  {extra}\n")
    assert "te-cache-conflict" not in _codes(check_dataset(project))  # flags unknown: no cross rule
    assert "te-cache-conflict" not in _codes(check_dataset(project, trainer_flags={flag: False}))
    report = check_dataset(project, trainer_flags={flag: True})
    (p,) = [p for p in report.problems if p.code == "te-cache-conflict"]
    assert p.severity == "error" and p.line == _line(project, extra)


def test_conflict_set_in_general_points_at_general(project, toy):
    write_toml(project)
    text = project.data_toml.read_text().replace("[general]\n", "[general]\nshuffle_caption = true\n")
    project.data_toml.write_text(text)
    (p,) = [p for p in check_dataset(project, trainer_flags=TE).problems if p.code == "te-cache-conflict"]
    assert p.line == 2


def test_zero_dropout_and_false_shuffle_are_fine(project, toy):
    write_toml(project, subset_extra="  shuffle_caption = false\n  caption_dropout_rate = 0.0\n")
    assert check_dataset(project, trainer_flags=TE).problems == ()


def test_caption_dropout_every_n_epochs_is_a_noop_warning(project, toy):
    write_toml(project, subset_extra="  caption_dropout_every_n_epochs = 2\n")
    report = check_dataset(project, trainer_flags=TE)
    assert _codes(report) == ["te-cache-noop"] and report.ok


@pytest.mark.parametrize("key", ["color_aug", "random_crop"])
@pytest.mark.parametrize("flag", ["cache_latents", "cache_latents_to_disk"])
def test_latent_caching_conflicts(project, toy, key, flag):
    write_toml(project, subset_extra=f"  {key} = true\n")
    assert "latent-cache-conflict" not in _codes(check_dataset(project, trainer_flags={}))
    (p,) = [p for p in check_dataset(project, trainer_flags={flag: True}).problems
            if p.code == "latent-cache-conflict"]
    assert p.line == _line(project, key)


def test_cli_flag_setting_counts_as_a_fallback(project, toy):
    write_toml(project)
    report = check_dataset(project, trainer_flags={**TE, "shuffle_caption": True})
    assert "te-cache-conflict" in _codes(report)


def test_conditioning_data_dir_needs_masked_loss(project, toy):
    (project.flux_data / "masks").mkdir()
    write_toml(project, subset_extra='  conditioning_data_dir = "flux_data/masks"\n')
    (p,) = [p for p in check_dataset(project, trainer_flags={}).problems if p.code == "needs-masked-loss"]
    assert p.line == _line(project, "conditioning_data_dir")
    assert "needs-masked-loss" not in _codes(check_dataset(project, trainer_flags={"masked_loss": True}))


def test_resolution_from_flags_and_missing_resolution(project, toy):
    write_toml(project)
    project.data_toml.write_text(project.data_toml.read_text().replace("resolution = 256\n", ""))
    assert "no-resolution" in _codes(check_dataset(project, trainer_flags={}))
    assert [p.severity for p in check_dataset(project).problems if p.code == "no-resolution"] == ["warning"]
    report = check_dataset(project, trainer_flags={"resolution": "256,256"})
    assert "no-resolution" not in _codes(report)
    assert report.datasets[0].settings.resolution == (256, 256)


def test_toml_values_that_override_training_flags_are_warned(project, toy):
    write_toml(project, dataset_extra="batch_size = 1\n")
    report = check_dataset(project, trainer_flags={"train_batch_size": 4, "resolution": 512})
    overrides = [p for p in report.problems if p.code == "toml-overrides-flag"]
    assert {p.line for p in overrides} == {_line(project, "batch_size"), _line(project, "resolution =")}
    assert report.ok
    assert report.batches_per_epoch(4) == 5  # data.toml's batch_size 1 wins, as in sd-scripts


def test_small_images_are_reported_against_the_flag_resolution(project, toy):
    write_toml(project)
    project.data_toml.write_text(project.data_toml.read_text().replace("resolution = 256\n", "")
                                 .replace("max_bucket_reso = 512", "max_bucket_reso = 1024"))
    report = check_dataset(project, trainer_flags={"resolution": 1024})
    assert _codes(report).count("upscaled") == 5
