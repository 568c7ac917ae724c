"""ComfyUI's error payloads turned into our errors with one readable line per problem (pure code).

    rejected_error(url, body_of_400, prompt)       -> ComfyRejected  (node id, type, input, reason)
    failed_error(url, ExecutionError)              -> ComfyFailed    (node, type, exception message)
    interrupted_error(url, ExecutionInterrupted)   -> ComfyInterrupted
    missing_models_error(url, {folder: [(name, available)]}) -> ComfyRejected ("LoRA 'x' not found; ...")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.comfy.events import ExecutionError, ExecutionInterrupted
from orchestrator.errors import ComfyFailed, ComfyInterrupted, ComfyRejected

FOLDER_LABELS = {"checkpoints": "checkpoint", "text_encoders": "text encoder", "vae": "VAE", "loras": "LoRA",
                 "diffusion_models": "diffusion model", "clip": "text encoder", "unet": "diffusion model"}
LOGS_HINT = "see the server's log: `python -m orchestrator comfyui logs`"


def _node_label(prompt: Mapping[str, Any] | None, node_id: str, class_type: str | None) -> str:
    node = (prompt or {}).get(node_id)
    title = ((node or {}).get("_meta") or {}).get("title") if isinstance(node, Mapping) else None
    ctype = class_type or ((node or {}).get("class_type") if isinstance(node, Mapping) else None) or "?"
    return f"node {node_id} ({ctype}{', ' + repr(title) if title and title != ctype else ''})"


def short_list(names: Sequence[Any], limit: int = 8) -> str:
    """'a, b, c' or 'a, b, ... (12 more)'; '(none)' when empty."""
    if not names:
        return "(none)"
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _reason(err: Mapping[str, Any]) -> tuple[str | None, str]:
    """(input name, reason) of one node error."""
    kind = err.get("type")
    extra = err.get("extra_info") or {}
    name = extra.get("input_name")
    details = str(err.get("details") or "")
    if kind == "value_not_in_list":
        config = extra.get("input_config")
        options = config[0] if isinstance(config, list) and config and isinstance(config[0], list) else None
        shown = f"available: {short_list(options)}" if options is not None else details.partition(" not in ")[2]
        return name, f"{extra.get('received_value', '?')!r} is not on the server; {shown}"
    if kind == "required_input_missing":
        return name or details, "required input is missing (not connected)"
    if kind == "return_type_mismatch":
        return name, (f"linked to node {(extra.get('linked_node') or ['?'])[0]} which gives "
                      f"{extra.get('received_type', '?')}, but the input takes "
                      f"{(extra.get('input_config') or ['?'])[0]}")
    if kind in ("value_smaller_than_min", "value_bigger_than_max"):
        return name, f"{err.get('message')}"
    if kind == "invalid_input_type":
        return name, f"{extra.get('received_value')!r}: {err.get('message')} ({extra.get('exception_message', '')})"
    if kind == "exception_during_validation":
        return name, f"broken link or node: {extra.get('exception_type', 'error')} {details}"
    if kind == "custom_validation_failed":
        return name, details.partition(" - ")[2] or details
    return name, f"{err.get('message', kind)}{': ' + details if details else ''}"


def node_error_lines(node_errors: Mapping[str, Any], prompt: Mapping[str, Any] | None = None) -> list[str]:
    """One line per node error: `node 12 (LoraLoader) lora_name: 'x.safetensors' is not on the server; ...`."""
    lines = []
    for node_id, entry in node_errors.items():
        if not isinstance(entry, Mapping):
            continue
        label = _node_label(prompt, str(node_id), entry.get("class_type"))
        for err in entry.get("errors") or ():
            name, reason = _reason(err)
            lines.append(f"{label}{' ' + name if name else ''}: {reason}")
    return lines


MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


def _is_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)


def rejected_error(url: str, body: Any, prompt: Mapping[str, Any] | None = None) -> ComfyRejected:
    """A 400 answer to POST /prompt as ComfyRejected with one detail line per problem."""
    body = body if isinstance(body, Mapping) else {}
    err = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), Mapping) else {}
    kind = err.get("type")
    lines = node_error_lines(node_errors, prompt)
    if kind == "prompt_no_outputs":
        return ComfyRejected(f"ComfyUI at {url} rejected the prompt: it has no output node",
                             hint="add a Save Image node to the workflow")
    if kind == "invalid_prompt":
        return ComfyRejected(f"ComfyUI at {url} rejected the prompt: {err.get('message')}",
                             hint="the server lacks this node type (a custom node not installed?) or the "
                                  "workflow is damaged", details=[str(err.get("details") or "")])
    if not lines:
        return ComfyRejected(f"ComfyUI at {url} rejected the prompt: {err.get('message') or 'invalid prompt'}",
                             details=[str(err.get("details"))] if err.get("details") else [])
    hint = "fix these inputs in the workflow (open it in the browser) or with --set NODE.INPUT=VALUE"
    not_in_list = [e for v in node_errors.values() if isinstance(v, Mapping)
                   for e in v.get("errors") or () if e.get("type") == "value_not_in_list"]
    if any(_is_model_file((e.get("extra_info") or {}).get("received_value")) for e in not_in_list):
        hint = ("model files must be in the server's models/ folders (see `python -m orchestrator download`); "
                "or pick one of the available names")
    elif not_in_list:
        hint = "pick one of the available names (in the workflow, or with --set NODE.INPUT=VALUE)"
    n = len(lines)
    return ComfyRejected(f"ComfyUI at {url} rejected the prompt: {n} problem{'s' if n != 1 else ''} "
                         f"in {len(node_errors)} node{'s' if len(node_errors) != 1 else ''}",
                         hint=hint, details=lines)


def failed_error(url: str, ev: ExecutionError, prompt: Mapping[str, Any] | None = None) -> ComfyFailed:
    """execution_error as ComfyFailed: the node, its type and the exception message."""
    label = _node_label(prompt, ev.node_id or "?", ev.node_type)
    message = ev.exception_message.strip().splitlines()[0] if ev.exception_message.strip() else "no message"
    details = [f"{ev.exception_type}: {ev.exception_message.strip()}" if ev.exception_type else message]
    for name, values in ev.current_inputs.items():
        value = values[0] if isinstance(values, list) and len(values) == 1 else values
        details.append(f"input {name} = {value}")
    if ev.traceback:
        details.append("at " + ev.traceback[-1].strip().splitlines()[0])
    hint = LOGS_HINT
    if "Loader" in (ev.node_type or "") or "safetensors" in ev.exception_type.lower():
        hint = ("the model file looks damaged or incomplete: check it with `python -m orchestrator download` "
                "(it re-downloads bad files); " + LOGS_HINT)
    elif "out of memory" in ev.exception_message.lower():
        hint = "the GPU ran out of memory: try a smaller --size or fewer images at once"
    return ComfyFailed(f"ComfyUI failed at {label}: {message}", hint=hint, details=details)


def interrupted_error(url: str, prompt_id: str, ev: ExecutionInterrupted | None,
                      prompt: Mapping[str, Any] | None = None) -> ComfyInterrupted:
    """execution_interrupted as ComfyInterrupted."""
    where = f" at {_node_label(prompt, ev.node_id, ev.node_type)}" if ev and ev.node_id else ""
    return ComfyInterrupted(f"prompt {prompt_id} was interrupted{where} on ComfyUI at {url}",
                            hint="somebody pressed Cancel in the browser or called /interrupt; run it again")


def missing_models_error(url: str, missing: Sequence[tuple[str, str, Sequence[str]]]) -> ComfyRejected:
    """[(folder, name, available)] -> "LoRA 'x' not found; available: a, b" (one line each)."""
    lines = [f"{FOLDER_LABELS.get(folder, folder)} '{name}' not found; available: {short_list(list(avail))}"
             for folder, name, avail in missing]
    folders = sorted({folder for folder, _, _ in missing})
    hint = (f"put the file in the models/{'|'.join(folders)} folder the server uses "
            "(`python -m orchestrator download` fetches the base models; trained LoRAs land in models/loras), "
            "or pick one of the available names")
    if len(lines) == 1:
        return ComfyRejected(f"{lines[0]} (ComfyUI at {url})", hint=hint)
    return ComfyRejected(f"ComfyUI at {url} lacks {len(lines)} model files this prompt needs", hint=hint,
                         details=lines)
