"""argparse `type=` checks for numbers, so `--timeout 0` or `--port 99999` is a usage error (exit 2)
naming the option, before any work starts; and `--runtime` with each runtime's own options."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from orchestrator import runtimes


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A float that is not nan or inf."""
    return float(_number(text, float))


def seconds(text: str) -> float:
    """A duration above 0 (a timeout or poll interval)."""
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    value = int(_number(text, int))
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def add_runtime_options(parser: argparse.ArgumentParser, kind: str, *, help: str) -> None:
    """`--runtime NAME` (choices from the registry) and each runtime's own options as flags."""
    parser.add_argument("--runtime", choices=runtimes.names(kind), default=runtimes.DEFAULT, help=help)
    seen: set[str] = set()
    for settings in runtimes.settings_of(kind).values():
        for s in settings:
            if s.name in seen:
                continue
            seen.add(s.name)
            if s.kind == "flag":
                parser.add_argument(s.flag, dest=s.name, action="store_true", help=s.help)
            else:
                parser.add_argument(s.flag, dest=s.name, metavar=s.metavar, help=s.help,
                                    type=_path if s.kind == "path" else None)


def runtime_settings(args: argparse.Namespace, kind: str) -> dict[str, object]:
    """The runtime options given on the command line (name -> value), for `runtimes.*_runtime`."""
    names = {s.name for settings in runtimes.settings_of(kind).values() for s in settings}
    return {n: getattr(args, n) for n in names if getattr(args, n, None) not in (None, False)}


def _path(text: str) -> Path:
    return Path(text).expanduser()
