"""A stand-in for the sd-scripts trainer, as a tiny local image (FROM the busybox test base) and as a
local subprocess. See `standin.sh` for what it prints, writes, and how to make it misbehave."""

from __future__ import annotations

import hashlib
from pathlib import Path

from orchestrator.engine import Engine
from orchestrator.runtimes.docker_train import SD_SCRIPTS_COMMIT_LABEL
from tests.images import build_on_busybox, busybox_binary

STANDIN_SCRIPT = Path(__file__).with_name("standin.sh")
STANDIN_REPO = "flux-orch-test/trainrun-standin"
# what the real image records; the stand-in claims the same pin so manifests look alike
STANDIN_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"
_SCRIPT_STUB = "# stand-in: the real flux_train_network.py is run by accelerate; this file only has to exist\n"


def standin_tag() -> str:
    """Image tag of the current stand-in (changes with the script, so edits rebuild it)."""
    digest = hashlib.sha256(STANDIN_SCRIPT.read_bytes()).hexdigest()[:12]
    return f"{STANDIN_REPO}:{digest}"


def ensure_standin_trainer(engine: Engine) -> str:
    """Build (once, cached) the stand-in trainer image: `accelerate` on PATH, /opt/sd-scripts as workdir."""
    tag = standin_tag()
    if engine.image_exists(tag):
        return tag
    return build_on_busybox(
        engine, tag,
        files={"accelerate": STANDIN_SCRIPT.read_text(), "flux_train_network.py": _SCRIPT_STUB},
        dockerfile_tail=(
            "COPY accelerate /usr/local/bin/accelerate\n"
            "COPY flux_train_network.py /opt/sd-scripts/flux_train_network.py\n"
            "WORKDIR /opt/sd-scripts\n"
            f"LABEL {SD_SCRIPTS_COMMIT_LABEL}={STANDIN_COMMIT}\n"
            'ENTRYPOINT []\nCMD ["accelerate"]'
        ),
    )


def make_local_trainer(folder: Path) -> tuple[Path, Path]:
    """A fake sd-scripts checkout and a fake `python` that runs the stand-in for
    `python -m accelerate.commands.accelerate_cli launch ...`; returns (checkout, python)."""
    checkout = folder / "sd-scripts"
    checkout.mkdir(parents=True, exist_ok=True)
    (checkout / "flux_train_network.py").write_text(_SCRIPT_STUB)
    python = folder / "fake-python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ] && [ "$2" = accelerate.commands.accelerate_cli ]; then\n'
        f'  shift 2; exec {busybox_binary()} sh {STANDIN_SCRIPT} "$@"\n'
        "fi\n"
        'echo "fake python: unsupported arguments: $*" >&2\nexit 2\n'
    )
    python.chmod(0o755)
    return checkout, python
