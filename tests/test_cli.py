"""The CLI skeleton: help, version, error rendering and exit codes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from orchestrator.cli import COMMANDS, main, os_error, render_error
from orchestrator.errors import ConfigError


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_renders(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m orchestrator {command}" in out
    assert "examples:" in out


def test_top_help_names_all_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"  {command} " in out


def test_no_command_prints_help_and_exits_0(run_cli):
    r = run_cli()
    assert r.code == 0
    assert "commands:" in r.out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "flux-orchestrator" in capsys.readouterr().out


def test_usage_error_is_exit_2_without_traceback(run_cli):
    r = run_cli("train", "--no-such-option")
    assert r.code == 2
    assert r.err.startswith("error: ")
    assert "hint: " in r.err
    assert "Traceback" not in r.err


def test_unknown_command_is_exit_2(run_cli):
    r = run_cli("frobnicate")
    assert r.code == 2
    assert "invalid choice" in r.err


def test_render_error_shows_details_and_hint():
    import io

    s = io.StringIO()
    render_error(ConfigError("bad thing", hint="do this", details=["a.toml:3: x", "a.toml:4: y"]), s)
    assert s.getvalue() == "error: bad thing\n  a.toml:3: x\n  a.toml:4: y\nhint: do this\n"


def test_exit_codes_of_error_tree():
    from orchestrator import errors

    assert errors.OrchestratorError("x").exit_code == 1
    assert errors.UsageError("x").exit_code == 2
    assert errors.ConfigError("x").exit_code == 2
    assert errors.DatasetError("x").exit_code == 2
    assert errors.ComfyRejected("x").exit_code == 2
    assert errors.TrainingFailed("x").exit_code == 1
    assert errors.DockerUnavailable("x").exit_code == 1


def test_python_dash_m_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--version"], capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stdout.startswith("flux-orchestrator ")


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from orchestrator.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('docker','huggingface_hub','requests','websocket','PIL','tomlkit','yaml') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


@pytest.mark.parametrize("argv", [["comfyui", "status"], ["dataset", "check"], ["batch", "plan", "jobs.yaml"],
                                  ["workflow", "convert", "x.json"]])
def test_common_options_accepted_after_nested_subcommands(argv, tmp_path):
    from orchestrator.cli import build_parser

    args = build_parser().parse_args([*argv, "--project-dir", str(tmp_path), "-v"])
    assert args.project_dir == str(tmp_path) and args.verbose is True


def test_file_system_errors_name_the_path_without_calling_it_a_bug(run_cli, project, tmp_path):
    """An OSError with a path (disk full, read-only, a file where a folder belongs) is the user's
    environment, not our bug: exit 1, the path, a hint, no traceback."""
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(photos / "a.png")
    project.flux_data.rmdir()
    project.flux_data.write_text("not a folder\n")
    r = run_cli("dataset", "add", "toy", "--from", str(photos))
    assert r.code == 1
    assert f"error: {project.flux_data}: File exists" in r.err
    assert "hint: something is already there" in r.err
    assert "bug" not in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permissions")])
def test_os_error_hints(code, hint):
    err = os_error(OSError(code, os.strerror(code), "/data/x.png"))
    assert err is not None and err.exit_code == 1
    assert err.message == f"/data/x.png: {os.strerror(code)}"
    assert hint in (err.hint or "")
    pathless = os_error(OSError(code, os.strerror(code)))  # a failed write() does not say where
    if code == errno.EACCES:
        assert pathless is None  # without a path it may be our bug: stays 'unexpected'
    else:
        assert pathless is not None and pathless.message == os.strerror(code) and hint in (pathless.hint or "")


@pytest.mark.parametrize("url, why", [("localhost:99999", "port must be a number from 1 to 65535"),
                                      ("http://127.0.0.1:foo", "port must be a number"),
                                      ("ftp://gpu2", "http:// or https://, not ftp://"),
                                      ("http://:8188", "no host name")])
@pytest.mark.parametrize("command", [("generate", "a fox"), ("workflow", "check", "base_flux.json"),
                                     ("batch", "run", "jobs.yaml")])
def test_bad_server_url_is_a_usage_error(run_cli, project, command, url, why):
    (project.root / "jobs.yaml").write_text("jobs:\n  - prompt: a fox\n    lora: none\n")
    run_cli("workflow", "init")
    argv = [a if a != "jobs.yaml" else str(project.root / "jobs.yaml") for a in command]
    r = run_cli(*argv, "--server", url)
    assert r.code == 2, r.err
    assert f"error: --server {url!r}: " in r.err and why in r.err
    assert "bug" not in r.err


def test_server_url_normalization():
    from orchestrator.comfy.client import normalize_url

    assert normalize_url(" gpu2:8188/ ") == "http://gpu2:8188"
    assert normalize_url("https://box.example/comfy/") == "https://box.example/comfy"
    assert normalize_url("[::1]:8188") == "http://[::1]:8188"


@pytest.mark.parametrize("argv, message", [
    (("generate", "a fox", "--timeout", "0"), "argument --timeout: expected seconds above 0, got '0'"),
    (("generate", "a fox", "--guidance", "nan"), "--guidance: nan is not a FLUX guidance from 0 to 100"),
    (("generate", "a fox", "--lora", "x", "--strength", "inf"), "--strength: inf is not a LoRA strength"),
    (("batch", "run", "jobs.yaml", "--timeout", "-1"), "argument --timeout: expected seconds above 0, got '-1'"),
    (("batch", "plan", "jobs.yaml", "--sample", "-1"), "argument --sample: expected a whole number >= 0"),
    (("comfyui", "up", "--timeout", "0"), "argument --timeout: expected seconds above 0"),
    (("comfyui", "logs", "--tail", "-1"), "argument --tail: expected a whole number >= 0"),
    (("doctor", "--port", "99999"), "argument --port: expected a port from 1 to 65535, got '99999'"),
    (("doctor", "--port", "x"), "argument --port: expected a whole number, got 'x'"),
])
def test_out_of_range_numbers_are_usage_errors(run_cli, argv, message):
    r = run_cli(*argv)
    assert r.code == 2, r.err
    assert f"error: {message}" in r.err
    assert "bug" not in r.err


@pytest.mark.parametrize("argv", [("dataset", "check"), ("train", "--plan"), ("doctor",), ("batch", "plan", "j.yaml")])
def test_missing_project_dir_is_a_usage_error(run_cli, tmp_path, argv):
    missing = tmp_path / "typo"
    r = run_cli(*argv, project_dir=missing)
    assert r.code == 2, r.err
    assert f"error: the project folder {missing} does not exist" in r.err
    assert not missing.exists()


def test_project_dir_that_is_a_file_is_a_usage_error(run_cli, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    r = run_cli("download", "--dry-run", project_dir=f)
    assert r.code == 2
    assert "is a file, not a folder" in r.err


@pytest.mark.parametrize("argv, made", [(("dataset", "init"), "flux_data/data.toml"),
                                        (("workflow", "init"), "workflows/base_flux.json")])
def test_init_commands_start_a_new_project_folder(run_cli, tmp_path, argv, made):
    new = tmp_path / "new project"
    r = run_cli(*argv, project_dir=new)
    assert r.code == 0, r.err
    assert (new / made).is_file()


def test_unknown_option_points_at_the_commands_help(run_cli):
    r = run_cli("generate", "a fox", "--sedd", "4")
    assert r.code == 2
    assert "error: unrecognized arguments: --sedd 4" in r.err
    assert "hint: see `python -m orchestrator generate --help`" in r.err


def test_a_failed_atomic_write_names_its_file_and_leaves_nothing(tmp_path):
    """A write that fails without a path (disk full; here: a file size limit, EFBIG) is re-raised naming the
    file, so the CLI can say which; the temp file is gone and the old content intact."""
    target = tmp_path / "prompt.json"
    target.write_text("old\n")
    script = (
        "import errno, resource, signal, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.layout import atomic_write_bytes\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n"
        "    atomic_write_bytes(Path(sys.argv[1]), b'x' * 100_000)\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], e.filename)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=60)
    assert r.stdout.strip() == f"EFBIG {target}", r.stderr
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["prompt.json"]
