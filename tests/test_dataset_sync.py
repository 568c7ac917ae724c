"""`dataset init` / `sync`: golden data.toml files; user edits survive byte for byte."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import tomlkit

from orchestrator.dataset import check_dataset
from orchestrator.dataset.edit import Folder, plan_sync, sync_dataset
from orchestrator.dataset.template import TEMPLATE
from orchestrator.errors import DatasetError
from tests.dataset_images import concept

GOLDEN = Path(__file__).parent / "golden" / "dataset"
REPO = Path(__file__).resolve().parents[1]


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


@pytest.fixture
def folders(project):
    for n in ("tjtoy", "sparkgpu", "zebra"):
        (project.flux_data / n).mkdir(parents=True)
    return [Folder(project.flux_data / "sparkgpu", 6), Folder(project.flux_data / "tjtoy", 7),
            Folder(project.flux_data / "zebra", 14)]


def test_template_is_the_shipped_data_toml_and_valid():
    assert (REPO / "flux_data" / "data.toml").read_text() == TEMPLATE
    doc = tomlkit.parse(TEMPLATE).unwrap()
    assert doc["datasets"][0]["resolution"] == 1024 and "subsets" not in doc["datasets"][0]


def test_init_golden(project, folders):
    result = plan_sync(project, TEMPLATE, folders[:2])
    assert result.text == golden("init_two_concepts.toml")
    assert result.added == ("flux_data/sparkgpu", "flux_data/tjtoy")


def test_init_from_the_cli_path_writes_the_golden_file(project):
    concept(project.flux_data / "sparkgpu", 6, size=(64, 64))
    concept(project.flux_data / "tjtoy", 7, size=(64, 64))
    (project.flux_data / ".originals").mkdir()  # ours, never a concept
    result = sync_dataset(project)
    assert result.created and result.changed
    assert project.data_toml.read_text() == golden("init_two_concepts.toml")


def test_sync_adds_new_folder_and_keeps_every_user_byte(project, folders):
    src = golden("user_edited.toml")
    result = plan_sync(project, src, folders)
    assert result.text == golden("user_edited_synced.toml")
    assert result.added == ("flux_data/zebra",)
    assert result.missing == (("flux_data/oldcat", 25),)  # reported, not removed without --prune
    old, new = src.splitlines(keepends=True), result.text.splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(a=old, b=new).get_opcodes() if op[0] != "equal"]
    assert [op[0] for op in ops] == ["insert"]  # nothing of the user's file changed or moved
    assert "".join(new[ops[0][3]:ops[0][4]]).count("[[datasets.subsets]]") == 1


def test_sync_matches_seed_style_container_paths(project, folders):
    # /workspace/flux_data/tjtoy in the file is this project's flux_data/tjtoy: no second subset
    result = plan_sync(project, golden("user_edited.toml"), folders)
    assert "flux_data/tjtoy" not in result.added


def test_prune_golden(project, folders):
    result = plan_sync(project, golden("user_edited.toml"), folders, prune=True)
    assert result.text == golden("user_edited_pruned.toml")
    assert result.removed == ("flux_data/oldcat",)


def test_balance_golden(project, folders):
    result = plan_sync(project, golden("user_edited.toml"), folders, prune=True, balance=True)
    assert result.text == golden("user_edited_pruned_balanced.toml")
    assert result.repeats == (("flux_data/sparkgpu", 1, 2),)  # tjtoy 7 x2 already matches zebra 14 x1


def test_balance_edits_only_the_value_and_keeps_the_comment(project, folders):
    src = golden("user_edited.toml").replace("num_repeats = 2    # tuned by hand", "num_repeats = 5    # tuned by hand")
    out = plan_sync(project, src, folders, balance=True).text
    assert "  num_repeats = 2    # tuned by hand\n" in out


def test_new_subsets_get_balanced_repeats(project):
    a, b = project.flux_data / "a", project.flux_data / "b"
    result = plan_sync(project, TEMPLATE, [Folder(a, 5), Folder(b, 20)], balance=True)
    subs = tomlkit.parse(result.text).unwrap()["datasets"][0]["subsets"]
    assert [(s["image_dir"], s["num_repeats"]) for s in subs] == [("flux_data/a", 4), ("flux_data/b", 1)]


def test_trigger_becomes_class_tokens(project, folders):
    result = plan_sync(project, TEMPLATE, folders[2:], triggers={"zebra": "zbr zebra"})
    assert 'class_tokens = "zbr zebra"' in result.text


def test_sync_writes_atomically_by_replacing_the_file(project, folders):
    project.data_toml.write_text(golden("user_edited.toml"))
    inode = os.stat(project.data_toml).st_ino
    sync_dataset(project)
    assert os.stat(project.data_toml).st_ino != inode  # a new file renamed over the old one
    assert not [p for p in project.flux_data.iterdir() if p.name.endswith(".tmp")]


def test_nothing_written_when_up_to_date(project, folders):
    project.data_toml.write_text(golden("user_edited_pruned.toml"))
    st = os.stat(project.data_toml)
    result = sync_dataset(project)
    assert not result.changed
    assert os.stat(project.data_toml).st_ino == st.st_ino and os.stat(project.data_toml).st_mtime_ns == st.st_mtime_ns


def test_syntax_error_refuses_to_sync_and_leaves_the_file(project, folders):
    bad = golden("user_edited.toml").replace("batch_size = 1", "batch_size = ")
    project.data_toml.write_text(bad)
    with pytest.raises(DatasetError) as e:
        sync_dataset(project)
    assert f"{project.data_toml}:8:" in e.value.message
    assert project.data_toml.read_text() == bad


def test_synced_file_passes_the_check(project):
    concept(project.flux_data / "tjtoy", 5, size=(1024, 1024))
    sync_dataset(project)
    report = check_dataset(project)
    assert report.ok and report.problems == ()
    assert report.batches_per_epoch(1) == 5


def test_trainer_copy_rewrites_only_folder_values(project, folders):
    from orchestrator.dataset.trainer import container_paths, trainer_toml

    src = golden("user_edited.toml").replace(
        "  flip_aug = true\n", '  flip_aug = true\n  conditioning_data_dir = "flux_data/zebra"\n')
    out = trainer_toml(project, src, container_paths(project))
    subs = tomlkit.parse(out).unwrap()["datasets"][0]["subsets"]
    assert [s["image_dir"] for s in subs] == ["/data/flux_data/tjtoy", "/data/flux_data/sparkgpu",
                                              "/data/flux_data/oldcat"]
    assert subs[1]["conditioning_data_dir"] == "/data/flux_data/zebra"
    assert '  image_dir = "/data/flux_data/tjtoy"   # seed-style container path\n' in out
    changed = [(a, b) for a, b in zip(src.splitlines(), out.splitlines()) if a != b]
    assert len(changed) == 4 and len(src.splitlines()) == len(out.splitlines())


def test_trainer_copy_refuses_folders_outside_flux_data(project, tmp_path):
    from orchestrator.dataset.trainer import container_paths, trainer_toml

    text = TEMPLATE + f'\n  [[datasets.subsets]]\n  image_dir = "{tmp_path}"\n'
    with pytest.raises(DatasetError, match="outside"):
        trainer_toml(project, text, container_paths(project))


def test_inline_subsets_are_refused_not_mangled(project, folders):
    text = '[[datasets]]\nresolution = 1024\nsubsets = [{ image_dir = "flux_data/gone" }]\n'
    with pytest.raises(DatasetError, match="cannot edit them safely"):
        plan_sync(project, text, folders, prune=True)


def test_balance_adds_num_repeats_to_the_last_subset_above_new_subsets(project):
    a, b = project.flux_data / "a", project.flux_data / "b"
    text = TEMPLATE + '\n  [[datasets.subsets]]\n  image_dir = "flux_data/a"\n  class_tokens = "a"\n'
    out = plan_sync(project, text, [Folder(a, 5), Folder(b, 10)], balance=True).text
    assert out.endswith('  class_tokens = "a"\n  num_repeats = 2\n\n  [[datasets.subsets]]\n'
                        '  image_dir = "flux_data/b"\n  class_tokens = "b"\n  num_repeats = 1\n')
