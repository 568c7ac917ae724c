"""One pipeline for images: a workflow and the knobs of one image -> the API prompt to queue.

    pipe = ImagePipeline(layout, schemas, where="ComfyUI at http://127.0.0.1:8188")
    base = pipe.base(None, lora=True)                                 # workflows/finetuned_flux.json
    prompt, ui = pipe.build(base, ImageSpec(prompt="a tjtoy toy", seed=7, lora="flux_dreambooth"))

`generate` and `batch` both go through here (`generate` is a batch of one): the same workflow
resolver, the same LoRA resolver (against the server's list), the same rules for strength and
strength_clip, the same patching, the same place for model patches. Steps:

    resolve workflow -> convert (once per workflow) -> per image: resolve LoRA -> patch knobs + --set
      -> insert model patches (MODEL_PATCH_POINT) -> reflect the values in the browser workflow

Model patches: nodes such as TorchCompileModel or EasyCache take a MODEL and give a MODEL; they go
between the model loader (+ LoRA) and everything that uses the model (ModelSamplingFlux, guider,
sampler, scheduler). `insert_model_patch` does that on an API prompt; `ImagePipeline(model_patches=...)`
applies a list of them to every image.
"""

from __future__ import annotations

import copy
import difflib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.comfy.knobs import KNOB_TARGETS, SIDECAR_KEYS
from orchestrator.comfy.problems import short_list
from orchestrator.comfy.patch import TARGETS, PromptParams, patch_prompt
from orchestrator.comfy.resolve import LORA_NODES, ResolvedWorkflow, lora_options, resolve_lora, resolve_workflow
from orchestrator.comfy.schema import NodeSchemas
from orchestrator.comfy.uivalues import reflect_in_ui
from orchestrator.comfy.workflow import to_api_prompt
from orchestrator.errors import ConfigError
from orchestrator.layout import Layout

# Classes that load a diffusion model or apply a LoRA to it: a model patch goes after the last of them.
MODEL_SOURCES = frozenset({"CheckpointLoaderSimple", "CheckpointLoader", "UNETLoader", "UnetLoaderGGUF",
                           *LORA_NODES})
MODEL_PATCH_POINT = "after the model loader and its LoRA loaders, before everything that uses the MODEL"


@dataclass(frozen=True)
class ImageSpec:
    """The knobs of one image; None keeps the workflow's value. `lora` as the user wrote it."""

    prompt: str | None = None
    seed: int | None = None
    lora: str | None = None
    strength: float | None = None
    strength_clip: float | None = None    # None: follows strength (LoraLoader only)
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    filename_prefix: str | None = None
    sets: tuple[tuple[str, str, Any], ...] = ()


@dataclass(frozen=True)
class ModelPatch:
    """A node put between the model loader (+LoRA) and its users: class_type, its other inputs, a title."""

    class_type: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    title: str | None = None


