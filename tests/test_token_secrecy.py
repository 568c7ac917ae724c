"""The Hugging Face token is checked before use and never shown: malformed tokens (a newline, a tab,
a space or a non-ASCII character inside) from HF_TOKEN, --token or the token file are exit-2 errors
naming the source; surrounding whitespace is removed with a warning naming the source. Every
command that reads the token runs through the real CLI against the local Hub (tests/hub_server.py),
with and without --debug, and no output stream nor any file written contains the token."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator import models
from orchestrator.hftoken import MASK, token_file
from tests.test_download import hub  # noqa: F401  (the local Hub fixture)

# test tokens are assembled at run time, so no token-shaped literal sits in the source
SECRET = "hf_" + "Secr3tValue" + "0123456789abcdefghijk"
FAKE = "hf_" + "abcdefghijklmnopqrstuvwxyz012345"
HALVES = (SECRET[:17], SECRET[17:])

MALFORMED = {
    "newline inside": HALVES[0] + "\n" + HALVES[1],
    "tab inside": HALVES[0] + "\t" + HALVES[1],
    "space inside": HALVES[0] + " " + HALVES[1],
    "unicode inside": HALVES[0] + "\u00e9" + HALVES[1],
    "CR inside": HALVES[0] + "\r" + HALVES[1],
}
FIXABLE = {
    "trailing newline": SECRET + "\n",
    "trailing space": SECRET + " ",
    "leading tab and trailing CRLF": "\t" + SECRET + "\r\n",
}
COMMANDS = (("download", "--only", "ae"), ("download", "--dry-run", "--only", "ae"), ("doctor", "--online"))
SOURCES = ("HF_TOKEN", "--token", "token file")


def _pieces(raw: str) -> set[str]:
    """Everything that would give the secret (or most of it) away."""
    return {raw, raw.strip(), SECRET, *HALVES, repr(raw)[1:-1]}


def _files_under(*roots: Path, skip: Path | None = None) -> list[Path]:
    out = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            out += [Path(dirpath) / n for n in names if skip is None or Path(dirpath) / n != skip]
    return out


def _assert_nothing_leaked(texts: list[str], files: list[Path], raw: str) -> None:
    for piece in _pieces(raw):
        for text in texts:
            assert piece not in text, f"token piece {piece!r} printed:\n{text}"
        for f in files:
            assert piece.encode() not in f.read_bytes(), f"token piece {piece!r} written to {f}"


@pytest.fixture
def secret_hub(hub, monkeypatch, tmp_path):  # noqa: F811
    hub.grant(SECRET, "carol", models.FLUX_REPO)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return hub


def _give(source: str, raw: str, monkeypatch) -> tuple[list[str], str, Path | None]:
    """Put the token where `source` says; returns extra argv, the label errors use, the token file."""
    if source == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", raw)
        return [], "HF_TOKEN", None
    if source == "--token":
        return ["--token", raw], "--token", None
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw, encoding="utf-8")
    return [], f"the token file {path}", path


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_token_is_a_clear_error_naming_its_source_and_never_printed(
        kind, source, secret_hub, run_cli, project, monkeypatch, tmp_path):
    raw = MALFORMED[kind]
    extra, label, written = _give(source, raw, monkeypatch)
    texts = []
    for command in COMMANDS:
        for debug in ((), ("--debug",)):
            r = run_cli(*debug, *command, *extra)
            texts += [r.out, r.err]
            if command[0] == "download":
                assert r.code == 2, r.err
                assert f"error: {label}: " in r.err and "Hugging Face token" in r.err or "holds" in r.err, r.err
                assert "hint: " in r.err
                assert ("Traceback" in r.err) == bool(debug)
                assert "bug" not in r.err and "unexpected" not in r.err
            else:   # doctor reports it in its table, with everything else it checks
                assert r.code == 1
                row = next(line for line in r.out.splitlines() if line.startswith("hf token"))
                assert "FAIL" in row and label in r.out
    assert not secret_hub.requests, "a malformed token must not be sent anywhere"
    assert not any(models.AE.path(project).parent.glob("ae*"))   # nothing downloaded, nothing half-written
    _assert_nothing_leaked(texts, _files_under(tmp_path, skip=written), raw)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", sorted(FIXABLE))
def test_whitespace_around_the_token_is_removed_with_a_warning_naming_the_source(
        kind, source, secret_hub, run_cli, project, monkeypatch, tmp_path):
    raw = FIXABLE[kind]
    extra, label, written = _give(source, raw, monkeypatch)
    texts = []
    for command in COMMANDS:
        for debug in ((), ("--debug",)):
            r = run_cli(*debug, *command, *extra)
            texts += [r.out, r.err]
            assert r.code == (1 if command[0] == "doctor" and "FAIL" in r.out else 0), r.out + r.err
            warned = f"{label}: removed whitespace around the token" in r.out + r.err
            # `hf auth login` and editors end the file with a newline: that alone is normal, not worth a warning
            assert warned == (source != "token file" or raw.strip() != raw.rstrip("\r\n"))
            if command[0] == "doctor":
                assert "logged in as carol" in r.out
    assert models.AE.path(project).read_bytes()   # the cleaned token worked
    auths = {r.headers.get("authorization") for r in secret_hub.requests if "authorization" in r.headers}
    assert auths == {f"Bearer {SECRET}"}
    _assert_nothing_leaked(texts, _files_under(tmp_path, skip=written), raw)


def test_a_token_echoed_by_the_server_is_masked_in_the_error(secret_hub, run_cli, monkeypatch, tmp_path):
    """Defence in depth: a mirror that puts the refused token into its error message."""
    secret_hub.echo_credentials = True
    refused = "hf_" + "RefusedToken" + "0123456789abcdefghij"
    monkeypatch.setenv("HF_TOKEN", refused)
    for debug in ((), ("--debug",)):
        r = run_cli(*debug, "download", "--only", "ae")
        assert r.code == 1
        assert "rejected by the Hub" in r.err and MASK in r.err
        assert refused not in r.out + r.err
    r = run_cli("download", "--dry-run", "--only", "ae", "--token", refused)
    assert refused not in r.out + r.err


def test_empty_token_option_and_blank_variable(secret_hub, run_cli, monkeypatch):
    r = run_cli("download", "--only", "ae", "--token", " ")
    assert r.code == 2 and "--token is empty" in r.err
    monkeypatch.setenv("HF_TOKEN", "  \n")
    r = run_cli("download", "--dry-run", "--only", "ae")
    assert r.code == 0 and "HF_TOKEN holds only whitespace: ignored" in r.err
    r = run_cli("doctor")
    row = next(line for line in r.out.splitlines() if line.startswith("hf token"))
    assert "WARN" in row and "HF_TOKEN holds only whitespace: ignored" in row


def test_wrong_shape_on_the_official_hub(run_cli, monkeypatch):
    """No HF_ENDPOINT: a value that is not hf_... never leaves the machine."""
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for raw, what in ((f"Bearer {FAKE}", "give only the token"),
                      (f'"{FAKE}"', "wrapped in quotes"),
                      ("ghp_abcdefghijklmnopqrstuvwxyz012345", "they start with hf_")):
        monkeypatch.setenv("HF_TOKEN", raw)
        r = run_cli("download", "--only", "ae")
        assert r.code == 2 and r.err.startswith("error: HF_TOKEN: ") and what in r.err, r.err
        assert raw.split()[-1].strip('"') not in r.out + r.err


def test_subprocess_debug_run_leaks_nothing(secret_hub, project, tmp_path):
    """A real process with --debug: stdout, stderr and every file under the project and TMPDIR."""
    raw = MALFORMED["newline inside"]
    tmp = tmp_path / "tmp"
    env = {**os.environ, "HF_ENDPOINT": secret_hub.url, "HF_TOKEN": raw, "TMPDIR": str(tmp),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--debug", "--project-dir", str(project.root),
                        "download", "--only", "ae"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "error: HF_TOKEN: the Hugging Face token contains a line break inside it" in r.stderr
    _assert_nothing_leaked([r.stdout, r.stderr], _files_under(project.root, tmp), raw)
