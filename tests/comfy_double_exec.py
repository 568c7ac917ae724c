"""How the ComfyUI test double "executes" a prompt: the recorded message order, real PNGs, caching."""

from __future__ import annotations

import json
import random
import re
import struct
from typing import Any

from tests.comfy_double import ComfyDouble, Job, now_ms
from tests.comfy_double_nodes import SAMPLING_TYPES, cache_keys, execution_order


class _Stop(Exception):
    def __init__(self, kind: str, node_id: str, info: dict[str, Any]) -> None:
        super().__init__(kind)
        self.kind, self.node_id, self.info = kind, node_id, info


def _steps(double: ComfyDouble, prompt: dict[str, Any], node_id: str) -> int:
    if double.steps is not None:
        return double.steps
    inputs = prompt[node_id].get("inputs") or {}
    if isinstance(inputs.get("steps"), int):
        return inputs["steps"]
    sigmas = inputs.get("sigmas")
    if isinstance(sigmas, list):
        steps = (prompt[str(sigmas[0])].get("inputs") or {}).get("steps")
        if isinstance(steps, int):
            return steps
    return 4


def _upstream_value(prompt: dict[str, Any], node_id: str, names: tuple[str, ...], seen: set[str] | None = None) -> Any:
    """The first of `names` found on this node or upstream of it (e.g. the latent size for a PNG)."""
    seen = seen if seen is not None else set()
    if node_id in seen or node_id not in prompt:
        return None
    seen.add(node_id)
    inputs = prompt[node_id].get("inputs") or {}
    for name in names:
        if name in inputs and not isinstance(inputs[name], list):
            return inputs[name]
    for value in inputs.values():
        if isinstance(value, list) and len(value) == 2:
            found = _upstream_value(prompt, str(value[0]), names, seen)
            if found is not None:
                return found
    return None


def _save_images(double: ComfyDouble, job: Job, node_id: str) -> dict[str, Any]:
    """Write small real PNGs like SaveImage (`<prefix>_NNNNN_.png`) or PreviewImage (temp)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    node = job.prompt[node_id]
    if node["class_type"] == "SaveImage":
        kind = "output"
        prefix = str((node.get("inputs") or {}).get("filename_prefix", "ComfyUI"))
    else:
        kind = "temp"
        prefix = "ComfyUI_temp_" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz", k=5))
    subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
    folder = double.root / kind / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(base) + r"_(\d{5})_\.png$")
    counter = max([int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] + [0]) + 1
    w = int(_upstream_value(job.prompt, node_id, ("width",)) or 64)
    h = int(_upstream_value(job.prompt, node_id, ("height",)) or 64)
    scale = max(w, h) / 64 if max(w, h) > 64 else 1
    batch = int(_upstream_value(job.prompt, node_id, ("batch_size",)) or 1)
    seed = _upstream_value(job.prompt, node_id, ("noise_seed", "seed", "color")) or 0
    meta = PngInfo()
    meta.add_text("prompt", json.dumps(job.prompt))
    for key, value in (job.extra_data.get("extra_pnginfo") or {}).items():
        meta.add_text(key, json.dumps(value))
    images = []
    for i in range(max(1, min(batch, 8))):
        rng = random.Random(f"{seed}-{i}")
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        name = f"{base}_{counter + i:05d}_.png"
        img = Image.new("RGB", (max(1, int(w / scale)), max(1, int(h / scale))), color)
        img.save(folder / name, "PNG", pnginfo=meta)
        images.append({"filename": name, "subfolder": subfolder, "type": kind})
    return {"images": images}


class _Progress:
    """The per-prompt progress_state registry (only nodes touched in this prompt)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.nodes: dict[str, dict[str, Any]] = {}

    def set(self, node_id: str, value: float, max_: float, state: str) -> dict[str, Any]:
        self.nodes[node_id] = {"value": value, "max": max_, "state": state, "node_id": node_id,
                               "prompt_id": self.job.prompt_id, "display_node_id": node_id,
                               "parent_node_id": None, "real_node_id": node_id}
        return {"prompt_id": self.job.prompt_id, "nodes": json.loads(json.dumps(self.nodes))}


def _sample(double: ComfyDouble, job: Job, node_id: str, progress: _Progress, preview: bool,
            fail: dict[str, Any] | None) -> None:
    steps = _steps(double, job.prompt, node_id)
    for step in range(1, steps + 1):
        double.sleep(double.step_time)
        _check(double, job, node_id, fail, at_step=step)
        double.send(job, "progress_state", progress.set(node_id, step, steps, "running"))
        msg = json.dumps({"type": "progress", "data": {"value": step, "max": steps, "prompt_id": job.prompt_id,
                                                       "node": node_id}})
        for ws in double._targets(job, "preview") if preview else []:
            if ws.supports_preview_metadata:
                meta = json.dumps({"node_id": node_id, "prompt_id": job.prompt_id, "display_node_id": node_id,
                                   "parent_node_id": None, "real_node_id": node_id,
                                   "image_type": "image/jpeg"}).encode()
                ws.send_binary(struct.pack(">II", 4, len(meta)) + meta + double.preview_jpeg())
                ws.send_text(msg)
            else:
                ws.send_text(msg)
                ws.send_binary(struct.pack(">II", 1, 1) + double.preview_jpeg())
        if not preview:
            for ws in double._targets(job, "progress"):
                ws.send_text(msg)
        double._count_and_maybe_drop()
    progress.nodes[node_id]["state"] = "finished"


