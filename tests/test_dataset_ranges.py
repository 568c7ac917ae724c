"""Values of the right type but outside what can train (data.toml), and folders that are not plain
folders of plain files: each is a problem with file:line, the key and the accepted range, exit 2;
never a crash ("bug") nor a hang. Through the real CLI (`dataset check`, `train --plan`)."""

from __future__ import annotations

import os

import pytest

from tests.standin import make_local_trainer
from tests.train_project import SEED_TOML, make_seed_project

TOML = SEED_TOML.format(tjtoy="flux_data/tjtoy", spark="flux_data/sparkgpu")
BUCKETS = "batch_size = 1\nenable_bucket = true\n"


@pytest.fixture
def seed(project):
    make_seed_project(project, size=(256, 256))
    return project


@pytest.fixture
def local(tmp_path):
    checkout, python = make_local_trainer(tmp_path / "trainer")
    return ("--runtime", "local", "--sd-scripts", str(checkout), "--python", str(python))


def _edit(project, old: str, new: str) -> int:
    """Replace `old` in data.toml; returns the line of the first new line."""
    assert old in TOML
    text = TOML.replace(old, new, 1)
    project.data_toml.write_text(text)
    first = [line for line in new.splitlines() if "=" in line][-1]
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.strip() == first.strip())


def _assert_clear(r, *fragments):
    assert r.code == 2, r.err
    assert "Traceback" not in r.err and "bug" not in r.err and "unexpected" not in r.err, r.err
    for f in fragments:
        assert f in r.err, (f, r.err)


CASES = [
    # (name, old, new, fragments of the message)
    ("resolution 0", "resolution = 1024", "resolution = 0", ("`resolution`", "64 to 8192")),
    ("resolution -1", "resolution = 1024", "resolution = -1", ("`resolution`", "64 to 8192")),
    ("resolution 8", "resolution = 1024", "resolution = 8", ("`resolution`", "64 to 8192")),
    ("resolution 63", "resolution = 1024", "resolution = 63", ("`resolution`", "64 to 8192")),
    ("resolution huge", "resolution = 1024", "resolution = 1000000", ("64 to 8192",)),
    ("resolution not x16", "resolution = 1024", "resolution = 1000", ("not a multiple of 16", "enable_bucket")),
    ("resolution pair with 0", "resolution = 1024", "resolution = [1024, 0]", ("each side must be 64 to 8192",)),
    ("resolution pair of three", "resolution = 1024", "resolution = [1024, 768, 512]", ("[width, height]",)),
    ("num_repeats 0", "num_repeats = 1", "num_repeats = 0", ("num_repeats = 0", "use 1 or more")),
    ("num_repeats huge", "num_repeats = 1", "num_repeats = 99999999", ("`num_repeats`", "at most 10000")),
    ("batch_size 0", "batch_size = 1", "batch_size = 0", ("`batch_size`", "1 to 1024")),
    ("batch_size negative", "batch_size = 1", "batch_size = -4", ("`batch_size`", "1 to 1024")),
    ("min_bucket_reso 0", "batch_size = 1", BUCKETS + "min_bucket_reso = 0", ("`min_bucket_reso`", "64 to 8192")),
    ("min_bucket_reso negative", "batch_size = 1", BUCKETS + "min_bucket_reso = -64", ("64 to 8192",)),
    ("max_bucket_reso 0", "batch_size = 1", BUCKETS + "max_bucket_reso = 0", ("`max_bucket_reso`", "64 to 8192")),
    ("bucket_reso_steps 0", "batch_size = 1", BUCKETS + "bucket_reso_steps = 0", ("`bucket_reso_steps`", "1 to 1024")),
    ("bucket_reso_steps 96", "batch_size = 1", BUCKETS + "bucket_reso_steps = 96", ("not a multiple of 64",)),
    ("min above max", "batch_size = 1", BUCKETS + "min_bucket_reso = 2048\nmax_bucket_reso = 256",
     ("min_bucket_reso 2048 is above the resolution",)),
    ("dropout rate 5", "batch_size = 1", "batch_size = 1\ncaption_dropout_rate = 5", ("0 to 1",)),
    ("dropout rate nan", "batch_size = 1", "batch_size = 1\ncaption_dropout_rate = nan", ("not a finite number",)),
    ("multiplier inf", "batch_size = 1", "batch_size = 1\nnetwork_multiplier = inf", ("not a finite number",)),
    ("face crop reversed", "batch_size = 1", "batch_size = 1\nface_crop_aug_range = [0.9, 0.1]", ("low <= high",)),
    ("keep_tokens negative", "keep_tokens = 1\n\n[[", "keep_tokens = -1\n\n[[", ("`keep_tokens`", "0 to 1000")),
    ("validation_seed negative", "batch_size = 1", "batch_size = 1\nvalidation_seed = -1", ("0 to 4294967295",)),
    ("image_dir empty", "image_dir = 'flux_data/tjtoy'", "image_dir = ''", ("`image_dir`", "is empty")),
    ("image_dir NUL", "image_dir = 'flux_data/tjtoy'", 'image_dir = "flux_data/tj\\u0000toy"', ("control character",)),
    ("image_dir huge", "image_dir = 'flux_data/tjtoy'", 'image_dir = "' + "a" * 5000 + '"', ("at most 4096",)),
    ("class_tokens newline", "class_tokens = 'tjtoy toy'", 'class_tokens = "tjtoy\\ntoy"', ("control character",)),
    ("caption_extension path", "caption_extension = '.txt'", "caption_extension = 'txt/../x'",
     ('a file extension such as ".txt"',)),
    ("caption_extension empty", "caption_extension = '.txt'", "caption_extension = ''", ("is empty",)),
]


