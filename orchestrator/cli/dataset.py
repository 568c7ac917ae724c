"""`dataset` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = "Check concept folders under flux_data/ and keep sd-scripts' data.toml in sync"
EXAMPLES = 'dataset check\ndataset add tjtoy --from ~/photos/toy --trigger "tjtoy toy"\ndataset sync --balance'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`dataset` is not built yet", hint="see the open issues")
