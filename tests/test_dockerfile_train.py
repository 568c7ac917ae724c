"""Dockerfile.train cannot be built here (the NGC base needs the network): check it by construction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.images import SOURCE_ROOT, TRAIN_DOCKERFILE, train_image
from tests.conftest import shared_path

DOCKERFILE = SOURCE_ROOT / TRAIN_DOCKERFILE
COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"
KEYWORDS = {"FROM", "ARG", "LABEL", "ENV", "RUN", "WORKDIR", "CMD", "COPY", "USER", "ENTRYPOINT"}


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with comments dropped and continuation lines joined, as the builder reads them."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") or (not raw.strip() and not current):
            continue
        if raw.endswith("\\"):
            current += raw[:-1] + " "
            continue
        logical.append(current + raw)
        current = ""
    assert not current, "dangling line continuation at the end"
    out = []
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_only_known_instructions_and_one_pinned_multi_arch_base():
    ins = instructions()
    assert {k for k, _ in ins} <= KEYWORDS
    froms = [a for k, a in ins if k == "FROM"]
    assert froms == ["nvcr.io/nvidia/pytorch:25.09-py3"]
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3", froms[0])   # a release tag, never latest


def test_sd_scripts_is_fetched_at_the_pinned_commit_and_keeps_git():
    ins = instructions()
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG")
    assert args["SD_SCRIPTS_COMMIT"] == COMMIT
    assert args["SD_SCRIPTS_REPO"] == "https://github.com/kohya-ss/sd-scripts.git"
    run = " ".join(a for k, a in ins if k == "RUN")
    assert 'git fetch -q --depth 1 origin "${SD_SCRIPTS_COMMIT}"' in run
    assert 'test "$(git rev-parse HEAD)" = "${SD_SCRIPTS_COMMIT}"' in run
    assert "safe.directory /opt/sd-scripts" in run            # git works for the non-root container user
    assert ".git" not in run.replace("sd-scripts.git", "")      # never deleted: metadata records the commit
    assert f"io.flux-orchestrator.sd-scripts-commit=\"{COMMIT}\"" in " ".join(a for k, a in ins if k == "LABEL")
    assert [a for k, a in ins if k == "WORKDIR"] == ["/opt/sd-scripts"]


def test_requirements_keep_the_pins_and_the_base_torch():
    run = " ".join(a for k, a in instructions() if k == "RUN")
    assert "PIP_CONSTRAINT=/opt/torch-stack.txt python -m pip install -r requirements.txt" in run
    for pin in ("transformers.__version__ == '4.54.1'", "diffusers.__version__ == '0.32.1'",
                "huggingface_hub.__version__ == '0.34.3'", "accelerate.__version__ == '1.6.0'"):
        assert pin in run
    assert "diff - /tmp/torch-after.txt" in run                 # the build fails if pip touched torch
    assert "pip install torch" not in run and "--upgrade" not in run


def test_no_secrets_and_writable_homes_for_any_uid():
    text = DOCKERFILE.read_text()
    ins = instructions()
    for k, a in ins:
        if k in ("ARG", "ENV"):
            assert not re.search(r"TOKEN|SECRET|PASSWORD|KEY", a, re.I), a
    assert "hf auth login" not in text and "huggingface-cli login" not in text
    env = " ".join(a for k, a in ins if k == "ENV")
    for var in ("HOME=/tmp/home", "HF_HOME=/tmp/cache/huggingface", "XDG_CACHE_HOME=/tmp/cache",
                "TRITON_CACHE_DIR=", "TORCHINDUCTOR_CACHE_DIR=", "USER=trainer", "PYTHONUNBUFFERED=1",
                "HF_HUB_OFFLINE=1"):
        assert var in env
    assert not [a for k, a in ins if k == "USER"]   # the orchestrator passes the invoking uid:gid at run time


def test_the_image_tag_follows_the_dockerfile():
    tag = train_image()
    assert tag.startswith("flux-train:") and not tag.endswith(":missing")


def test_pins_match_the_kohya_reference():
    readme = shared_path("kohya", "README.md").read_text()
    assert f"commit **{COMMIT}**" in readme
    for pin in ("transformers==4.54.1", "diffusers[torch]==0.32.1", "huggingface-hub==0.34.3", "accelerate==1.6.0"):
        assert pin in readme


@pytest.mark.docker
def test_the_real_builder_parses_every_instruction(session_engine, tmp_path):
    """The daemon parses the whole file before running step 1; with a base that cannot exist the build
    stops at FROM (nothing is pulled or run), so any syntax error would show up instead."""
    from orchestrator.errors import DockerError

    text = DOCKERFILE.read_text().replace("FROM nvcr.io/nvidia/pytorch:25.09-py3",
                                          "FROM flux-orch-test/no-such-base:never")
    (tmp_path / "Dockerfile").write_text(text)
    steps = []
    with pytest.raises(DockerError):
        session_engine.build(Path(tmp_path), "Dockerfile", "flux-orch-test/trainrun-parse:never",
                             on_line=lambda line: steps.append(line) if line.step else None)
    assert [(s.step, s.total) for s in steps] == [(1, len(instructions()))]   # failed at FROM, after parsing
    # control: a syntax error fails before step 1, so the check above can tell the difference
    (tmp_path / "Dockerfile").write_text(text.replace("WORKDIR /opt/sd-scripts", "WORKDIRR /opt/sd-scripts"))
    steps.clear()
    with pytest.raises(DockerError):
        session_engine.build(Path(tmp_path), "Dockerfile", "flux-orch-test/trainrun-parse:never",
                             on_line=lambda line: steps.append(line) if line.step else None)
    assert steps == []
