"""Workflows: load a UI-format (what the browser saves) or API-format file, and turn it into an API prompt.

    wf = load_workflow("workflows/base_flux.json")            # kind "ui" or "api", auto-detected
    prompt = to_api_prompt(wf, load_builtin_schema())          # what the browser would queue

The same file is opened in the browser and run from scripts. PNGs written by ComfyUI's SaveImage
carry the workflow; they can be loaded too.
"""

from __future__ import annotations

import copy
import json
import os
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.comfy.patch import PromptParams, parse_set, patch_prompt, required_models
from orchestrator.comfy.schema import NodeSchemas, load_builtin_schema, schemas_from_object_info
from orchestrator.comfy.uigraph import convert_ui
from orchestrator.comfy.validate import validate_prompt
from orchestrator.errors import ConfigError

# The whole workflow API is importable from here (see contracts): load, convert, patch, validate.
__all__ = ["Workflow", "load_workflow", "to_api_prompt", "detect_kind", "load_builtin_schema",
           "schemas_from_object_info", "NodeSchemas", "PromptParams", "patch_prompt", "parse_set",
           "required_models", "validate_prompt"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORMATS_HINT = ("a workflow is either the browser's UI format (an object with \"nodes\" and \"links\"; "
                "Workflow > Save in ComfyUI) or an API prompt ({\"<node id>\": {\"class_type\": ..., "
                "\"inputs\": {...}}}; Workflow > Export (API))")


@dataclass(frozen=True)
class Workflow:
    """A loaded workflow: `kind` is "ui" (browser format) or "api" (prompt format)."""

    kind: str
    data: dict[str, Any]
    path: Path | None = None

    @property
    def name(self) -> str:
        """The file name without extension, or "workflow"."""
        return self.path.stem if self.path is not None else "workflow"


def detect_kind(data: Any) -> str | None:
    """'ui', 'api' or None for anything else."""
    if not isinstance(data, Mapping):
        return None
    if isinstance(data.get("nodes"), list):
        return "ui"
    if data and all(isinstance(v, Mapping) and isinstance(v.get("class_type"), str) for v in data.values()):
        return "api"
    return None


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "workflow"


def _check_ui(data: Mapping[str, Any], where: str) -> None:
    """The shape the converter relies on, for the graph and every subgraph definition: a clear error
    naming the node and field instead of a crash deep in the conversion."""
    _check_graph(data, where)
    definitions = data.get("definitions")
    if definitions is not None and not isinstance(definitions, Mapping):
        raise ConfigError(f"{where}: \"definitions\" is not an object", hint=RESAVE)
    subgraphs = (definitions or {}).get("subgraphs")
    if subgraphs is not None and not isinstance(subgraphs, list):
        raise ConfigError(f"{where}: \"definitions.subgraphs\" is not a list", hint=RESAVE)
    for i, sub in enumerate(subgraphs or []):
        if not isinstance(sub, Mapping) or not isinstance(sub.get("nodes", []), list):
            raise ConfigError(f"{where}: subgraph #{i + 1} is not an object with \"nodes\"", hint=RESAVE)
        _check_graph(sub, f"{where}: subgraph {_short(sub.get('name') or sub.get('id') or i + 1)}")
    for key in ("extra", "groups"):
        if data.get(key) is not None and not isinstance(data.get(key), (Mapping, list)):
            raise ConfigError(f"{where}: \"{key}\" has the wrong type", hint=RESAVE)


RESAVE = "save the workflow again from the browser"


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_graph(data: Mapping[str, Any], where: str) -> None:
    nodes = data.get("nodes") or []
    if not isinstance(nodes, list):
        raise ConfigError(f"{where}: \"nodes\" is not a list", hint=RESAVE)
    for i, node in enumerate(nodes):
        if not isinstance(node, Mapping) or "id" not in node or not isinstance(node.get("type"), str):
            raise ConfigError(f"{where}: node #{i + 1} in \"nodes\" has no id or type", hint=RESAVE)
        node_id, kind = node["id"], node["type"]
        label = f"{where}: node {_short(node_id)} ({_short(kind)})"
        if not (_is_int(node_id) or isinstance(node_id, str)) or not kind.strip():
            raise ConfigError(f"{label}: \"id\" must be a number or text and \"type\" a node type name",
                              hint=RESAVE)
        if node.get("mode") is not None and not _is_int(node.get("mode")):
            raise ConfigError(f"{label}: \"mode\" must be a number (0 = on, 2 = muted, 4 = bypassed)",
                              hint=RESAVE)
        for key, what in (("properties", Mapping), ("title", str), ("widgets_values", (list, Mapping))):
            if node.get(key) is not None and not isinstance(node.get(key), what):
                raise ConfigError(f"{label}: \"{key}\" has the wrong type", hint=RESAVE)
        for key in ("inputs", "outputs"):
            slots = node.get(key)
            if slots is None:
                continue
            if not isinstance(slots, list):
                raise ConfigError(f"{label}: \"{key}\" is not a list", hint=RESAVE)
            for n, slot in enumerate(slots):
                if not isinstance(slot, Mapping):
                    raise ConfigError(f"{label}: {key}[{n}] is not an object", hint=RESAVE)
                bad = (key == "inputs" and (slot.get("link") is not None and not _is_int(slot.get("link"))
                                            or slot.get("widget") is not None
                                            and not isinstance(slot.get("widget"), Mapping))) or \
                      (key == "outputs" and slot.get("links") is not None and not (
                          isinstance(slot.get("links"), list) and all(_is_int(x) for x in slot["links"]))) or \
                      (slot.get("name") is not None and not isinstance(slot.get("name"), str))
                if bad:
                    raise ConfigError(f"{label}: {key}[{n}] has a field of the wrong type (name, link, links or "
                                      "widget)", hint=RESAVE)
    if data.get("links") is not None and not isinstance(data.get("links"), list):
        raise ConfigError(f"{where}: \"links\" is not a list", hint=RESAVE)
    if data.get("outputs") is not None and not (isinstance(data.get("outputs"), list)
                                                and all(isinstance(o, Mapping) for o in data["outputs"])):
        raise ConfigError(f"{where}: \"outputs\" is not a list of objects", hint=RESAVE)


def _check_api(data: Mapping[str, Any], where: str) -> None:
    for node_id, node in data.items():
        if not isinstance(node.get("inputs", {}), Mapping):
            raise ConfigError(f"{where}: node {node_id} ({node['class_type']}): \"inputs\" is not an object")


def _from_obj(obj: Any, path: Path | None, *, fresh: bool = False) -> Workflow:
    where = _where(path)
    # Wrappers people commonly have: a /prompt body, or {"workflow": ..., "output": ...}.
    if isinstance(obj, Mapping) and detect_kind(obj) is None:
        for key in ("prompt", "workflow"):
            if detect_kind(obj.get(key)) is not None:
                obj = obj[key]
                break
    kind = detect_kind(obj)
    if kind is None:
        what = type(obj).__name__ if not isinstance(obj, Mapping) else "an object without \"nodes\" or node entries"
        raise ConfigError(f"{where} is not a ComfyUI workflow (found {what})", hint=FORMATS_HINT)
    data = dict(obj) if fresh else copy.deepcopy(dict(obj))   # never share the caller's objects
    (_check_ui if kind == "ui" else _check_api)(data, where)
    return Workflow(kind=kind, data=data, path=path)


def _json_error(path: Path, text: str, err: json.JSONDecodeError) -> ConfigError:
    lines = text.splitlines()
    details = []
    if 0 < err.lineno <= len(lines):
        line = lines[err.lineno - 1]
        start = max(0, err.colno - 60)
        details = [line[start:start + 120], " " * (err.colno - 1 - start) + "^"]
    return ConfigError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
                       hint="fix the file, or save the workflow again from the browser", details=details)


