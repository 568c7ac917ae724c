"""What sd-scripts (commit 48d368fa) aborts on, silently ignores, or exits 0 without training for.

Each rule is a small function over the resolved config (plus the GPU count and the rendered argv)
that yields `Check`s only when something is wrong. `RULES` is the list `check_rules` runs; tests
trigger every rule by name. Facts: ../shared/kohya/README.md §1-§4.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.train.checks import ERROR, WARN, Check
from orchestrator.train.schema import (NETWORK_ARGS, NETWORK_BOOL_ARGS, NETWORK_DIM_ARGS, NETWORK_FLOAT_ARGS)

# sd-scripts' own optimizer names (case-insensitive); anything else is torch.optim.<Name> or a module path.
OPTIMIZERS = ("adamw", "adamw8bit", "pagedadamw8bit", "pagedadamw", "pagedadamw32bit", "lion", "lion8bit",
              "pagedlion8bit", "sgdnesterov", "sgdnesterov8bit", "prodigy", "adafactor", "adamwschedulefree",
              "radamschedulefree", "sgdschedulefree")
NOT_INSTALLED_OPTIMIZERS = ("dadaptation", "dadaptadam", "dadaptadagrad", "dadaptadan", "dadaptadanip",
                            "dadaptlion", "dadaptsgd")
TORCH_OPTIMIZERS = ("Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "ASGD", "LBFGS", "NAdam",
                    "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam")
SD_SCRIPTS_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"   # the commit these rules were read from
MAX_BLOCKS_TO_SWAP = 35
PROMPT_FILE_EXTENSIONS = (".txt", ".toml", ".json")
REQUIRED_OPTIONS = ("--pretrained_model_name_or_path", "--clip_l", "--t5xxl", "--ae", "--dataset_config",
                    "--output_dir", "--network_module")

# Keys accepted only so we can say why they are not passed on: (status, reason, hint).
NOT_PASSED_ON: dict[str, tuple[str, str, str]] = {
    "sdpa": (WARN, "sdpa has no effect for FLUX: the model always uses PyTorch SDPA", "remove it"),
    "xformers": (WARN, "xformers has no effect for FLUX (and is not installed in the image)", "remove it"),
    "mem_eff_attn": (WARN, "mem_eff_attn has no effect for FLUX", "remove it"),
    "fused_backward_pass": (WARN, "fused_backward_pass has no effect in the LoRA trainer (it is only checked)",
                            "remove it"),
    "split_mode": (ERROR, "split_mode is deprecated: sd-scripts turns it into blocks_to_swap 18",
                   "set blocks_to_swap: 18 instead"),
    "debug_dataset": (ERROR, "debug_dataset shows the dataset and exits without training",
                      "remove it; `dataset check` shows the dataset"),
    "deepspeed": (ERROR, "deepspeed is not installed in the training image", "remove it; multi-GPU uses --gpus N"),
    "clip_skip": (WARN, "clip_skip is an SD option that FLUX ignores", "remove it"),
    "max_token_length": (WARN, "max_token_length is an SD option that FLUX ignores",
                         "use t5xxl_max_token_length"),
    "v2": (WARN, "v2 is an SD option that FLUX ignores", "remove it"),
    "v_parameterization": (WARN, "v_parameterization is an SD option that FLUX ignores", "remove it"),
    "sample_sampler": (WARN, "sample_sampler is ignored for FLUX (its own Euler sampler is used)", "remove it"),
}


@dataclass(frozen=True)
class RuleInput:
    """What the rules look at."""

    values: Mapping[str, Any]
    processes: int = 1
    argv: tuple[str, ...] | None = None             # rendered trainer args (None: not rendered yet)
    extras: Mapping[str, Any] = field(default_factory=dict)


Rule = Callable[[RuleInput], Iterator[Check]]
RULES: dict[str, Rule] = {}


def rule(fn: Rule) -> Rule:
    """Register a rule function in RULES (by its name)."""
    RULES[fn.__name__] = fn
    return fn


def check_rules(inp: RuleInput) -> list[Check]:
    """Run every rule; only problems are returned."""
    return [c for fn in RULES.values() for c in fn(inp)]


def _on(v: Mapping[str, Any], key: str) -> bool:
    return bool(v.get(key))


def _te_cached(v: Mapping[str, Any]) -> bool:
    return _on(v, "cache_text_encoder_outputs") or _on(v, "cache_text_encoder_outputs_to_disk")


def _latents_cached(v: Mapping[str, Any]) -> bool:
    return _on(v, "cache_latents") or _on(v, "cache_latents_to_disk")


def _net(v: Mapping[str, Any]) -> Mapping[str, Any]:
    return v.get("network_args") or {}


def network_flag(value: Any) -> bool:
    """How networks.lora_flux reads a boolean network arg: only the exact text `True` is true."""
    return value is True or value == "True"


# -- the things we never pass on -----------------------------------------------------------------
@rule
def not_passed_on(inp: RuleInput) -> Iterator[Check]:
    """Keys we accept only to explain why sd-scripts would ignore them or stop without training."""
    for key, (status, reason, hint) in NOT_PASSED_ON.items():
        if inp.values.get(key) not in (None, False):
            yield Check(f"option:{key}", status, f"{reason}; it is not passed to sd-scripts", hint)


# -- network_args ----------------------------------------------------------------------------------
@rule
def network_args_known(inp: RuleInput) -> Iterator[Check]:
    """network_args keys networks.lora_flux does not read (silently ignored)."""
    for key in _net(inp.values):
        if key not in NETWORK_ARGS:
            close = difflib.get_close_matches(key, NETWORK_ARGS, n=1, cutoff=0.6)
            yield Check("network_args:unknown", ERROR,
                        f"network_args.{key} is not read by networks.lora_flux: sd-scripts would silently ignore it",
                        f"did you mean {close[0]!r}?" if close else "keys: " + ", ".join(NETWORK_ARGS))


@rule
def network_args_booleans(inp: RuleInput) -> Iterator[Check]:
    """Boolean network_args other than the exact text True (silently False)."""
    for key in NETWORK_BOOL_ARGS:
        value = _net(inp.values).get(key)
        if value is None or isinstance(value, bool) or value in ("True", "False"):
            continue
        yield Check("network_args:boolean", ERROR,
                    f"network_args.{key} = {value!r}: networks.lora_flux enables it only for the exact text "
                    f"'True'; {value!r} would silently mean False",
                    f"write `{key}: true` (rendered as {key}=True) or remove it")


@rule
def network_args_values(inp: RuleInput) -> Iterator[Check]:
    """network_args values networks.lora_flux rejects or ignores."""
    net = _net(inp.values)
    blocks = net.get("train_blocks")
    if blocks is not None and blocks not in ("all", "single", "double"):
        yield Check("network_args:train_blocks", ERROR, f"network_args.train_blocks = {blocks!r} aborts the run",
                    "use all, single or double")
    for key, top in (("train_double_block_indices", 18), ("train_single_block_indices", 37)):
        if net.get(key) is not None and not _valid_indices(str(net[key]), top):
            yield Check("network_args:block_indices", ERROR,
                        f"network_args.{key} = {net[key]!r} aborts the run: use all, none or indices/ranges "
                        f"within 0-{top}", "e.g. 0,1,8-12")
    for key in NETWORK_DIM_ARGS + ("conv_dim",):
        if net.get(key) is not None and not (re.fullmatch(r"\d{1,9}", str(net[key]).strip())
                                             and int(str(net[key])) <= MAX_RANK):
            yield Check("network_args:number", ERROR, f"network_args.{key} = {net[key]!r} is not a rank "
                        f"(an integer from 0 to {MAX_RANK})", "0 disables that layer")
    for key in NETWORK_FLOAT_ARGS + ("conv_alpha",):
        if net.get(key) is not None and not _is_number(net[key]):
            yield Check("network_args:number", ERROR, f"network_args.{key} = {net[key]!r} is not a finite number")
        elif key in ("rank_dropout", "module_dropout") and net.get(key) is not None \
                and not 0 <= float(net[key]) <= 1:
            yield Check("network_args:number", ERROR, f"network_args.{key} = {net[key]!r} is not a dropout rate "
                        "(0 to 1)")
    in_dims = net.get("in_dims")
    if in_dims is not None and not _valid_in_dims(in_dims):
        yield Check("network_args:in_dims", ERROR, f"network_args.in_dims = {in_dims!r}: expected 5 ranks "
                    "[img, time, vector, guidance, txt]", "e.g. in_dims: [4, 2, 2, 2, 4]")
    if (net.get("ggpo_sigma") is None) != (net.get("ggpo_beta") is None):
        yield Check("network_args:ggpo", WARN, "GGPO needs both ggpo_sigma and ggpo_beta; with one it is ignored")
    for key in ("conv_dim", "conv_alpha"):
        if net.get(key) is not None:
            yield Check("network_args:conv", WARN, f"network_args.{key} is ignored: FLUX blocks have no conv layers")


def _valid_indices(text: str, top: int) -> bool:
    if text in ("all", "none"):
        return True
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            return False
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi or hi > top:
            return False
    return True


def _valid_in_dims(value: Any) -> bool:
    if isinstance(value, str):
        value = [v for v in value.strip("[]() ").split(",") if v.strip()]
    try:
        return len(value) == 5 and all(int(str(v).strip()) >= 0 and float(v) == int(float(v)) for v in value)
    except (TypeError, ValueError):
        return False


MAX_RANK = 3072   # FLUX's hidden size: a LoRA rank above it only costs memory


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, (list, tuple)) and any(_non_finite(v) for v in value)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


@rule
def text_encoder_training(inp: RuleInput) -> Iterator[Check]:
    """Text-encoder training that clashes with caching or with itself."""
    v = inp.values
    if network_flag(_net(v).get("train_t5xxl")) and _te_cached(v):
        yield Check("train_t5xxl+cache", ERROR, "network_args.train_t5xxl with cached text-encoder outputs "
                    "aborts the run", "turn off cache_text_encoder_outputs(_to_disk) or train_t5xxl")
    if _on(v, "network_train_unet_only") and _on(v, "network_train_text_encoder_only"):
        yield Check("unet_only+te_only", ERROR, "network_train_unet_only and network_train_text_encoder_only "
                    "together train nothing", "keep one of them")
    if _on(v, "network_train_unet_only") and v.get("text_encoder_lr") is not None:
        yield Check("text_encoder_lr", WARN, "text_encoder_lr is ignored: only the transformer is trained "
                    "(network_train_unet_only)")


# -- optimizer and schedule ------------------------------------------------------------------------------
def literal_problem(key: str, value: Any) -> str | None:
    """Why sd-scripts' `key=value` + literal_eval would abort on this optimizer arg (None: fine)."""
    if not key.isidentifier():
        return f"optimizer_args key {key!r} is not an argument name; the optimizer would refuse it"
    if _non_finite(value):
        return (f"optimizer_args.{key} = {value!r}: nan/inf is not a Python literal; sd-scripts parses it with "
                "literal_eval and aborts")
    if not isinstance(value, str):
        return None
    if "=" in value:
        return f"optimizer_args.{key} = {value!r} contains '=', which makes sd-scripts' key=value split abort"
    try:
        ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return (f"optimizer_args.{key} = {value!r} is not a Python literal; sd-scripts parses it with "
                "literal_eval and aborts")
    return None


