"""flux-orchestrator: a thin, reliable layer over sd-scripts (training) and ComfyUI (inference)."""

__version__ = "0.1.0"
