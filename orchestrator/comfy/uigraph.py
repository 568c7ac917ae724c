"""UI-format workflow -> API prompt, the way the browser's `graphToPrompt` (frontend 1.35.9) does it.

The steps, in the browser's order:
1. every node (subgraph instances expanded into their inner nodes, ids `outer:inner`) gets its
   widget values from `widgets_values`, matched by position against the schema's widgets;
2. PrimitiveNodes push their value into the widgets they are wired to;
3. each node that is not frontend-only, muted (mode 2) or bypassed (mode 4) is written with its
   widget values (dynamic prompts and filename prefixes rewritten), then its linked inputs,
   each followed upstream through Reroutes, bypassed nodes and subgraph boundaries;
4. inputs whose origin did not make it into the prompt are dropped.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.comfy.schema import NodeSchema, NodeSchemas
from orchestrator.comfy.textrules import (
    SAVE_NODE_TYPES, NodeRef, apply_text_replacements, js_number, process_dynamic_prompt, widget_lookup,
)
from orchestrator.errors import ConfigError

# Frontend-only node types: never sent to the server.
VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
MODE_NEVER, MODE_BYPASS = 2, 4
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
S_AND_R = "Node name for S&R"
REPLACE_PROP = "Run widget replace on values"


@dataclass(frozen=True)
class _Link:
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: Any


@dataclass
class _Graph:
    """One level of the graph: the root, or a subgraph definition."""

    nodes: list[dict[str, Any]]
    links: dict[Any, _Link]
    outputs: list[dict[str, Any]] = field(default_factory=list)   # subgraph outputs (linkIds)

    def node(self, node_id: Any) -> dict[str, Any] | None:
        for n in self.nodes:
            if n.get("id") == node_id:
                return n
        return None


@dataclass
class _Exec:
    """One executable instance of a UI node (a node inside a subgraph exists once per instance)."""

    id: str
    path: tuple[str, ...]            # ids of the subgraph instances containing it
    node: dict[str, Any]
    graph: _Graph
    parent: _Exec | None
    schema: NodeSchema | None
    subgraph: _Graph | None = None   # set when this node is a subgraph instance
    widgets: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.node.get("type"))

    @property
    def mode(self) -> int:
        return int(self.node.get("mode") or 0)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.node.get("inputs") or []

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.node.get("outputs") or []

    @property
    def title(self) -> str:
        title = self.node.get("title")
        if title:
            return str(title)
        return self.schema.title if self.schema else self.type

    def where(self) -> str:
        return f"node {self.id} ({self.type})"


def _slot(value: Any) -> int:
    """A slot number as LiteGraph writes it; ValueError for anything else (floats, huge, negative)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValueError(value)
    slot = int(value)
    if slot >= 10_000:
        raise ValueError(value)
    return slot


def _parse_links(raw: Any, where: str) -> dict[Any, _Link]:
    links: dict[Any, _Link] = {}
    for item in raw or []:
        try:
            if isinstance(item, Mapping):
                link = _Link(item["origin_id"], _slot(item["origin_slot"]), item["target_id"],
                              _slot(item["target_slot"]), item.get("type"))
                links[item["id"]] = link
            else:
                links[item[0]] = _Link(item[1], _slot(item[2]), item[3], _slot(item[4]),
                                       item[5] if len(item) > 5 else None)
        except (KeyError, IndexError, TypeError, ValueError):
            shown = repr(item) if len(repr(item)) <= 80 else repr(item)[:77] + "..."
            raise ConfigError(f"{where}: malformed link {shown}",
                              hint="links are [id, origin_id, origin_slot, target_id, target_slot, type]") from None
    return links


def _graph(data: Mapping[str, Any], where: str) -> _Graph:
    nodes = data.get("nodes") or []
    return _Graph(nodes=list(nodes), links=_parse_links(data.get("links"), where),
                  outputs=list(data.get("outputs") or []))