@rule
def optimizer_args_syntax(inp: RuleInput) -> Iterator[Check]:
    """optimizer_args values sd-scripts' literal_eval cannot parse."""
    for key, value in (inp.values.get("optimizer_args") or {}).items():
        problem = literal_problem(key, value)
        if problem:
            yield Check("optimizer_args:literal", ERROR, problem,
                        "use true/false, a number, a list, or quote text: \"'text'\"")


@rule
def optimizer_known(inp: RuleInput) -> Iterator[Check]:
    """Optimizers the image cannot import."""
    name = inp.values.get("optimizer_type") or ""
    low = name.lower()
    if low in NOT_INSTALLED_OPTIMIZERS:
        yield Check("optimizer:not_installed", ERROR, f"optimizer {name} needs the `dadaptation` package, which "
                    "the training image does not have", "use Prodigy (also adaptive, lr 1.0)")
    elif not name or low in OPTIMIZERS or name in TORCH_OPTIMIZERS:
        return
    elif "." in name:
        yield Check("optimizer:unchecked", WARN, f"optimizer {name} is imported by path; we cannot check it exists")
    else:
        close = difflib.get_close_matches(low, OPTIMIZERS + tuple(t.lower() for t in TORCH_OPTIMIZERS), n=1)
        yield Check("optimizer:unknown", ERROR, f"optimizer_type {name!r} is neither an sd-scripts optimizer nor "
                    "torch.optim.<Name>: the run would abort",
                    f"did you mean {close[0]!r}?" if close else "e.g. AdamW8bit, Prodigy, Adafactor")


