"""Small local Docker images for the tests. Nothing is pulled: everything is built FROM scratch
with a static busybox from Debian's `busybox-static` package (installed by .ci/run)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from orchestrator.engine import Engine

BUSYBOX_IMAGE = "flux-orch-test/busybox:1"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
TEST_LABEL = "io.flux-orchestrator.test-image"


def busybox_binary() -> Path:
    """The static busybox to copy into images; a clear failure when the package is missing."""
    for c in BUSYBOX_CANDIDATES:
        p = Path(c)
        if p.exists():
            return p
    raise RuntimeError("static busybox not found: install Debian's busybox-static "
                       "(`apt-get install -y busybox-static`; .ci/run does this)")


def build_from_dir(engine: Engine, context: Path, tag: str) -> str:
    """Build `tag` from `context/Dockerfile` (cached by Docker's layer cache)."""
    engine.build(context, "Dockerfile", tag, labels={TEST_LABEL: "1"})
    return tag


def ensure_busybox_image(engine: Engine) -> str:
    """`flux-orch-test/busybox:1`: scratch + busybox with its applets installed in /bin, a /tmp."""
    with tempfile.TemporaryDirectory() as d:
        ctx = Path(d)
        shutil.copy2(busybox_binary(), ctx / "busybox")
        (ctx / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/root"]\n'
            'RUN ["/bin/busybox", "--install", "-s"]\n'
            'RUN ["/bin/busybox", "chmod", "1777", "/tmp"]\n'
            'CMD ["/bin/sh"]\n'
        )
        return build_from_dir(engine, ctx, BUSYBOX_IMAGE)


def build_on_busybox(engine: Engine, tag: str, files: dict[str, str | bytes], dockerfile_tail: str) -> str:
    """An image FROM the busybox base with `files` (name -> content) in the context and extra
    Dockerfile lines, e.g. a stand-in trainer script. Returns the tag."""
    ensure_busybox_image(engine)
    with tempfile.TemporaryDirectory() as d:
        ctx = Path(d)
        for name, content in files.items():
            p = ctx / name
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
            p.chmod(0o755)
        (ctx / "Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\n{dockerfile_tail}\n")
        return build_from_dir(engine, ctx, tag)


if __name__ == "__main__":  # `python -m tests.images`: prepare the base image ahead of the test run
    from orchestrator.engine import connect

    print(ensure_busybox_image(connect()))
