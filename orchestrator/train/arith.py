"""Numbers of a run, before it starts: steps (README §2/§4 arithmetic), `auto` values, LoRA size, outputs.

Pure functions over resolved config values and dataset counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SD_SCRIPTS_DEFAULT_STEPS = 1600

# FLUX.1 dims (fixed in sd-scripts' flux_utils): hidden 3072, MLP ratio 4, 19 double + 38 single blocks.
HIDDEN, MLP = 3072, 4 * 3072
DOUBLE_BLOCKS, SINGLE_BLOCKS = 19, 38
# (in, out) of each LoRA'd linear, keyed by the network_args per-layer rank that controls it.
DOUBLE_STREAM = {  # per stream (img / txt) of a double block
    "mod": [(HIDDEN, 6 * HIDDEN)],                          # {img,txt}_mod_lin
    "attn": [(HIDDEN, 3 * HIDDEN), (HIDDEN, HIDDEN)],       # _attn_qkv, _attn_proj
    "mlp": [(HIDDEN, MLP), (MLP, HIDDEN)],                  # _mlp_0, _mlp_2
}
SINGLE = {
    "single_dim": [(HIDDEN, 3 * HIDDEN + MLP), (HIDDEN + MLP, HIDDEN)],   # linear1, linear2
    "single_mod_dim": [(HIDDEN, 3 * HIDDEN)],                           # modulation_lin
}
IN_LAYERS = [[(64, HIDDEN)], [(256, HIDDEN), (HIDDEN, HIDDEN)], [(768, HIDDEN), (HIDDEN, HIDDEN)],
             [(256, HIDDEN), (HIDDEN, HIDDEN)], [(4096, HIDDEN)]]            # img, time, vector, guidance, txt
CLIP_L_LAYER = [(768, 768)] * 4 + [(768, 3072), (3072, 768)]                # q k v out, fc1, fc2; x12
T5_LAYER = [(4096, 4096)] * 4 + [(4096, 10240), (4096, 10240), (10240, 4096)]  # q k v o, wi_0 wi_1 wo; x24
DTYPE_BYTES = {"float": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class Steps:
    """sd-scripts' step arithmetic for one run."""

    image_steps: int          # training images x repeats per epoch
    batches_per_epoch: int    # sum over buckets of ceil(images / batch size)
    processes: int            # GPUs (data-parallel processes)
    accumulation: int
    steps_per_epoch: int      # ceil(batches / processes / accumulation)
    epochs: int
    total_steps: int          # optimizer steps (the progress bar's total)
    batch_size: int

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.processes * self.accumulation


def auto_target_samples(train_images: int) -> int:
    """Image-samples a run should see: about 100 per training image, between 500 and 2000."""
    return max(500, min(2000, 100 * train_images))


