"""Small hand-written UI graphs and a small /object_info for the conversion tests.

The object_info below is written from the facts in ../shared/comfyui/README.md (shapes of legacy
and V3 combos, control_after_generate, image_upload, forceInput, hidden and optional inputs); it is
deliberately tiny so each test shows the rule it checks.
"""

from __future__ import annotations

from typing import Any

from orchestrator.comfy.schema import NodeSchemas, schemas_from_object_info


def _cls(required: dict[str, Any], outputs: list[str], *, optional: dict[str, Any] | None = None,
         hidden: dict[str, Any] | None = None, names: list[str] | None = None, display: str | None = None,
         output_node: bool = False) -> dict[str, Any]:
    inputs: dict[str, Any] = {"required": required}
    order: dict[str, Any] = {"required": list(required)}
    if optional:
        inputs["optional"], order["optional"] = optional, list(optional)
    if hidden:
        inputs["hidden"], order["hidden"] = hidden, list(hidden)
    return {"input": inputs, "input_order": order, "output": outputs, "output_is_list": [False] * len(outputs),
            "output_name": names or outputs, "display_name": display, "output_node": output_node}


INT = ["INT", {"default": 1, "min": 1, "max": 100}]

OBJECT_INFO: dict[str, Any] = {
    "Loader": _cls({"ckpt_name": [["a.safetensors", "b.safetensors"]]}, ["MODEL", "CLIP", "VAE"],
                   display="Load Checkpoint"),
    "Lora": _cls({"model": ["MODEL"], "clip": ["CLIP"], "lora_name": [["l.safetensors"]],
                  "strength": ["FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0}]}, ["MODEL", "CLIP"],
                 display="Load LoRA"),
    "Encode": _cls({"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
                   ["CONDITIONING"], display="Encode"),
    "Sampler": _cls({"model": ["MODEL"],
                     "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}],
                     "steps": INT,
                     "scheduler": ["COMBO", {"options": ["simple", "normal"]}],
                     "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent": ["LATENT"]},
                    ["LATENT"], display="Sampler"),
    "Latent": _cls({"width": INT, "height": INT}, ["LATENT"], display=None),
    "Decode": _cls({"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"], display="Decode"),
    "Save": _cls({"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [],
                 hidden={"prompt": "PROMPT"}, display="Save", output_node=True),
    "SaveImage": _cls({"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [],
                      display="Save Image", output_node=True),
    "Upload": _cls({"image": [["x.png", "y.png"], {"image_upload": True}]}, ["IMAGE", "MASK"], display="Load Image"),
    "PickMode": _cls({"mode": ["COMBO", {"options": ["a", "b"], "control_after_generate": True}],
                      "n": INT}, ["INT"], display="Pick"),
    "Forced": _cls({"value": ["INT", {"forceInput": True}], "k": INT}, ["INT"], display="Forced"),
    "Opt": _cls({"a": INT}, ["INT"], optional={"b": ["STRING", {"advanced": True}], "m": ["MODEL"]}, display="Opt"),
    "Many": _cls({"items": ["STRING"]}, ["STRING"], display="Many"),
    "IntNode": _cls({"value": ["INT", {"min": -10, "max": 10**9, "control_after_generate": True}]}, ["INT"],
                    display="Int"),
}


def schema() -> NodeSchemas:
    return schemas_from_object_info(OBJECT_INFO, source="test")


def node(id_: int, type_: str, widgets: list[Any] | None = None, *, inputs: list[dict[str, Any]] | None = None,
         outputs: list[dict[str, Any]] | None = None, mode: int = 0, title: str | None = None,
         properties: dict[str, Any] | None = None, order: int | None = None) -> dict[str, Any]:
    n: dict[str, Any] = {"id": id_, "type": type_, "pos": [0, 0], "size": [200, 100], "flags": {},
                         "order": id_ if order is None else order, "mode": mode,
                         "inputs": inputs or [], "outputs": outputs or [],
                         "properties": properties if properties is not None else {"Node name for S&R": type_}}
    if title:
        n["title"] = title
    if widgets is not None:
        n["widgets_values"] = widgets
    return n


def inp(name: str, type_: str, link: int | None, widget: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "type": type_, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def out(name: str, type_: str, links: list[int] | None = None, widget: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "type": type_, "links": links or []}
    if widget:
        d["widget"] = {"name": widget}
    return d


def graph(nodes: list[dict[str, Any]], links: list[list[Any]], **extra: Any) -> dict[str, Any]:
    return {"last_node_id": max((n["id"] for n in nodes), default=0), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4, **extra}


def chain(*, lora_mode: int = 0, decode_mode: int = 0) -> dict[str, Any]:
    """Loader -> Lora -> Sampler(+Encode, Latent) -> Decode -> Save, the usual shape."""
    return graph([
        node(1, "Loader", ["a.safetensors"], outputs=[out("MODEL", "MODEL", [1]), out("CLIP", "CLIP", [2]),
                                                       out("VAE", "VAE", [8])]),
        node(2, "Lora", ["l.safetensors", 0.5], mode=lora_mode,
             inputs=[inp("model", "MODEL", 1), inp("clip", "CLIP", 2)],
             outputs=[out("MODEL", "MODEL", [3]), out("CLIP", "CLIP", [4])]),
        node(3, "Encode", ["a cat"], inputs=[inp("clip", "CLIP", 4)],
             outputs=[out("CONDITIONING", "CONDITIONING", [5])]),
        node(4, "Latent", [64, 32], outputs=[out("LATENT", "LATENT", [6])]),
        node(5, "Sampler", [7, "randomize", 20, "simple"],
             inputs=[inp("model", "MODEL", 3), inp("positive", "CONDITIONING", 5),
                     inp("negative", "CONDITIONING", None), inp("latent", "LATENT", 6)],
             outputs=[out("LATENT", "LATENT", [7])]),
        node(6, "Decode", mode=decode_mode, inputs=[inp("samples", "LATENT", 7), inp("vae", "VAE", 8)],
             outputs=[out("IMAGE", "IMAGE", [9])]),
        node(7, "Save", ["out"], inputs=[inp("images", "IMAGE", 9)]),
    ], [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 2, 1, "CLIP"], [3, 2, 0, 5, 0, "MODEL"], [4, 2, 1, 3, 0, "CLIP"],
        [5, 3, 0, 5, 1, "CONDITIONING"], [6, 4, 0, 5, 3, "LATENT"], [7, 5, 0, 6, 0, "LATENT"],
        [8, 1, 2, 6, 1, "VAE"], [9, 6, 0, 7, 0, "IMAGE"]])
