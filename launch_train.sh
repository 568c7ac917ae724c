#!/usr/bin/env bash
# Train a FLUX.1-dev LoRA on flux_data/ in the training container.
# A thin wrapper kept for people who know the tutorial: see `python -m orchestrator train --help`.
set -euo pipefail
cd "$(dirname "$0")"
exec python3 -m orchestrator train "$@"
