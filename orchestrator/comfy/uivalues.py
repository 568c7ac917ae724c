"""Show the values a prompt ran with in its UI workflow, so a saved PNG reopens as it was made (pure code).

    ui_for_png = reflect_in_ui(ui_workflow, converted_prompt, patched_prompt, schema)

`generate` patches the API prompt (text, seed, size, LoRA, ...), but the PNG's `workflow` chunk is
the UI workflow the browser reopens. For each top-level node input whose value the patch changed,
this writes the new value into the node's `widgets_values` slot (positions from the node schema,
frontend-only slots such as control_after_generate skipped), or into the PrimitiveNode that drives
that widget (the browser gives the primitive's value precedence). Nodes inside subgraphs and
inputs it cannot place are left as they were: the PNG's `prompt` chunk always has the exact values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from orchestrator.comfy.schema import NodeSchemas


def _set_slot(node: dict[str, Any], index: int, value: Any) -> None:
    values = node.get("widgets_values")
    if not isinstance(values, list) or index >= len(values):
        return   # a dict-style or short widgets_values: leave it rather than guess
    values[index] = value


def reflect_in_ui(ui: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any],
                  schema: NodeSchemas) -> dict[str, Any]:
    """A copy of `ui` whose widgets show the values of `after` where they differ from `before`."""
    doc: dict[str, Any] = copy.deepcopy(dict(ui))
    nodes = {str(n.get("id")): n for n in doc.get("nodes") or () if isinstance(n, dict)}
    links = {link[0]: link for link in doc.get("links") or () if isinstance(link, list) and len(link) >= 5}
    for node_id, node in after.items():
        old = (before.get(node_id) or {}).get("inputs") or {}
        ui_node = nodes.get(str(node_id))
        if ui_node is None or ui_node.get("type") != node.get("class_type"):
            continue
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) or (name in old and old[name] == value):
                continue
            fed = next((i for i in ui_node.get("inputs") or () if (i.get("widget") or {}).get("name") == name
                        and i.get("link") is not None), None)
            if fed is not None:
                link = links.get(fed["link"])
                source = nodes.get(str(link[1])) if link else None
                if source is not None and source.get("type") == "PrimitiveNode":
                    _set_slot(source, 0, value)
                continue
            node_schema = schema.get(str(node.get("class_type")))
            if node_schema is None:
                continue
            slots = [slot for slot, _ in node_schema.widget_layout()]
            if name in slots:
                _set_slot(ui_node, slots.index(name), value)
    return doc