@dataclass(frozen=True)
class Base:
    """A resolved workflow converted to an API prompt (once), with its browser form when it has one."""

    ref: str | None
    resolved: ResolvedWorkflow
    prompt: dict[str, Any]
    ui: dict[str, Any] | None

    @property
    def label(self) -> str:
        return self.resolved.label

    @property
    def types(self) -> set[str]:
        return {n.get("class_type") for n in self.prompt.values()}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def _model_chain(prompt: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(node id, MODEL output slot) from a model source down the `model` links that lead to a source."""
    def source_of(nid: str, seen: set[str]) -> list[tuple[str, int]]:
        node = prompt.get(nid) or {}
        link = (node.get("inputs") or {}).get("model")
        if node.get("class_type") in MODEL_SOURCES and not _is_link(link):
            return [(nid, 0)]
        if not _is_link(link) or nid in seen or str(link[0]) not in prompt:
            return []
        up = source_of(str(link[0]), seen | {nid})
        if up:
            up[-1] = (up[-1][0], link[1])
            return up + [(nid, 0)]
        return []

    best: list[tuple[str, int]] = []
    for nid in prompt:
        chain = source_of(nid, set())
        if len(chain) > len(best):
            best = chain
    return best


def insert_model_patch(prompt: Mapping[str, Any], class_type: str, inputs: Mapping[str, Any] | None = None,
                       *, title: str | None = None) -> tuple[dict[str, Any], str]:
    """(a copy of `prompt` with a `class_type` node taking the model after its loader + LoRAs, its id).

    Every input that took the model from that point now takes it from the new node; patches inserted
    earlier stay upstream, so several calls stack in call order. ConfigError when there is no model loader.
    """
    out: dict[str, Any] = copy.deepcopy(dict(prompt))
    chain = _model_chain(out)
    point = None
    for nid, slot in chain:
        node = out[nid]
        if node.get("class_type") in MODEL_SOURCES or (node.get("_meta") or {}).get("model_patch"):
            point = (nid, slot)
    if point is None:
        raise ConfigError(f"cannot insert {class_type}: the workflow has no model loader "
                          f"({', '.join(sorted(MODEL_SOURCES))})")
    ids = [int(k) for k in out if k.isdigit()]
    new_id = str(max(ids, default=0) + 1)
    for node in out.values():
        for name, value in (node.get("inputs") or {}).items():
            if _is_link(value) and str(value[0]) == point[0] and value[1] == point[1]:
                node["inputs"][name] = [new_id, 0]
    out[new_id] = {"inputs": {**dict(inputs or {}), "model": [point[0], point[1]]}, "class_type": class_type,
                   "_meta": {"title": title or class_type, "model_patch": True}}
    return out, new_id


def lora_loads(prompt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(node id, lora_name) of every LoRA loader that applies its LoRA (ComfyUI skips strength 0 on both)."""
    found = []
    for nid, node in prompt.items():
        if node.get("class_type") not in LORA_NODES:
            continue
        inputs = node.get("inputs") or {}
        strengths = [inputs.get(k) for k in ("strength_model", "strength_clip") if k in inputs]
        if isinstance(inputs.get("lora_name"), str) and any(s != 0 for s in strengths):
            found.append((nid, inputs["lora_name"]))
    return found


def effective_values(prompt: Mapping[str, Any]) -> dict[str, Any]:
    """The values the prompt will run with, by sidecar key (seed, lora, steps, width, ...), where one node decides."""
    values: dict[str, Any] = {}
    for param, key in SIDECAR_KEYS.items():
        found = [node["inputs"][inp] for node in prompt.values() for cls, inp in TARGETS[param]
                 if node.get("class_type") == cls and inp in (node.get("inputs") or {})
                 and not isinstance(node["inputs"][inp], list)]
        if len(set(map(repr, found))) == 1:
            values[key] = found[0]
    return values


class ImagePipeline:
    """Workflows converted once, patched per image (see the module docstring)."""

    def __init__(self, layout: Layout, schemas: NodeSchemas, *, where: str = "the server",
                 relative_to: Any = None, seeded: bool = False,
                 model_patches: Sequence[ModelPatch] = ()) -> None:
        self.layout, self.schemas, self.where = layout, schemas, where
        self.relative_to = relative_to
        self.seeded = seeded       # `{a|b}` choices of the workflow's other texts: the same every run (batch)
        self.model_patches = tuple(model_patches)
        self.loras = lora_options(schemas)          # None: not known (offline): names are sent as given
        self._bases: dict[tuple[str | None, bool], Base] = {}
        self._resolved: dict[str, str] = {}

    def base(self, ref: str | None, *, lora: bool) -> Base:
        """The workflow `ref` names (None: ours for with / without a LoRA), converted; cached."""
        key = (ref, lora if ref is None else False)
        if key not in self._bases:
            resolved = resolve_workflow(ref, self.layout, lora=lora, relative_to=self.relative_to)
            wf = resolved.workflow
            rng = random.Random(0) if self.seeded else None
            prompt = to_api_prompt(wf, self.schemas if wf.kind == "ui" else None, rng=rng)
            self._bases[key] = Base(ref, resolved, prompt, wf.data if wf.kind == "ui" else None)
        return self._bases[key]

    def lora_name(self, name: str) -> str:
        """The server's exact name for LoRA `name` (cached)."""
        if name not in self._resolved:
            self._resolved[name] = resolve_lora(name, self.loras, where=self.where)
        return self._resolved[name]

    def params(self, base: Base, spec: ImageSpec) -> PromptParams:
        """The patch of one image: LoRA resolved, strength_clip following strength where a LoraLoader takes it."""
        types = base.types
        has_lora = bool(types & set(LORA_NODES))
        if spec.lora is not None and not has_lora:
            raise ConfigError(f"LoRA {spec.lora} given but {base.label} has no LoraLoader",
                              hint="use workflows/finetuned_flux.json (the default with a LoRA), or lora none")
        lora = self.lora_name(spec.lora) if spec.lora is not None else None
        for knob, value in (("sampler", spec.sampler), ("scheduler", spec.scheduler)):
            if value is not None:
                self._check_choice(knob, value, types)
        strength_clip = spec.strength_clip
        if strength_clip is None and "LoraLoader" in types:
            strength_clip = spec.strength
        return PromptParams(text=spec.prompt, seed=spec.seed, lora_name=lora,
                            strength_model=spec.strength if has_lora else None, strength_clip=strength_clip,
                            width=spec.width, height=spec.height, steps=spec.steps, guidance=spec.guidance,
                            sampler=spec.sampler, scheduler=spec.scheduler,
                            filename_prefix=spec.filename_prefix if "SaveImage" in types else None, sets=spec.sets)

    def _check_choice(self, knob: str, value: str, types: set[str]) -> None:
        """ConfigError when a sampler / scheduler is not one the node taking it offers (as the server would say)."""
        for cls, input_name in KNOB_TARGETS[knob]:
            node = self.schemas.get(cls) if cls in types else None
            spec = node.input(input_name) if node is not None else None
            if spec is None or not spec.options:
                continue
            options = [str(o) for o in spec.options]
            if value not in options:
                close = difflib.get_close_matches(value, options, n=3)
                hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
                raise ConfigError(f"{value!r} is not a {knob} of {cls} on {self.where}",
                                  hint=f"{hint}available: {short_list(options, 12)}")
            return

    def build(self, base: Base, spec: ImageSpec, *, with_ui: bool = True) -> tuple[dict[str, Any], dict | None]:
        """(API prompt, browser workflow showing this image's values or None); ConfigError for a bad setting."""
        prompt = patch_prompt(base.prompt, self.params(base, spec))
        for patch in self.model_patches:
            prompt, _ = insert_model_patch(prompt, patch.class_type, patch.inputs, title=patch.title)
        ui = None
        if base.ui is not None and with_ui:   # the PNG's workflow reopens in the browser with these values
            ui = reflect_in_ui(base.ui, base.prompt, prompt, self.schemas)
        return prompt, ui