@rule
def optimizer_settings(inp: RuleInput) -> Iterator[Check]:
    """Optimizer settings that silently replace or ignore others."""
    v = inp.values
    low = (v.get("optimizer_type") or "").lower()
    args = v.get("optimizer_args") or {}
    lr = v.get("learning_rate")
    if low == "prodigy" and lr is not None and lr <= 0.1:
        yield Check("optimizer:prodigy_lr", WARN, f"Prodigy expects learning_rate about 1.0, got {lr:g}",
                    "set learning_rate: 1.0")
    if low == "adafactor" and str(args.get("relative_step", True)) != "False":
        yield Check("optimizer:adafactor_relative_step", WARN, "Adafactor with relative_step (its default) "
                    "replaces lr_scheduler and learning_rate with its own schedule",
                    "add optimizer_args relative_step: false, scale_parameter: false, warmup_init: false")
    if low.endswith("schedulefree") and (v.get("lr_scheduler") or "constant") != "constant":
        yield Check("optimizer:schedulefree", WARN, f"{v['optimizer_type']} ignores lr_scheduler "
                    f"{v['lr_scheduler']}", "set lr_scheduler: constant")


@rule
def scheduler_warmup(inp: RuleInput) -> Iterator[Check]:
    """The constant scheduler rejects a warm-up."""
    v = inp.values
    warm = v.get("lr_warmup_steps")
    if (v.get("lr_scheduler") or "constant") == "constant" and warm not in (None, 0, 0.0, "0%"):
        yield Check("lr_scheduler:constant_warmup", ERROR, f"lr_scheduler constant rejects lr_warmup_steps {warm}",
                    "use constant_with_warmup, or remove lr_warmup_steps")


