"""`comfyui` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = 'Run ComfyUI in a container with our workflows (up, down, status, logs)'
EXAMPLES = 'comfyui up\ncomfyui status\ncomfyui logs -f\ncomfyui down'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`comfyui` is not built yet", hint="see the open issues")
