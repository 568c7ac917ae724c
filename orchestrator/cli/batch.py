"""`batch` command (not built yet)."""

from __future__ import annotations

import argparse

from orchestrator.cli.context import Context
from orchestrator.errors import OrchestratorError

HELP = 'Run a YAML job file of many prompts, seeds and LoRAs on one or many ComfyUI servers'
EXAMPLES = 'batch plan jobs.yaml\nbatch run jobs.yaml --server http://127.0.0.1:8188'


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    raise OrchestratorError("`batch` is not built yet", hint="see the open issues")
