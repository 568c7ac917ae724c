"""Names people type -> what ComfyUI and the disk know: one resolver for LoRAs, one for workflows.

    resolve_lora("flux_dreambooth", ["flux_dreambooth.safetensors"])    -> "flux_dreambooth.safetensors"
    resolve_workflow(None, layout, lora=True)                             -> project or shipped finetuned_flux

ComfyUI (0.8.0, `folder_paths.get_filename_list("loras")`) lists LoRAs as paths relative to each
loras folder, sub-folders included (`sub/x.safetensors`), filtered by extension, sorted; and it
accepts a LoraLoader `lora_name` only when it is *exactly* one of them (`value_not_in_list`
otherwise). So a name is matched here, in this order, against the server's list (LoraLoader's
`lora_name` options in /object_info): exactly; ignoring case and the extension; then by file stem
in any sub-folder. Several matches at the best step is an error naming them; none is an error
with the closest names ("did you mean").
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.comfy.problems import short_list
from orchestrator.comfy.workflow import Workflow, load_workflow
from orchestrator.errors import ConfigError
from orchestrator.layout import Layout

# folder_paths.supported_pt_extensions of ComfyUI 0.8.0
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
LORA_NODES = ("LoraLoader", "LoraLoaderModelOnly")
BASE_WORKFLOW = "base_flux.json"
LORA_WORKFLOW = "finetuned_flux.json"


def _key(name: str) -> str:
    """Case-folded, forward slashes, without a model extension."""
    text = name.strip().replace("\\", "/").casefold()
    for ext in MODEL_EXTENSIONS:
        if text.endswith(ext):
            return text[: -len(ext)]
    return text


def _stem_key(name: str) -> str:
    return _key(PurePosixPath(name.replace("\\", "/")).name)


def lora_options(schemas: Any) -> list[str] | None:
    """The LoRA names a server offers (its LoraLoader's lora_name combo); None when not known (offline)."""
    for cls in LORA_NODES:
        node = schemas.get(cls) if schemas is not None else None
        spec = node.input("lora_name") if node is not None else None
        if spec is not None and spec.options is not None:
            return [str(o) for o in spec.options]
    return None


def normalize_lora(name: str) -> str:
    """The name to send when the server's list is unknown: `.safetensors` added to a bare name."""
    name = name.strip()
    return name if name.lower().endswith(MODEL_EXTENSIONS) else f"{name}.safetensors"


def resolve_lora(name: str, available: Sequence[str] | None, *, where: str = "the server") -> str:
    """The exact entry of `available` that `name` means; ConfigError (did you mean ...) when none or several.

    `available` None (no server asked) gives normalize_lora(name).
    """
    if available is None:
        return normalize_lora(name)
    given = name.strip()
    if given in available:
        return given
    for matches in ([a for a in available if _key(a) == _key(given)],
                    [a for a in available if "/" not in given.replace("\\", "/") and _stem_key(a) == _key(given)]):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"LoRA {given!r} matches {len(matches)} files on {where}: {short_list(matches)}",
                              hint=f"give the sub-folder too, e.g. lora: {matches[0]}")
    close = difflib.get_close_matches(_key(given), [_key(a) for a in available], n=3, cutoff=0.6)
    by_key = {_key(a): a for a in available}
    suggestion = f"; did you mean {' or '.join(repr(by_key[c]) for c in close)}?" if close else ""
    raise ConfigError(f"LoRA {given!r} not found on {where}{suggestion}",
                      hint=f"available: {short_list(list(available))}. LoRAs are the files in the server's "
                           "models/loras (`train` puts them there); the extension and case may be left out")


# ---------------------------------------------------------------- workflows

@dataclass(frozen=True)
class ResolvedWorkflow:
    """A workflow found for a name: the loaded file and how sidecars name it."""

    workflow: Workflow
    label: str                 # the path, or builtin:<name> for a shipped one
    shipped: bool = False


def shipped_name(ref: str) -> str | None:
    """'base_flux', 'base_flux.json', 'workflows/finetuned_flux.json' -> the shipped file name, else None."""
    given = PurePosixPath(ref.replace("\\", "/"))
    if str(given.parent) not in (".", "workflows"):
        return None
    name = given.name if given.name.endswith(".json") else f"{given.name}.json"
    return name if name in (BASE_WORKFLOW, LORA_WORKFLOW) else None


def _shipped(name: str) -> ResolvedWorkflow:
    from orchestrator.comfy.builtin import builtin_workflows   # builds both graphs: only when needed

    return ResolvedWorkflow(load_workflow(builtin_workflows()[name]), f"builtin:{name}", shipped=True)


def default_workflow(lora: bool) -> str:
    """The shipped workflow name used when none is given: finetuned_flux.json with a LoRA, else base_flux.json."""
    return LORA_WORKFLOW if lora else BASE_WORKFLOW


def resolve_workflow(ref: str | Path | None, layout: Layout, *, lora: bool = False,
                     relative_to: Path | None = None) -> ResolvedWorkflow:
    """The workflow `ref` names; ConfigError listing what exists when nothing matches.

    None: workflows/finetuned_flux.json (with a LoRA) or base_flux.json of the project, else the shipped
    one. Otherwise, in order: an absolute path; a path relative to `relative_to` (the caller's base: the
    current folder for `generate`, the project for a job file), then to the project; a name in the
    project's workflows/ (with or without .json); a shipped name (base_flux, finetuned_flux).
    """
    if ref is None:
        name = default_workflow(lora)
        path = layout.workflows / name
        return ResolvedWorkflow(load_workflow(path), str(path)) if path.exists() else _shipped(name)
    text = str(ref)
    given = Path(text).expanduser()
    candidates = [given] if given.is_absolute() else [
        *(base / given for base in dict.fromkeys([relative_to or layout.root, layout.root])),
        layout.workflows / text, layout.workflows / f"{text}.json"]
    for path in candidates:
        if path.is_file() or (path.exists() and path == candidates[0]):
            wf = load_workflow(path)    # a folder given as the path: load_workflow says so
            return ResolvedWorkflow(wf, str(wf.path or path))
    name = shipped_name(text)
    if name is not None:
        return _shipped(name)
    ours = sorted(p.name for p in layout.workflows.glob("*.json")) if layout.workflows.is_dir() else []
    raise ConfigError(f"workflow file {text} does not exist",
                      hint=f"looked at {', '.join(str(c) for c in dict.fromkeys(candidates))}; workflows here: "
                           f"{short_list(sorted(set(ours) | {BASE_WORKFLOW, LORA_WORKFLOW}))} "
                           "(base_flux.json and finetuned_flux.json are shipped)")
