"""Command line: `python -m orchestrator <command>`.

The ONLY place that prints errors and chooses exit codes: 0 ok, 1 runtime failure,
2 usage/config error, 130 Ctrl+C. Each command lives in `orchestrator/cli/<name>.py` with
`HELP` (one line), `EXAMPLES` and `register(parser)`, which sets `handler(args, ctx) -> int`.
A handler parses nothing itself: it turns `args` into the use case's typed options, calls the use
case (`orchestrator.train.api`, `orchestrator.comfy.serve`, `orchestrator.comfy.convert`, ...) and
renders the typed result. Command modules import their use case (and through it docker, huggingface_hub,
...) inside the handler, on purpose: building every parser for `--help` then loads none of them.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import io
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from orchestrator import __version__
from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.hftoken import redact, remember

PROG = "python -m orchestrator"

# Order is the order of the user's journey, as shown by --help.
COMMANDS = ("download", "doctor", "dataset", "train", "comfyui", "workflow", "generate", "batch")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting, so errors look alike."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def _common_options(defaults: bool) -> ArgumentParser:
    """Options accepted before and after the command name (`-v train` and `train -v`)."""
    sup = argparse.SUPPRESS
    p = ArgumentParser(add_help=False)
    p.add_argument("--project-dir", metavar="DIR", default="." if defaults else sup,
                   help="project folder holding models/, flux_data/, workflows/ (default: current folder)")
    p.add_argument("-v", "--verbose", action="store_true", default=False if defaults else sup,
                   help="more output (e.g. raw container log lines)")
    p.add_argument("--debug", action="store_true", default=False if defaults else sup,
                   help="like -v, and show tracebacks for errors")
    return p


def build_parser() -> ArgumentParser:
    """The whole parser tree; imports only the light `orchestrator.cli.<command>` modules."""
    modules = [importlib.import_module(f"orchestrator.cli.{name}") for name in COMMANDS]
    listing = "\n".join(f"  {name:<10} {m.HELP}" for name, m in zip(COMMANDS, modules))
    examples = "\n".join(f"  {PROG} {m.EXAMPLES.splitlines()[0]}" for m in modules if m.EXAMPLES)
    parser = ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(defaults=True)],
        description="Teach FLUX.1-dev new concepts with sd-scripts and generate images with ComfyUI,\n"
        "both in Docker.\n\ncommands:\n" + listing,
        epilog="examples:\n" + examples + f"\n\n`{PROG} COMMAND --help` shows each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"flux-orchestrator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser,
                                help="one of the commands above")
    common = _common_options(defaults=False)
    for name, module in zip(COMMANDS, modules):
        p = sub.add_parser(
            name,
            description=module.HELP,
            epilog="examples:\n" + "\n".join(f"  {PROG} {line}" for line in module.EXAMPLES.splitlines()),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        module.register(p)
        _add_common_to_subcommands(p)
    return parser


def _add_common_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """Accept --project-dir/-v/--debug after nested subcommands too (`comfyui status -v`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                for common in _common_options(defaults=False)._actions:
                    if not any(o in child._option_string_actions for o in common.option_strings):
                        child._add_action(common)
                _add_common_to_subcommands(child)


MAX_LINE = 600   # characters of one error line: a 10,000-character value must not fill the screen


def _line(text: str) -> str:
    text = redact(text)
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 1] + "…"


def render_error(err: OrchestratorError, stream: TextIO) -> None:
    """`error: ...`, indented evidence lines, then `hint: ...`; a token that slipped into any of them is masked."""
    stream.write(_line(f"error: {err.message}") + "\n")
    for line in err.details:
        stream.write(_line(f"  {line}") + "\n")
    if err.hint:
        stream.write(_line(f"hint: {err.hint}") + "\n")


def _print_traceback(stream: TextIO) -> None:
    """The current exception's traceback (--debug), with any token masked."""
    stream.write(redact(traceback.format_exc()))


def _unexpected(e: BaseException, stream: TextIO) -> None:
    stream.write(redact(f"error: unexpected {type(e).__name__}: {e}\n"))
    stream.write("hint: this is a bug in flux-orchestrator; rerun with --debug and report the traceback\n")


