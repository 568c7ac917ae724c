"""Training config: presets, precedence, validation, did-you-mean, YAML line numbers."""

from __future__ import annotations

import re

import pytest

from orchestrator.errors import ConfigError
from orchestrator.train.config import load_config, parse_yaml, preset_names, preset_text
from orchestrator.train.schema import BY_NAME, FIELDS

PRESETS = ("playbook", "default", "24gb", "16gb", "12gb")


def test_all_presets_embedded_and_load():
    assert set(PRESETS) <= set(preset_names())
    for name in PRESETS:
        c = load_config(name)
        assert c.preset == name
        assert set(c.values) == {f.name for f in FIELDS}


def test_playbook_is_the_seed_recipe():
    c = load_config("playbook")
    expected = {"network_dim": 256, "network_alpha": 256.0, "optimizer_type": "Prodigy", "learning_rate": 1.0,
                "lr_scheduler": "cosine_with_restarts", "gradient_accumulation_steps": 4,
                "gradient_checkpointing": True, "max_train_epochs": 100, "save_every_n_epochs": 25,
                "mixed_precision": "bf16", "guidance_scale": 1.0, "timestep_sampling": "flux_shift",
                "model_prediction_type": "raw", "torch_compile": True, "cache_latents_to_disk": True,
                "cache_text_encoder_outputs_to_disk": True, "network_train_unet_only": False,
                "save_precision": None, "output_name": "flux_dreambooth", "prior_loss_weight": 1.0,
                "persistent_data_loader_workers": True, "sdpa": False}
    assert {k: c[k] for k in expected} == expected


def test_memory_presets_build_on_each_other():
    c24, c16, c12 = load_config("24gb"), load_config("16gb"), load_config("12gb")
    assert c24["fp8_base"] and c16["fp8_base"] and c12["fp8_base"]
    assert c24["blocks_to_swap"] is None and c16["blocks_to_swap"] == 8 and c12["blocks_to_swap"] == 16
    assert c16["optimizer_type"] == "Adafactor" and dict(c16["optimizer_args"])["relative_step"] is False
    assert c12["save_state"] is True          # inherited from default through 16gb and 24gb
    assert c24.sources["fp8_base"] == "preset 24gb" and c12.sources["save_state"] == "preset default"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_value_has_a_reason(name):
    """Each key is explained by a comment on its line or in the comment block right above it."""
    lines = preset_text(name).splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^[a-z_0-9]+:", line):
            continue
        # keys directly under other keys share the comment block above the first of them
        j = i
        while j > 0 and re.match(r"^([a-z_0-9]+:|\s+\S)", lines[j - 1]):
            j -= 1
        assert "#" in line or (j > 0 and lines[j - 1].lstrip().startswith("#")), \
            f"preset {name}, line {i + 1}: {line!r} has no reason"


def test_precedence_preset_then_file_then_set(tmp_path):
    f = tmp_path / "train.yaml"
    f.write_text("preset: 24gb\nnetwork_dim: 48\nseed: 7\n")
    c = load_config(None, f, ["seed=9"])
    assert c.preset == "24gb"
    assert c["fp8_base"] is True                       # from the file's preset
    assert c["network_dim"] == 48 and c.sources["network_dim"] == f"{f}:2"
    assert c["seed"] == 9 and c.sources["seed"] == "--set"
    assert load_config("playbook", f)["network_train_unet_only"] is False   # --preset beats the file's preset


def test_set_types_and_dotted_keys():
    c = load_config("default", sets=["network_dim=64", "learning_rate=1e-4", "seed=null",
                                     "network_args.train_blocks=single", "network_args.split_qkv=true",
                                     "optimizer_args.weight_decay=null", "lr_warmup_steps=5%",
                                     "sample_prompts=[a tjtoy toy, a sparkgpu gpu]", "resolution=[1024, 768]"])
    assert c["network_dim"] == 64 and c["learning_rate"] == 1e-4 and c["seed"] is None
    assert dict(c["network_args"]) == {"train_blocks": "single", "split_qkv": True}
    assert "weight_decay" not in c["optimizer_args"] and c["optimizer_args"]["decouple"] is True
    assert c["lr_warmup_steps"] == "5%"
    assert c["sample_prompts"] == ("a tjtoy toy", "a sparkgpu gpu")
    assert c["resolution"] == "1024,768"


