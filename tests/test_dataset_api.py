"""The public dataset API other parts code against: check_dataset, DatasetReport, resolve_image_dir."""

from __future__ import annotations

from pathlib import Path

from orchestrator.dataset import DatasetReport, Problem, SubsetSummary, check_dataset, resolve_image_dir
from tests.dataset_images import concept

PLAYBOOK = """[general]
caption_extension = ".txt"

[[datasets]]
resolution = 1024

  [[datasets.subsets]]
  image_dir = "/workspace/flux_data/sparkgpu"
  class_tokens = "sparkgpu gpu"
  num_repeats = 1

  [[datasets.subsets]]
  image_dir = "/workspace/flux_data/tjtoy"
  class_tokens = "tjtoy toy"
  num_repeats = 2
"""


def _playbook(project, size=(1024, 1024)) -> None:
    concept(project.flux_data / "sparkgpu", 6, size=size, ext=".jpg", seed=1)
    concept(project.flux_data / "tjtoy", 7, size=size, seed=2)
    project.data_toml.write_text(PLAYBOOK)


def test_playbook_example_is_20_batches_at_batch_1(project):
    _playbook(project)
    report = check_dataset(project)
    assert isinstance(report, DatasetReport)
    assert report.ok, [p.render() for p in report.errors()]
    assert [(s.name, s.images, s.num_repeats, s.image_steps) for s in report.subsets] == [
        ("sparkgpu", 6, 1, 6), ("tjtoy", 7, 2, 14)]
    assert report.batches_per_epoch(1) == 20
    assert report.batches_per_epoch(4) == 5  # one bucket: ceil(20 / 4)
    assert report.toml_text == PLAYBOOK


def test_summary_fields(project):
    _playbook(project)
    s = check_dataset(project).subsets[1]
    assert isinstance(s, SubsetSummary)
    assert s.image_dir == project.flux_data / "tjtoy"
    assert s.toml_value == "/workspace/flux_data/tjtoy"
    assert (s.is_reg, s.class_tokens, s.captions) == (False, "tjtoy toy", 0)
    assert s.min_size == s.max_size == (1024, 1024)
    assert s.formats == (("PNG", 7),)


def test_missing_toml_is_an_error_problem(project):
    report = check_dataset(project)
    assert not report.ok
    (p,) = report.errors()
    assert isinstance(p, Problem) and p.code == "no-toml" and p.path == project.data_toml


def test_resolve_image_dir(project, tmp_path):
    assert resolve_image_dir(project, "flux_data/tjtoy") == project.root / "flux_data" / "tjtoy"
    assert resolve_image_dir(project, "/workspace/flux_data/tjtoy") == project.flux_data / "tjtoy"
    assert resolve_image_dir(project, "/data/flux_data/x") == project.flux_data / "x"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert resolve_image_dir(project, str(elsewhere)) == elsewhere
    assert resolve_image_dir(project, "/nope/photos") == Path("/nope/photos")


def test_progress_is_reported(project):
    from orchestrator.progress import RecordingSink

    _playbook(project, size=(64, 64))
    rec = RecordingSink()
    check_dataset(project, verify=True, reporter=rec)
    assert "decoding images 13/13" in rec.updates
