"""Every rule that makes sd-scripts abort, silently ignore a value, or exit 0 without training."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from orchestrator.train.config import load_config
from orchestrator.train.rules import RULES, RuleInput, check_rules, literal_problem, network_flag

ARGV = ("--pretrained_model_name_or_path", "f", "--clip_l", "c", "--t5xxl", "t", "--ae", "a", "--dataset_config",
        "d", "--output_dir", "o", "--network_module", "networks.lora_flux")


def values(preset: str = "default", **over):
    v = dict(load_config(preset).values)
    resolved = {"max_train_epochs": 10, "target_steps": None, "save_every_n_epochs": 3, "sample_every_n_epochs": 3}
    v.update({k: x for k, x in resolved.items() if v[k] == "auto"})
    v.update(over)
    return MappingProxyType(v)


def run(processes: int = 1, argv=ARGV, preset: str = "default", **over):
    return check_rules(RuleInput(values(preset, **over), processes, argv))


# (rule, check name, status, overrides, processes)
CASES = [
    ("not_passed_on", "option:sdpa", "warn", {"sdpa": True}, 1),
    ("not_passed_on", "option:xformers", "warn", {"xformers": True}, 1),
    ("not_passed_on", "option:max_token_length", "warn", {"max_token_length": 225}, 1),
    ("not_passed_on", "option:fused_backward_pass", "warn", {"fused_backward_pass": True}, 1),
    ("not_passed_on", "option:sample_sampler", "warn", {"sample_sampler": "euler"}, 1),
    ("not_passed_on", "option:debug_dataset", "error", {"debug_dataset": True}, 1),
    ("not_passed_on", "option:split_mode", "error", {"split_mode": True}, 1),
    ("not_passed_on", "option:deepspeed", "error", {"deepspeed": True}, 1),
    ("network_args_known", "network_args:unknown", "error", {"network_args": {"train_block": "single"}}, 1),
    ("network_args_booleans", "network_args:boolean", "error", {"network_args": {"split_qkv": "true"}}, 1),
    ("network_args_booleans", "network_args:boolean", "error", {"network_args": {"train_t5xxl": "1"}}, 1),
    ("network_args_values", "network_args:train_blocks", "error", {"network_args": {"train_blocks": "some"}}, 1),
    ("network_args_values", "network_args:block_indices", "error",
     {"network_args": {"train_double_block_indices": "0-19"}}, 1),
    ("network_args_values", "network_args:block_indices", "error",
     {"network_args": {"train_single_block_indices": "a,b"}}, 1),
    ("network_args_values", "network_args:number", "error", {"network_args": {"img_attn_dim": "x"}}, 1),
    ("network_args_values", "network_args:number", "error", {"network_args": {"loraplus_lr_ratio": "big"}}, 1),
    ("network_args_values", "network_args:in_dims", "error", {"network_args": {"in_dims": [1, 2, 3]}}, 1),
    ("network_args_values", "network_args:ggpo", "warn", {"network_args": {"ggpo_sigma": 0.03}}, 1),
    ("network_args_values", "network_args:conv", "warn", {"network_args": {"conv_dim": 4}}, 1),
    ("text_encoder_training", "train_t5xxl+cache", "error",
     {"network_args": {"train_t5xxl": True}, "network_train_unet_only": False}, 1),
    ("text_encoder_training", "unet_only+te_only", "error", {"network_train_text_encoder_only": True}, 1),
    ("text_encoder_training", "text_encoder_lr", "warn", {"text_encoder_lr": 1e-5}, 1),
    ("optimizer_args_syntax", "optimizer_args:literal", "error", {"optimizer_args": {"decouple": "yes"}}, 1),
    ("optimizer_args_syntax", "optimizer_args:literal", "error", {"optimizer_args": {"x": "a=b"}}, 1),
    ("optimizer_known", "optimizer:not_installed", "error", {"optimizer_type": "DAdaptAdam"}, 1),
    ("optimizer_known", "optimizer:unknown", "error", {"optimizer_type": "AdamW9bit"}, 1),
    ("optimizer_known", "optimizer:unchecked", "warn", {"optimizer_type": "my.module.Opt"}, 1),
    ("optimizer_settings", "optimizer:prodigy_lr", "warn", {"learning_rate": 0.0001}, 1),
    ("optimizer_settings", "optimizer:adafactor_relative_step", "warn",
     {"optimizer_type": "Adafactor", "optimizer_args": {}}, 1),
    ("optimizer_settings", "optimizer:schedulefree", "warn",
     {"optimizer_type": "AdamWScheduleFree", "lr_scheduler": "cosine"}, 1),
    ("scheduler_warmup", "lr_scheduler:constant_warmup", "error", {"lr_scheduler": "constant", "lr_warmup_steps": 10}, 1),
    ("scheduler_warmup", "lr_scheduler:constant_warmup", "error", {"lr_scheduler": None, "lr_warmup_steps": 0.1}, 1),
    ("precision", "full_bf16", "error", {"full_bf16": True, "mixed_precision": "fp16"}, 1),
    ("precision", "full_fp16", "error", {"full_fp16": True}, 1),
    ("precision", "fp8_base", "error", {"fp8_base": True, "mixed_precision": "no"}, 1),
    ("precision", "fp8_base", "error", {"fp8_base_unet": True, "mixed_precision": "no"}, 1),
    ("memory", "blocks_to_swap:max", "error", {"blocks_to_swap": 36}, 1),
    ("memory", "blocks_to_swap+cpu_offload", "error", {"blocks_to_swap": 8, "cpu_offload_checkpointing": True}, 1),
    ("memory", "blocks_to_swap+multi_gpu", "error", {"blocks_to_swap": 8}, 2),
    ("memory", "cpu_offload_checkpointing", "warn",
     {"cpu_offload_checkpointing": True, "gradient_checkpointing": False}, 1),
    ("memory", "gradient_checkpointing", "warn", {"gradient_checkpointing": False, "fp8_base": True}, 1),
    ("memory", "gradient_checkpointing", "warn", {"gradient_checkpointing": False, "train_batch_size": 2}, 1),
    ("memory", "workers", "error", {"max_data_loader_n_workers": 0}, 1),
    ("length_and_saves", "max_train_steps", "warn", {"max_train_steps": 100}, 1),
    ("length_and_saves", "save_every_n_epochs", "warn", {"save_every_n_epochs": 10}, 1),
    ("length_and_saves", "save_last_n_epochs_state", "warn", {"save_state": False}, 1),
    ("length_and_saves", "save_state", "warn", {"save_state": False}, 1),
    ("samples", "samples:no_prompts", "error", {"sample_prompts": None}, 1),
    ("samples", "samples:no_prompts", "error", {"sample_prompts": (), "sample_every_n_epochs": None,
                                                 "sample_at_first": True}, 1),
    ("samples", "samples:extension", "error", {"sample_prompts": "prompts.yaml"}, 1),
    ("samples", "samples:never", "warn", {"sample_every_n_epochs": None}, 1),
    ("samples", "samples:steps_ignored", "warn", {"sample_every_n_steps": 100}, 1),
    ("logging", "log_with:logging_dir", "error", {"log_with": "tensorboard", "logging_dir": None}, 1),
    ("logging", "log_with:wandb", "error", {"log_with": "wandb"}, 1),
    ("logging", "logging_dir", "error", {"logging_dir": "../elsewhere"}, 1),
    ("multi_gpu_schedule", "lr_warmup_steps:multi_gpu", "warn", {"lr_warmup_steps": 100}, 2),
    ("multi_gpu_schedule", "lr_decay_steps:multi_gpu", "warn", {"lr_decay_steps": 50}, 4),
]


@pytest.mark.parametrize("rule, name, status, over, processes", CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_rule_fires(rule, name, status, over, processes):
    found = [c for c in RULES[rule](RuleInput(values(**over), processes, ARGV)) if c.name == name]
    assert found and found[0].status == status, run(processes, **over)
    assert found[0].message
    # and the full rule set reports it too
    assert any(c.name == name and c.status == status for c in run(processes, **over))


def test_every_rule_has_a_case():
    assert {c[0] for c in CASES} | {"required_options"} == set(RULES)


def test_required_options_missing_output_dir():
    argv = tuple(w for w in ARGV if w not in ("--output_dir", "o"))
    assert [c.name for c in run(argv=argv) if c.status == "error"] == ["argv:required"]
    assert "--output_dir" in [c for c in run(argv=argv)][0].message


@pytest.mark.parametrize("preset", ["default", "24gb", "16gb", "12gb"])
def test_presets_pass_every_rule(preset):
    v = values(preset)
    assert check_rules(RuleInput(v, 1, ARGV)) == []


def test_playbook_only_warns_that_it_cannot_resume():
    v = values("playbook", save_every_n_epochs=25, max_train_epochs=100, sample_every_n_epochs=None)
    assert [(c.name, c.status) for c in check_rules(RuleInput(v, 1, ARGV))] == [("save_state", "warn")]


def test_good_values_pass():
    ok = {"network_args": {"split_qkv": "True", "train_t5xxl": False, "train_blocks": "single",
                           "train_double_block_indices": "0,1,8-12,18", "train_single_block_indices": "none",
                           "in_dims": [4, 2, 2, 2, 4], "img_attn_dim": 0, "ggpo_sigma": 0.03, "ggpo_beta": 0.01},
          "optimizer_args": {"betas": "(0.9,0.99)", "eps": "1e-8", "decouple": True, "d_coef": 2},
          "lr_scheduler": "constant", "lr_warmup_steps": 0, "blocks_to_swap": 35}
    assert run(**ok) == []


def test_network_flag_and_literal_helpers():
    assert network_flag(True) and network_flag("True")
    assert not network_flag("true") and not network_flag("1") and not network_flag(False)
    assert literal_problem("k", "'text'") is None and literal_problem("k", "yes")


def test_warmup_in_steps_is_fine_on_one_gpu_and_as_a_ratio():
    assert not [c for c in run(1, lr_warmup_steps=100) if c.name.endswith(":multi_gpu")]
    assert not [c for c in run(2, lr_warmup_steps=0.05) if c.name.endswith(":multi_gpu")]
    [c] = [c for c in run(2, lr_warmup_steps=100) if c.name == "lr_warmup_steps:multi_gpu"]
    assert "about 50 optimizer steps" in c.message and "lr_warmup_steps=200" in c.hint
