"""Patching an API prompt: prompt text, seed, LoRA, size, steps, ... found by node type; `--set` for the rest.

    prompt = patch_prompt(prompt, PromptParams(text="a tjtoy toy on a desk", seed=42, steps=28))

Each parameter is looked up by node type (e.g. steps: BasicScheduler or KSampler). A graph with
no candidate, or with several (two LoRA loaders), is a ConfigError that names the candidates and
the `--set NODE.INPUT=VALUE` to use instead. The prompt text goes to the text encoder that feeds
the guider's / sampler's *positive* input, never to a negative prompt.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from orchestrator.comfy.knobs import KNOB_TARGETS, TEXT_TARGETS
from orchestrator.comfy.validate import validate_prompt
from orchestrator.errors import ConfigError

__all__ = ["PromptParams", "PromptTemplate", "patch_prompt", "parse_set", "required_models", "positive_text_nodes",
           "MODEL_INPUTS", "validate_prompt"]


@dataclass(frozen=True)
class PromptParams:
    """What to change in a prompt; None leaves the workflow's value. `sets`: (node id or title, input, value)."""

    text: str | None = None
    seed: int | None = None
    lora_name: str | None = None
    strength_model: float | None = None
    strength_clip: float | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    denoise: float | None = None
    filename_prefix: str | None = None
    batch_size: int | None = None
    sets: tuple[tuple[str, str, Any], ...] = ()


# parameter -> the (class_type, input) pairs that can take it: the knobs' own (orchestrator.comfy.knobs),
# plus three that only --set / scripts use
TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    **KNOB_TARGETS,
    "denoise": (("BasicScheduler", "denoise"), ("KSampler", "denoise")),
    "filename_prefix": (("SaveImage", "filename_prefix"),),
    "batch_size": (("EmptyLatentImage", "batch_size"), ("EmptySD3LatentImage", "batch_size")),
}
# Set together with the latent size when present: FLUX's shift depends on the image size.
COMPANIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "width": (("ModelSamplingFlux", "width"),),
    "height": (("ModelSamplingFlux", "height"),),
}
INTEGER_PARAMS = frozenset({"seed", "width", "height", "steps", "batch_size"})
FLOAT_PARAMS = frozenset({"strength_model", "strength_clip", "guidance", "denoise"})

# Where the positive conditioning enters a sampler, and the text encoders' text inputs.
POSITIVE_INPUTS: dict[str, str] = {"BasicGuider": "conditioning", "CFGGuider": "positive",
                                   "DualCFGGuider": "cond1", "KSampler": "positive",
                                   "KSamplerAdvanced": "positive", "SamplerCustom": "positive"}
TEXT_ENCODERS: dict[str, tuple[str, ...]] = {cls: tuple(i for c, i in TEXT_TARGETS if c == cls)
                                             for cls, _ in TEXT_TARGETS}
