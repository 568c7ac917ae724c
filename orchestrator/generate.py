"""Use case `generate`: prompt text -> patched workflow -> ComfyUI -> PNGs + JSON sidecars in outputs/.

    images = generate(GenerateRequest("a tjtoy toy on a desk", lora="flux_dreambooth.safetensors"),
                      layout, ComfyClient(url), reporter)

The workflow is `workflows/finetuned_flux.json` when a LoRA is given, else `workflows/base_flux.json`
(the shipped versions when the project has none), or any file given. It is converted with the
server's node schemas, patched (text, seed, LoRA, size, steps, ...), checked against the server's
model lists, queued with the UI workflow in extra_pnginfo (so each PNG reopens in the browser), and
followed to the end. Each image is saved as `outputs/<date>/<time>-<prompt words>-s<seed>.png`
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
from orchestrator.comfy.patch import TARGETS, PromptParams, patch_prompt
from orchestrator.comfy.workflow import Workflow, load_workflow, to_api_prompt
from orchestrator.errors import ConfigError
from orchestrator.layout import Layout, atomic_write_bytes, atomic_write_text
from orchestrator.progress import Event, Sink, format_duration

BASE_WORKFLOW = "base_flux.json"
LORA_WORKFLOW = "finetuned_flux.json"
SEED_MAX = 2**32 - 1


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


def choose_workflow(req: GenerateRequest, layout: Layout) -> tuple[Workflow, str]:
    """(workflow, how the sidecar names it): the given file, else ours from workflows/ or the shipped one."""
    if req.workflow is not None:
        candidates = [req.workflow, layout.workflows / req.workflow, layout.workflows / f"{req.workflow}.json"]
        path = next((p for p in candidates if p.is_file()), req.workflow)
        wf = load_workflow(path)
        return wf, str(wf.path or path)
    name = LORA_WORKFLOW if req.lora else BASE_WORKFLOW
    path = layout.workflows / name
    if path.exists():
        return load_workflow(path), str(path)
    from orchestrator.comfy.builtin import builtin_workflows

    return load_workflow(builtin_workflows()[name]), f"builtin:{name}"


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


def effective_values(prompt: Mapping[str, Any]) -> dict[str, Any]:
    """The values the prompt will run with (seed, steps, size, ...), where one node decides each."""
    values: dict[str, Any] = {}
    for param, pairs in TARGETS.items():
        found = [node["inputs"][inp] for node in prompt.values() for cls, inp in pairs
                 if node.get("class_type") == cls and inp in (node.get("inputs") or {})
                 and not isinstance(node["inputs"][inp], list)]
        if len(set(map(repr, found))) == 1:
            values[param] = found[0]
    return values


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


def generate(req: GenerateRequest, layout: Layout, client: Client, reporter: Sink, *,
             rng: random.Random | None = None, now: datetime | None = None,
             timeout: float | None = None) -> list[GeneratedImage]:
    """Make req.count images (one prompt each); returns them as saved. Ctrl+C cancels the running prompt."""
    if req.count < 1:
        raise ConfigError(f"--count must be at least 1 (got {req.count})")
    rng = rng or random.Random()
    stamp = now or datetime.now()
    wf, wf_label = choose_workflow(req, layout)
    from orchestrator.comfy.schema import schemas_from_object_info

    from orchestrator.comfy.uivalues import reflect_in_ui

    schema = schemas_from_object_info(client.object_info(), source=client.url)
    base = to_api_prompt(wf, schema)
    folder = req.out_dir if req.out_dir is not None else layout.outputs / stamp.strftime("%Y-%m-%d")
    ui = wf.data if wf.kind == "ui" else None
    taken: set[Path] = set()
    made: list[GeneratedImage] = []
    reporter.emit(Event("generate", "start", step=0, total=req.count, unit="image"))   # no line: the CLI prints paths
    for i in range(req.count):
        seed = req.seed + i if req.seed is not None else rng.randint(1, SEED_MAX)
        params = PromptParams(text=req.prompt, seed=seed, lora_name=req.lora, strength_model=req.strength,
                              strength_clip=req.strength, width=req.width, height=req.height, steps=req.steps,
                              guidance=req.guidance, sampler=req.sampler, scheduler=req.scheduler, sets=req.sets)
        prompt = patch_prompt(base, params)
        if i == 0:
            client.check_models(prompt)
        values = effective_values(prompt)
        progress = _ImageEvents(reporter, i, req.count, prompt)
        progress.queued()
        started = time.monotonic()
        # the PNG's workflow shows this image's values when reopened in the browser
        shown = reflect_in_ui(ui, base, prompt, schema) if ui is not None else None
        prompt_id = client.submit(prompt, workflow=shown)
        try:
            result = client.wait(prompt_id, on_event=progress, timeout=timeout)
        except KeyboardInterrupt:
            client.cancel([prompt_id])
            raise
        fetch_started = time.monotonic()
        images = [img for img in result.images if img.type == "output"]
        if not images:
            raise ConfigError(f"the workflow {wf_label} saved no image",
                              hint="it needs a Save Image node connected to the decoded image")
        stem = f"{stamp.strftime('%H%M%S')}-{slugify(req.prompt)}-s{values.get('seed', seed)}"
        for k, image in enumerate(images):
            data = client.view(image)
            path = unique_path(folder, stem if len(images) == 1 else f"{stem}-{k + 1}", ".png", taken)
            atomic_write_bytes(path, data)
            sidecar = path.with_suffix(".json")
            timings = {f"{key}_s": round(value, 3) for key, value in result.timings.items()}
            timings["download_s"] = round(time.monotonic() - fetch_started, 3)
            timings["wall_s"] = round(time.monotonic() - started, 3)
            meta = {"file": path.name, "prompt": req.prompt, "seed": values.get("seed", seed),
                    "lora": values.get("lora_name"),
                    "strength": values.get("strength_model"),
                    "width": values.get("width"), "height": values.get("height"), "steps": values.get("steps"),
                    "guidance": values.get("guidance"), "sampler": values.get("sampler"),
                    "scheduler": values.get("scheduler"), "sets": [list(s) for s in req.sets],
                    "workflow": wf_label, "server": client.url, "prompt_id": result.prompt_id,
                    "server_file": {"filename": image.filename, "subfolder": image.subfolder, "type": image.type},
                    "cached": result.cached, "created": datetime.now().astimezone().isoformat(timespec="seconds"),
                    "timings": timings}
            atomic_write_text(sidecar, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            made.append(GeneratedImage(path, sidecar, meta["seed"], result.prompt_id, result.cached))
        took = format_duration(time.monotonic() - started)
        reporter.emit(Event("generate", "image", f"image {i + 1}/{req.count} done in {took}"
                            f"{' (cached)' if result.cached else ''}: {made[-1].path.name}", step=i + 1,
                            total=req.count, unit="image", files=tuple(str(m.path) for m in made[-len(images):])))
    reporter.emit(Event("generate", "end", step=req.count, total=req.count, unit="image",
                        files=tuple(str(m.path) for m in made)))
    return made
