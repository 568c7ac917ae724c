"""`python -m orchestrator dataset ...` in-process: exit codes, output, nothing modified unless asked."""

from __future__ import annotations

import json
import os

import tomlkit
from PIL import Image

from tests.dataset_images import concept, exif_rotated, photo, save, truncated, write_toml


def _snapshot(root):
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def test_dataset_without_subcommand_is_a_usage_error(run_cli):
    r = run_cli("dataset")
    assert r.code == 2 and "subcommand" in r.err


def test_init_creates_toml_with_every_folder(run_cli, project):
    concept(project.flux_data / "tjtoy", 5, size=(64, 64))
    r = run_cli("dataset", "init")
    assert r.code == 0, r.err
    assert "created flux_data/data.toml" in r.out and 'add subset image_dir = "flux_data/tjtoy"' in r.out
    subs = tomlkit.parse(project.data_toml.read_text()).unwrap()["datasets"][0]["subsets"]
    assert subs == [{"image_dir": "flux_data/tjtoy", "class_tokens": "tjtoy", "num_repeats": 1}]
    r = run_cli("dataset", "init")
    assert r.code == 0 and "up to date" in r.out and "exists" in r.err


def test_init_without_photos_says_where_they_go_not_to_check(run_cli, project):
    r = run_cli("dataset", "init")
    assert r.code == 0, r.err
    assert "created flux_data/data.toml" in r.out
    assert "flux_data/<concept>/" in r.err and "dataset add NAME --from DIR" in r.err
    assert "next: python -m orchestrator dataset check" not in r.err   # it would only say: no subsets

def test_sync_requires_a_toml(run_cli):
    r = run_cli("dataset", "sync")
    assert r.code == 2 and "dataset init" in r.err


def test_sync_reports_missing_folder_and_prunes_only_when_asked(run_cli, project):
    concept(project.flux_data / "a", 5, size=(64, 64))
    concept(project.flux_data / "b", 5, size=(64, 64))
    assert run_cli("dataset", "init").code == 0
    for p in (project.flux_data / "b").iterdir():
        p.unlink()
    (project.flux_data / "b").rmdir()
    r = run_cli("dataset", "sync")
    assert r.code == 0 and 'image_dir "flux_data/b" does not exist' in r.err and "--prune" in r.err
    assert "flux_data/b" in project.data_toml.read_text()
    r = run_cli("dataset", "sync", "--prune", "--dry-run")
    assert "-  image_dir = \"flux_data/b\"" in r.out and "would remove" in r.out
    assert "flux_data/b" in project.data_toml.read_text()
    r = run_cli("dataset", "sync", "--prune")
    assert r.code == 0 and "flux_data/b" not in project.data_toml.read_text()


def test_sync_balance(run_cli, project):
    concept(project.flux_data / "few", 5, size=(64, 64))
    concept(project.flux_data / "many", 10, size=(64, 64), seed=1)
    run_cli("dataset", "init")
    r = run_cli("dataset", "sync", "--balance")
    assert 'set num_repeats 1 -> 2 for "flux_data/few"' in r.out


def test_add_copies_registers_and_reports_left_out_files(run_cli, project, tmp_path):
    src = tmp_path / "photos"
    concept(src, 5, ext=".jpg", size=(64, 64))
    save(src / "odd.Jpg", photo((64, 64), 50), format="JPEG")
    (src / "img00.txt").write_text("tjtoy toy on a desk")
    truncated(src / "broken.png")
    save(src / "anim.gif", photo((32, 32), 3), format="GIF")
    r = run_cli("dataset", "add", "tjtoy", "--from", str(src), "--trigger", "tjtoy toy")
    assert r.code == 0, r.err
    dest = project.flux_data / "tjtoy"
    assert sorted(p.name for p in dest.iterdir()) == [
        "img00.jpg", "img00.txt", "img01.jpg", "img02.jpg", "img03.jpg", "img04.jpg", "odd.jpg"]
    assert "renamed odd.Jpg -> odd.jpg" in r.out
    assert "broken.png" in r.err and "anim.gif" in r.err
    assert os.stat(src / "img01.jpg").st_ino != os.stat(dest / "img01.jpg").st_ino
    subs = tomlkit.parse(project.data_toml.read_text()).unwrap()["datasets"][0]["subsets"]
    assert subs[0]["class_tokens"] == "tjtoy toy"
    assert (src / "odd.Jpg").exists()  # the source is never touched
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o777 & ~mask  # an ordinary folder, not mkdtemp's 0700


def test_add_link_hard_links(run_cli, project, tmp_path):
    src = tmp_path / "photos"
    concept(src, 5, size=(64, 64))
    r = run_cli("dataset", "add", "toy", "--from", str(src), "--link")
    assert r.code == 0 and "hard-linked 5" in r.out
    assert os.stat(src / "img00.png").st_ino == os.stat(project.flux_data / "toy" / "img00.png").st_ino


