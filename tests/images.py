"""Small local Docker images for the tests. Nothing is pulled: everything is built FROM scratch
with a static busybox (see tests/busybox.py; `./setup.sh` provides it).

Every image of a test run carries the label `TEST_RUN_LABEL=<run id>` (set on the base image, so every
image built FROM it inherits it, and so do the containers started from them) and a tag ending in the run
id, so concurrent test runs on one machine neither share nor delete each other's images. The run id is
made once per pytest session (conftest.py, `FLUX_TEST_RUN_ID` for subprocesses); at the end of the
session `remove_run_objects` deletes the run's containers, images, volumes and networks, unless pytest
was given `--keep-test-images`."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from orchestrator.engine import Engine
from tests.busybox import find_static_busybox, missing_message

TEST_RUN_LABEL = "io.flux-orchestrator.test-run"
RUN_ID_ENV = "FLUX_TEST_RUN_ID"


def run_id() -> str:
    """This test run's id (made on first use when conftest.py has not set one)."""
    return os.environ.setdefault(RUN_ID_ENV, uuid.uuid4().hex[:10])


def run_tag(repo: str, tag: str) -> str:
    """`repo:tag-<run id>`: an image name no other test run uses."""
    return f"{repo}:{tag}-{run_id()}"


def busybox_image_tag() -> str:
    """The tag of this run's scratch + busybox base image."""
    return run_tag("flux-orch-test/busybox", "1")


def busybox_binary() -> Path:
    """The static busybox to copy into images; a clear failure when there is none."""
    found, notes = find_static_busybox()
    if found is None:
        raise RuntimeError(missing_message(notes))
    return found


def build_from_dir(engine: Engine, context: Path, tag: str) -> str:
    """Build `tag` from `context/Dockerfile` (cached by Docker's layer cache within this run)."""
    engine.build(context, "Dockerfile", tag, labels={TEST_RUN_LABEL: run_id()})
    return tag


def ensure_busybox_image(engine: Engine) -> str:
    """This run's scratch + busybox image with its applets installed in /bin, a /tmp."""
    tag = busybox_image_tag()
    if engine.image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory() as d:
        ctx = Path(d)
        shutil.copy2(busybox_binary(), ctx / "busybox")
        (ctx / "Dockerfile").write_text(
            "FROM scratch\n"
            # first, so no layer is shared with another run's images: removing one run's never breaks another's
            f"LABEL {TEST_RUN_LABEL}={run_id()}\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/root"]\n'
            'RUN ["/bin/busybox", "--install", "-s"]\n'
            'RUN ["/bin/busybox", "chmod", "1777", "/tmp"]\n'
            'CMD ["/bin/sh"]\n'
        )
        return build_from_dir(engine, ctx, tag)


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
        (ctx / "Dockerfile").write_text(f"FROM {busybox_image_tag()}\n{dockerfile_tail}\n")
        return build_from_dir(engine, ctx, tag)


def run_objects(engine: Engine, rid: str) -> dict[str, list[Any]]:
    """The containers, images, volumes and networks labelled with test run `rid`."""
    filters = {"label": f"{TEST_RUN_LABEL}={rid}"}
    c = engine.client
    return {"containers": c.containers.list(all=True, filters=filters),
            "images": c.images.list(all=True, filters=filters),
            "volumes": c.volumes.list(filters=filters), "networks": c.networks.list(filters=filters)}


def _quietly(remove: Any) -> bool:
    """Run one removal; True when the object is gone (removed now or already), False when the engine refused."""
    import docker.errors

    try:
        remove()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError:
        return False
    return True


def remove_run_objects(engine: Engine, rid: str) -> list[str]:
    """Remove everything labelled with test run `rid` (children before parents); returns what is left."""
    found = run_objects(engine, rid)
    for container in found["containers"]:
        _quietly(lambda: container.remove(force=True, v=True))
    images = sorted(found["images"], key=lambda i: i.attrs.get("Created", ""), reverse=True)  # newest first
    while images:  # a parent goes only once its children are gone
        left = [i for i in images if not _quietly(lambda: engine.client.images.remove(i.id, force=True))]
        if len(left) == len(images):
            break
        images = left
    for obj in found["volumes"] + found["networks"]:
        _quietly(obj.remove)
    rest = run_objects(engine, rid)
    return [f"{kind[:-1]} {getattr(o, 'short_id', getattr(o, 'name', o))}" for kind, objs in rest.items() for o in objs]

