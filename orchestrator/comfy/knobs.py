"""The image knobs, declared once: prompt, seed, LoRA, strengths, size, steps, guidance, sampler, ...

    KNOBS["steps"].parse("28")   -> 28            (a `generate --steps` text or a job-file value)
    KNOBS["size"].parse(100)     -> KnobError("100 is not a size WxH ...")

Each knob says what a valid value is (the same rule and the same words for `generate`, `batch` and
`--help`), which node inputs of a workflow take it (`applies`: patch parameter -> (class_type,
input) pairs; `orchestrator.comfy.patch` is built from these), under which keys it appears in a
sidecar, and how it is written in a file name (`name_value`). Pure code: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SEED_MAX = 2**64 - 1
SIZE_MIN, SIZE_MAX, SIZE_STEP = 64, 4096, 16
COUNT_MAX = 10000
NEEDS_LORA = "a strength needs a LoRA (lora NAME); without one there is nothing to weigh"
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")

SEED_TARGETS = (("RandomNoise", "noise_seed"), ("KSampler", "seed"), ("KSamplerAdvanced", "noise_seed"),
                ("SamplerCustom", "noise_seed"))
LORA_TARGETS = (("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name"))
STRENGTH_TARGETS = (("LoraLoader", "strength_model"), ("LoraLoaderModelOnly", "strength_model"))
STRENGTH_CLIP_TARGETS = (("LoraLoader", "strength_clip"),)
WIDTH_TARGETS = (("EmptyLatentImage", "width"), ("EmptySD3LatentImage", "width"))
HEIGHT_TARGETS = (("EmptyLatentImage", "height"), ("EmptySD3LatentImage", "height"))
STEPS_TARGETS = (("BasicScheduler", "steps"), ("KSampler", "steps"), ("KSamplerAdvanced", "steps"))
GUIDANCE_TARGETS = (("FluxGuidance", "guidance"), ("CLIPTextEncodeFlux", "guidance"))
SAMPLER_TARGETS = (("KSamplerSelect", "sampler_name"), ("KSampler", "sampler_name"),
                   ("KSamplerAdvanced", "sampler_name"))
SCHEDULER_TARGETS = (("BasicScheduler", "scheduler"), ("KSampler", "scheduler"), ("KSamplerAdvanced", "scheduler"))
TEXT_TARGETS = (("CLIPTextEncode", "text"), ("CLIPTextEncodeFlux", "clip_l"), ("CLIPTextEncodeFlux", "t5xxl"))


class KnobError(ValueError):
    """A value a knob does not take; `problem` is the sentence shown after the place it came from."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def shown(value: Any) -> str:
    """A value as the error shows it: numbers bare (whether typed or parsed from text), text quoted."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                number = kind(value.strip())
            except ValueError:
                continue
            return str(number)
        return repr(value)
    return repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)


def _number(value: Any, kind: type) -> int | float | None:
    """The int/float in a YAML value or a command-line text; None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind is int:
        return value if isinstance(value, int) else (int(value) if float(value).is_integer() else None)
    return float(value)


def _int_rule(noun: str, lo: int, hi: int, hi_text: str | None = None) -> Callable[[Any], int]:
    rule = f"{noun} from {lo} to {hi_text or hi}"

    def parse(value: Any) -> int:
        number = _number(value, int)
        if number is None or not lo <= number <= hi:
            raise KnobError(f"{shown(value)} is not {rule}")
        return int(number)

    parse.rule = rule  # type: ignore[attr-defined]
    return parse


def _float_rule(noun: str, lo: float, hi: float) -> Callable[[Any], float]:
    rule = f"{noun} from {lo:g} to {hi:g}"

    def parse(value: Any) -> float:
        number = _number(value, float)
        if number is None or not lo <= number <= hi:
            raise KnobError(f"{shown(value)} is not {rule}")
        return float(number)

    parse.rule = rule  # type: ignore[attr-defined]
    return parse


