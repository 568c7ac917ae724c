"""Node schemas and prompt validation of the ComfyUI test double (facts of ComfyUI 0.8.0).

`object_info(models, input_files)` builds `/object_info` for the node types our FLUX workflows and
the recorded error cases use; `validate(prompt, info)` answers POST /prompt like the real
server: the same error types, messages, details and extra_info, and which outputs are good.
"""

from __future__ import annotations

from typing import Any

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m",
            "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm", "ipndm", "deis", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]
CLIP_TYPES = ["stable_diffusion", "sd3", "flux", "hunyuan_video", "hidream"]
SAMPLING_TYPES = frozenset({"KSampler", "SamplerCustomAdvanced"})


def _int(default: int, lo: int, hi: int, step: int | None = None, **extra: Any) -> list[Any]:
    opts: dict[str, Any] = {"default": default, "min": lo, "max": hi}
    if step is not None:
        opts["step"] = step
    opts.update(extra)
    return ["INT", opts]


def _float(default: float, lo: float, hi: float, step: float) -> list[Any]:
    return ["FLOAT", {"default": default, "min": lo, "max": hi, "step": step}]


SEED = _int(0, 0, 18446744073709551615, control_after_generate=True)
SIZE8 = _int(1024, 16, 16384, 8)
STRENGTH = _float(1.0, -100.0, 100.0, 0.01)


def _node(name: str, display: str | None, category: str, required: dict[str, list[Any]],
          outputs: list[tuple[str, str]], *, optional: dict[str, list[Any]] | None = None,
          output_node: bool = False, hidden: dict[str, str] | None = None) -> dict[str, Any]:
    inp: dict[str, Any] = {"required": required}
    order: dict[str, list[str]] = {"required": list(required)}
    if optional:
        inp["optional"], order["optional"] = optional, list(optional)
    if hidden:
        inp["hidden"], order["hidden"] = hidden, list(hidden)
    return {"input": inp, "input_order": order, "output": [t for t, _ in outputs],
            "output_is_list": [False] * len(outputs), "output_name": [n for _, n in outputs], "name": name,
            "display_name": display, "description": "", "python_module": "nodes", "category": category,
            "output_node": output_node}


TOOLTIPS = {  # the ones that show up in recorded error bodies (extra_info.input_config)
    ("CheckpointLoaderSimple", "ckpt_name"): "The name of the checkpoint (model) to load.",
    ("VAEDecode", "samples"): "The latent to be decoded.",
    ("VAEDecode", "vae"): "The VAE model used for decoding the latent.",
    ("SaveImage", "images"): "The images to save.",
    ("SaveImage", "filename_prefix"): "The prefix for the file to save. This may include formatting information "
                                      "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values "
                                      "from nodes.",
    ("EmptyLatentImage", "width"): "The width of the latent images in pixels.",
    ("EmptyLatentImage", "height"): "The height of the latent images in pixels.",
    ("EmptyLatentImage", "batch_size"): "The number of latent images in the batch.",
    ("LoraLoader", "lora_name"): "The name of the LoRA.",
    ("CLIPTextEncode", "text"): "The text to be encoded.",
}


