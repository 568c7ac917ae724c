"""`download` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = 'Download FLUX.1-dev, its text encoders, VAE and tokenizers into models/'
EXAMPLES = 'download\ndownload --dry-run\ndownload --only flux1-dev ae --verify\ndownload --variant fp8'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`download` is not built yet", hint="see the open issues")