def has_control(text: str, allowed: str = "") -> bool:
    """Control characters (NUL, tabs, line breaks... except `allowed`): never part of a name or a path."""
    return any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in text)


def _text_rule(noun: str) -> Callable[[Any], str]:
    multiline = noun == "a non-empty prompt text"   # prompts may span lines; names may not

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value.strip() \
                or has_control(value, "\n\r\t" if multiline else ""):
            raise KnobError(f"{shown(value) if value is not None else 'nothing'} is not {noun}")
        return value

    parse.rule = noun  # type: ignore[attr-defined]
    return parse


def parse_size(value: Any) -> tuple[int, int]:
    """'1024x768' -> (1024, 768): both multiples of 16 from 64 to 4096 (FLUX works on 16-pixel patches)."""
    m = _SIZE.match(value) if isinstance(value, str) else None
    w, h = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or not all(SIZE_MIN <= v <= SIZE_MAX and v % SIZE_STEP == 0 for v in (w, h)):
        raise KnobError(f"{shown(value)} is not {parse_size.rule}")  # type: ignore[attr-defined]
    return w, h


parse_size.rule = (f"a size WxH with width and height multiples of {SIZE_STEP} from {SIZE_MIN} to "  # type: ignore[attr-defined]
                   f"{SIZE_MAX} (e.g. 1024x1024, 1152x896)")


def parse_lora(value: Any) -> str | None:
    """A LoRA name as given (resolved against the server later), or None for `none`."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if not isinstance(value, str) or not value.strip() or has_control(value):
        raise KnobError(f"{shown(value)} is not {parse_lora.rule}")  # type: ignore[attr-defined]
    return value.strip()


parse_lora.rule = "a LoRA name (a file in models/loras, `.safetensors` optional) or none"  # type: ignore[attr-defined]


def parse_seed(value: Any) -> int:
    """A seed: a whole number from 0 to 2^64-1."""
    return _seed(value)


_seed = _int_rule("a seed (a whole number", 0, SEED_MAX, "2^64-1)")


@dataclass(frozen=True)
class Knob:
    """One setting of an image: its rule, where a workflow takes it, and its sidecar / file-name form."""

    name: str                              # job-file key, `generate --NAME`, sidecar key
    parse: Callable[[Any], Any]            # CLI text or YAML value -> value; KnobError otherwise
    help: str
    metavar: str = "VALUE"
    plural: str | None = None              # job-file key of a list to sweep (a grid axis)
    applies: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()   # patch parameter -> node inputs
    sidecar: tuple[str, ...] = ()          # keys in the image's JSON sidecar

    @property
    def rule(self) -> str:
        """What a valid value is, in words."""
        return getattr(self.parse, "rule", "")

    @property
    def targets(self) -> tuple[tuple[str, str], ...]:
        """Every (class_type, input) this knob may set."""
        return tuple(pair for _, pairs in self.applies for pair in pairs)


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("prompt", _text_rule("a non-empty prompt text"), "the prompt text (the positive text encoder)",
         "TEXT", "prompts", (), ("prompt",)),
    Knob("seed", _seed, "seed of the noise; later images count up", "N", "seeds",
         (("seed", SEED_TARGETS),), ("seed",)),
    Knob("lora", parse_lora, "a LoRA in the server's models/loras: file name, with or without .safetensors, "
         "any case, sub-folders allowed; none for the base model", "NAME|none", "loras",
         (("lora_name", LORA_TARGETS),), ("lora",)),
    Knob("strength", _float_rule("a LoRA strength", -100.0, 100.0), "LoRA strength for the model (and for "
         "CLIP unless strength_clip is given); default 1.0", "S", "strengths",
         (("strength_model", STRENGTH_TARGETS),), ("strength",)),
    Knob("strength_clip", _float_rule("a LoRA strength", -100.0, 100.0), "LoRA strength for the text "
         "encoder (LoraLoader only); default: the same as strength", "S", None,
         (("strength_clip", STRENGTH_CLIP_TARGETS),), ("strength_clip",)),
    Knob("size", parse_size, f"image size WxH, multiples of {SIZE_STEP} from {SIZE_MIN} to {SIZE_MAX} "
         "(default 1024x1024); also sets ModelSamplingFlux", "WxH", "sizes",
         (("width", WIDTH_TARGETS), ("height", HEIGHT_TARGETS)), ("width", "height")),
    Knob("steps", _int_rule("a whole number of steps", 1, 10000), "sampling steps (workflow default: 28)", "N",
         None, (("steps", STEPS_TARGETS),), ("steps",)),
    Knob("guidance", _float_rule("a FLUX guidance", 0.0, 100.0), "FLUX guidance (default 3.5)", "G", None,
         (("guidance", GUIDANCE_TARGETS),), ("guidance",)),
    Knob("sampler", _text_rule("a sampler name"), "sampler name (default dpmpp_2m)", "NAME", None,
         (("sampler", SAMPLER_TARGETS),), ("sampler",)),
    Knob("scheduler", _text_rule("a scheduler name"), "scheduler name (default sgm_uniform)", "NAME", None,
         (("scheduler", SCHEDULER_TARGETS),), ("scheduler",)),
    Knob("count", _int_rule("a count (a whole number", 1, COUNT_MAX, f"{COUNT_MAX})"),
         "how many images, seeds counting up from seed (default 1)", "N"),
)}

# Where knobs land in a workflow, by patch parameter (what orchestrator.comfy.patch looks up).
KNOB_TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    param: pairs for knob in KNOBS.values() for param, pairs in knob.applies}
# patch parameter -> sidecar key (the knob's own name where it has one parameter)
SIDECAR_KEYS: dict[str, str] = {"seed": "seed", "lora_name": "lora", "strength_model": "strength",
                                "strength_clip": "strength_clip", "width": "width", "height": "height",
                                "steps": "steps", "guidance": "guidance", "sampler": "sampler",
                                "scheduler": "scheduler"}


def sidecar_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of an image as its JSON sidecar shows them (generate and batch alike): every knob's sidecar
    keys in declaration order; strength_clip only when it differs from strength."""
    out: dict[str, Any] = {}
    for knob in KNOBS.values():
        for key in knob.sidecar:
            if key == "strength_clip" and values.get(key) in (None, values.get("strength")):
                continue
            out[key] = values.get(key)
    return out


