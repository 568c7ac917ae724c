"""Writing finished jobs: the image files (named after the job) and a JSON sidecar each."""

from __future__ import annotations

import json
import time
from pathlib import Path, PurePosixPath

from orchestrator.batch.jobs import Job
from orchestrator.batch.scheduler import Outcome, Saver, Server
from orchestrator.comfy.knobs import sidecar_fields
from orchestrator.layout import atomic_write_bytes, atomic_write_text


def image_paths(job: Job, outcome: Outcome, out_dir: Path) -> list[Path]:
    """Where a job's images go: `<name>.png`, then `<name>-2.png`, ... for batches of several."""
    paths = []
    for i, ref in enumerate(outcome.images):
        suffix = PurePosixPath(ref.filename).suffix.lower() or ".png"
        if suffix not in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm"):
            suffix = ".bin"
        stem = job.name if i == 0 else f"{job.name}-{i + 1}"
        paths.append(out_dir / f"{stem}{suffix}")
    return paths


def make_saver(out_dir: Path, job_file: Path) -> Saver:
    """A Saver writing each image atomically, then `<name>.json` with the job's settings."""

    def save(job: Job, server: Server, prompt_id: str, outcome: Outcome) -> list[str]:
        paths = image_paths(job, outcome, out_dir)
        if _already_saved(out_dir / f"{job.name}.json", prompt_id, paths):
            return [p.name for p in paths]  # a crash came between saving and the manifest: not again
        for ref, path in zip(outcome.images, paths):
            atomic_write_bytes(path, server.fetch(ref))
        sidecar = {
            **job.settings(),
            # the knobs as the prompt ran with them (the server's LoRA file name, the workflow's steps), as in generate
            **sidecar_fields({"prompt": job.prompt, "seed": job.seed, **(outcome.values or {
                **job.settings(), "width": job.width, "height": job.height})}),
            "files": [p.name for p in paths],
            "server": server.url,
            "prompt_id": prompt_id,
            "source": [{"filename": r.filename, "subfolder": r.subfolder, "type": r.type} for r in outcome.images],
            "job_file": str(job_file),
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(out_dir / f"{job.name}.json", json.dumps(sidecar, indent=2) + "\n")
        return [p.name for p in paths]

    return save


def _already_saved(sidecar: Path, prompt_id: str, paths: list[Path]) -> bool:
    try:
        return json.loads(sidecar.read_text()).get("prompt_id") == prompt_id and all(p.exists() for p in paths)
    except (OSError, ValueError):
        return False
