"""Our two workflows, built from code: `workflows/base_flux.json` and `workflows/finetuned_flux.json`.

    python -m orchestrator.comfy.builtin [DIR]     # (re)writes both files into DIR (default: workflows/)

They are UI-format files (schema 0.4, what the browser saves), laid out left to right in groups so
they read well in the browser, and the same files `generate` runs. The graph is the seed's FLUX.1-dev
graph: checkpoint, dual CLIP (T5-XXL + CLIP-L), VAE, prompt, FluxGuidance 3.5, ModelSamplingFlux
(1.15 / 0.5), BasicScheduler (sgm_uniform), KSamplerSelect, RandomNoise, BasicGuider, empty latent,
SamplerCustomAdvanced, VAE decode, save. The finetuned one puts a LoraLoader (model and CLIP)
between the loaders and the rest. Width and height are two primitive widgets wired into both the
latent and ModelSamplingFlux, so an edit in the browser changes both.

Defaults: 28 steps (FLUX.1-dev is commonly run at 28; on an H100, 5.4 s per image against 9.1 s
for the seed's 50, with little visible difference), dpmpp_2m + sgm_uniform (the seed's sampler, and
the one our timings were measured with; one model call per step, like euler), 1024x1024.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from orchestrator.comfy.schema import NodeSchemas, load_builtin_schema
from orchestrator.layout import atomic_write_text

DEFAULT_STEPS = 28
DEFAULT_SAMPLER = "dpmpp_2m"
DEFAULT_SCHEDULER = "sgm_uniform"
DEFAULT_GUIDANCE = 3.5
DEFAULT_SIZE = (1024, 1024)
DEFAULT_SEED = 42
DEFAULT_LORA = "flux_dreambooth.safetensors"
CHECKPOINT = "flux1-dev.safetensors"
T5, CLIP_L, VAE = "t5xxl_fp16.safetensors", "clip_l.safetensors", "ae.safetensors"
BASE_TEXT = "a photo of a red fox sitting in fresh snow, soft morning light"
FINETUNED_TEXT = "a tjtoy toy on a desk, soft window light, photo"
NOTE = ("Edit the prompt, the size (width / height), the seed and the steps here, then Queue.\n\n"
        "The same file runs headless: `python -m orchestrator generate \"your prompt\"` patches the "
        "prompt, seed, size, steps, guidance, sampler and LoRA of this graph and saves the images "
        "to outputs/.")
FILES = {"base": "base_flux.json", "finetuned": "finetuned_flux.json"}

# Node sizes as the browser draws them (about), so a freshly opened file looks tidy.
SIZES: dict[str, tuple[int, int]] = {
    "CheckpointLoaderSimple": (315, 98), "DualCLIPLoader": (315, 130), "VAELoader": (315, 58),
    "LoraLoader": (315, 126), "CLIPTextEncode": (420, 180), "FluxGuidance": (315, 58),
    "ModelSamplingFlux": (315, 130), "BasicScheduler": (315, 106), "KSamplerSelect": (315, 58),
    "RandomNoise": (315, 82), "BasicGuider": (240, 46), "EmptyLatentImage": (315, 106),
    "SamplerCustomAdvanced": (272, 106), "VAEDecode": (210, 46), "SaveImage": (640, 680),
    "PrimitiveNode": (210, 82), "Note": (315, 200),
}


class GraphBuilder:
    """Builds a UI-format workflow (schema 0.4) node by node; ids and links in creation order."""

    def __init__(self, schema: NodeSchemas) -> None:
        self.schema = schema
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def _node(self, type_: str, pos: tuple[int, int], **extra: Any) -> dict[str, Any]:
        node: dict[str, Any] = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos),
                                "size": list(SIZES.get(type_, (315, 100))), "flags": {}, "order": 0, "mode": 0,
                                "inputs": [], "outputs": [], **extra}
        self.nodes.append(node)
        return node

    def add(self, type_: str, pos: tuple[int, int], title: str | None = None, **widgets: Any) -> int:
        """Add a node of a schema type with its widgets (defaults for those not given); returns its id."""
        spec = self.schema[type_]
        node = self._node(type_, pos)
        node["inputs"] = [{"name": i.name, "type": i.type, "link": None} for i in spec.inputs if not i.is_widget]
        node["outputs"] = [{"name": o.name, "type": o.type, "links": []} for o in spec.outputs]
        if title:
            node["title"] = title
        node["properties"] = {"Node name for S&R": type_}
        values = []
        for slot, inp in spec.widget_layout():
            if slot in widgets:
                values.append(widgets.pop(slot))
            elif slot == "control_after_generate":
                values.append("fixed")
            else:
                values.append(inp.default_value() if inp is not None else None)
        if widgets:
            raise ValueError(f"{type_} has no widgets {sorted(widgets)}")
        node["widgets_values"] = values
        return int(node["id"])

    def primitive(self, pos: tuple[int, int], title: str, value: Any, type_: str = "INT") -> int:
        """A frontend-only PrimitiveNode (its value is pushed into the widgets it is wired to)."""
        node = self._node("PrimitiveNode", pos, title=title,
                          properties={"Run widget replace on values": False},
                          widgets_values=[value, "fixed"] if type_ in ("INT", "FLOAT") else [value])
        node["outputs"] = [{"name": type_, "type": type_, "links": [], "widget": {"name": title}}]
        return int(node["id"])

    def note(self, pos: tuple[int, int], text: str) -> None:
        """A frontend-only Note."""
        self._node("Note", pos, properties={"text": ""}, widgets_values=[text])

    def link(self, src: int, slot: int, dst: int, input_name: str) -> None:
        """Wire output `slot` of `src` into input `input_name` of `dst` (a socket or a widget)."""
        source, target = self.nodes[src - 1], self.nodes[dst - 1]
        out = source["outputs"][slot]
        link_id = len(self.links) + 1
        index = next((i for i, inp in enumerate(target["inputs"]) if inp["name"] == input_name), None)
        if index is None:                             # a widget turned into an input by the link
            target["inputs"].append({"name": input_name, "type": out["type"], "widget": {"name": input_name},
                                     "link": None})
            index = len(target["inputs"]) - 1
        target["inputs"][index]["link"] = link_id
        out["links"].append(link_id)
        self.links.append([link_id, src, slot, dst, index, out["type"]])

    def group(self, title: str, ids: list[int], color: str) -> None:
        """A titled box around nodes `ids`."""
        boxes = [(n["pos"][0], n["pos"][1], n["size"][0], n["size"][1]) for n in self.nodes if n["id"] in ids]
        x0 = min(b[0] for b in boxes) - 20
        y0 = min(b[1] for b in boxes) - 60
        x1 = max(b[0] + b[2] for b in boxes) + 20
        y1 = max(b[1] + b[3] for b in boxes) + 20
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def _set_order(self) -> None:
        """Execution order (the `order` field the browser writes): a topological sort by links."""
        deps = {n["id"]: {lk[1] for lk in self.links if lk[3] == n["id"]} for n in self.nodes}
        done: list[int] = []
        while len(done) < len(self.nodes):
            ready = [nid for nid in deps if nid not in done and deps[nid] <= set(done)]
            done.append(min(ready))
        for n in self.nodes:
            n["order"] = done.index(n["id"])

    def to_json(self, name: str) -> dict[str, Any]:
        """The workflow document."""
        self._set_order()
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"flux-orchestrator/{name}")), "revision": 0,
                "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.7, "offset": [60, 120]}}, "version": 0.4}


def build_flux_workflow(*, lora: str | None = None, text: str = BASE_TEXT, name: str = "base_flux",
                        schema: NodeSchemas | None = None) -> dict[str, Any]:
    """The FLUX.1-dev graph, with a LoraLoader (model and CLIP) when `lora` is given."""
    g = GraphBuilder(schema or load_builtin_schema())
    ckpt = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name=CHECKPOINT)
    clip = g.add("DualCLIPLoader", (0, 160), clip_name1=T5, clip_name2=CLIP_L, type="flux")
    vae = g.add("VAELoader", (0, 350), vae_name=VAE)
    model_src, clip_src, x = (ckpt, 0), (clip, 0), 380
    loaders = [ckpt, clip, vae]
    if lora is not None:
        lo = g.add("LoraLoader", (380, 0), lora_name=lora, strength_model=1.0, strength_clip=1.0)
        g.link(ckpt, 0, lo, "model")
        g.link(clip, 0, lo, "clip")
        model_src, clip_src, x = (lo, 0), (lo, 1), 760
        loaders.append(lo)
    prompt = g.add("CLIPTextEncode", (x, 0), title="Prompt", text=text)
    guidance = g.add("FluxGuidance", (x, 240), guidance=DEFAULT_GUIDANCE)
    width = g.primitive((x, 400), "width", DEFAULT_SIZE[0])
    height = g.primitive((x + 220, 400), "height", DEFAULT_SIZE[1])
    latent = g.add("EmptyLatentImage", (x, 540), width=DEFAULT_SIZE[0], height=DEFAULT_SIZE[1], batch_size=1)
    sx = x + 480
    shift = g.add("ModelSamplingFlux", (sx, 0), max_shift=1.15, base_shift=0.5,
                  width=DEFAULT_SIZE[0], height=DEFAULT_SIZE[1])
    guider = g.add("BasicGuider", (sx, 190))
    sampler = g.add("KSamplerSelect", (sx, 290), sampler_name=DEFAULT_SAMPLER)
    sched = g.add("BasicScheduler", (sx, 400), scheduler=DEFAULT_SCHEDULER, steps=DEFAULT_STEPS, denoise=1.0)
    noise = g.add("RandomNoise", (sx, 560), noise_seed=DEFAULT_SEED, control_after_generate="randomize")
    ox = sx + 380
    run = g.add("SamplerCustomAdvanced", (ox, 0))
    decode = g.add("VAEDecode", (ox, 160))
    save = g.add("SaveImage", (ox + 300, 0), filename_prefix=f"flux_{name.removesuffix('_flux')}")
    g.note((0, 480), NOTE)

    g.link(clip_src[0], clip_src[1], prompt, "clip")
    g.link(prompt, 0, guidance, "conditioning")
    g.link(model_src[0], model_src[1], shift, "model")
    g.link(width, 0, shift, "width")
    g.link(height, 0, shift, "height")
    g.link(width, 0, latent, "width")
    g.link(height, 0, latent, "height")
    g.link(shift, 0, guider, "model")
    g.link(guidance, 0, guider, "conditioning")
    g.link(shift, 0, sched, "model")
    g.link(noise, 0, run, "noise")
    g.link(guider, 0, run, "guider")
    g.link(sampler, 0, run, "sampler")
    g.link(sched, 0, run, "sigmas")
    g.link(latent, 0, run, "latent_image")
    g.link(run, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, save, "images")

    g.group("Models", loaders, "#3f789e")
    g.group("Prompt and size", [prompt, guidance, width, height, latent], "#8A8")
    g.group("Sampling", [shift, guider, sampler, sched, noise], "#b58b2a")
    g.group("Image", [run, decode, save], "#a1309b")
    return g.to_json(name)


def builtin_workflows() -> dict[str, dict[str, Any]]:
    """File name -> workflow document, for both shipped workflows."""
    return {
        FILES["base"]: build_flux_workflow(name="base_flux"),
        FILES["finetuned"]: build_flux_workflow(lora=DEFAULT_LORA, text=FINETUNED_TEXT, name="finetuned_flux"),
    }


def render(doc: dict[str, Any]) -> str:
    """The file text we commit (2-space JSON, trailing newline)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_builtin_workflows(folder: Path) -> list[Path]:
    """Write both workflows into `folder` atomically; returns the paths."""
    paths = []
    for filename, doc in builtin_workflows().items():
        path = folder / filename
        atomic_write_text(path, render(doc))
        paths.append(path)
    return paths


def ensure_builtin_workflows(folder: Path, *, force: bool = False) -> list[Path]:
    """Write the shipped workflows that are missing from `folder` (all of them with `force`); never
    touches a file the user edited unless forced. Returns the paths written."""
    from orchestrator.files import atomic_write_text, file_lock

    written: list[Path] = []
    docs = builtin_workflows()
    if not force and all((folder / name).exists() for name in docs):
        return written   # nothing to write: no lock either (the folder may be read-only)
    with file_lock(folder):  # the check and the write together: a file saved meanwhile is never overwritten
        for filename, doc in docs.items():
            path = folder / filename
            if force or not path.exists():
                atomic_write_text(path, render(doc))
                written.append(path)
    return written


if __name__ == "__main__":   # python -m orchestrator.comfy.builtin [DIR]
    for p in write_builtin_workflows(Path(sys.argv[1] if len(sys.argv) > 1 else "workflows")):
        print(p)