def object_info(models: dict[str, list[str]], input_files: list[str]) -> dict[str, Any]:
    """`GET /object_info` of the double: ~20 classes, model combos from `models`."""
    def files(folder: str, extra: tuple[str, ...] = ()) -> list[Any]:
        return [sorted(models.get(folder, [])) + list(extra), {}]

    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    nodes = [
        _node("CheckpointLoaderSimple", "Load Checkpoint", "loaders", {"ckpt_name": files("checkpoints")},
              [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
        _node("UNETLoader", "Load Diffusion Model", "advanced/loaders",
              {"unet_name": files("diffusion_models"), "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e5m2"], {}]},
              [("MODEL", "MODEL")]),
        _node("DualCLIPLoader", "DualCLIPLoader", "advanced/loaders",
              {"clip_name1": files("text_encoders"), "clip_name2": files("text_encoders"),
               "type": [CLIP_TYPES, {}]}, [("CLIP", "CLIP")],
              optional={"device": [["default", "cpu"], {"advanced": True}]}),
        _node("VAELoader", "Load VAE", "loaders", {"vae_name": files("vae", ("pixel_space",))}, [("VAE", "VAE")]),
        _node("LoraLoader", "Load LoRA", "loaders",
              {"model": ["MODEL"], "clip": ["CLIP"], "lora_name": files("loras"), "strength_model": STRENGTH,
               "strength_clip": STRENGTH}, [("MODEL", "MODEL"), ("CLIP", "CLIP")]),
        _node("LoraLoaderModelOnly", "LoraLoaderModelOnly", "loaders",
              {"model": ["MODEL"], "lora_name": files("loras"), "strength_model": STRENGTH}, [("MODEL", "MODEL")]),
        _node("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
              {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
              [("CONDITIONING", "CONDITIONING")]),
        _node("FluxGuidance", None, "advanced/conditioning/flux",
              {"conditioning": ["CONDITIONING"], "guidance": _float(3.5, 0.0, 100.0, 0.1)},
              [("CONDITIONING", "CONDITIONING")]),
        _node("ModelSamplingFlux", "ModelSamplingFlux", "advanced/model",
              {"model": ["MODEL"], "max_shift": _float(1.15, 0.0, 100.0, 0.01),
               "base_shift": _float(0.5, 0.0, 100.0, 0.01), "width": SIZE8, "height": SIZE8}, [("MODEL", "MODEL")]),
        _node("BasicGuider", None, "sampling/custom_sampling/guiders",
              {"model": ["MODEL"], "conditioning": ["CONDITIONING"]}, [("GUIDER", "GUIDER")]),
        _node("KSamplerSelect", None, "sampling/custom_sampling/samplers",
              {"sampler_name": ["COMBO", {"multiselect": False, "options": SAMPLERS}]}, [("SAMPLER", "SAMPLER")]),
        _node("BasicScheduler", None, "sampling/custom_sampling/schedulers",
              {"model": ["MODEL"], "scheduler": ["COMBO", {"multiselect": False, "options": SCHEDULERS}],
               "steps": _int(20, 1, 10000), "denoise": _float(1.0, 0.0, 1.0, 0.01)}, [("SIGMAS", "SIGMAS")]),
        _node("RandomNoise", None, "sampling/custom_sampling/noise", {"noise_seed": SEED}, [("NOISE", "NOISE")]),
        _node("SamplerCustomAdvanced", None, "sampling/custom_sampling",
              {"noise": ["NOISE"], "guider": ["GUIDER"], "sampler": ["SAMPLER"], "sigmas": ["SIGMAS"],
               "latent_image": ["LATENT"]}, [("LATENT", "output"), ("LATENT", "denoised_output")]),
        _node("KSampler", "KSampler", "sampling",
              {"model": ["MODEL"], "seed": SEED, "steps": _int(20, 1, 10000),
               "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
               "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}], "positive": ["CONDITIONING"],
               "negative": ["CONDITIONING"], "latent_image": ["LATENT"], "denoise": _float(1.0, 0.0, 1.0, 0.01)},
              [("LATENT", "LATENT")]),
        _node("EmptyLatentImage", "Empty Latent Image", "latent",
              {"width": _int(512, 16, 16384, 8), "height": _int(512, 16, 16384, 8), "batch_size": _int(1, 1, 4096)},
              [("LATENT", "LATENT")]),
        _node("EmptySD3LatentImage", None, "latent/sd3",
              {"width": _int(1024, 16, 16384, 16), "height": _int(1024, 16, 16384, 16),
               "batch_size": _int(1, 1, 4096)}, [("LATENT", "LATENT")]),
        _node("VAEDecode", "VAE Decode", "latent", {"samples": ["LATENT"], "vae": ["VAE"]}, [("IMAGE", "IMAGE")]),
        _node("EmptyImage", "EmptyImage", "image",
              {"width": _int(512, 1, 16384, 1), "height": _int(512, 1, 16384, 1), "batch_size": _int(1, 1, 4096),
               "color": _int(0, 0, 16777215, 1, display="color")}, [("IMAGE", "IMAGE")]),
        _node("ImageScale", "Upscale Image", "image/upscaling",
              {"image": ["IMAGE"], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
               "width": _int(512, 0, 16384, 1), "height": _int(512, 0, 16384, 1),
               "crop": [["disabled", "center"], {}]}, [("IMAGE", "IMAGE")]),
        _node("LoadImage", "Load Image", "image", {"image": [sorted(input_files), {"image_upload": True}]},
              [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
        _node("SaveImage", "Save Image", "image",
              {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [],
              output_node=True, hidden=hidden),
        _node("PreviewImage", "Preview Image", "image", {"images": ["IMAGE"]}, [], output_node=True, hidden=hidden),
    ]
    for (cls, name), tip in TOOLTIPS.items():
        node = next(n for n in nodes if n["name"] == cls)
        spec = node["input"]["required"][name]
        node["input"]["required"][name] = [spec[0], {**(spec[1] if len(spec) > 1 else {}), "tooltip": tip}]
    return {n["name"]: n for n in nodes}


def _error(type_: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def _traceback(line: str) -> list[str]:
    return ['  File "/opt/ComfyUI/execution.py", line 1043, in validate_prompt\n'
            "    m = await validate_inputs(prompt_id, prompt, o, validated)\n",
            f'  File "/opt/ComfyUI/execution.py", line 818, in validate_inputs\n    {line}\n']


def _check_value(name: str, spec: list[Any], value: Any) -> list[dict[str, Any]]:
    type_, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    base = {"input_name": name, "input_config": spec, "received_value": value}
    combo = type_ if isinstance(type_, list) else opts.get("options") if type_ == "COMBO" else None
    if combo is not None:
        if value in combo:
            return []
        shown, config = (f"(list of length {len(combo)})", None) if len(combo) > 20 else (str(combo), spec)
        return [_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                       {**base, "input_config": config})]
    convert = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(type_)
    if convert is None:
        return []
    try:
        value = convert(value)
    except (ValueError, TypeError) as e:
        return [_error("invalid_input_type", f"Failed to convert an input value to a {type_} value",
                       f"{name}, {value}, {e}", {**base, "exception_message": str(e)})]
    if "min" in opts and value < opts["min"]:
        return [_error("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}", name, base)]
    if "max" in opts and value > opts["max"]:
        return [_error("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}", name, base)]
    return []


def _validate_node(prompt: dict[str, Any], info: dict[str, Any], node_id: str,
                   done: dict[str, tuple[bool, list[dict[str, Any]]]]) -> bool:
    if node_id in done:
        return done[node_id][0]
    node = prompt[node_id]
    schema = info[node["class_type"]]
    inputs = node.get("inputs") or {}
    errors: list[dict[str, Any]] = []
    valid = True
    specs = {**schema["input"]["required"], **schema["input"].get("optional", {})}
    done[node_id] = (True, [])   # guards against cycles
    for name, spec in specs.items():
        required = name in schema["input"]["required"]
        if name not in inputs:
            if required:
                errors.append(_error("required_input_missing", "Required input is missing", name,
                                     {"input_name": name}))
            continue
        value = inputs[name]
        if isinstance(value, list):
            if len(value) != 2:
                errors.append(_error("bad_linked_input",
                                     "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
                                     {"input_name": name, "input_config": spec, "received_value": value}))
                continue
            src_id, slot = str(value[0]), value[1]
            if src_id not in prompt:
                done[node_id] = (False, [_error("exception_during_validation", "Exception when validating node",
                                                f"'{src_id}'", {"exception_type": "KeyError", "traceback":
                                                _traceback("o_class_type = prompt[o_id]['class_type']")})])
                return False
            outputs = info[prompt[src_id]["class_type"]]["output"]
            if not isinstance(slot, int) or not 0 <= slot < len(outputs):
                done[node_id] = (False, [_error("exception_during_validation", "Exception when validating node",
                                                "tuple index out of range", {"exception_type": "IndexError",
                                                "traceback": _traceback("received_type = r[val[1]]")})])
                return False
            received = outputs[slot]
            if received != spec[0] and "*" not in (received, spec[0]):
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{name}, received_type({received}) mismatch input_type({spec[0]})",
                                     {"input_name": name, "input_config": spec, "received_type": received,
                                      "linked_node": value}))
                continue
            if not _validate_node(prompt, info, src_id, done):
                valid = False
            continue
        if node["class_type"] == "LoadImage" and name == "image":   # LoadImage.VALIDATE_INPUTS
            if value not in spec[0]:
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     f"image - Invalid image file: {value}", {"input_name": "image"}))
            continue
        errors.extend(_check_value(name, spec, value))
    ok = valid and not errors
    done[node_id] = (ok, errors)
    return ok