# -- precision and memory ----------------------------------------------------------------------------
@rule
def precision(inp: RuleInput) -> Iterator[Check]:
    """Precision flags that need a matching mixed_precision."""
    v = inp.values
    mp = v.get("mixed_precision")
    if _on(v, "full_bf16") and mp != "bf16":
        yield Check("full_bf16", ERROR, f"full_bf16 needs mixed_precision bf16 (it is {mp})",
                    "set mixed_precision: bf16")
    if _on(v, "full_fp16") and mp != "fp16":
        yield Check("full_fp16", ERROR, f"full_fp16 needs mixed_precision fp16 (it is {mp})",
                    "set mixed_precision: fp16")
    if (_on(v, "fp8_base") or _on(v, "fp8_base_unet")) and mp not in ("fp16", "bf16"):
        yield Check("fp8_base", ERROR, f"fp8_base needs mixed_precision bf16 or fp16 (it is {mp})",
                    "set mixed_precision: bf16")


@rule
def multi_gpu_schedule(inp: RuleInput) -> Iterator[Check]:
    """Warm-up/decay given in steps shrink with several GPUs: sd-scripts sizes the scheduler in
    max_train_steps x processes ticks (accelerate steps it once per process per optimizer step) but uses an
    integer lr_warmup_steps / lr_decay_steps as ticks unscaled."""
    if inp.processes <= 1:
        return
    for key in ("lr_warmup_steps", "lr_decay_steps"):
        value = inp.values.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n = inp.processes
            yield Check(f"{key}:multi_gpu", WARN, f"{key} {value} is counted in scheduler ticks, {n} per optimizer "
                        f"step with {n} GPUs: it lasts about {-(-value // n)} optimizer steps, not {value}",
                        f"give a ratio instead (e.g. {key}=0.05), or {key}={value * n} for {value} steps")


@rule
def memory(inp: RuleInput) -> Iterator[Check]:
    """Block swapping, offloading and DataLoader combinations that abort or do nothing."""
    v = inp.values
    swap = v.get("blocks_to_swap") or 0
    if swap > MAX_BLOCKS_TO_SWAP:
        yield Check("blocks_to_swap:max", ERROR, f"blocks_to_swap {swap} is more than FLUX allows "
                    f"({MAX_BLOCKS_TO_SWAP}): the run aborts when the model is built",
                    f"use at most {MAX_BLOCKS_TO_SWAP}")
    if swap > 0 and _on(v, "cpu_offload_checkpointing"):
        yield Check("blocks_to_swap+cpu_offload", ERROR, "blocks_to_swap and cpu_offload_checkpointing abort "
                    "together", "keep blocks_to_swap (it saves more memory)")
    if swap > 0 and inp.processes > 1:
        yield Check("blocks_to_swap+multi_gpu", ERROR, f"blocks_to_swap does not work well with several GPUs "
                    f"({inp.processes} processes; sd-scripts PR #1988)",
                    "train on one GPU, or set blocks_to_swap: null")
    if _on(v, "cpu_offload_checkpointing") and not _on(v, "gradient_checkpointing"):
        yield Check("cpu_offload_checkpointing", WARN, "cpu_offload_checkpointing has no effect without "
                    "gradient_checkpointing")
    batch = v.get("train_batch_size") or 1
    if not _on(v, "gradient_checkpointing") and (_on(v, "fp8_base") or (isinstance(batch, int) and batch > 1)):
        # measured on an H200 at 1024 px, batch 1: 65 GiB without checkpointing, 29 GiB with it
        yield Check("gradient_checkpointing", WARN, "without gradient_checkpointing a 1024 px step needs about "
                    f"65 GiB of GPU memory per image (batch {batch}); fp8_base or a larger batch suggests a card "
                    "that has less", "set gradient_checkpointing: true on cards under 80 GB")
    if v.get("max_data_loader_n_workers") == 0 and _on(v, "persistent_data_loader_workers"):
        yield Check("workers", ERROR, "persistent_data_loader_workers with max_data_loader_n_workers 0 is a "
                    "DataLoader error", "set max_data_loader_n_workers: 1 or more, or turn persistence off")


