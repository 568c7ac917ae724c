"""sd-scripts' data.toml schema and the rules it enforces, written down as data.

Source: kohya-ss/sd-scripts `library/config_util.py` (voluptuous schemas) and `train_util.py`
at commit 48d368fa (see ../shared/kohya/README.md §1.9 and §2). Levels: a key may appear in
`[general]`, in a `[[datasets]]` table or in a `[[datasets.subsets]]` table; a setting is looked up
subset -> dataset -> general -> the matching CLI option -> built-in default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GENERAL, DATASET, SUBSET = "general", "dataset", "subset"
ALL_LEVELS = frozenset({GENERAL, DATASET, SUBSET})
DATASET_LEVELS = frozenset({GENERAL, DATASET})
SUBSET_ONLY = frozenset({SUBSET})

# Value kinds. "float" is strict (voluptuous `float` rejects 1, write 1.0); "number" takes both.
INT, FLOAT, NUMBER, BOOL, STR, TABLE = "int", "float", "number", "bool", "str", "table"
PATH, EXTENSION = "path", "extension"   # strings with more rules: a file or folder path, a file suffix
RESOLUTION = "resolution"  # int or [int, int]
FLOAT_PAIR = "float_pair"  # [float, float]

# Accepted ranges (sd-scripts takes any integer; these are the values that can train FLUX at all).
MIN_SIDE, MAX_SIDE = 64, 8192     # pixels per side: below one bucket step nothing trains; above, no GPU fits it
SIDE_MULTIPLE = 16                # FLUX packs 2x2 patches of 8 px latents
MAX_REPEATS, MAX_BATCH, MAX_STEPS = 10_000, 1024, 10_000_000
MAX_TEXT = 4096                   # characters of a path or caption text

INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area")


@dataclass(frozen=True)
class KeyRule:
    """One data.toml key: where it may appear, what type it takes, its built-in default."""

    name: str
    kind: str
    levels: frozenset[str]
    default: Any = None
    choices: tuple[str, ...] = ()
    cli: str | None = None  # the flux_train_network.py option that fills it when no table sets it
    minimum: float | None = None    # accepted range of a number (each side of a resolution)
    maximum: float | None = None


def _rules(*rules: KeyRule) -> dict[str, KeyRule]:
    return {r.name: r for r in rules}


KEYS: dict[str, KeyRule] = _rules(
    # subset only (DreamBooth style; fine-tuning style uses metadata_file)
    KeyRule("image_dir", PATH, SUBSET_ONLY),
    KeyRule("is_reg", BOOL, SUBSET_ONLY, False),
    KeyRule("alpha_mask", BOOL, SUBSET_ONLY, False),
    KeyRule("conditioning_data_dir", PATH, SUBSET_ONLY),
    KeyRule("metadata_file", PATH, SUBSET_ONLY),
    # subset, dataset or general
    KeyRule("num_repeats", INT, ALL_LEVELS, 1, cli="dataset_repeats", maximum=MAX_REPEATS),
    KeyRule("flip_aug", BOOL, ALL_LEVELS, False, cli="flip_aug"),
    KeyRule("color_aug", BOOL, ALL_LEVELS, False, cli="color_aug"),
    KeyRule("random_crop", BOOL, ALL_LEVELS, False, cli="random_crop"),
    KeyRule("face_crop_aug_range", FLOAT_PAIR, ALL_LEVELS),
    KeyRule("shuffle_caption", BOOL, ALL_LEVELS, False, cli="shuffle_caption"),
    KeyRule("keep_tokens", INT, ALL_LEVELS, 0, cli="keep_tokens", minimum=0, maximum=1000),
    KeyRule("keep_tokens_separator", STR, ALL_LEVELS, ""),
    KeyRule("caption_separator", STR, ALL_LEVELS, ","),
    KeyRule("secondary_separator", STR, ALL_LEVELS),
    KeyRule("enable_wildcard", BOOL, ALL_LEVELS, False),
    KeyRule("caption_prefix", STR, ALL_LEVELS),
    KeyRule("caption_suffix", STR, ALL_LEVELS),
    KeyRule("token_warmup_min", INT, ALL_LEVELS, 1, minimum=0, maximum=1000),
    KeyRule("token_warmup_step", NUMBER, ALL_LEVELS, 0, cli="token_warmup_step", minimum=0, maximum=MAX_STEPS),
    KeyRule("custom_attributes", TABLE, ALL_LEVELS),
    KeyRule("resize_interpolation", STR, ALL_LEVELS, None, INTERPOLATIONS),
    KeyRule("class_tokens", STR, ALL_LEVELS),
    KeyRule("caption_extension", EXTENSION, ALL_LEVELS, ".caption", cli="caption_extension"),
    KeyRule("cache_info", BOOL, ALL_LEVELS, False),
    KeyRule("caption_dropout_rate", NUMBER, ALL_LEVELS, 0.0, cli="caption_dropout_rate", minimum=0, maximum=1),
    KeyRule("caption_dropout_every_n_epochs", INT, ALL_LEVELS, 0, cli="caption_dropout_every_n_epochs",
            minimum=0, maximum=MAX_STEPS),
    KeyRule("caption_tag_dropout_rate", NUMBER, ALL_LEVELS, 0.0, cli="caption_tag_dropout_rate", minimum=0,
            maximum=1),
    # dataset or general only
    KeyRule("resolution", RESOLUTION, DATASET_LEVELS, None, cli="resolution", minimum=MIN_SIDE, maximum=MAX_SIDE),
    KeyRule("batch_size", INT, DATASET_LEVELS, 1, cli="train_batch_size", minimum=1, maximum=MAX_BATCH),
    KeyRule("enable_bucket", BOOL, DATASET_LEVELS, False, cli="enable_bucket"),
    KeyRule("min_bucket_reso", INT, DATASET_LEVELS, 256, cli="min_bucket_reso", minimum=MIN_SIDE, maximum=MAX_SIDE),
    KeyRule("max_bucket_reso", INT, DATASET_LEVELS, 1024, cli="max_bucket_reso", minimum=MIN_SIDE, maximum=MAX_SIDE),
    KeyRule("bucket_reso_steps", INT, DATASET_LEVELS, 64, cli="bucket_reso_steps", minimum=1, maximum=1024),
    KeyRule("bucket_no_upscale", BOOL, DATASET_LEVELS, False, cli="bucket_no_upscale"),
    KeyRule("network_multiplier", FLOAT, DATASET_LEVELS, 1.0, minimum=-100, maximum=100),
    KeyRule("validation_split", FLOAT, DATASET_LEVELS, 0.0),
    KeyRule("validation_seed", INT, DATASET_LEVELS, minimum=0, maximum=2**32 - 1),
)

# Keys people write that sd-scripts rejects, with the fix.
REJECTED_KEYS: dict[str, str] = {
    "prior_loss_weight": "it is a command-line option only (--prior_loss_weight): set it in the training config",
    "debug_dataset": "it is a command-line option only (--debug_dataset)",
    "max_token_length": "it is a command-line option only, and FLUX ignores it",
    "interpolation_type": "the key is `resize_interpolation` (the FLUX docs name a key that does not exist)",
    "caption_extention": "the key is spelled `caption_extension`",
    "train_batch_size": "in data.toml the key is `batch_size`",
    "repeats": "the key is `num_repeats`",
    "train_data_dir": "in data.toml each subset names its folder with `image_dir`",
    "reg_data_dir": "in data.toml a regularisation folder is a subset with `is_reg = true`",
}
# Trainer options people put in data.toml by mistake: they belong to the training config.
CLI_ONLY = ("cache_latents", "cache_latents_to_disk", "cache_text_encoder_outputs",
            "cache_text_encoder_outputs_to_disk", "masked_loss", "learning_rate", "max_train_epochs",
            "max_train_steps", "gradient_accumulation_steps", "mixed_precision", "network_dim", "network_alpha",
            "output_name", "output_dir", "seed", "vae_batch_size", "skip_cache_check")
for _name in CLI_ONLY:
    REJECTED_KEYS[_name] = f"it is a trainer option (--{_name}): set it in the training config"

# Extensions sd-scripts' glob_images picks up: all-lower or all-upper case, non-recursive.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Image formats people have that the trainer will not read (convert them first).
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".psd")
CAPTION_EXTENSIONS = (".txt", ".caption")
# Files sd-scripts writes into image_dir itself (latent / text-encoder caches, cache_info).
CACHE_SUFFIXES = ("_flux.npz", "_flux_te.npz")
CACHE_NAMES = ("metadata_cache.json",)

# Cross rules with the trainer's flags (README §1.9): caching text-encoder outputs freezes the
# captions, caching latents freezes the pixels.
TE_CACHE_FLAGS = ("cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk")
LATENT_CACHE_FLAGS = ("cache_latents", "cache_latents_to_disk")
TE_CACHE_CONFLICTS: tuple[tuple[str, str], ...] = (
    ("shuffle_caption", "is true"),
    ("caption_dropout_rate", "is above 0"),
    ("caption_tag_dropout_rate", "is above 0"),
    ("token_warmup_step", "is above 0"),
)
LATENT_CACHE_CONFLICTS: tuple[str, ...] = ("color_aug", "random_crop")

MIN_IMAGES = 5          # fewer than this: warning (DreamBooth LoRAs want 5-20 per concept)
BUCKET_STEP_MULTIPLE = 64
NEAR_DUPLICATE_DISTANCE = 4   # max Hamming distance of two 64-bit dHashes
UPSCALE_TOLERANCE = 1.05      # warn when the trainer enlarges an image by more than this
CROP_TOLERANCE = 0.30         # warn when the trainer crops away more than this share of an image


def kind_ok(kind: str, value: Any) -> bool:
    """Whether `value` (a plain Python value) passes sd-scripts' type check for `kind`."""
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == FLOAT:
        return isinstance(value, float)
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in (STR, PATH, EXTENSION):
        return isinstance(value, str)
    if kind == TABLE:
        return isinstance(value, dict)
    if kind == RESOLUTION:
        if kind_ok(INT, value):
            return True
        return isinstance(value, list) and len(value) == 2 and all(kind_ok(INT, v) for v in value)
    if kind == FLOAT_PAIR:
        return isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
    raise ValueError(f"unknown kind {kind!r}")