def validate(prompt: dict[str, Any], info: dict[str, Any]) -> tuple[int, dict[str, Any], list[str]]:
    """(HTTP status, error body or node_errors, good output ids) as ComfyUI's validate_prompt decides."""
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return 400, {"error": _error("invalid_prompt", "Cannot execute because a node is missing the "
                                         "class_type property.", f"Node ID '#{node_id}'"), "node_errors": {}}, []
        if node["class_type"] not in info:
            return 400, {"error": _error("invalid_prompt", f"Cannot execute because node {node['class_type']} "
                                         "does not exist.", f"Node ID '#{node_id}'"), "node_errors": {}}, []
    outputs = [i for i, n in prompt.items() if info[n["class_type"]]["output_node"]]
    if not outputs:
        return 400, {"error": _error("prompt_no_outputs", "Prompt has no outputs", ""), "node_errors": {}}, []
    done: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    good: list[str] = []
    own_errors: list[dict[str, Any]] = []
    node_errors: dict[str, Any] = {}
    for out in outputs:
        if _validate_node(prompt, info, out, done):
            good.append(out)
            continue
        own_errors.extend(done[out][1])
        for node_id, (ok, reasons) in done.items():
            if not ok and reasons:
                entry = node_errors.setdefault(node_id, {"errors": reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for e in own_errors)
        return 400, {"error": _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                     details), "node_errors": node_errors}, []
    return 200, node_errors, good