def _remember_secrets(argv: Sequence[str]) -> None:
    """Values of HF_TOKEN and --token, masked in every error we print (defence in depth)."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        remember(os.environ.get(name))
    for i, word in enumerate(argv):
        if word == "--token" and i + 1 < len(argv):
            remember(argv[i + 1])
        elif word.startswith("--token="):
            remember(word[len("--token="):])


def check_project_dir(value: str, *, may_create: bool) -> None:
    """UsageError when --project-dir is a file, or does not exist for a command that does not create it."""
    root = Path(value).expanduser()
    if root.exists() and not root.is_dir():
        raise UsageError(f"--project-dir {value}: is a file, not a folder",
                         hint="give the project folder (the one holding models/, flux_data/, workflows/)")
    if not root.exists() and not may_create:
        raise UsageError(f"the project folder {value} does not exist",
                         hint="check --project-dir (default: the current folder); `download`, `dataset init` "
                              "and `workflow init` start a new project there")


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (or use a project/output folder on another disk) "
                  "and run again",
    errno.EDQUOT: "your disk quota is used up: free some space and run again",
    errno.EROFS: "that file system is read-only: use a writable project folder (--project-dir) or output folder",
    errno.EACCES: "check the owner and permissions of that path (`ls -ld PATH`), or use a folder you own",
    errno.EPERM: "check the owner and permissions of that path (`ls -ld PATH`), or use a folder you own",
    errno.EISDIR: "a folder is where a file is expected: give a file path, or move the folder away",
    errno.ENOTDIR: "a file is where a folder is expected: check the path (--project-dir, --out, ...)",
    errno.EEXIST: "something is already there: if it is a file where a folder belongs (or the other way "
                  "round), move it away",
    errno.ENOENT: "check the path; a file or folder may have been moved or deleted meanwhile",
    errno.ENAMETOOLONG: "use a shorter path or name",
}


def os_error(e: OSError) -> OrchestratorError | None:
    """A file-system failure (disk full, read-only, permission, path) as an error naming the path; None for
    other OSErrors without a path (sockets, ...), which stay unexpected."""
    if e.errno is None or (e.filename is None and e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
        return None
    reason = e.strerror or errno.errorcode.get(e.errno, str(e.errno))
    if e.filename is None:  # a full or read-only disk is never our bug, even when the write does not say where
        return OrchestratorError(reason, hint=_OS_HINTS.get(e.errno))
    where = str(e.filename) if e.filename2 is None else f"{e.filename} -> {e.filename2}"
    return OrchestratorError(f"{where}: {reason}", hint=_OS_HINTS.get(e.errno))


def _missing_dependency(e: Exception) -> OrchestratorError | None:
    """The error naming the package and its install command when `e` is a failed import of a dependency."""
    if not isinstance(e, ImportError):
        return None
    from orchestrator.deps import missing_dependency

    return missing_dependency(e)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run one command; returns the exit code (never raises for expected failures)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    _remember_secrets(args_list)
    made: list[Context] = []   # the command's context, once there is one
    try:
        code = _run(args_list, out, err, made)
    except BaseException as e:  # noqa: B036 (rendered below; what is not ours propagates)
        ctx = made[0] if made else None
        failed, text = _failure(e, err, debug or bool(ctx and ctx.debug))
        if failed is None:
            raise
        if ctx is not None and text:   # the command's own stderr (JSON lines with --json) and its webhooks
            ctx.fail(text, interrupted=isinstance(e, KeyboardInterrupt))
        else:
            err.write(text)
        if ctx is not None:
            ctx.close()
        return failed
    if made:
        made[0].close()
    return code


def _run(args_list: list[str], out: TextIO, err: TextIO, made: list[Context]) -> int:
    """Parse and run the command; its Context goes into `made` as soon as it exists."""
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    if extra:  # argparse would blame the top-level parser; point at the command's own --help
        where = f"{PROG} {args.command}" if getattr(args, "command", None) else PROG
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}", hint=f"see `{where} --help`")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(out)
        return 0 if args.command is None else 2
    check_project_dir(args.project_dir, may_create=bool(getattr(args, "creates_project", False)))
    ctx = Context.from_args(args, stdout=out, stderr=err)
    made.append(ctx)
    return int(handler(args, ctx) or 0)


def _failure(e: BaseException, err: TextIO, debug: bool) -> tuple[int | None, str]:
    """(exit code, what stderr says) for a failed command; (None, "") for what must propagate (SystemExit)."""
    buf = io.StringIO()
    if isinstance(e, OrchestratorError):
        if debug:
            _print_traceback(err)
        render_error(e, buf)
        return e.exit_code, buf.getvalue()
    if isinstance(e, KeyboardInterrupt):
        return 130, "\ninterrupted\n"
    if isinstance(e, BrokenPipeError):
        return 1, ""
    if not isinstance(e, Exception):
        return None, ""
    if debug:
        _print_traceback(err)
    file_error = os_error(e) if isinstance(e, OSError) else None
    if file_error is not None:  # the disk or a path failed us: not a bug, say which and what to do
        render_error(file_error, buf)
        return file_error.exit_code, buf.getvalue()
    missing = _missing_dependency(e)
    if missing is not None:  # a package that is not installed is the set-up's problem, not a bug
        render_error(missing, buf)
        return missing.exit_code, buf.getvalue()
    # an unexpected failure: say so plainly, traceback only on --debug
    _unexpected(e, buf)
    return 1, buf.getvalue()