KIND_TEXT = {
    INT: "an integer (e.g. 2)",
    FLOAT: "a float written with a decimal point (e.g. 1.0)",
    NUMBER: "a number (e.g. 0.1)",
    BOOL: "true or false",
    STR: 'a quoted string (e.g. "text")',
    PATH: 'a quoted path (e.g. "flux_data/tjtoy")',
    EXTENSION: 'a quoted file extension (e.g. ".txt")',
    TABLE: "a table",
    RESOLUTION: "an integer or [width, height] (e.g. 1024)",
    FLOAT_PAIR: "two floats (e.g. [0.4, 0.8])",
}


def suggest_literal(kind: str, value: Any) -> str | None:
    """A corrected TOML literal for a wrongly typed value, when one is obvious."""
    if kind == FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return f"{float(value)}"
    if kind in (INT, RESOLUTION) and isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    if kind == INT and isinstance(value, float) and value.is_integer():
        return str(int(value))
    if kind in (NUMBER, FLOAT) and isinstance(value, str):
        try:
            return str(float(value))
        except ValueError:
            return None
    if kind == BOOL and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower()
    if kind == BOOL and isinstance(value, int) and value in (0, 1):
        return "true" if value else "false"
    return None


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def range_problem(rule: KeyRule, value: Any) -> str | None:
    """What is wrong with a value of the right type (out of range, not finite, a bad string), with the
    accepted range; None when it is fine."""
    kind = rule.kind
    accepted = f"accepted: {_num(rule.minimum)} to {_num(rule.maximum)}" if rule.minimum is not None \
        and rule.maximum is not None else None
    if kind in (INT, FLOAT, NUMBER) or kind == RESOLUTION:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                return f"is not a finite number ({accepted or 'give a number'})"
            if (rule.minimum is not None and v < rule.minimum) or (rule.maximum is not None and v > rule.maximum):
                what = "each side must be" if kind == RESOLUTION else "must be"
                if accepted:
                    return f"is out of range: {what} {_num(rule.minimum)} to {_num(rule.maximum)}"
                bound = f"at least {_num(rule.minimum)}" if rule.minimum is not None else f"at most {_num(rule.maximum)}"
                return f"is out of range: {what} {bound}"
        return None
    if kind == FLOAT_PAIR:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 < lo <= hi:
            return "must be two finite numbers [low, high] with 0 < low <= high (e.g. [0.4, 0.8])"
        return None
    if kind in (STR, PATH, EXTENSION):
        if len(value) > MAX_TEXT:
            return f"is {len(value)} characters long (accepted: at most {MAX_TEXT})"
        allowed = "\t" if kind == STR else ""
        if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in value):
            return "contains a control character (a NUL, line break or escape code)"
        if kind in (PATH, EXTENSION) and not value.strip():
            return "is empty"
        if kind == EXTENSION and ("/" in value or "\\" in value or value.strip(".") == ""):
            return 'must be a file extension such as ".txt" (no folders, not just a dot)'
    return None
