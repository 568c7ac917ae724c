"""`doctor` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = 'Check this machine: Python, Docker, NVIDIA runtime, GPUs, disk, models, port 8188'
EXAMPLES = 'doctor\ndoctor --json\ndoctor --online'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`doctor` is not built yet", hint="see the open issues")
