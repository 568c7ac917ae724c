#!/usr/bin/env bash
# Run ComfyUI at http://127.0.0.1:8188 in the foreground; Ctrl+C stops it.
# A thin wrapper kept for people who know the tutorial: see `python -m orchestrator comfyui --help`.
set -euo pipefail
cd "$(dirname "$0")"
exec python3 -m orchestrator comfyui up --foreground "$@"