@pytest.mark.parametrize("name,old,new,fragments", CASES, ids=[c[0] for c in CASES])
def test_out_of_range_values_are_clear_errors(name, old, new, fragments, seed, run_cli, local):
    line = _edit(seed, old, new)
    r = run_cli("dataset", "check")
    _assert_clear(r, *fragments)
    if "`" in fragments[0] or "64 to 8192" in fragments[0]:
        assert f"data.toml:{line}:" in r.err, r.err
    assert len(r.err.splitlines()) <= 24       # one screen
    plan = run_cli("train", "--plan", *local)
    assert plan.code == 2 and "Traceback" not in plan.err and "unexpected" not in plan.err, plan.err
    assert any(f in plan.out for f in fragments), plan.out
    if name == "resolution 0":   # the rejected value is not also reported as missing
        assert "no resolution" not in plan.out


def test_valid_edges_pass(seed, run_cli, local):
    for old, new in (("resolution = 1024", "resolution = [1024, 768]"), ("resolution = 1024", "resolution = 64"),
                     ("batch_size = 1", BUCKETS + "min_bucket_reso = 64\nmax_bucket_reso = 8192\nbucket_reso_steps = 64"),
                     ("resolution = 1024", "resolution = 1000\nenable_bucket = true"),
                     ("num_repeats = 1", "num_repeats = 10000")):
        _edit(seed, old, new)
        r = run_cli("dataset", "check")
        assert r.code == 0, (new, r.err)


def test_image_dir_symlink_loop_in_the_plan(seed, run_cli, local):
    """Python < 3.13 raises RuntimeError resolving a loop: the plan (Docker runtime too) must report it."""
    os.symlink("loop", seed.flux_data / "loop")
    _edit(seed, "image_dir = 'flux_data/tjtoy'", "image_dir = 'flux_data/loop'")
    for extra in ((), local):
        r = run_cli("train", "--plan", *extra)
        assert r.code == 2 and "unexpected" not in r.err and "bug" not in r.err, r.err
        assert 'image_dir "flux_data/loop" is a symbolic link that leads nowhere' in r.out
    _assert_clear(run_cli("dataset", "check"), "symbolic link that leads nowhere")


def test_symlink_loop_and_dangling_link_inside_image_dir(seed, run_cli):
    os.symlink("x.png", seed.flux_data / "tjtoy" / "x.png")
    os.symlink("gone.png", seed.flux_data / "tjtoy" / "y.png")
    r = run_cli("dataset", "check")
    _assert_clear(r, "flux_data/tjtoy/x.png: cannot be read: Too many levels of symbolic links",
                  "flux_data/tjtoy/y.png: cannot be read: No such file or directory")


def test_a_pipe_named_like_an_image_is_reported_not_waited_on(seed, run_cli, local):
    os.mkfifo(seed.flux_data / "tjtoy" / "pipe.png")
    for argv in (("dataset", "check"), ("dataset", "check", "--verify")):
        _assert_clear(run_cli(*argv), "flux_data/tjtoy/pipe.png: is not a regular file")
    assert "is not a regular file" in run_cli("train", "--plan", *local).out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_image_and_folder(seed, run_cli):
    img = seed.flux_data / "tjtoy" / "img00.png"
    img.chmod(0)
    try:
        _assert_clear(run_cli("dataset", "check"), "flux_data/tjtoy/img00.png: cannot be read: Permission denied")
    finally:
        img.chmod(0o644)
    folder = seed.flux_data / "tjtoy"
    folder.chmod(0)
    try:
        _assert_clear(run_cli("dataset", "check"), "cannot list")
    finally:
        folder.chmod(0o755)


def test_dataset_add_refuses_a_trigger_with_a_line_break_and_leaves_pipes_out(seed, run_cli, tmp_path):
    from tests.train_project import make_images

    src = tmp_path / "photos"
    make_images(src, 3, (64, 64))
    os.mkfifo(src / "pipe.png")
    before = seed.data_toml.read_text()
    r = run_cli("dataset", "add", "newc", "--from", str(src), "--trigger", "newc\nthing")
    assert r.code == 2 and "--trigger 'newc\\nthing' contains a control character" in r.err
    assert seed.data_toml.read_text() == before and not (seed.flux_data / "newc").exists()
    r = run_cli("dataset", "add", "newc", "--from", str(src), "--trigger", "newc thing")   # the pipe: no hang
    assert r.code == 0, r.err
    assert "left out" in r.err and "pipe.png: is not a regular file" in r.err
    assert sorted(p.name for p in (seed.flux_data / "newc").iterdir()) == ["img00.png", "img01.png", "img02.png"]
