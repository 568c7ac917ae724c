"""Use case `generate`: prompt text -> patched workflow -> ComfyUI -> PNGs + JSON sidecars in outputs/.

    images = generate(GenerateRequest("a tjtoy toy on a desk", lora="flux_dreambooth.safetensors"),
                      layout, ComfyClient(url), reporter)

The workflow is `workflows/finetuned_flux.json` when a LoRA is given, else `workflows/base_flux.json`
(the shipped versions when the project has none), or any file given. It is converted with the
server's node schemas and patched by the image pipeline that `batch` uses too
(orchestrator.comfy.pipeline: the LoRA name resolved against the server's list, size, steps, ...),
checked against the server's model lists, queued with the UI workflow in extra_pnginfo (so each PNG
reopens in the browser), and followed to the end. A job whose LoRA made ComfyUI log `lora key not
loaded` fails (nothing saved). Each image is saved as `outputs/<date>/<time>-<prompt words>-s<seed>.png`
(never overwriting) with a `.json` sidecar of everything needed to make it again.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from orchestrator.comfy import events as ev
from orchestrator.comfy.knobs import sidecar_fields
from orchestrator.comfy.pipeline import Base, ImagePipeline, ImageSpec, effective_values, lora_loads
from orchestrator.comfy.resolve import ResolvedWorkflow, resolve_workflow
from orchestrator.comfy.schema import schemas_from_object_info
from orchestrator.comfy.serverlog import LoraWarnings, cached_nodes, job_window, lora_verdict
from orchestrator.errors import ComfyError, ComfyFailed, ConfigError
from orchestrator.layout import Layout, atomic_write_bytes, atomic_write_text
from orchestrator.progress import Event, Sink, format_duration
from orchestrator.files import file_lock

RANDOM_SEED_MAX = 2**32 - 1   # --seed random picks from here (any seed up to 2^64-1 may be given)


@dataclass(frozen=True)
class GenerateRequest:
    """What to make; None keeps the workflow's value. seed None = a random seed per image."""

    prompt: str
    lora: str | None = None
    strength: float | None = None
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    count: int = 1
    workflow: Path | None = None
    sets: tuple[tuple[str, str, Any], ...] = ()
    out_dir: Path | None = None
    strength_clip: float | None = None

    def spec(self, seed: int | None) -> ImageSpec:
        """The knobs of one of its images."""
        return ImageSpec(prompt=self.prompt, seed=seed, lora=self.lora, strength=self.strength,
                         strength_clip=self.strength_clip, width=self.width, height=self.height, steps=self.steps,
                         guidance=self.guidance, sampler=self.sampler, scheduler=self.scheduler, sets=self.sets)


@dataclass(frozen=True)
class GeneratedImage:
    """One saved image and its sidecar."""

    path: Path
    sidecar: Path
    seed: int | None
    prompt_id: str
    cached: bool


class Client(Protocol):
    """The part of orchestrator.comfy.client.ComfyClient this use case needs."""

    url: str

    def object_info(self) -> dict[str, Any]: ...
    def check_models(self, prompt: Mapping[str, Any]) -> None: ...
    def submit(self, prompt: Mapping[str, Any], *, workflow: Mapping[str, Any] | None = None) -> str: ...
    def wait(self, prompt_id: str, *, on_event: Any = None, timeout: float | None = None) -> Any: ...
    def view(self, image: ev.OutputImage) -> bytes: ...
    def cancel(self, prompt_ids: list[str]) -> None: ...
    def server_log(self) -> Any: ...


def choose_workflow(req: GenerateRequest, layout: Layout) -> ResolvedWorkflow:
    """The workflow of the request (the shared resolver: --workflow, else ours for with / without a LoRA)."""
    return resolve_workflow(str(req.workflow) if req.workflow is not None else None, layout,
                            lora=req.lora is not None, relative_to=Path.cwd())


def slugify(text: str, limit: int = 48) -> str:
    """Words of the prompt as a safe file name part: 'A tjtoy toy, on a desk!' -> 'a-tjtoy-toy-on-a-desk'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > limit:
        cut = slug[:limit]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[limit // 2:] else cut
    return slug.strip("-") or "image"


def unique_path(folder: Path, stem: str, suffix: str, taken: set[Path]) -> Path:
    """folder/stem+suffix, or stem-2, stem-3, ... when the name (or its sidecar) exists."""
    n = 1
    while True:
        path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        if path not in taken and not path.exists() and not path.with_suffix(".json").exists():
            taken.add(path)
            return path
        n += 1


class _ImageEvents:
    """Turns the ComfyUI events of one image into live progress events: sampler steps and the node running."""

    def __init__(self, reporter: Sink, index: int, count: int, prompt: Mapping[str, Any]) -> None:
        self.reporter, self.head = reporter, f"image {index + 1}/{count}"
        self.step: int | None = None    # kept after the last step: VAE decode comes after the sampler
        self.total: int | None = None
        self.names = {nid: (n.get("_meta") or {}).get("title") or n.get("class_type", nid) for nid, n in prompt.items()}

    def queued(self) -> None:
        self._emit("queued", "queued")

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Progress) and event.max:
            self.step, self.total = event.value, event.max
            self._emit("running", f"step {event.value}/{event.max}")
        elif isinstance(event, ev.Executing) and event.node is not None:
            self._emit("running", str(self.names.get(event.node, event.node)))
        elif isinstance(event, ev.ExecutionStart):
            self._emit("running", "started")

    def _emit(self, phase: str, what: str) -> None:
        self.reporter.emit(Event("generate", phase, f"{self.head}: {what}", step=self.step, total=self.total,
                                 unit="step", live=True))


def check_lora(client: Client, prompt: Mapping[str, Any], result: Any, verdicts: dict[str, LoraWarnings]) -> None:
    """ComfyFailed when the job's LoRA made ComfyUI log `lora key not loaded` (see comfy/serverlog.py)."""
    problem = lora_verdict(lora_loads(prompt), cached_nodes(result.history), job_window(result.history),
                           _log_reader(client), verdicts)
    if problem is not None:
        raise ComfyFailed(problem, hint="use a LoRA trained for this base model (FLUX.1-dev, as `train` makes); "
                                        "the image was not saved")