def _check(double: ComfyDouble, job: Job, node_id: str, fail: dict[str, Any] | None, at_step: int = 0) -> None:
    """Interrupted (flag set by POST /interrupt) or failing (fail_next) at this node or step?"""
    if double.interrupt_flag:
        raise _Stop("interrupt", node_id, {})
    if fail and fail.get("node") == node_id and at_step == 0:
        raise _Stop(fail["kind"], node_id, fail)


def _pick_fail_node(double: ComfyDouble, job: Job, order: list[str]) -> dict[str, Any] | None:
    if not double._fail:
        return None
    fail = double._fail.pop(0)
    types = [job.prompt[n]["class_type"] for n in order]
    if fail["node_type"] in types:
        fail["node"] = order[types.index(fail["node_type"])]
    else:
        samplers = [n for n in order if job.prompt[n]["class_type"] in SAMPLING_TYPES]
        fail["node"] = samplers[0] if samplers else (order[-1] if order else None)
    return fail


def execute(double: ComfyDouble, job: Job) -> None:
    """Run one job, sending the recorded message sequence; fills job.outputs/messages/status_str."""
    double.broadcast(double.status_message())
    pid = job.prompt_id
    keys = cache_keys(job.prompt)
    cached = [n for n in job.prompt if keys[n] in double.cache]
    info = double.object_info()
    order = execution_order(job.prompt, job.outputs_to_execute, set(cached), info)
    fail = _pick_fail_node(double, job, [n for n in order if n not in cached])
    method = job.extra_data.get("preview_method") or "default"
    preview = (double.preview_method if method == "default" else method) not in ("none", "default")
    double.send(job, "execution_start", {"prompt_id": pid, "timestamp": now_ms()}, record=True)
    double.send(job, "execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": now_ms()}, record=True)
    progress = _Progress(job)
    executed: list[str] = []
    try:
        for node_id in order:
            node_type = job.prompt[node_id]["class_type"]
            is_output = info[node_type]["output_node"]
            if node_id in cached:
                if is_output:
                    ui = double.cache[keys[node_id]]
                    job.outputs[node_id] = ui
                    double.send(job, "executed", {"node": node_id, "display_node": node_id, "output": ui,
                                                  "prompt_id": pid})
                    double.send(job, "progress_state", progress.set(node_id, 1, 1, "finished"))
                continue
            double.send(job, "progress_state", progress.set(node_id, 0.0, 1.0, "running"))
            double.send(job, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            _check(double, job, node_id, fail)
            double.sleep(double.node_time)
            double.hold(node_id)
            if node_type in SAMPLING_TYPES:
                _sample(double, job, node_id, progress, preview, fail)
            if node_type in ("LoraLoader", "LoraLoaderModelOnly"):
                _load_lora(double, job.prompt[node_id].get("inputs") or {})
            ui = None
            if is_output:
                ui = _save_images(double, job, node_id)
                job.outputs[node_id] = ui
                double.send(job, "executed", {"node": node_id, "display_node": node_id, "output": ui,
                                              "prompt_id": pid})
            double.cache[keys[node_id]] = ui if ui is not None else True
            executed.append(node_id)
            state = progress.nodes[node_id]
            double.send(job, "progress_state", progress.set(node_id, state["max"], state["max"], "finished"))
    except _Stop as stop:
        _stopped(double, job, stop, executed)
        return
    finally:
        double.cache = {k: v for k, v in double.cache.items() if k in set(keys.values())}
    job.status_str = "success"
    double.send(job, "execution_success", {"prompt_id": pid, "timestamp": now_ms()}, record=True)
    _finish(double, job)


def _stopped(double: ComfyDouble, job: Job, stop: _Stop, executed: list[str]) -> None:
    node = job.prompt[stop.node_id]
    data: dict[str, Any] = {"prompt_id": job.prompt_id, "node_id": stop.node_id, "node_type": node["class_type"],
                            "executed": executed}
    if stop.kind == "interrupt":
        data["timestamp"] = now_ms()
        double.send(job, "execution_interrupted", data, record=True)
    else:
        inputs = {k: [v] for k, v in (node.get("inputs") or {}).items() if not isinstance(v, list)}
        data.update({"exception_message": stop.info["message"], "exception_type": stop.info["exception_type"],
                     "traceback": ['  File "/opt/ComfyUI/execution.py", line 518, in execute\n'
                                   "    output_data, output_ui, has_subgraph, has_pending_tasks = "
                                   "await get_output_data(...)\n"],
                     "current_inputs": inputs, "current_outputs": list(job.prompt), "timestamp": now_ms()})
        double.send(job, "execution_error", data, record=True)
    job.status_str = "error"
    _finish(double, job)


def _load_lora(double: ComfyDouble, inputs: dict[str, Any]) -> None:
    """comfy/lora.py load_lora: a warning per LoRA key that matches nothing (none at strength 0 on both)."""
    if inputs.get("strength_model", 0) == 0 and inputs.get("strength_clip", 0) == 0:
        return   # LoraLoader.load_lora returns the model untouched
    for i in range(double.lora_mismatch.get(str(inputs.get("lora_name")), 0)):
        double.log(f"lora key not loaded: lora_te1_text_model_encoder_layers_{i}_mlp_fc1.lora_down.weight\n")


def _finish(double: ComfyDouble, job: Job) -> None:
    started = next((m[1]["timestamp"] for m in job.messages if m[0] == "execution_start"), now_ms())
    with double.lock:
        double.running = None
        double.history[job.prompt_id] = job
    double.broadcast(double.status_message())
    double.send(job, "executing", {"node": None, "prompt_id": job.prompt_id})
    double.log(f"Prompt executed in {(now_ms() - started) / 1000:.2f} seconds\n")   # main.py prompt_worker

