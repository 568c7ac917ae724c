"""`generate` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = "Generate images headlessly through ComfyUI's API"
EXAMPLES = 'generate "a tjtoy toy on a desk" --lora flux_dreambooth.safetensors --count 4'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`generate` is not built yet", hint="see the open issues")