def _log_reader(client: Client) -> Any:
    def read() -> Any:
        try:
            return client.server_log()
        except ComfyError:   # the log is a check on top: a server that cannot show it is not a failed job
            return None
    return read


def generate(req: GenerateRequest, layout: Layout, client: Client, reporter: Sink, *,
             rng: random.Random | None = None, now: datetime | None = None,
             timeout: float | None = None) -> list[GeneratedImage]:
    """Make req.count images (one prompt each); returns them as saved. Ctrl+C cancels the running prompt."""
    if req.count < 1:
        raise ConfigError(f"--count must be at least 1 (got {req.count})")
    rng = rng or random.Random()
    stamp = now or datetime.now()
    schema = schemas_from_object_info(client.object_info(), source=client.url)
    pipe = ImagePipeline(layout, schema, where=f"ComfyUI at {client.url}", relative_to=Path.cwd())
    base = pipe.base(str(req.workflow) if req.workflow is not None else None, lora=req.lora is not None)
    folder = req.out_dir if req.out_dir is not None else layout.outputs / stamp.strftime("%Y-%m-%d")
    taken: set[Path] = set()
    made: list[GeneratedImage] = []
    verdicts: dict[str, LoraWarnings] = {}
    reporter.emit(Event("generate", "start", step=0, total=req.count, unit="image"))   # no line: the CLI prints paths
    for i in range(req.count):
        seed = req.seed + i if req.seed is not None else rng.randint(1, RANDOM_SEED_MAX)
        prompt, shown = pipe.build(base, req.spec(seed))
        if i == 0:
            client.check_models(prompt)
        made += _make_one(req, client, reporter, base, prompt, shown, i, seed, stamp, folder, taken, verdicts,
                          timeout)
    reporter.emit(Event("generate", "end", step=req.count, total=req.count, unit="image",
                        files=tuple(str(m.path) for m in made)))
    return made


def _make_one(req: GenerateRequest, client: Client, reporter: Sink, base: Base, prompt: dict[str, Any],
              shown: dict[str, Any] | None, i: int, seed: int, stamp: datetime, folder: Path, taken: set[Path],
              verdicts: dict[str, LoraWarnings], timeout: float | None) -> list[GeneratedImage]:
    """Queue one prompt, follow it, check its LoRA, save its images with sidecars."""
    values = effective_values(prompt)
    progress = _ImageEvents(reporter, i, req.count, prompt)
    progress.queued()
    started = time.monotonic()
    prompt_id = client.submit(prompt, workflow=shown)
    try:
        result = client.wait(prompt_id, on_event=progress, timeout=timeout)
    except KeyboardInterrupt:
        client.cancel([prompt_id])
        raise
    check_lora(client, prompt, result, verdicts)
    fetch_started = time.monotonic()
    images = [img for img in result.images if img.type == "output"]
    if not images:
        raise ConfigError(f"the workflow {base.label} saved no image",
                          hint="it needs a Save Image node connected to the decoded image")
    stem = f"{stamp.strftime('%H%M%S')}-{slugify(req.prompt)}-s{values.get('seed', seed)}"
    made = []
    for k, image in enumerate(images):
        data = client.view(image)
        with file_lock(folder):  # another `generate` may pick a name in this folder at the same time
            path = unique_path(folder, stem if len(images) == 1 else f"{stem}-{k + 1}", ".png", taken)
            atomic_write_bytes(path, data)
        sidecar = path.with_suffix(".json")
        timings = {f"{key}_s": round(value, 3) for key, value in result.timings.items()}
        timings["download_s"] = round(time.monotonic() - fetch_started, 3)
        timings["wall_s"] = round(time.monotonic() - started, 3)
        meta = {"file": path.name, **sidecar_fields({**values, "prompt": req.prompt, "seed": values.get("seed", seed)}),
                "sets": [list(s) for s in req.sets], "workflow": base.label, "server": client.url,
                "prompt_id": result.prompt_id,
                "server_file": {"filename": image.filename, "subfolder": image.subfolder, "type": image.type},
                "cached": result.cached, "created": datetime.now().astimezone().isoformat(timespec="seconds"),
                "timings": timings}
        atomic_write_text(sidecar, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        made.append(GeneratedImage(path, sidecar, meta["seed"], result.prompt_id, result.cached))
    took = format_duration(time.monotonic() - started)
    reporter.emit(Event("generate", "image", f"image {i + 1}/{req.count} done in {took}"
                        f"{' (cached)' if result.cached else ''}: {made[-1].path.name}", step=i + 1,
                        total=req.count, unit="image", files=tuple(str(m.path) for m in made)))
    return made
