"""`train --set KEY=` is an error naming the key and the fix; `--unset KEY` removes a key; none, null,
false and off turn optional features off (sample_prompts=none: no samples, no sample schedule).
Through the real CLI with `train --plan --json` (local runtime, so nothing depends on Docker)."""

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


def _plan(run_cli, local, *argv):
    r = run_cli("train", "--plan", "--json", *local, *argv)
    return r, (json.loads(r.out) if r.out.strip() else None)


@pytest.mark.parametrize("item", ["network_dim=", "network_dim=  ", "network_args.split_qkv="])
def test_empty_value_is_an_error_naming_the_key_and_the_fix(item, seed, run_cli, local):
    r, _ = _plan(run_cli, local, "--set", item)
    key = item.split("=")[0]
    assert r.code == 2
    assert f"error: --set {key}=: the value is empty" in r.err
    assert f"--unset {key}" in r.err and f"--set {key}=null" in r.err
    assert "Traceback" not in r.err


def test_unset_removes_a_key_like_null(seed, run_cli, local):
    r, p = _plan(run_cli, local, "--unset", "seed", "--unset", "network_args.split_qkv", "--set", "network_args.split_qkv=true",
                 "--unset", "network_args.split_qkv")
    assert r.code == 0, r.err
    assert p["config"]["seed"] is None and "--seed" not in p["trainer_args"]
    assert "split_qkv" not in (p["config"]["network_args"] or {})
    r2, p2 = _plan(run_cli, local, "--set", "seed=null")
    assert p2["config"]["seed"] is None
    # order matters like --set: the last word wins
    _, p3 = _plan(run_cli, local, "--unset", "seed", "--set", "seed=7")
    assert p3["config"]["seed"] == 7


def test_unset_refuses_a_value_and_keys_that_cannot_be_unset(seed, run_cli, local):
    r, _ = _plan(run_cli, local, "--unset", "seed=3")
    assert r.code == 2 and "--unset 'seed=3': expected a key name without a value" in r.err
    r, _ = _plan(run_cli, local, "--unset", "output_name")
    assert r.code == 2 and "output_name" in r.err and "null is not allowed" in r.err
    r, _ = _plan(run_cli, local, "--unset", "network_dims")
    assert r.code == 2 and "did you mean 'network_dim'" in r.err


@pytest.mark.parametrize("word", ["none", "None", "null", "false", "off", "OFF", "~"])
def test_off_words_turn_samples_off_with_their_schedule(word, seed, run_cli, local):
    r, p = _plan(run_cli, local, "--set", f"sample_prompts={word}")
    assert r.code == 0, r.err + r.out
    cfg = p["config"]
    assert cfg["sample_prompts"] is None and cfg["sample_every_n_epochs"] is None
    assert not any(a.startswith("--sample") for a in p["trainer_args"])
    assert not any(c["name"].startswith("samples") for c in p["checks"] if c["status"] != "ok")


def test_off_in_train_yaml_too(seed, run_cli, local):
    (seed.root / "train.yaml").write_text("sample_prompts: none\nseed: off\n")
    r, p = _plan(run_cli, local)
    assert r.code == 0, r.err
    assert p["config"]["sample_prompts"] is None and p["config"]["sample_every_n_epochs"] is None
    assert p["config"]["seed"] is None


def test_a_schedule_set_together_with_samples_off_is_pointed_out(seed, run_cli, local):
    r, p = _plan(run_cli, local, "--set", "sample_prompts=none", "--set", "sample_every_n_epochs=3")
    assert r.code == 2
    assert any(c["name"] == "samples:no_prompts" for c in p["checks"] if c["status"] == "error")


def test_off_turns_a_flag_off(seed, run_cli, local):
    r, p = _plan(run_cli, local, "--set", "cache_latents_to_disk=off", "--set", "cache_latents=none")
    assert r.code == 0, r.err
    assert p["config"]["cache_latents"] is False and "--cache_latents" not in p["trainer_args"]


def test_none_is_not_taken_as_a_prompts_file(seed, run_cli, local):
    """Before: `sample_prompts=none` was a file named none (and the plan failed on its extension)."""
    r, p = _plan(run_cli, local, "--set", "sample_prompts=none")
    assert "samples:extension" not in {c["name"] for c in p["checks"]}


def test_help_documents_set_unset_and_off():
    import argparse

    from orchestrator.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["train"].format_help().split())
    assert "--unset KEY" in text and "none, null, false or off" in text and "sample_prompts=none" in text
    assert "an empty value (KEY=) is an error" in text