def png_text_chunks(data: bytes) -> dict[str, str]:
    """The tEXt/iTXt/zTXt chunks of a PNG (ComfyUI stores "prompt" and "workflow" there)."""
    chunks: dict[str, str] = {}
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        try:
            if ctype == b"tEXt":
                key, _, value = body.partition(b"\0")
                chunks[key.decode("latin-1")] = value.decode("latin-1")
            elif ctype == b"zTXt":
                key, _, rest = body.partition(b"\0")
                chunks[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif ctype == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _tkey, _, text = rest.partition(b"\0")
                chunks[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue
        if ctype == b"IEND":
            break
    return chunks


def _from_png(raw: bytes, path: Path) -> Workflow:
    chunks = png_text_chunks(raw)
    for key in ("workflow", "prompt"):
        if key in chunks:
            try:
                return _from_obj(json.loads(chunks[key]), path, fresh=True)
            except json.JSONDecodeError:
                continue
    raise ConfigError(f"{path}: this PNG carries no ComfyUI workflow",
                      hint="only images saved by ComfyUI's Save Image node carry their workflow")


def load_workflow(source: str | os.PathLike[str] | Mapping[str, Any]) -> Workflow:
    """Load a workflow file (JSON, or a ComfyUI PNG) or object; ConfigError when it is not one."""
    if isinstance(source, Mapping):
        return _from_obj(source, None)
    path = Path(source)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"workflow file {path} does not exist",
                          hint="the built-in ones are workflows/base_flux.json and workflows/finetuned_flux.json"
                          ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a workflow file") from None
    except OSError as e:
        raise ConfigError(f"cannot read workflow file {path}: {e.strerror or e}") from None
    if raw.startswith(PNG_MAGIC):
        return _from_png(raw, path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8), so not a workflow", hint=FORMATS_HINT) from None
    if not text.strip():
        raise ConfigError(f"{path} is empty", hint=FORMATS_HINT)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _json_error(path, text, e) from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    return _from_obj(obj, path, fresh=True)


def to_api_prompt(wf: Workflow, schema: NodeSchemas | None = None, *, rng: random.Random | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """The API prompt the browser would queue for `wf` (a copy for API-format workflows).

    `rng` picks `{a|b}` choices in dynamic prompts and `now` fills `%date:...%`; both default to
    fresh randomness and the current local time, like the browser.
    """
    if wf.kind == "api":
        return copy.deepcopy(wf.data)
    return convert_ui(wf.data, schema if schema is not None else load_builtin_schema(), rng=rng, now=now)
