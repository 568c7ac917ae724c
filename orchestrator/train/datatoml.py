"""The trainer-side copy of data.toml: the user's file with every image_dir rewritten to the path
the trainer sees (sd-scripts resolves relative paths against its working directory, not the file).
Comments and order are kept (tomlkit).
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.errors import DatasetError


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
