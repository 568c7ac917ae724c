"""Render a resolved TrainConfig into `accelerate launch ... flux_train_network.py ...` words.

Pure. Full option names, one value per option, lists as separate words, paths as the trainer
sees them. The rules that decide whether the result would run live in `rules.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.train.schema import BOOL, FIELDS, INT_OR_FLOAT, MAP

SCRIPT = "flux_train_network.py"
# rendered from TrainerPaths, in this order, before the config's own options
_SPECIAL = ("output_name",)


@dataclass(frozen=True)
class TrainerPaths:
    """Paths as the trainer process sees them (container paths, or host paths for the local runtime)."""

    flux: str
    clip_l: str
    t5xxl: str
    ae: str
    tokenizers: str
    dataset_config: str
    output_dir: str
    sample_prompts: str | None = None
    logging_dir: str | None = None
    resume: str | None = None


def launcher_args(values: Mapping[str, Any], processes: int, *, gpu_ids: str | None = None,
                  main_process_port: int | None = None) -> tuple[str, ...]:
    """`accelerate launch` and its options; several processes make it data-parallel (README §4): `--gpu_ids`
    as the trainer sees them and a rendezvous port of its own (two local runs must not share 29500).
    (The local runner runs these words with the chosen Python: `PY -m accelerate.commands.accelerate_cli`.)"""
    words = ["accelerate", "launch", "--num_cpu_threads_per_process", str(values["num_cpu_threads_per_process"])]
    if processes > 1:
        words.append("--multi_gpu")
    words += ["--num_processes", str(processes), "--num_machines", "1"]
    if processes > 1 and gpu_ids:
        words += ["--gpu_ids", gpu_ids]
    if processes > 1 and main_process_port:
        words += ["--main_process_port", str(main_process_port)]
    words += ["--mixed_precision", str(values["mixed_precision"])]
    return tuple(words)


def trainer_args(values: Mapping[str, Any], paths: TrainerPaths) -> tuple[str, ...]:
    """The words after flux_train_network.py. `auto` values must be resolved before."""
    words: list[str] = [
        "--pretrained_model_name_or_path", paths.flux,
        "--clip_l", paths.clip_l,
        "--t5xxl", paths.t5xxl,
        "--ae", paths.ae,
        "--tokenizer_cache_dir", paths.tokenizers,
        "--dataset_config", paths.dataset_config,
        "--output_dir", paths.output_dir,
        "--output_name", str(values["output_name"]),
    ]
    for f in FIELDS:
        flag = f.flag
        if flag is None or f.name in _SPECIAL:
            continue
        value = values.get(f.name)
        if value is None or value is False:
            continue
        if value == "auto":
            raise ValueError(f"{f.name} is still 'auto': resolve it before rendering")
        if f.kind == BOOL:
            words.append(flag)
        elif f.kind == MAP:
            items = network_arg_words(value) if f.name == "network_args" else optimizer_arg_words(value)
            if items:
                words += [flag, *items]
        else:
            words += [flag, format_value(value, int_or_float=f.kind == INT_OR_FLOAT)]
    if paths.sample_prompts:
        words += ["--sample_prompts", paths.sample_prompts]
    if paths.logging_dir:
        words += ["--logging_dir", paths.logging_dir]
    if paths.resume:
        words += ["--resume", paths.resume]
    return tuple(words)


def format_value(value: Any, *, int_or_float: bool = False) -> str:
    """One option value as argparse will parse it (floats keep their decimal point)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def network_arg_words(args: Mapping[str, Any]) -> list[str]:
    """`key=value` words for networks.lora_flux: True -> `True` (the only text it reads as true),
    False -> left out (absent means false), lists -> `[a,b,c]`."""
    words = []
    for key, value in args.items():
        if value is None or value is False:
            continue
        if value is True:
            text = "True"
        elif isinstance(value, (list, tuple)):
            text = "[" + ",".join(str(v) for v in value) + "]"
        else:
            text = format_value(value)
        words.append(f"{key}={text}")
    return words


def optimizer_arg_words(args: Mapping[str, Any]) -> list[str]:
    """`key=literal` words that sd-scripts parses with ast.literal_eval (text stays as written)."""
    words = []
    for key, value in args.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            text = repr(tuple(value))
        elif isinstance(value, str):
            text = value
        else:
            text = format_value(value)
        words.append(f"{key}={text}")
    return words