def valid_connection(a: Any, b: Any) -> bool:
    """LiteGraph's type compatibility: equal, "*"/"" on either side, or comma lists that overlap."""
    a = 0 if a in ("", "*") else a
    b = 0 if b in ("", "*") else b
    if not a or not b or a == b:
        return True
    sa, sb = str(a).lower(), str(b).lower()
    if "," not in sa and "," not in sb:
        return sa == sb
    return bool(set(sa.split(",")) & set(sb.split(",")))


@dataclass(frozen=True)
class _WidgetValue:
    value: Any


class Converter:
    """Converts one UI-format workflow; see the module docstring for the steps."""

    def __init__(self, data: Mapping[str, Any], schema: NodeSchemas, *, rng: random.Random | None,
                 now: datetime | None) -> None:
        self.schema = schema
        self.rng = rng or random.Random()
        self.now = now or datetime.now()
        self.root = _graph(data, "workflow")
        defs = (data.get("definitions") or {}).get("subgraphs") or []
        self.subgraphs = {d.get("id"): _graph(d, f"subgraph {d.get('name') or d.get('id')}") for d in defs
                          if isinstance(d, Mapping)}
        if (data.get("extra") or {}).get("groupNodes"):
            raise ConfigError("this workflow uses legacy group nodes, which we do not convert",
                              hint="open it in the browser and convert the group nodes to subgraphs, then save")
        self.execs: dict[str, _Exec] = {}
        self.order: list[_Exec] = []
        self._expand(self.root, (), None, depth=0)

    # -- 1. instances and their widget values
    def _expand(self, graph: _Graph, path: tuple[str, ...], parent: _Exec | None, depth: int) -> None:
        if depth > 32:
            raise ConfigError("subgraphs are nested more than 32 deep (a subgraph that contains itself?)")
        ordered = sorted(enumerate(graph.nodes), key=lambda p: (_order_key(p[1]), p[0]))
        for _, node in ordered:
            if not isinstance(node, Mapping) or "id" not in node:
                raise ConfigError(f"a node in the workflow has no id: {str(node)[:80]}")
            exe = _Exec(id=":".join((*path, str(node["id"]))), path=path, node=dict(node), graph=graph,
                        parent=parent, schema=self.schema.get(str(node.get("type"))))
            exe.subgraph = self.subgraphs.get(node.get("type"))
            self.execs[exe.id] = exe
            if exe.subgraph is not None:
                self._expand(exe.subgraph, (*path, str(node["id"])), exe, depth + 1)
            self.order.append(exe)
            if exe.schema is not None:
                exe.widgets = self._widget_values(exe)

    def _widget_values(self, exe: _Exec) -> dict[str, Any]:
        raw = exe.node.get("widgets_values")
        values: dict[str, Any] = {}
        for pos, (slot, spec) in enumerate(exe.schema.widget_layout()):   # type: ignore[union-attr]
            if isinstance(raw, Mapping):
                have, value = slot in raw, raw.get(slot)
            else:
                have = isinstance(raw, list) and pos < len(raw)
                value = raw[pos] if have else None
            if not have:
                value = spec.default_value() if spec is not None else None
            values[slot] = value
        return values

    # -- 2. PrimitiveNodes
    def _apply_primitives(self) -> None:
        for exe in self.order:
            if exe.type != "PrimitiveNode" or not exe.outputs:
                continue
            raw = exe.node.get("widgets_values") or []
            value = raw[0] if raw else None
            if value and isinstance(value, str) and (exe.node.get("properties") or {}).get(REPLACE_PROP):
                value = apply_text_replacements(value, self._root_refs(), self.now)
            exe.widgets = {"value": value}
            for link_id in exe.outputs[0].get("links") or []:
                link = exe.graph.links.get(link_id)
                target = self.execs.get(":".join((*exe.path, str(link.target_id)))) if link else None
                if target is None or link is None or link.target_slot >= len(target.inputs):
                    continue
                name = (target.inputs[link.target_slot].get("widget") or {}).get("name")
                if name and name in target.widgets:
                    target.widgets[name] = value

    def _root_refs(self) -> list[NodeRef]:
        refs = []
        for n in self.root.nodes:
            exe = self.execs.get(str(n.get("id")))
            if exe is None:
                continue
            props = n.get("properties") or {}
            s_and_r = props.get(S_AND_R)
            if S_AND_R not in props and exe.schema is not None and exe.type not in SAVE_NODE_TYPES:
                s_and_r = exe.type
            refs.append(NodeRef(s_and_r=s_and_r, title=exe.title, widget=widget_lookup(exe.widgets)))
        return refs

    # -- 3. link resolution
    def _resolve_input(self, exe: _Exec, slot: int, visited: set[tuple[str, str, int]],
                       type_: Any = None) -> tuple[str, int] | _WidgetValue | None:
        key = (exe.id, "I", slot)
        if key in visited:
            raise ConfigError(f"circular links at input {slot} of {exe.where()}",
                              hint="open the workflow in the browser and remove the loop")
        visited.add(key)
        if slot >= len(exe.inputs):
            return None
        inp = exe.inputs[slot]
        link = exe.graph.links.get(inp.get("link")) if inp.get("link") is not None else None
        if link is None:
            return None
        if exe.parent is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            sub = exe.parent
            if link.origin_slot >= len(sub.inputs):
                return None
            sub_input = sub.inputs[link.origin_slot]
            if sub_input.get("link") is None:
                return self._promoted_widget(sub, link.origin_slot)
            return self._resolve_input(sub, link.origin_slot, visited)
        origin = self.execs.get(":".join((*exe.path, str(link.origin_id))))
        if origin is None:
            return None
        return self._resolve_output(origin, link.origin_slot, type_ if type_ is not None else inp.get("type"),
                                    visited)

    def _resolve_output(self, exe: _Exec, slot: int, type_: Any,
                        visited: set[tuple[str, str, int]]) -> tuple[str, int] | _WidgetValue | None:
        key = (exe.id, "O", slot)
        if key in visited:
            raise ConfigError(f"circular links at output {slot} of {exe.where()}",
                              hint="open the workflow in the browser and remove the loop")
        visited.add(key)
        if exe.mode == MODE_BYPASS:
            index = self._bypass_slot(exe, slot, type_)
            return None if index < 0 else self._resolve_input(exe, index, visited)
        if exe.subgraph is not None:
            return self._resolve_subgraph_output(exe, slot, type_, visited)
        if exe.type in VIRTUAL_TYPES or (exe.schema is None and _looks_virtual(exe)):
            if slot < len(exe.inputs):
                return self._resolve_input(exe, slot, visited, type_)
            return None
        return (exe.id, slot)

    def _bypass_slot(self, exe: _Exec, slot: int, type_: Any) -> int:
        inputs = exe.inputs
        if not inputs:
            return -1
        if type_ in ("*", ""):
            return slot if len(inputs) > slot else 0
        out_type = self._output_type(exe, slot)
        if slot < len(inputs):
            t = inputs[slot].get("type")
            if valid_connection(t, out_type) and valid_connection(t, type_):
                return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == type_:
                return i
        for i, inp in enumerate(inputs):
            t = inp.get("type")
            if valid_connection(t, out_type) and valid_connection(t, type_):
                return i
        return -1

    def _output_type(self, exe: _Exec, slot: int) -> Any:
        if slot < len(exe.outputs):
            return exe.outputs[slot].get("type")
        if exe.schema is not None and slot < len(exe.schema.outputs):
            return exe.schema.outputs[slot].type
        return None

    def _resolve_subgraph_output(self, exe: _Exec, slot: int, type_: Any,
                                 visited: set[tuple[str, str, int]]) -> tuple[str, int] | _WidgetValue | None:
        graph = exe.subgraph
        assert graph is not None
        inner = None
        if slot < len(graph.outputs):
            for link_id in graph.outputs[slot].get("linkIds") or []:
                inner = graph.links.get(link_id)
                if inner is not None:
                    break
        if inner is None:
            inner = next((lk for lk in graph.links.values()
                          if lk.target_id == SUBGRAPH_OUTPUT_ID and lk.target_slot == slot), None)
        if inner is None:
            return None
        if inner.origin_id == SUBGRAPH_INPUT_ID:          # an input wired straight to an output
            return self._resolve_input(exe, inner.origin_slot, visited)
        origin = self.execs.get(f"{exe.id}:{inner.origin_id}")
        if origin is None:
            return None
        return self._resolve_output(origin, inner.origin_slot, type_, visited)

    def _promoted_widget(self, sub: _Exec, slot: int) -> _WidgetValue | None:
        """An unlinked subgraph input that shows a widget on the subgraph node gives that widget's value."""
        widget_inputs = [i for i, inp in enumerate(sub.inputs) if inp.get("widget")]
        raw = sub.node.get("widgets_values")
        if slot not in widget_inputs or not isinstance(raw, list):
            return None
        k = widget_inputs.index(slot)
        return _WidgetValue(raw[k]) if k < len(raw) else None

    # -- 3. and 4. the prompt
    def _excluded(self, exe: _Exec) -> bool:
        if exe.subgraph is not None or exe.type in VIRTUAL_TYPES:
            return True
        p: _Exec | None = exe
        while p is not None:
            if p.mode in (MODE_NEVER, MODE_BYPASS):
                return True
            p = p.parent
        return False

    def _serialize(self, exe: _Exec, name: str, value: Any) -> Any:
        spec = exe.schema.input(name) if exe.schema else None
        if isinstance(value, str):
            if spec is not None and spec.dynamic_prompts:
                value = process_dynamic_prompt(value, self.rng)
            if name == "filename_prefix" and exe.type in SAVE_NODE_TYPES:
                value = apply_text_replacements(value, self._root_refs(), self.now)
        if isinstance(value, list):
            return {"__value__": value}
        return js_number(value)

    def convert(self) -> dict[str, Any]:
        """The API prompt: {node id: {inputs, class_type, _meta: {title}}}."""
        self._apply_primitives()
        prompt: dict[str, Any] = {}
        for exe in self.order:
            if self._excluded(exe):
                continue
            if exe.schema is None:
                raise ConfigError(
                    f"{exe.where()}: node type {exe.type!r} is not in the {self.schema.source} schema",
                    hint="convert with --server URL so the server's node list is used"
                    if self.schema.source == "builtin" else "install the custom node on the server, or remove it")
            inputs: dict[str, Any] = {}
            for slot, spec in exe.schema.widget_layout():
                if spec is not None:
                    inputs[slot] = self._serialize(exe, slot, exe.widgets.get(slot))
            for i, inp in enumerate(exe.inputs):
                resolved = self._resolve_input(exe, i, set())
                if resolved is None:
                    continue
                name = inp.get("name")
                if isinstance(resolved, _WidgetValue):
                    inputs[name] = self._serialize(exe, name, resolved.value)
                else:
                    inputs[name] = [resolved[0], resolved[1]]
            prompt[exe.id] = {"inputs": inputs, "class_type": exe.type, "_meta": {"title": exe.title}}
        for entry in prompt.values():
            for name in [n for n, v in entry["inputs"].items()
                         if isinstance(v, list) and len(v) == 2 and str(v[0]) not in prompt]:
                del entry["inputs"][name]
        return js_key_order(prompt)


def _order_key(node: Any) -> float:
    order = node.get("order") if isinstance(node, Mapping) else None
    return float(order) if isinstance(order, (int, float)) else float("inf")


def _looks_virtual(exe: _Exec) -> bool:
    """Unknown types are only treated as frontend-only when they say so (isVirtualNode in properties)."""
    return bool((exe.node.get("properties") or {}).get("isVirtualNode"))


def js_key_order(obj: dict[str, Any]) -> dict[str, Any]:
    """Key order of a JS object: integer-like keys ascending, then the others in insertion order."""
    ints = sorted((k for k in obj if k.isdigit() and (k == "0" or not k.startswith("0"))), key=int)
    rest = [k for k in obj if k not in set(ints)]
    return {k: obj[k] for k in [*ints, *rest]}


def convert_ui(data: Mapping[str, Any], schema: NodeSchemas, *, rng: random.Random | None = None,
               now: datetime | None = None) -> dict[str, Any]:
    """The API prompt the browser would queue for this UI-format workflow."""
    return Converter(data, schema, rng=rng, now=now).convert()
