"""`train` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = 'Train a FLUX.1-dev LoRA with sd-scripts in a container (plan, run, resume)'
EXAMPLES = 'train --plan\ntrain --preset default --set network_dim=32\ntrain --resume'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`train` is not built yet", hint="see the open issues")