PRIMITIVE_TYPES = frozenset({"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                             "PrimitiveBoolean"})

# Model file inputs: (class_type, input) -> ComfyUI model folder.
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}
NOT_FILES = frozenset({"pixel_space"})   # VAELoader's built-in choice


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def _describe(prompt: Mapping[str, Any], node_id: str) -> str:
    node = prompt[node_id]
    title = (node.get("_meta") or {}).get("title")
    cls = node.get("class_type")
    return f"{node_id} ({cls}{f' {title!r}' if title and title != cls else ''})"


def _candidates(prompt: Mapping[str, Any], pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    by_type = dict(pairs)
    return [(nid, by_type[node.get("class_type")]) for nid, node in prompt.items()
            if node.get("class_type") in by_type]


def positive_text_nodes(prompt: Mapping[str, Any]) -> list[str]:
    """Ids of the text encoders feeding a sampler's positive input (all encoders if there is no sampler)."""
    starts = [node["inputs"][inp] for node in prompt.values()
              if (inp := POSITIVE_INPUTS.get(node.get("class_type"))) and _is_link(node.get("inputs", {}).get(inp))]
    if not starts and not any(n.get("class_type") in POSITIVE_INPUTS for n in prompt.values()):
        return [nid for nid, n in prompt.items() if n.get("class_type") in TEXT_ENCODERS]
    found: list[str] = []
    seen: set[str] = set()
    todo = [str(link[0]) for link in starts]
    while todo:
        nid = todo.pop(0)
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        node = prompt[nid]
        if node.get("class_type") in TEXT_ENCODERS:
            found.append(nid)
            continue
        todo.extend(str(v[0]) for v in (node.get("inputs") or {}).values() if _is_link(v))
    return found


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Strings from the command line take the type of the value they replace (JSON when it was a link)."""
    if isinstance(value, float) and not math.isfinite(value):  # e.g. `.nan` in a job file's set:
        raise ConfigError(f"{where}: {value!r} is not a finite number", hint=f"the workflow's value is {current!r}")
    if not isinstance(value, str) or isinstance(current, str):
        return value
    if current is None or _is_link(current):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return parsed if isinstance(parsed, (int, float, bool)) else value
    try:
        if isinstance(current, bool):
            if value.lower() in ("true", "1", "yes", "on"):
                return True
            if value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, (int, float)):     # JSON numbers: 1.0 may have been written as 1
            try:
                return int(value)
            except ValueError:
                number = float(value)
                if not math.isfinite(number):
                    raise ConfigError(f"{where}: {value!r} is not a finite number",
                                      hint=f"the workflow's value is {current!r}") from None
                return number
    except ValueError:
        kind = "true or false" if isinstance(current, bool) else "a number"
        raise ConfigError(f"{where}: {value!r} is not {kind}",
                          hint=f"the workflow's value is {current!r}") from None
    return value


_PARAM_NAMES = tuple(f.name for f in fields(PromptParams) if f.name not in ("text", "sets"))
TEXT = "the prompt text"

# A route says where one parameter goes: the (node, input, label) assignments in order, or the error
# that stops it at that point (e.g. the companion of `width` is ambiguous after `width` itself was set).
_Step = tuple[str, str, str] | ConfigError


class PromptTemplate:
    """An API prompt prepared for many patches (a batch): where each parameter goes is worked out once,
    from the graph's structure; `patch` copies the prompt, or with share=True only the nodes it changes
    (the others stay the template's own objects: read them, never write them)."""

    def __init__(self, prompt: Mapping[str, Any]) -> None:
        self.prompt: dict[str, Any] = dict(prompt)
        self._routes: dict[str, list[_Step]] = {}
        self._refs: dict[str, str | ConfigError] = {}

    def patch(self, params: PromptParams, *, share: bool = False) -> dict[str, Any]:
        """The patched prompt; ConfigError when a parameter has no or several candidate nodes."""
        work = _Work(self.prompt, share)
        if params.text is not None:
            self._put(work, TEXT, params.text)
        for name in _PARAM_NAMES:
            value = getattr(params, name)
            if value is not None:
                if name in INTEGER_PARAMS:
                    value = int(value)
                elif name in FLOAT_PARAMS:
                    value = float(value)
                self._put(work, name, value)
        for ref, input_name, value in params.sets:
            self._set(work, ref, input_name, value)
        return work.out

    def _put(self, work: "_Work", name: str, value: Any) -> None:
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = self._route(name)
        for step in route:
            if isinstance(step, ConfigError):
                raise ConfigError(step.message, hint=step.hint, details=step.details)
            node_id, input_name, where = step
            inputs = work.inputs(node_id)
            inputs[input_name] = _coerce(value, inputs.get(input_name), where)

    def _route(self, name: str) -> list[_Step]:
        prompt, steps = self.prompt, []
        try:
            if name == TEXT:
                found = [(nid, TEXT_ENCODERS[prompt[nid]["class_type"]][0]) for nid in positive_text_nodes(prompt)]
                pairs = [(cls, inputs[0]) for cls, inputs in TEXT_ENCODERS.items()]
                target = _one(prompt, found, TEXT, pairs)
                assert target is not None
                for input_name in TEXT_ENCODERS[prompt[target[0]]["class_type"]]:
                    steps.append(_follow(prompt, target[0], input_name, TEXT))
                return steps
            pairs = TARGETS[name]
            target = _one(prompt, _candidates(prompt, pairs), name, pairs)
            assert target is not None
            steps.append(_follow(prompt, target[0], target[1], name))
            for companion in COMPANIONS.get(name, ()):
                other = _one(prompt, _candidates(prompt, (companion,)), name, (companion,), optional=True)
                if other is not None:
                    steps.append(_follow(prompt, other[0], other[1], name))
        except ConfigError as e:
            steps.append(e)
        return steps

    def _set(self, work: "_Work", ref: str, input_name: str, value: Any) -> None:
        node_id = self._refs.get(ref)
        if node_id is None:
            try:
                node_id = find_node(self.prompt, ref)
            except ConfigError as e:
                node_id = e
            self._refs[ref] = node_id
        if isinstance(node_id, ConfigError):
            raise ConfigError(node_id.message, hint=node_id.hint, details=node_id.details)
        inputs = work.out[node_id].get("inputs") or {}
        if input_name not in inputs:
            raise ConfigError(f"--set {ref}.{input_name}: node {_describe(work.out, node_id)} has no input "
                              f"{input_name!r}", hint="its inputs: " + (", ".join(inputs) or "none"))
        inputs = work.inputs(node_id)
        inputs[input_name] = _coerce(value, inputs[input_name], f"--set {ref}.{input_name}")


class _Work:
    """The prompt being patched: a deep copy, or (share) the template's nodes, each copied on first write."""

    def __init__(self, base: dict[str, Any], share: bool) -> None:
        self.out: dict[str, Any] = dict(base) if share else copy.deepcopy(base)
        self._own: set[str] | None = set() if share else None

    def inputs(self, node_id: str) -> dict[str, Any]:
        """The writable inputs of a node."""
        own = self._own
        if own is not None and node_id not in own:
            node = dict(self.out[node_id])
            node["inputs"] = dict(node["inputs"]) if "inputs" in node else {}
            self.out[node_id] = node
            own.add(node_id)
            return node["inputs"]
        return self.out[node_id].setdefault("inputs", {})


def _follow(prompt: Mapping[str, Any], node_id: str, input_name: str, label: str) -> _Step:
    """Where setting `input_name` of `node_id` lands: a linked input is followed to a primitive node's value."""
    current = (prompt[node_id].get("inputs") or {}).get(input_name)
    if _is_link(current):
        origin = str(current[0])
        if origin in prompt and prompt[origin].get("class_type") in PRIMITIVE_TYPES:
            return _follow(prompt, origin, "value", label)
        return ConfigError(f"cannot set {label}: input {input_name} of node {_describe(prompt, node_id)} is wired to "
                           f"node {_describe(prompt, origin) if origin in prompt else origin}",
                           hint=f"set that node's value with --set {origin}.INPUT=VALUE")
    return (node_id, input_name, f"{label} (node {node_id} input {input_name})")


def _one(prompt: dict[str, Any], found: list[tuple[str, str]], label: str, pairs: Iterable[tuple[str, str]],
         *, optional: bool = False) -> tuple[str, str] | None:
    if len(found) == 1:
        return found[0]
    if not found:
        if optional:
            return None
        types = sorted({cls for cls, _ in pairs})
        raise ConfigError(f"cannot set {label}: the workflow has no {' or '.join(types)} node",
                          hint="use --set NODE.INPUT=VALUE with one of this workflow's nodes "
                               "(`workflow convert FILE` lists them)")
    raise ConfigError(f"cannot set {label}: several nodes could take it: "
                      + ", ".join(_describe(prompt, nid) for nid, _ in found),
                      hint=f"choose one with --set {found[0][0]}.{found[0][1]}=VALUE")


def find_node(prompt: Mapping[str, Any], ref: str) -> str:
    """A node id from an id, a title or a class name (unique); ConfigError listing the nodes otherwise."""
    ref = str(ref)
    if ref in prompt:
        return ref
    for key in ("title", "class_type"):
        hits = [nid for nid, n in prompt.items()
                if (n.get("_meta", {}).get("title") if key == "title" else n.get("class_type")) == ref]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConfigError(f"--set {ref}: several nodes are called {ref!r}: "
                              + ", ".join(_describe(prompt, h) for h in hits),
                              hint=f"use the node id, e.g. --set {hits[0]}.INPUT=VALUE")
    raise ConfigError(f"--set {ref}: the workflow has no node {ref!r}",
                      hint="use a node id, title or type from this list",
                      details=[_describe(prompt, nid) for nid in prompt])


def patch_prompt(prompt: Mapping[str, Any], params: PromptParams) -> dict[str, Any]:
    """A patched copy of `prompt`; ConfigError when a parameter has no or several candidate nodes."""
    return PromptTemplate(prompt).patch(params)


def parse_set(spec: str) -> tuple[str, str, Any]:
    """`NODE.INPUT=VALUE` -> (node, input, "VALUE"); the text takes the type of the input it replaces."""
    left, eq, raw = spec.partition("=")
    node, dot, input_name = left.rpartition(".")
    if not eq or not dot or not node or not input_name:
        raise ConfigError(f"--set {spec!r}: expected NODE.INPUT=VALUE",
                          hint="e.g. --set 11.steps=20 or --set \"Load LoRA.strength_model=0.8\"")
    return node.strip(), input_name.strip(), raw


def required_models(prompt: Mapping[str, Any]) -> dict[str, list[str]]:
    """Model files the prompt loads, by ComfyUI folder: checkpoints, text_encoders, vae, loras (+ others used)."""
    out: dict[str, list[str]] = {"checkpoints": [], "text_encoders": [], "vae": [], "loras": []}
    for node in prompt.values():
        for name, value in (node.get("inputs") or {}).items():
            folder = MODEL_INPUTS.get((node.get("class_type"), name))
            if folder and isinstance(value, str) and value not in NOT_FILES:
                names = out.setdefault(folder, [])
                if value not in names:
                    names.append(value)
    return out