def test_unknown_key_says_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("default", sets=["network_dimm=32"])
    assert "unknown key 'network_dimm'" in e.value.message and "network_dim" in e.value.hint
    f = tmp_path / "train.yaml"
    f.write_text("# mine\nlearning_rte: 0.0001\n")
    with pytest.raises(ConfigError) as e:
        load_config(None, f)
    assert e.value.message.startswith(f"{f}:2: unknown key 'learning_rte'") and "learning_rate" in e.value.hint


def test_unknown_preset_and_choice_suggest():
    with pytest.raises(ConfigError) as e:
        load_config("24GB")
    assert "24gb" in e.value.hint
    with pytest.raises(ConfigError) as e:
        load_config("default", sets=["lr_scheduler=cosine_restarts"])
    assert "cosine_with_restarts" in e.value.hint


def test_yaml_syntax_error_names_the_line(tmp_path):
    f = tmp_path / "train.yaml"
    f.write_text("network_dim: 32\nseed: [1, 2\nlearning_rate: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(None, f)
    assert re.match(rf"{re.escape(str(f))}:\d+: YAML syntax error", e.value.message)
    f.write_text("network_dim: 32\nnetwork_dim: 64\n")
    with pytest.raises(ConfigError) as e:
        load_config(None, f)
    assert e.value.message == f"{f}:2: network_dim is set twice (first on line 1)"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected `key: value` lines"):
        load_config(None, f)


@pytest.mark.parametrize("item, fragment", [
    ("network_dim=abc", "expected an integer"),
    ("network_dim=0", "must be 1 to 3072"),
    ("network_dim=99999999999999999999", "must be 1 to 3072"),
    ("seed=99999999999", "must be 0 to 4294967295"),
    ("save_last_n_epochs=99999999999", "must be 1 to 2147483647"),
    ("max_train_epochs=100000000000", "must be 1 to 10000000"),
    ("network_dropout=5", "must be 0 to 1"),
    ("train_batch_size=0", "must be 1 to 1024"),
    ("guidance_scale=-1", "must be 0 to 100"),
    ("resolution=0", "sides of 64 to 8192"),
    ("resolution=63", "sides of 64 to 8192"),
    ("resolution=[1024, 0]", "sides of 64 to 8192"),
    ("resolution=100000", "sides of 64 to 8192"),
    ("network_dim=", "the value is empty"),
    ("optimizer_type=Ada\tfactor", "control character"),
    ("gradient_checkpointing=yes please", "expected true or false"),
    ("mixed_precision=null", "null is not allowed"),
    ("output_name=my lora", "file stem"),
    ("lr_warmup_steps=1.5", "ratio below 1"),
    ("lr_warmup_steps=-3", "ratio below 1"),
    ("resolution=big", "WIDTH"),
    ("network_args=[split_qkv]", "not key=value"),
    ("max_train_epochs=soon", "or auto"),
    ('sample_prompts=["a\\nb"]', "one-line prompts"),
    ("sample_prompts=[1, 2]", "one-line prompts"),
])
def test_bad_values_are_config_errors(item, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("default", sets=[item])
    assert fragment in e.value.message + (e.value.hint or "")


def test_int_or_float_accepts_what_sd_scripts_accepts():
    for raw, expect in (("100", 100), ("0.05", 0.05), ("5%", "5%"), ("0", 0), ("2.0", 2)):
        assert load_config("default", sets=[f"lr_warmup_steps={raw}"])["lr_warmup_steps"] == expect


def test_list_form_of_mappings_keeps_text():
    c = load_config("default", sets=['optimizer_args=["betas=(0.9,0.99)", "d_coef=2"]'])
    assert dict(c["optimizer_args"]) == {"betas": "(0.9,0.99)", "d_coef": "2"}


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, tmp_path / "nope.yaml")


def test_config_file_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_bytes(b"network_dim: 16\n# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_config(None, path)
    assert e.value.message == f"{path}:2: not UTF-8 text"


def test_parse_yaml_lines():
    data, lines = parse_yaml("a: 1\n\n# c\nb: x\n", "t")
    assert data == {"a": 1, "b": "x"} and lines == {"a": 1, "b": 4}


def test_schema_docs_are_one_liners():
    for f in FIELDS:
        assert f.doc and "\n" not in f.doc
    assert BY_NAME["network_dim"].flag == "--network_dim" and BY_NAME["sdpa"].flag is None


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(ConfigError) as e:
        load_config("default", sets=[f"learning_rate={value}"])
    assert "learning_rate: expected a finite number" in e.value.message


def test_output_name_with_the_extension_is_refused():
    with pytest.raises(ConfigError) as e:
        load_config("default", sets=["output_name=tjtoy.safetensors"])
    assert "without .safetensors" in e.value.message and e.value.hint == "e.g. tjtoy"