def test_add_refuses_existing_concept_and_empty_source(run_cli, project, tmp_path):
    concept(project.flux_data / "toy", 5, size=(64, 64))
    src = tmp_path / "photos"
    concept(src, 5, size=(64, 64))
    r = run_cli("dataset", "add", "toy", "--from", str(src))
    assert r.code == 2 and "already exists" in r.err
    (project.flux_data / "notes").write_text("mine")
    r = run_cli("dataset", "add", "notes", "--from", str(src))
    assert r.code == 2 and "already exists and is a file" in r.err
    assert (project.flux_data / "notes").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.jpg").write_text("no")
    r = run_cli("dataset", "add", "other", "--from", str(empty))
    assert r.code == 2 and "no images" in r.err and "x.jpg" in r.err
    assert not (project.flux_data / "other").exists()
    assert not [p for p in project.flux_data.iterdir() if p.name.startswith(".add-")]
    r = run_cli("dataset", "add", "../evil", "--from", str(src))
    assert r.code == 2


def test_check_ok_with_warnings_exits_0_and_shows_the_table(run_cli, project):
    concept(project.flux_data / "toy", 3)
    write_toml(project)
    r = run_cli("dataset", "check")
    assert r.code == 0, r.err
    assert "concept" in r.out and "toy" in r.out and "only 3 image(s)" in r.out
    assert "3 image-steps per epoch = 3 batches per epoch at batch size 1" in r.out


def test_check_errors_exit_2_with_the_list(run_cli, project):
    concept(project.flux_data / "toy", 5)
    write_toml(project, dataset_extra="network_multiplier = 1\n", subset_extra='  flip_aug = "yes"\n')
    (project.flux_data / "toy" / "fake.png").write_text("nope")
    r = run_cli("dataset", "check")
    assert r.code == 2
    assert "error: 3 error(s) in the dataset" in r.err
    assert "flux_data/data.toml:" in r.err and "flux_data/toy/fake.png: not an image" in r.err


def test_check_json(run_cli, project):
    concept(project.flux_data / "toy", 5)
    write_toml(project)
    (project.flux_data / "toy" / "fake.png").write_text("nope")
    r = run_cli("dataset", "check", "--json", "--batch-size", "2")
    assert r.code == 2
    doc = json.loads(r.out)
    assert doc["ok"] is False and doc["errors"] == 1
    assert doc["subsets"][0]["images"] == 5 and doc["batches_per_epoch"] == 3
    assert doc["problems"][0]["code"] == "not-an-image" and doc["problems"][0]["path"].endswith("fake.png")


def test_check_modifies_nothing(run_cli, project):
    concept(project.flux_data / "toy", 5)
    exif_rotated(project.flux_data / "toy" / "rot.jpg")
    write_toml(project)
    before = _snapshot(project.root)
    assert run_cli("dataset", "check", "--verify").code == 0
    assert _snapshot(project.root) == before


def test_fix_orientation_writes_upright_copy_and_keeps_original(run_cli, project):
    concept(project.flux_data / "toy", 5)
    rot = exif_rotated(project.flux_data / "toy" / "rot.jpg", 6, size=(320, 256))
    original = rot.read_bytes()
    write_toml(project)
    r = run_cli("dataset", "check", "--fix-orientation")
    assert r.code == 0, r.err
    assert "exif-rotated" not in r.out and "EXIF orientation" not in r.out
    with Image.open(rot) as im:
        assert im.size == (256, 320) and im.getexif().get(0x0112, 1) == 1
    assert (project.flux_data / ".originals" / "toy" / "rot.jpg").read_bytes() == original
    r = run_cli("dataset", "check")
    assert r.code == 0 and ".originals" not in r.out  # the backup folder is not a concept


def test_check_without_toml(run_cli):
    r = run_cli("dataset", "check")
    assert r.code == 2 and "dataset init" in r.err


def test_add_refuses_before_copying_when_data_toml_is_broken(run_cli, project, tmp_path):
    project.data_toml.write_text("[[datasets]\n")
    src = tmp_path / "photos"
    concept(src, 5, size=(64, 64))
    r = run_cli("dataset", "add", "toy", "--from", str(src))
    assert r.code == 2 and "data.toml:1" in r.err
    assert not (project.flux_data / "toy").exists()


def test_check_warns_about_folders_missing_from_the_toml(run_cli, project):
    concept(project.flux_data / "toy", 5)
    write_toml(project)
    concept(project.flux_data / "newcat", 5, seed=3)
    r = run_cli("dataset", "check")
    assert r.code == 0 and "flux_data/newcat: this concept folder is not in data.toml" in r.out
    assert "dataset sync" in r.out


def test_common_options_after_the_subcommand(run_cli, project):
    concept(project.flux_data / "toy", 5)
    write_toml(project)
    r = run_cli("dataset", "check", "-v", "--project-dir", str(project.root))
    assert r.code == 0, r.err
