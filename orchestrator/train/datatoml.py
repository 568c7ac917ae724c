"""The trainer-side copy of data.toml: the user's file with every image_dir rewritten to the path
the trainer sees (sd-scripts resolves relative paths against its working directory, not the file).
Comments and order are kept (tomlkit). Also: each subset's effective settings for the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.errors import DatasetError

# keys a subset inherits from its dataset and from [general] (sd-scripts looks subset -> dataset -> general)
_INHERITED = ("num_repeats", "shuffle_caption", "caption_dropout_rate", "caption_dropout_every_n_epochs",
              "caption_tag_dropout_rate", "token_warmup_step", "color_aug", "random_crop", "flip_aug",
              "bucket_reso_steps", "enable_bucket", "resolution", "batch_size", "caption_extension")


def _loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomlkit

        try:
            return tomlkit.parse(text).unwrap()
        except Exception as e:
            raise DatasetError(f"data.toml is not valid TOML: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DatasetError(f"data.toml is not valid TOML: {e}") from None


def subset_settings(text: str) -> tuple[dict[str, Any], ...]:
    """Each subset's effective settings (subset over dataset over general), with its image_dir."""
    doc = _loads(text)
    general = doc.get("general") or {}
    out = []
    for ds in doc.get("datasets") or []:
        if not isinstance(ds, Mapping):
            continue
        for sub in ds.get("subsets") or []:
            if not isinstance(sub, Mapping):
                continue
            merged = {k: general[k] for k in _INHERITED if k in general}
            merged.update({k: ds[k] for k in _INHERITED if k in ds})
            merged.update(sub)
            out.append(merged)
    return tuple(out)


def rewrite_image_dirs(text: str, to_trainer: Callable[[str], str]) -> str:
    """data.toml text with each subset's image_dir replaced by `to_trainer(value)`."""
    import tomlkit

    try:
        doc = tomlkit.parse(text)
    except Exception as e:
        raise DatasetError(f"data.toml is not valid TOML: {e}") from None
    for ds in doc.get("datasets") or []:
        for sub in ds.get("subsets") or []:
            value = sub.get("image_dir")
            if isinstance(value, str):
                sub["image_dir"] = to_trainer(str(value))
    return tomlkit.dumps(doc)
