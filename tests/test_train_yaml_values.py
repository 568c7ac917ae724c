"""train.yaml values that once crashed the plan (ValueError in the LoRA size estimate) or slipped
through to abort sd-scripts: each is a failed check naming the key, through `train --plan`."""

from __future__ import annotations

import json

import pytest

from tests.standin import make_local_trainer
from tests.train_project import make_seed_project


@pytest.fixture
def seed(project):
    make_seed_project(project, size=(256, 256))
    return project


@pytest.fixture
def local(tmp_path):
    checkout, python = make_local_trainer(tmp_path / "trainer")
    return ("--runtime", "local", "--sd-scripts", str(checkout), "--python", str(python))


@pytest.mark.parametrize("yaml_line, fragment", [
    ("network_args: {img_attn_dim: 1e400}", "img_attn_dim = '1e400' is not a rank (an integer from 0 to 3072)"),
    ("network_args: {img_attn_dim: 99999999999999999999}", "is not a rank (an integer from 0 to 3072)"),
    ("network_args: {in_dims: 'x'}", "in_dims = 'x': expected 5 ranks"),
    ("network_args: {train_double_block_indices: [0, 99]}", "train_double_block_indices = [0, 99] aborts the run"),
    ("network_args: {rank_dropout: 2}", "rank_dropout = 2 is not a dropout rate (0 to 1)"),
    ("network_args: {loraplus_lr_ratio: .nan}", "loraplus_lr_ratio = nan is not a finite number"),
    ("optimizer_args: {weight_decay: .nan}", "weight_decay = nan: nan/inf is not a Python literal"),
    ("optimizer_args: {'a b': 1}", "optimizer_args key 'a b' is not an argument name"),
])
def test_bad_nested_values_are_failed_checks(yaml_line, fragment, seed, run_cli, local):
    (seed.root / "train.yaml").write_text(yaml_line + "\n")
    r = run_cli("train", "--plan", "--json", *local)
    assert r.code == 2, r.err
    assert "unexpected" not in r.err and "Traceback" not in r.err
    errors = [c["message"] for c in json.loads(r.out)["checks"] if c["status"] == "error"]
    assert any(fragment in m for m in errors), errors


@pytest.mark.parametrize("yaml_text, fragment", [
    ("learning_rate: !!python/object/apply:os.system [echo hi]\n", "train.yaml:1: could not determine a constructor"),
    ("network_args: &a {x: *a}\n", "train.yaml"),
    ("seed: 99999999999\n", "seed: must be 0 to 4294967295"),
    ("resolution: [1024, 8]\n", "sides of 64 to 8192 pixels"),
])
def test_bad_yaml_values_are_config_errors(yaml_text, fragment, seed, run_cli, local):
    (seed.root / "train.yaml").write_text(yaml_text)
    r = run_cli("train", "--plan", *local)
    assert r.code == 2 and fragment in r.err, r.err
    assert "unexpected" not in r.err and "Traceback" not in r.err
