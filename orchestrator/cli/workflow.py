"""`workflow` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = 'Convert a browser-saved workflow to an API prompt, or check it against a server'
EXAMPLES = 'workflow convert workflows/finetuned_flux.json\nworkflow check workflows/base_flux.json'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`workflow` is not built yet", hint="see the open issues")