def fmt_float(value: float) -> str:
    """A number in a file name: 0.8 -> '0.8', 1 -> '1.0'."""
    return f"{float(value):g}" if float(value) != int(value) else f"{float(value):.1f}"


def lora_label(lora: str | None) -> str:
    """A LoRA in a file name: 'sub/flux_dreambooth.safetensors' -> 'flux_dreambooth', None -> 'none'."""
    if lora is None:
        return "none"
    stem = lora.replace("\\", "/").rsplit("/", 1)[-1]
    return stem[: -len(".safetensors")] if stem.lower().endswith(".safetensors") else stem


def name_values(*, prompt: str, slug: str, seed: int, lora: str | None, strength: float, width: int, height: int,
                steps: int | None, guidance: float | None) -> dict[str, Any]:
    """The knobs' fields for a file-name template (`{slug}-{lora}-{strength}-{size}-{seed}`)."""
    return {"prompt": prompt, "slug": slug, "lora": lora_label(lora), "strength": fmt_float(strength),
            "seed": seed, "size": f"{width}x{height}", "width": width, "height": height,
            "steps": steps if steps is not None else "",
            "guidance": fmt_float(guidance) if guidance is not None else ""}


NAME_FIELDS = ("prompt", "slug", "lora", "strength", "seed", "size", "width", "height", "steps", "guidance")


def describe() -> list[str]:
    """One line per knob for --help texts: name (list key), rule."""
    lines = []
    for k in KNOBS.values():
        key = f"{k.name}" + (f" / {k.plural}: [..]" if k.plural else "")
        lines.append(f"{key:<26} {k.rule}")
    return lines
