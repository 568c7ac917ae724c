"""`download` end to end through the CLI, with the real huggingface_hub against tests/hub_server.py."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from orchestrator import models
from orchestrator.download import partial_path
from tests.hub_server import HubServer

TOKEN = "hf_testtoken_granted_0123456789"
UNGRANTED = "hf_testtoken_not_granted_98765"

SIZES = {"flux1-dev.safetensors": 300_000, "ae.safetensors": 70_000, "clip_l.safetensors": 50_000,
         "t5xxl_fp16.safetensors": 160_000, "t5xxl_fp8_e4m3fn.safetensors": 80_000}


def _bytes(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@pytest.fixture
def hub(monkeypatch):
    """A local Hub holding small stand-ins of every catalogue file; HF_ENDPOINT points at it."""
    with HubServer() as server:
        for m in models.ALL_MODELS:
            server.add(m.repo, m.filename, _bytes(m.filename, SIZES[m.filename]), lfs=True)
        for tok in models.TOKENIZERS:
            for f, _ in tok.files + tok.optional:
                if f == "added_tokens.json" or (f == "tokenizer.json" and tok is models.T5XXL_TOKENIZER):
                    continue  # as upstream: these repos do not have them
                server.add(tok.repo, f, _bytes(tok.repo + f, 3_000), lfs=f.endswith(".model"))
        server.gated.add(models.FLUX_REPO)
        server.grant(TOKEN, "alice", models.FLUX_REPO)
        server.grant(UNGRANTED, "bob")
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _expected(m: models.ModelFile) -> bytes:
    return _bytes(m.filename, SIZES[m.filename])


def _no_token_leak(r, token=TOKEN):
    assert token not in r.out and token not in r.err


def test_downloads_the_four_models_and_tokenizers(hub, run_cli, project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = run_cli("download")
    assert r.code == 0, r.err
    for m in models.model_set("fp16"):
        assert m.path(project).read_bytes() == _expected(m)
    for tok in models.TOKENIZERS:
        assert models.tokenizer_status(project, tok).complete
        for f in ("tokenizer_config.json", tok.files[0][0]):
            assert (tok.folder(project) / f).read_bytes() == _bytes(tok.repo + f, 3000)
    assert sorted(p.name for p in models.T5XXL_TOKENIZER.folder(project).iterdir()) == [
        "config.json", "special_tokens_map.json", "spiece.model", "tokenizer_config.json"]
    assert not list(project.models.rglob("*.incomplete"))
    # the final table says what is where
    for name in ("flux1-dev", "ae", "clip_l", "t5xxl_fp16", "clip_l-tokenizer", "t5xxl-tokenizer"):
        assert name in r.out
    assert str(models.FLUX_DEV.path(project)) in r.out
    assert "downloaded" in r.out
    # the manifest lets doctor / training check completeness offline
    manifest = json.loads((project.models / models.MANIFEST_NAME).read_text())
    entry = manifest["checkpoints/flux1-dev.safetensors"]
    assert entry["size"] == SIZES["flux1-dev.safetensors"]
    assert entry["sha256"] == hashlib.sha256(_expected(models.FLUX_DEV)).hexdigest() == entry["etag"]
    assert entry["commit"] and entry["verified"] is True
    assert models.local_status(project, models.FLUX_DEV).complete
    assert models.local_status(project, models.FLUX_DEV).recorded
    # the token went to the Hub, never to the CDN, and never to the output
    resolves = [q for q in hub.requests if "/resolve/" in q.path and models.FLUX_REPO in q.path]
    assert resolves and all(q.headers.get("authorization") == f"Bearer {TOKEN}" for q in resolves)
    cdn = hub.gets("/cdn/")
    assert cdn and all("authorization" not in q.headers for q in cdn)
    _no_token_leak(r)
    assert TOKEN not in (project.models / models.MANIFEST_NAME).read_text()


def test_second_run_skips_complete_files(hub, run_cli, project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert run_cli("download").code == 0
    before = len(hub.gets())
    r = run_cli("download")
    assert r.code == 0, r.err
    assert len(hub.gets()) == before  # only HEADs: nothing fetched again
    assert "complete" in r.out and "downloaded" not in r.out


def test_resumes_a_partial_download_with_range(hub, run_cli, project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    data = _expected(models.AE)
    target = models.AE.path(project)
    partial = partial_path(target, hashlib.sha256(data).hexdigest())
    partial.write_bytes(data[:30_000])  # what an interrupted run leaves behind
    r = run_cli("download", "--only", "ae")
    assert r.code == 0, r.err
    assert target.read_bytes() == data
    assert not partial.exists()
    ranges = [q.headers.get("range") for q in hub.gets("/cdn/")]
    assert ranges == ["bytes=30000-"]
    assert "resumed" in r.out
    assert "resuming ae.safetensors" in r.err


def test_connection_dropped_mid_file_is_retried_and_the_file_is_intact(hub, run_cli, project):
    hub.cut_after["clip_l.safetensors"] = 20_000
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 0, r.err
    assert models.CLIP_L.path(project).read_bytes() == _expected(models.CLIP_L)
    # huggingface_hub retries on its own; it resumes from the last whole 10 MiB chunk it wrote,
    # which for this small file is byte 0
    assert len(hub.gets("/cdn/")) == 2


@pytest.mark.slow
def test_interrupted_process_leaves_no_file_in_place_and_next_run_resumes(hub, project, tmp_path):
    """A real Ctrl+C (SIGINT) of `python -m orchestrator download`, then a second run."""
    chunk = 10 * 1024 * 1024  # huggingface_hub writes in 10 MiB chunks
    data = _bytes("flux-large", chunk + 6 * 1024 * 1024)
    hub.add(models.FLUX_REPO, "flux1-dev.safetensors", data, lfs=True)
    go_on = threading.Event()   # the CDN stops one block past the first chunk until the Ctrl+C is over
    hub.pause_after["flux1-dev.safetensors"] = (chunk + 64 * 1024, go_on)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "download", "--only", "flux1-dev"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = models.FLUX_DEV.path(project)
    partial = partial_path(target, hashlib.sha256(data).hexdigest())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < chunk):
        time.sleep(0.02)
    proc.send_signal(2)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        go_on.set()
    assert proc.returncode == 130, err
    assert not target.exists()
    kept = partial.stat().st_size
    assert kept == chunk
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == data
    assert "resuming flux1-dev.safetensors at 10.0 MiB" in r.stderr
    assert "run the same command to resume" in err
    assert hub.gets("/cdn/")[-1].headers.get("range") == f"bytes={kept}-"
    assert TOKEN not in out + err + r.stdout + r.stderr


def test_token_from_huggingface_hubs_saved_login(hub, project, tmp_path):
    """`hf auth login` stores the token under HF_HOME; a fresh process must find it there."""
    home = tmp_path / "hf_home"
    home.mkdir()
    (home / "token").write_text(TOKEN)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(home), HF_ENDPOINT=hub.url)
    cmd = [sys.executable, "-m", "orchestrator", "--project-dir", str(project.root), "download", "--only", "ae"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert models.AE.path(project).read_bytes() == _expected(models.AE)
    assert TOKEN not in r.stdout + r.stderr


def test_gated_model_without_token(hub, run_cli, project):
    r = run_cli("download")
    assert r.code == 1
    assert "black-forest-labs/FLUX.1-dev is a gated model and no Hugging Face token was found" in r.err
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in r.err
    assert "hf auth login" in r.err and "HF_TOKEN" in r.err
    assert "Traceback" not in r.err
    assert not hub.gets()  # failed before downloading anything
    assert not models.CLIP_L.path(project).exists()


def test_gated_model_whose_licence_was_not_accepted(hub, run_cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", UNGRANTED)
    r = run_cli("download", "--only", "flux1-dev")
    assert r.code == 1
    assert "not been granted access to the gated model black-forest-labs/FLUX.1-dev (403)" in r.err
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in r.err
    assert "accept the licence" in r.err
    _no_token_leak(r, UNGRANTED)


def test_invalid_token(hub, run_cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_revoked_token_abcdef")
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert "token from HF_TOKEN was rejected by the Hub (401" in r.err
    assert "huggingface.co/settings/tokens" in r.err
    _no_token_leak(r, "hf_revoked_token_abcdef")


def test_file_missing_upstream(hub, run_cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    del hub.repos[models.FLUX_REPO]["ae.safetensors"]
    r = run_cli("download")
    assert r.code == 1
    assert "ae.safetensors is not in black-forest-labs/FLUX.1-dev" in r.err and "404" in r.err
    assert not hub.gets()


def test_optional_tokenizer_files_may_be_absent_upstream(hub, run_cli, project):
    r = run_cli("download", "--only", "t5xxl-tokenizer")
    assert r.code == 0, r.err
    assert not (models.T5XXL_TOKENIZER.folder(project) / "tokenizer.json").exists()
    assert (models.T5XXL_TOKENIZER.folder(project) / "special_tokens_map.json").exists()
    assert models.tokenizer_status(project, models.T5XXL_TOKENIZER).complete


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_network_unreachable(run_cli, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:" in r.err
    assert "(from HF_ENDPOINT)" in r.err
    assert "Traceback" not in r.err


def test_verify_catches_a_corrupted_file_and_downloads_it_again(hub, run_cli, project):
    assert run_cli("download", "--only", "clip_l").code == 0
    path = models.CLIP_L.path(project)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, different bytes: a size check cannot see it
    path.write_bytes(bytes(data))
    assert "complete" in run_cli("download", "--only", "clip_l").out  # size-only check passes
    r = run_cli("download", "--only", "clip_l", "--verify")
    assert r.code == 0, r.err
    assert "checksum does not match" in r.err
    assert "replaced" in r.out
    assert path.read_bytes() == _expected(models.CLIP_L)
    r = run_cli("download", "--only", "clip_l", "--verify")
    assert "verified" in r.out


def test_corrupt_transfer_is_never_moved_into_place(hub, run_cli, project):
    hub.corrupt.add("clip_l.safetensors")
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert "clip_l.safetensors arrived corrupt: SHA-256" in r.err
    assert not models.CLIP_L.path(project).exists()
    assert not list(project.text_encoders.glob("*.incomplete"))


def test_variant_fp8_fetches_the_small_t5(hub, run_cli, project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = run_cli("download", "--variant", "fp8", "--only", "t5xxl")
    assert r.code == 0, r.err
    assert models.T5XXL_FP8.path(project).read_bytes() == _expected(models.T5XXL_FP8)
    assert not models.T5XXL_FP16.path(project).exists()


def test_unknown_only_name_is_a_usage_error(run_cli):
    r = run_cli("download", "--only", "flux-2")
    assert r.code == 2
    assert "unknown name 'flux-2'" in r.err and "flux1-dev" in r.err


def test_dry_run_lists_files_sizes_paths_and_free_disk(hub, run_cli, project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = run_cli("download", "--dry-run")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    for m in models.model_set("fp16"):
        row = next(line for line in lines if line.startswith(m.name + " "))
        assert str(m.path(project)) in row and "to download" in row
    assert "293.0 KiB" in r.out  # flux1-dev's size as the Hub reports it
    for tok in models.TOKENIZERS:
        assert any(line.startswith(tok.name) and str(tok.folder(project)) in line for line in lines)
    assert "to download:" in r.out and f"free in {project.models}" in r.out
    assert "sizes: from the Hub" in r.out
    assert not hub.gets() and not list(project.models.rglob("*.safetensors"))


def test_dry_run_without_the_hub_uses_catalogue_sizes(run_cli, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    r = run_cli("download", "--dry-run")
    assert r.code == 0, r.err
    assert "22.2 GiB" in r.out  # flux1-dev from the catalogue
    assert "approximate" in r.out
    assert "cannot reach the Hugging Face Hub" in r.err


# -- the disk: a real, tiny tmpfs ------------------------------------------------------------------
@pytest.fixture
def mount_tmpfs(project):
    """Mount a real tmpfs of a given size on a folder (needs root, which this machine's CI has)."""
    mounted = []

    def mount(target, size: str = "1m"):
        target.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def tiny_disk(project, mount_tmpfs):
    """models/ on a 1 MiB tmpfs."""
    target = mount_tmpfs(project.models)
    project.ensure_dirs(*project.model_dirs().values(), project.tokenizers)
    return target


def test_disk_room_is_checked_per_file_system(hub, run_cli, project, mount_tmpfs, monkeypatch):
    """models/checkpoints on its own small disk (as when symlinked elsewhere): that disk is the one refused."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    mount_tmpfs(project.checkpoints, "256k")
    r = run_cli("download", "--only", "flux1-dev", "clip_l")
    assert r.code == 1
    assert f"not enough disk space in {project.checkpoints}: the download needs 293.0 KiB more" in r.err
    assert str(project.text_encoders) not in r.err
    assert run_cli("download", "--only", "clip_l").code == 0  # the big disk has room


def test_refuses_to_start_without_room(hub, run_cli, project, tiny_disk, monkeypatch):
    big = b"x" * (2 * 1024 * 1024)
    hub.add(models.TEXT_ENCODERS_REPO, "clip_l.safetensors", big, lfs=True)
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert f"not enough disk space in {project.text_encoders}" in r.err
    assert "2.0 MiB" in r.err
    assert not hub.gets()


def test_disk_full_mid_way_leaves_nothing_at_the_final_path_and_resumes(hub, run_cli, project, tiny_disk):
    data = _bytes("big", 700 * 1024)
    hub.add(models.TEXT_ENCODERS_REPO, "clip_l.safetensors", data, lfs=True)
    filler = tiny_disk / "filler"

    def fill_disk(name: str) -> None:  # something else fills the disk once our download has started
        if not filler.exists():
            filler.write_bytes(b"\0" * (600 * 1024))

    hub.before_body = fill_disk
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert "the disk is full" in r.err and "Nothing was written to clip_l.safetensors" in r.err
    assert "Traceback" not in r.err
    target = models.CLIP_L.path(project)
    assert not target.exists()
    partial = partial_path(target, hashlib.sha256(data).hexdigest())
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert data.startswith(partial.read_bytes())  # what was kept is a correct prefix
    filler.unlink()
    hub.before_body = None
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 0, r.err
    assert target.read_bytes() == data
    assert hub.gets("/cdn/")[-1].headers.get("range") == f"bytes={kept}-"


def test_complete_project_needs_no_network(hub, run_cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert run_cli("download").code == 0
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    r = run_cli("download")
    assert r.code == 0, r.err
    assert "Hub not reachable, not re-checked" in r.out


def test_a_second_download_in_the_same_project_is_refused(run_cli, project):
    import fcntl

    with open(project.models / ".download.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert "another `download` is already running for this project" in r.err


def test_dry_run_shows_a_partial_download(hub, run_cli, project):
    data = _expected(models.CLIP_L)
    partial_path(models.CLIP_L.path(project), hashlib.sha256(data).hexdigest()).write_bytes(data[:25_000])
    r = run_cli("download", "--dry-run", "--only", "clip_l")
    assert r.code == 0, r.err
    assert "partial 50% (resumes)" in r.out
    assert "to download: 24.4 KiB" in r.out


def test_download_sh_wrapper(hub, project):
    script = os.path.join(os.path.dirname(__file__), "..", "download.sh")
    r = subprocess.run(["bash", script, "--project-dir", str(project.root), "--dry-run", "--only", "clip_l"],
                       env={**os.environ, "HF_ENDPOINT": hub.url}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "clip_l" in r.stdout and str(models.CLIP_L.path(project)) in r.stdout


def test_hub_server_error_says_to_retry_later(hub, run_cli, monkeypatch):
    hub.fail_status = 503
    r = run_cli("download", "--only", "clip_l")
    assert r.code == 1
    assert "the Hub answered 503 for comfyanonymous/flux_text_encoders/clip_l.safetensors" in r.err
    assert "run again later" in r.err


def test_tokenizer_folders_match_sd_scripts_cache_layout():
    """sd-scripts loads `<tokenizer_cache_dir>/<repo id with / as _>` (cross-check with ../shared)."""
    from tests.conftest import shared_path

    text = shared_path("kohya", "README.md").read_text()
    for tok in models.TOKENIZERS:
        assert f"`{tok.repo}`" in text or tok.repo in text
        assert f"<dir>/{tok.folder_name}" in text
