"""The training config's keys: name, type, sd-scripts option it feeds, and a one-line meaning.

Pure data. Most keys are sd-scripts options under their own name (so the sd-scripts docs apply);
a few are ours (`t5xxl`, `target_steps`, `sample_prompts`, `num_cpu_threads_per_process`) and some
accept `auto` (resolved from the dataset when the plan is built). The order of FIELDS is the order
of the rendered command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# value kinds
MAX_INT = 2**31 - 1               # what torch, numpy and the trainer's argparse all take
MAX_STEPS = 10_000_000
MAX_BATCH = 1024
MIN_SIDE, MAX_SIDE = 64, 8192      # resolution, as in data.toml (orchestrator/dataset/rules.py)

BOOL, INT, FLOAT, STR, CHOICE, INT_OR_FLOAT, LIST, MAP = (
    "bool", "int", "float", "str", "choice", "int_or_float", "list", "map")

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "piecewise_constant")


@dataclass(frozen=True)
class Field:
    """One config key."""

    name: str
    kind: str
    doc: str
    choices: tuple[str, ...] = ()
    nullable: bool = True          # null (YAML `~`/`null`) means "not given to sd-scripts"
    auto: bool = False             # accepts the string "auto"
    minimum: float | None = None
    maximum: float | None = None   # INT fields without one stop at MAX_INT
    option: str | None = ""        # sd-scripts option ("" = same as name; None = ours, rendered specially)
    emit: bool = True              # False: accepted so a rule can explain it, never passed on

    @property
    def flag(self) -> str | None:
        """The `--option` this key renders to, or None when it is not an sd-scripts option."""
        if self.option is None or not self.emit:
            return None
        return "--" + (self.option or self.name)


def _f(name: str, kind: str, doc: str, **kw: Any) -> Field:
    return Field(name, kind, doc, **kw)


FIELDS: tuple[Field, ...] = (
    # what to train from / where to write
    _f("output_name", STR, "file stem of the LoRA (models/loras/<output_name>.safetensors)", nullable=False),
    _f("t5xxl", CHOICE, "which downloaded T5-XXL file to use", choices=("fp16", "fp8"), nullable=False,
       option=None),
    _f("resolution", STR, "training resolution when data.toml sets none ('1024' or '1024,768')"),
    _f("train_batch_size", INT, "images per micro-batch when data.toml sets no batch_size", minimum=1,
       maximum=MAX_BATCH),
    _f("prior_loss_weight", FLOAT, "loss weight of is_reg images", minimum=0),
    _f("save_model_as", CHOICE, "LoRA file format", choices=("safetensors", "ckpt", "pt")),
    # the network
    _f("network_module", STR, "sd-scripts network module", nullable=False),
    _f("network_dim", INT, "LoRA rank", minimum=1, maximum=3072),
    _f("network_alpha", FLOAT, "LoRA alpha (scale = alpha / dim)", minimum=0),
    _f("network_dropout", FLOAT, "dropout on the LoRA down output", minimum=0, maximum=1),
    _f("network_args", MAP, "networks.lora_flux options (key: value)"),
    _f("network_train_unet_only", BOOL, "train only the FLUX transformer (no CLIP-L LoRA)", nullable=False),
    _f("network_train_text_encoder_only", BOOL, "train only the text-encoder LoRA", nullable=False),
    _f("unet_lr", FLOAT, "learning rate of the transformer LoRA (default: learning_rate)", minimum=0),
    _f("text_encoder_lr", FLOAT, "learning rate of the CLIP-L LoRA (default: learning_rate)", minimum=0),
    # optimizer and schedule
    _f("optimizer_type", STR, "optimizer (AdamW, AdamW8bit, Prodigy, Adafactor, ...)"),
    _f("learning_rate", FLOAT, "learning rate (Prodigy: 1.0)", minimum=0),
    _f("optimizer_args", MAP, "optimizer keyword arguments (key: Python literal)"),
    _f("max_grad_norm", FLOAT, "gradient clipping (0 disables)", minimum=0),
    _f("lr_scheduler", CHOICE, "learning-rate schedule", choices=LR_SCHEDULERS),
    _f("lr_warmup_steps", INT_OR_FLOAT, "warm-up: steps (int), ratio of all steps (<1) or 'N%'"),
    _f("lr_scheduler_num_cycles", INT, "restarts of cosine_with_restarts", minimum=1, maximum=MAX_STEPS),
    _f("lr_scheduler_power", FLOAT, "power of the polynomial schedule"),
    _f("lr_scheduler_min_lr_ratio", FLOAT, "floor of the *_min_lr schedules", minimum=0),
    _f("gradient_accumulation_steps", INT, "micro-batches per optimizer step", minimum=1, maximum=MAX_BATCH,
       nullable=False),
    _f("gradient_checkpointing", BOOL, "recompute activations (needed for FLUX on any card)", nullable=False),
    # length
    _f("max_train_epochs", INT, "epochs; auto = target_steps worth of epochs", minimum=1, maximum=MAX_STEPS,
       auto=True),
    _f("target_steps", INT, "optimizer steps wanted when max_train_epochs is auto; auto = each training image "
       "seen ~100 times (500-2000 samples)", minimum=1, maximum=MAX_STEPS, auto=True, option=None),
    _f("max_train_steps", INT, "optimizer steps when max_train_epochs is null", minimum=1,
       maximum=MAX_STEPS),
    _f("seed", INT, "random seed (null: a new one each run)", minimum=0, maximum=2**32 - 1),
    # precision and memory
    _f("mixed_precision", CHOICE, "compute precision, given to sd-scripts itself", choices=("no", "fp16", "bf16"),
       nullable=False),
    _f("full_bf16", BOOL, "LoRA weights and gradients in bf16", nullable=False),
    _f("full_fp16", BOOL, "LoRA weights and gradients in fp16", nullable=False),
    _f("fp8_base", BOOL, "FLUX weights stored as float8 (halves their memory)", nullable=False),
    _f("fp8_base_unet", BOOL, "fp8 for FLUX only, text encoders stay bf16", nullable=False),
    _f("blocks_to_swap", INT, "transformer blocks swapped CPU<->GPU (0-35)", minimum=0),
    _f("cpu_offload_checkpointing", BOOL, "offload checkpointed activations to CPU", nullable=False),
    _f("torch_compile", BOOL, "torch.compile the model (~5 min to compile; pays off after ~600 micro-steps)",
       nullable=False),
    _f("dynamo_backend", CHOICE, "torch.compile backend", choices=("inductor", "eager", "aot_eager", "cudagraphs")),
    _f("highvram", BOOL, "do not empty the CUDA cache while caching latents", nullable=False),
    _f("cache_latents", BOOL, "encode images with the AE once", nullable=False),
    _f("cache_latents_to_disk", BOOL, "keep those latents next to the images (*_flux.npz)", nullable=False),
    _f("cache_text_encoder_outputs", BOOL, "encode captions once (T5 leaves the GPU)", nullable=False),
    _f("cache_text_encoder_outputs_to_disk", BOOL, "keep those outputs next to the images (*_flux_te.npz)",
       nullable=False),
    _f("vae_batch_size", INT, "images per AE batch while caching", minimum=1, maximum=MAX_BATCH),
    _f("text_encoder_batch_size", INT, "captions per batch while caching", minimum=1, maximum=MAX_BATCH),
    _f("max_data_loader_n_workers", INT, "DataLoader workers", minimum=0, maximum=256),
    _f("persistent_data_loader_workers", BOOL, "keep DataLoader workers between epochs", nullable=False),
    # FLUX
    _f("guidance_scale", FLOAT, "guidance fed to FLUX.1-dev while training (1.0 for dev)", minimum=0,
       maximum=100),
    _f("timestep_sampling", CHOICE, "how noise levels are drawn",
       choices=("sigma", "uniform", "sigmoid", "shift", "flux_shift")),
    _f("sigmoid_scale", FLOAT, "spread of the sigmoid/shift sampling"),
    _f("discrete_flow_shift", FLOAT, "shift of timestep_sampling=shift"),
    _f("model_prediction_type", CHOICE, "how predictions are read", choices=("raw", "additive", "sigma_scaled")),
    _f("apply_t5_attn_mask", BOOL, "mask T5 padding", nullable=False),
    _f("t5xxl_max_token_length", INT, "T5 sequence length (512 for dev)", minimum=1, maximum=512),
    # saving, resuming, samples, logs
    _f("save_precision", CHOICE, "dtype of saved LoRAs (null: fp32)", choices=("float", "fp16", "bf16")),
    _f("save_every_n_epochs", INT, "intermediate LoRA every N epochs; auto = about 4 over the run", minimum=1,
       auto=True),
    _f("save_last_n_epochs", INT, "keep only the newest N intermediate LoRAs", minimum=1),
    _f("save_state", BOOL, "save optimizer state with every save (needed for --resume)", nullable=False),
    _f("save_state_on_train_end", BOOL, "save a state dir at the end only", nullable=False),
    _f("save_last_n_epochs_state", INT, "keep only the newest N state dirs", minimum=1),
    _f("sample_prompts", LIST, "prompts rendered during training: a list, a .txt/.toml/.json file, or auto "
       "(one per concept from its class_tokens)", auto=True, option=None),
    _f("sample_every_n_epochs", INT, "render the samples every N epochs; auto = at every save", minimum=1,
       auto=True),
    _f("sample_every_n_steps", INT, "render the samples every N steps", minimum=1),
    _f("sample_at_first", BOOL, "render the samples before training", nullable=False),
    _f("logging_dir", STR, "TensorBoard events, a folder inside the run folder (null: none)", option=None),
    _f("log_with", CHOICE, "tracker", choices=("tensorboard", "wandb", "all")),
    _f("num_cpu_threads_per_process", INT, "accelerate's CPU threads per process", minimum=1, maximum=1024,
       nullable=False,
       option=None),
    # accepted only to be explained by a rule (kohya.py), never passed on
    _f("sdpa", BOOL, "no effect for FLUX", nullable=False, emit=False),
    _f("xformers", BOOL, "no effect for FLUX", nullable=False, emit=False),
    _f("mem_eff_attn", BOOL, "no effect for FLUX", nullable=False, emit=False),
    _f("fused_backward_pass", BOOL, "no effect in the LoRA trainer", nullable=False, emit=False),
    _f("split_mode", BOOL, "deprecated: blocks_to_swap 18", nullable=False, emit=False),
    _f("debug_dataset", BOOL, "shows the dataset and exits without training", nullable=False, emit=False),
    _f("deepspeed", BOOL, "DeepSpeed (not installed in the image)", nullable=False, emit=False),
    _f("clip_skip", INT, "SD-only, ignored for FLUX", emit=False),
    _f("max_token_length", INT, "SD-only, ignored for FLUX (use t5xxl_max_token_length)", emit=False),
    _f("v2", BOOL, "SD-only, ignored for FLUX", nullable=False, emit=False),
    _f("v_parameterization", BOOL, "SD-only, ignored for FLUX", nullable=False, emit=False),
    _f("sample_sampler", STR, "ignored for FLUX (its own Euler sampler is used)", emit=False),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# Defaults when no preset sets a key: all flags off, all values unset (sd-scripts' own default).
BASE: dict[str, Any] = {f.name: (False if f.kind == BOOL and not f.nullable else None) for f in FIELDS}
BASE.update({"output_name": "flux_dreambooth", "t5xxl": "fp16", "network_module": "networks.lora_flux",
             "gradient_accumulation_steps": 1, "mixed_precision": "bf16", "num_cpu_threads_per_process": 2})

# network_args keys read by networks.lora_flux (any other key is silently ignored by sd-scripts).
NETWORK_BOOL_ARGS = ("split_qkv", "train_t5xxl", "verbose")
NETWORK_FLOAT_ARGS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
                      "rank_dropout", "module_dropout", "ggpo_sigma", "ggpo_beta")
NETWORK_DIM_ARGS = ("img_attn_dim", "txt_attn_dim", "img_mlp_dim", "txt_mlp_dim", "img_mod_dim", "txt_mod_dim",
                    "single_dim", "single_mod_dim")
NETWORK_OTHER_ARGS = ("train_blocks", "in_dims", "train_double_block_indices", "train_single_block_indices",
                      "network_reg_dims", "network_reg_lrs", "conv_dim", "conv_alpha")
NETWORK_ARGS = NETWORK_BOOL_ARGS + NETWORK_FLOAT_ARGS + NETWORK_DIM_ARGS + NETWORK_OTHER_ARGS
