#!/usr/bin/env bash
# Download FLUX.1-dev, the text encoders, the VAE and the tokenizers into models/.
# A thin wrapper kept for people who know the tutorial: see `python -m orchestrator download --help`.
set -euo pipefail
cd "$(dirname "$0")"
exec python3 -m orchestrator download "$@"