def execution_order(prompt: dict[str, Any], outputs: list[str], cached: set[str],
                    info: dict[str, Any]) -> list[str]:
    """The order ComfyUI runs nodes in: its topological sort with the "ux friendly" pick of the next node.

    Cached nodes are not walked into (their upstream does not run); a cached output node stays in
    the list (it re-sends `executed`).
    """
    pending: dict[str, bool] = {}
    blocking: dict[str, dict[str, bool]] = {}
    block_count: dict[str, int] = {}

    def links(node_id: str) -> list[str]:
        return [str(v[0]) for v in (prompt[node_id].get("inputs") or {}).values()
                if isinstance(v, list) and len(v) == 2 and str(v[0]) in prompt]

    def add(root: str) -> None:
        stack, found = [root], []
        while stack:
            node_id = stack.pop()
            if node_id in pending:
                continue
            pending[node_id], block_count[node_id], blocking[node_id] = True, 0, {}
            for src in links(node_id):
                if src not in cached:
                    stack.append(src)
                found.append((src, node_id))
        for src, dst in found:
            if src in cached:
                continue
            add(src)
            if dst not in blocking[src]:
                blocking[src][dst] = True
                block_count[dst] += 1

    def is_output(node_id: str) -> bool:
        return bool(info[prompt[node_id]["class_type"]]["output_node"])

    def pick(ready: list[str]) -> str:
        for node_id in ready:
            if is_output(node_id):
                return node_id
        for node_id in ready:
            if any(is_output(b) for b in blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(is_output(b2) for b in blocking[node_id] for b2 in blocking[b]):
                return node_id
        return ready[0]

    for out in outputs:
        add(out)
    order: list[str] = []
    while pending:
        ready = [n for n in pending if block_count[n] == 0]
        node_id = pick(ready)
        order.append(node_id)
        for blocked in blocking[node_id]:
            block_count[blocked] -= 1
        del pending[node_id]
    return order


def cache_keys(prompt: dict[str, Any]) -> dict[str, str]:
    """A key per node from its class and inputs, links replaced by the upstream key (like ComfyUI's cache)."""
    keys: dict[str, str] = {}

    def key(node_id: str, stack: tuple[str, ...] = ()) -> str:
        if node_id in keys:
            return keys[node_id]
        node = prompt[node_id]
        parts: list[tuple[Any, ...]] = []
        for name, value in sorted((node.get("inputs") or {}).items()):
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt and value[0] not in stack:
                parts.append((name, key(str(value[0]), stack + (node_id,)), value[1]))
            else:
                parts.append((name, repr(value)))
        keys[node_id] = repr((node["class_type"], parts))
        return keys[node_id]

    for node_id in prompt:
        key(node_id)
    return keys
