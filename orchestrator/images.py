"""Names of our two Docker images. A tag carries the hash of its Dockerfile, so editing the
Dockerfile (e.g. a new pinned commit) makes the next command rebuild instead of reusing a stale image."""

from __future__ import annotations

import hashlib
from pathlib import Path

TRAIN_REPO = "flux-train"
COMFY_REPO = "flux-comfyui"

# The Dockerfiles sit at the top of the checkout, next to the `orchestrator` package.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
TRAIN_DOCKERFILE = "Dockerfile.train"
COMFY_DOCKERFILE = "Dockerfile.inference"


def image_tag(repo: str, dockerfile: Path) -> str:
    """`repo:<first 12 hex of the Dockerfile's SHA-256>`; `repo:missing` when the file is absent."""
    try:
        digest = hashlib.sha256(dockerfile.read_bytes()).hexdigest()[:12]
    except FileNotFoundError:
        digest = "missing"
    return f"{repo}:{digest}"


def train_image() -> str:
    """The training image tag for this checkout's Dockerfile.train."""
    return image_tag(TRAIN_REPO, SOURCE_ROOT / TRAIN_DOCKERFILE)


def comfy_image() -> str:
    """The ComfyUI image tag for this checkout's Dockerfile.inference."""
    return image_tag(COMFY_REPO, SOURCE_ROOT / COMFY_DOCKERFILE)