def compute_steps(values: Mapping[str, Any], *, image_steps: int, batches_per_epoch: int, train_images: int,
                  processes: int) -> Steps:
    """Steps with `auto` epochs resolved: epochs x ceil(batches / processes / accumulation) (README §1.8, §4)."""
    accum = int(values["gradient_accumulation_steps"])
    per_epoch = -(-batches_per_epoch // (processes * accum)) if batches_per_epoch else 0
    epochs_v = values.get("max_train_epochs")
    if epochs_v == "auto":
        target = values.get("target_steps")
        if target in (None, "auto"):   # the same exposure whatever the batch, accumulation or GPU count
            epochs = max(1, round(auto_target_samples(train_images) / image_steps)) if image_steps else 1
        else:
            epochs = max(1, round(int(target) / per_epoch)) if per_epoch else 1
        total = epochs * per_epoch
    elif epochs_v is not None:
        epochs = int(epochs_v)
        total = epochs * per_epoch
    else:
        total = int(values.get("max_train_steps") or SD_SCRIPTS_DEFAULT_STEPS)
        epochs = -(-total // per_epoch) if per_epoch else 1
    return Steps(image_steps, batches_per_epoch, processes, accum, per_epoch, epochs, total,
                 int(values.get("train_batch_size") or 1))


def resolve_auto(values: Mapping[str, Any], steps: Steps) -> dict[str, Any]:
    """The concrete values for keys set to `auto` (epochs, saves, samples)."""
    out: dict[str, Any] = {}
    if values.get("max_train_epochs") == "auto":
        out["max_train_epochs"] = steps.epochs
    if values.get("target_steps") == "auto":
        out["target_steps"] = steps.total_steps if values.get("max_train_epochs") == "auto" else None
    every = values.get("save_every_n_epochs")
    if every == "auto":
        every = -(-steps.epochs // 4) if steps.epochs >= 2 else None
        out["save_every_n_epochs"] = every
    if values.get("sample_every_n_epochs") == "auto":
        out["sample_every_n_epochs"] = every if isinstance(every, int) else max(1, -(-steps.epochs // 4))
    return out


def expected_outputs(values: Mapping[str, Any], epochs: int) -> tuple[str, ...]:
    """LoRA files sd-scripts writes into output_dir: epoch saves (before the last epoch), then the final."""
    name, ext = values["output_name"], values.get("save_model_as") or "safetensors"
    every = values.get("save_every_n_epochs")
    saves = [f"{name}-{e:06d}.{ext}" for e in range(every, epochs, every)] if isinstance(every, int) else []
    return (*saves, f"{name}.{ext}")


def state_dirs(values: Mapping[str, Any], epochs: int) -> tuple[str, ...]:
    """State dirs written with save_state (epoch saves then the final), newest kept per save_last_n_epochs_state."""
    name = values["output_name"]
    if not values.get("save_state"):
        return (f"{name}-state",) if values.get("save_state_on_train_end") else ()
    every = values.get("save_every_n_epochs")
    dirs = [f"{name}-{e:06d}-state" for e in range(every, epochs, every)] if isinstance(every, int) else []
    keep = values.get("save_last_n_epochs_state")
    if keep:
        dirs = dirs[-int(keep):]
    return (*dirs, f"{name}-state")


@dataclass(frozen=True)
class LoraSize:
    """Expected size of one saved LoRA file."""

    modules: int
    parameters: int
    dtype: str        # float | fp16 | bf16
    bytes: int


def lora_size(values: Mapping[str, Any]) -> LoraSize:
    """Parameters of the LoRA networks.lora_flux builds (README §5), at the precision it is saved in."""
    dim = int(values.get("network_dim") or 4)
    net = values.get("network_args") or {}
    modules, params = 0, 0

    def add(shapes: list[tuple[int, int]], rank: int, times: int) -> None:
        nonlocal modules, params
        if rank > 0:
            modules += len(shapes) * times
            params += times * sum(rank * (i + o) + 1 for i, o in shapes)   # down + up + alpha

    def rank_of(key: str) -> int:
        return _whole(net.get(key), dim)

    if not values.get("network_train_text_encoder_only"):
        blocks = net.get("train_blocks") or "all"
        n_double = _count(net.get("train_double_block_indices"), DOUBLE_BLOCKS) if blocks != "single" else 0
        n_single = _count(net.get("train_single_block_indices"), SINGLE_BLOCKS) if blocks != "double" else 0
        for stream in ("img", "txt"):
            for part, shapes in DOUBLE_STREAM.items():
                add(shapes, rank_of(f"{stream}_{part}_dim"), n_double)
        for key, shapes in SINGLE.items():
            add(shapes, rank_of(key), n_single)
        in_dims = net.get("in_dims")
        if in_dims is not None:
            raw = in_dims if isinstance(in_dims, (list, tuple)) else str(in_dims).strip("[]").split(",")
            ranks = [_whole(x, 0) for x in raw]
            for shapes, r in zip(IN_LAYERS, ranks):
                add(shapes, r, 1)
    if not values.get("network_train_unet_only"):
        add(CLIP_L_LAYER, dim, 12)
        if net.get("train_t5xxl") in (True, "True"):
            add(T5_LAYER, dim, 24)
    dtype = values.get("save_precision") or (
        "bf16" if values.get("full_bf16") else "fp16" if values.get("full_fp16") else "float")
    header = 3 * modules * 110 + 16_000   # safetensors JSON header + sd-scripts metadata, roughly
    return LoraSize(modules, params, dtype, params * DTYPE_BYTES[dtype] + header)


def _count(indices: Any, total: int) -> int:
    if indices in (None, "all"):
        return total
    if indices == "none":
        return 0
    chosen: set[int] = set()
    for part in str(indices).split(","):
        lo, _, hi = part.strip().partition("-")
        first, last = _whole(lo, -1), _whole(hi or lo, -1)
        if first < 0 or last < 0:   # malformed: the rules report it; count every block meanwhile
            return total
        chosen.update(range(first, min(last, total) + 1))
    return len([i for i in chosen if i < total])


def _whole(value: Any, default: int) -> int:
    """A rank or index as networks.lora_flux reads it; `default` for what the rules reject as malformed."""
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() and len(text) <= 9 else default


# Measured on one H100 at 1024 px with the real sd-scripts (../PERFORMANCE.md): seconds.
H100 = {"start": 61.0, "compile": 293.0, "micro": 4.61 / 4, "micro_compiled": 2.71 / 4,
        "save_per_gb": 19 / 5.07, "save_per_gb_compiled": 15 / 5.07, "sample_step": 0.174, "sample_fixed": 3.0}


def estimate_h100_seconds(values: Mapping[str, Any], steps: Steps, lora: LoraSize, *, saves: int,
                          sample_events: int, prompts: int) -> float:
    """Rough wall time of the run on one H100 at 1024 px, from measured figures (memory presets and
    other GPUs are slower; several GPUs divide the step part)."""
    compiled = bool(values.get("torch_compile"))
    micro = H100["micro_compiled" if compiled else "micro"] * steps.batch_size
    train = steps.total_steps * steps.accumulation * micro
    save = saves * lora.bytes / 1e9 * H100["save_per_gb_compiled" if compiled else "save_per_gb"]
    sample = sample_events * prompts * (20 * H100["sample_step"] + H100["sample_fixed"])
    return H100["start"] + (H100["compile"] if compiled else 0.0) + train + save + sample