# -- length, saves, samples, logs ------------------------------------------------------------------
@rule
def length_and_saves(inp: RuleInput) -> Iterator[Check]:
    """Length and save settings that are ignored or leave nothing to resume."""
    v = inp.values
    epochs = v.get("max_train_epochs")
    if epochs is not None and v.get("max_train_steps") is not None:
        yield Check("max_train_steps", WARN, "max_train_steps is ignored because max_train_epochs is set")
    every = v.get("save_every_n_epochs")
    if isinstance(epochs, int) and isinstance(every, int) and every >= epochs:
        yield Check("save_every_n_epochs", WARN, f"save_every_n_epochs {every} >= {epochs} epochs: only the final "
                    "LoRA is saved")
    if v.get("save_last_n_epochs_state") is not None and not _on(v, "save_state"):
        yield Check("save_last_n_epochs_state", WARN, "save_last_n_epochs_state has no effect without save_state")
    if not _on(v, "save_state") and not _on(v, "save_state_on_train_end"):
        yield Check("save_state", WARN, "no optimizer state is saved: an interrupted run cannot be resumed",
                    "set save_state: true")


@rule
def samples(inp: RuleInput) -> Iterator[Check]:
    """Sample settings that crash at the first sampling point or never sample."""
    v = inp.values
    prompts = v.get("sample_prompts")
    wants = [k for k in ("sample_every_n_epochs", "sample_every_n_steps") if v.get(k) is not None]
    wants += ["sample_at_first"] if _on(v, "sample_at_first") else []
    if wants and not prompts:
        yield Check("samples:no_prompts", ERROR, f"{', '.join(wants)} without sample_prompts: sd-scripts crashes at "
                    "the first sampling point", "set sample_prompts (a list of prompts or auto)")
    if isinstance(prompts, str) and prompts != "auto" and not prompts.lower().endswith(PROMPT_FILE_EXTENSIONS):
        yield Check("samples:extension", ERROR, f"sample_prompts file {prompts!r} must end in .txt, .toml or .json: "
                    "sd-scripts crashes on any other extension")
    if prompts and not wants:
        yield Check("samples:never", WARN, "sample_prompts is set but no sample_every_n_epochs/steps: no samples "
                    "are rendered", "set sample_every_n_epochs: auto")
    if v.get("sample_every_n_epochs") is not None and v.get("sample_every_n_steps") is not None:
        yield Check("samples:steps_ignored", WARN, "sample_every_n_steps is ignored: sample_every_n_epochs wins")


@rule
def logging(inp: RuleInput) -> Iterator[Check]:
    """Trackers that abort or are not installed."""
    v = inp.values
    log_with = v.get("log_with")
    if log_with in ("tensorboard", "all") and not v.get("logging_dir"):
        yield Check("log_with:logging_dir", ERROR, f"log_with {log_with} without logging_dir aborts the run",
                    "set logging_dir: logs")
    if log_with in ("wandb", "all"):
        yield Check("log_with:wandb", ERROR, "wandb is not installed in the training image",
                    "use logging_dir: logs (TensorBoard)")
    d = v.get("logging_dir")
    if d and (d.startswith("/") or ".." in d.replace("\\", "/").split("/")):
        yield Check("logging_dir", ERROR, f"logging_dir {d!r} must be a folder inside the run folder",
                    "e.g. logging_dir: logs")


# data.toml settings that clash with trainer flags (TE caching + shuffle_caption, latent caching +
# color_aug, bucket_reso_steps % 64, ...) are checked by `check_dataset(trainer_flags=...)`.


@rule
def required_options(inp: RuleInput) -> Iterator[Check]:
    """Options without which the run aborts or crashes at its first save."""
    if inp.argv is None:
        return
    for opt in REQUIRED_OPTIONS:
        if opt not in inp.argv:
            yield Check("argv:required", ERROR, f"{opt} is missing from the command line: the run would "
                        f"{'crash at the first save' if opt == '--output_dir' else 'abort'}")
