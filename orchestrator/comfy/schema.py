"""Node schemas: what each ComfyUI node class takes and returns, from `/object_info` or our shipped file.

The browser turns a UI workflow into an API prompt with these facts: the input order (required
then optional), which inputs are widgets (INT, FLOAT, STRING, BOOLEAN, combos) and which are
sockets (MODEL, CLIP, ...), extra frontend-only widget slots (`control_after_generate`, upload
buttons), and the output types. Validation uses the same facts plus defaults, ranges and combo
options. A live server's `/object_info` is authoritative; `load_builtin_schema()` is a small
hand-written schema for the nodes our workflows use, for offline conversion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from orchestrator.errors import ConfigError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SCHEMA_RESOURCE = "schemas/nodes.json"


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class, as the frontend and the server see it."""

    name: str
    type: str                                # INT FLOAT STRING BOOLEAN COMBO, or a socket type (MODEL, CLIP, "*")
    required: bool = True
    options: tuple[Any, ...] | None = None   # combo values; None = not known here (model files offline)
    default: Any = None
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    force_input: bool = False                # a widget type shown as a socket only
    control_after_generate: bool = False     # followed by a frontend-only "control" widget slot
    image_upload: bool = False               # followed by a frontend-only "upload" widget slot
    dynamic_prompts: bool = False            # the browser strips comments and picks {a|b} choices
    multiline: bool = False
    advanced: bool = False
    folder: str | None = None                # model folder of a file picker (shipped schema only)

    @property
    def is_widget(self) -> bool:
        """True when the frontend draws a widget for it (and it takes a widgets_values slot)."""
        return self.type in WIDGET_TYPES and not self.force_input

    @property
    def is_combo(self) -> bool:
        return self.type == "COMBO"

    def widget_slots(self) -> tuple[str, ...]:
        """Names of the widgets_values slots this input takes: itself, then frontend-only extras."""
        if not self.is_widget:
            return ()
        slots = [self.name]
        if self.control_after_generate:
            slots.append("control_after_generate")
            if self.is_combo:
                slots.append("control_filter_list")
        if self.image_upload:
            slots.append("upload")
        return tuple(slots)

    def default_value(self) -> Any:
        """The value a freshly created widget holds (used when widgets_values is short)."""
        if self.default is not None:
            return self.default
        if self.is_combo:
            return self.options[0] if self.options else None
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.type)


@dataclass(frozen=True)
class OutputSpec:
    """One output slot of a node class."""

    name: str
    type: str
    is_list: bool = False


