"""Validating an API prompt against node schemas, the way the server does before it queues it.

The server walks back from each output node and reports, per node and input: unknown node types,
missing required inputs, bad links, link type mismatches, values that are not numbers, out of
range, or not in a combo's list. `validate_prompt` reports the same, one readable line each:

    node 12 (LoraLoader) input lora_name: 'x.safetensors' not in list (available: a.safetensors)

Nodes that no output depends on are not checked (the server ignores them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.comfy.schema import InputSpec, NodeSchema, NodeSchemas
from orchestrator.comfy.uigraph import js_key_order, valid_connection

__all__ = ["validate_prompt"]

MAX_LISTED_OPTIONS = 8


def _label(node_id: str, node: Mapping[str, Any]) -> str:
    return f"node {node_id} ({node.get('class_type')})"


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _options_note(options: tuple[Any, ...]) -> str:
    if not options:
        return " (the list is empty)"
    if len(options) <= MAX_LISTED_OPTIONS:
        return " (available: " + ", ".join(str(o) for o in options) + ")"
    return f" ({len(options)} options)"


def _check_value(where: str, spec: InputSpec, value: Any) -> list[str]:
    if isinstance(value, Mapping) and "__value__" in value:
        return []
    if spec.type == "COMBO":
        if spec.options is not None and value not in spec.options:
            return [f"{where}: {_fmt(value)} not in list{_options_note(spec.options)}"]
        return []
    if spec.type in ("INT", "FLOAT"):
        try:
            number = int(value) if spec.type == "INT" else float(value)
        except (TypeError, ValueError, OverflowError):
            return [f"{where}: {_fmt(value)} is not {'an INT' if spec.type == 'INT' else 'a FLOAT'}"]
        if spec.min is not None and number < spec.min:
            return [f"{where}: {_fmt(value)} is smaller than the minimum {spec.min}"]
        if spec.max is not None and number > spec.max:
            return [f"{where}: {_fmt(value)} is bigger than the maximum {spec.max}"]
        return []
    if spec.type in ("STRING", "BOOLEAN"):
        return []
    return [f"{where}: expects a link from a {spec.type} output, got the value {_fmt(value)}"]


def _check_link(prompt: Mapping[str, Any], schemas: NodeSchemas, where: str, spec: InputSpec,
                value: list[Any]) -> tuple[list[str], str | None]:
    if len(value) != 2:
        return [f"{where}: bad link {value!r} (a link is [node id, output index])"], None
    origin_id, slot = str(value[0]), value[1]
    origin = prompt.get(origin_id)
    if not isinstance(origin, Mapping):
        return [f"{where}: linked to node {origin_id}, which is not in the prompt"], None
    origin_schema = schemas.get(str(origin.get("class_type")))
    if origin_schema is None:
        return [], origin_id                      # reported as an unknown node type
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(origin_schema.outputs):
        n = len(origin_schema.outputs)
        return [f"{where}: linked to output {slot} of {_label(origin_id, origin)}, "
                f"which has {n} output{'s' if n != 1 else ''}"], None
    received = origin_schema.outputs[slot].type
    if spec.type != "COMBO" and not valid_connection(received, spec.type):
        return [f"{where}: receives {received} from {_label(origin_id, origin)} but needs {spec.type}"], origin_id
    return [], origin_id


def _check_node(prompt: Mapping[str, Any], schemas: NodeSchemas, node_id: str,
                schema: NodeSchema) -> tuple[list[str], list[str]]:
    node = prompt[node_id]
    inputs = node.get("inputs") if isinstance(node.get("inputs"), Mapping) else {}
    problems: list[str] = []
    upstream: list[str] = []
    for spec in schema.inputs:
        where = f"{_label(node_id, node)} input {spec.name}"
        if spec.name not in inputs:
            if spec.required:
                problems.append(f"{where}: required input missing")
            continue
        value = inputs[spec.name]
        if isinstance(value, list):
            found, origin = _check_link(prompt, schemas, where, spec, value)
            problems += found
            if origin is not None:
                upstream.append(origin)
        else:
            problems += _check_value(where, spec, value)
    return problems, upstream


def validate_prompt(prompt: Mapping[str, Any], schema: NodeSchemas) -> list[str]:
    """Every problem the server would report for this prompt, one line each ([] = valid)."""
    if not isinstance(prompt, Mapping) or not prompt:
        return ["the prompt is empty"]
    problems: list[str] = []
    for node_id, node in js_key_order(dict(prompt)).items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            problems.append(f"node {node_id}: has no class_type")
        elif node["class_type"] not in schema:
            problems.append(f"node {node_id}: unknown node type {node['class_type']!r}"
                            + (" (not in the offline schema; check against the server with --server)"
                               if schema.source == "builtin" else " (not installed on the server)"))
    if problems:
        return problems
    outputs = [nid for nid, node in js_key_order(dict(prompt)).items() if schema[node["class_type"]].output_node]
    if not outputs:
        return ["the prompt has no output node (such as SaveImage), so the server would run nothing"]
    by_node: dict[str, list[str]] = {}
    todo = list(outputs)
    while todo:
        node_id = todo.pop(0)
        if node_id in by_node:
            continue
        by_node[node_id], upstream = _check_node(prompt, schema, node_id, schema[prompt[node_id]["class_type"]])
        todo += [u for u in upstream if u not in by_node]
    return [line for node_id in js_key_order(dict(prompt)) for line in by_node.get(node_id, [])]