@dataclass(frozen=True)
class NodeSchema:
    """A node class: inputs in the frontend's order (required then optional), outputs, title."""

    name: str
    display_name: str | None
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    output_node: bool = False

    @property
    def title(self) -> str:
        """The default node title in the browser (display_name, or the class name when it has none)."""
        return self.display_name or self.name

    def input(self, name: str) -> InputSpec | None:
        """The input called `name`, or None."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def widget_layout(self) -> tuple[tuple[str, InputSpec | None], ...]:
        """(slot name, input or None for frontend-only slots) for every widgets_values position."""
        layout: list[tuple[str, InputSpec | None]] = []
        for spec in self.inputs:
            for i, slot in enumerate(spec.widget_slots()):
                layout.append((slot, spec if i == 0 else None))
        return tuple(layout)


@dataclass(frozen=True)
class NodeSchemas:
    """All known node classes, by class name. `source` says where they came from."""

    nodes: Mapping[str, NodeSchema]
    source: str = "object_info"
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self.nodes

    def __getitem__(self, class_type: str) -> NodeSchema:
        return self.nodes[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, class_type: str) -> NodeSchema | None:
        """The schema of `class_type`, or None."""
        return self.nodes.get(class_type)


# ---------------------------------------------------------------- from a live server's /object_info

def _input_from_object_info(name: str, spec: Any, required: bool) -> InputSpec:
    if not isinstance(spec, (list, tuple)) or not spec:
        return InputSpec(name=name, type="*", required=required)
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    options: tuple[Any, ...] | None = None
    if isinstance(kind, (list, tuple)):           # legacy combo: the list of values is the type
        options, type_ = tuple(kind), "COMBO"
    elif kind == "COMBO":                         # V3 combo: values under options
        options, type_ = tuple(opts.get("options") or ()), "COMBO"
    else:
        type_ = str(kind)
    return InputSpec(
        name=name, type=type_, required=required, options=options,
        **_widget_options(opts),
    )


def _widget_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """InputSpec fields read the same way from object_info and from our shipped schema."""
    return {
        "default": opts.get("default"), "min": opts.get("min"), "max": opts.get("max"), "step": opts.get("step"),
        "force_input": bool(opts.get("forceInput")),
        "control_after_generate": bool(opts.get("control_after_generate")),
        "image_upload": bool(opts.get("image_upload")),
        "dynamic_prompts": bool(opts.get("dynamicPrompts")),
        "multiline": bool(opts.get("multiline")),
        "advanced": bool(opts.get("advanced")),
    }


def _node_from_object_info(name: str, info: Mapping[str, Any]) -> NodeSchema:
    inputs_by_group = info.get("input") or {}
    order = info.get("input_order") or {}
    inputs: list[InputSpec] = []
    for group in ("required", "optional"):       # hidden inputs are filled by the server
        specs = inputs_by_group.get(group) or {}
        names = order.get(group) or list(specs)
        for input_name in names:
            if input_name in specs:
                inputs.append(_input_from_object_info(input_name, specs[input_name], group == "required"))
    types = list(info.get("output") or [])
    names = list(info.get("output_name") or types)
    is_list = list(info.get("output_is_list") or [False] * len(types))
    outputs = tuple(
        OutputSpec(name=str(names[i]) if i < len(names) else str(t),
                   type="COMBO" if isinstance(t, list) else str(t),
                   is_list=bool(is_list[i]) if i < len(is_list) else False)
        for i, t in enumerate(types)
    )
    return NodeSchema(name=name, display_name=info.get("display_name") or None, inputs=tuple(inputs),
                      outputs=outputs, output_node=bool(info.get("output_node")))


def schemas_from_object_info(obj: Mapping[str, Any], *, source: str = "object_info") -> NodeSchemas:
    """Node schemas from a `GET /object_info` answer (classes that are not objects are skipped)."""
    if not isinstance(obj, Mapping):
        raise ConfigError("object_info is not a JSON object", hint="is the URL a ComfyUI server?")
    nodes = {name: _node_from_object_info(name, info)
             for name, info in obj.items() if isinstance(info, Mapping)}
    return NodeSchemas(nodes=nodes, source=source)


# ---------------------------------------------------------------- our shipped schema (schemas/nodes.json)

def _input_from_shipped(entry: list[Any], lists: Mapping[str, list[Any]]) -> InputSpec:
    name, type_ = entry[0], entry[1]
    opts: dict[str, Any] = dict(entry[2]) if len(entry) > 2 else {}
    options = opts.pop("options", None)
    if isinstance(options, str):                  # "@samplers": a shared list in the file
        options = lists[options.lstrip("@")]
    folder = opts.pop("files", None)              # a file picker: values depend on the server's folders
    required = not opts.pop("optional", False)
    return InputSpec(
        name=name, type=type_, required=required,
        options=tuple(options) if options is not None else None, folder=folder,
        **_widget_options(opts),
    )


def _output_from_shipped(entry: str) -> OutputSpec:
    name, _, type_ = entry.rpartition(":")
    return OutputSpec(name=name or type_, type=type_)


def schemas_from_shipped(doc: Mapping[str, Any], *, source: str = "builtin") -> NodeSchemas:
    """Node schemas from our compact schema document (the format of schemas/nodes.json)."""
    lists = doc.get("lists", {})
    nodes = {}
    for name, info in doc["nodes"].items():
        nodes[name] = NodeSchema(
            name=name, display_name=info.get("title"),
            inputs=tuple(_input_from_shipped(e, lists) for e in info.get("inputs", [])),
            outputs=tuple(_output_from_shipped(e) for e in info.get("outputs", [])),
            output_node=bool(info.get("output_node")),
        )
    return NodeSchemas(nodes=nodes, source=source, notes=tuple(doc.get("notes", ())))


_BUILTIN: NodeSchemas | None = None


def load_builtin_schema() -> NodeSchemas:
    """The shipped schema for the node types our workflows use (ComfyUI 0.8.0), for offline work."""
    global _BUILTIN
    if _BUILTIN is None:
        text = resources.files("orchestrator").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
        _BUILTIN = schemas_from_shipped(json.loads(text))
    return _BUILTIN
