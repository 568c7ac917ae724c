"""The trainer's copy of data.toml: folder paths rewritten to where the trainer sees them.

sd-scripts resolves a relative image_dir against its own working directory, so the training
plan writes a copy whose image_dir (and conditioning_data_dir) values are the trainer's paths,
e.g. `/data/flux_data/tjtoy` in the container. Everything else stays byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.dataset.paths import resolve_image_dir
from orchestrator.dataset.toml import parse_toml, replace_value
from orchestrator.errors import DatasetError
from orchestrator.layout import Layout

PATH_KEYS = ("image_dir", "conditioning_data_dir")


def trainer_toml(layout: Layout, text: str, to_trainer: Callable[[Path], str]) -> str:
    """`text` with every subset's folder value replaced by `to_trainer(host folder)`."""
    tf = parse_toml(layout.data_toml, text)
    if tf.error:
        msg, line = tf.error
        raise DatasetError(f"{layout.data_toml}:{line}: TOML syntax error: {msg}",
                           hint="run `python -m orchestrator dataset check`")
    lines = list(tf.index.lines)
    for d, ds in enumerate(tf.data.get("datasets", [])):
        for s, sub in enumerate(ds.get("subsets", []) if isinstance(ds, dict) else []):
            for key in PATH_KEYS:
                value = sub.get(key) if isinstance(sub, dict) else None
                if not isinstance(value, str):
                    continue
                line = tf.index.keys.get((("subset", d, s), key))
                if line is None:  # an inline table or dotted key: we cannot splice it safely
                    raise DatasetError(f"{layout.data_toml}: cannot rewrite {key} of subset {s + 1} "
                                       f"in dataset {d + 1} (write it as `{key} = \"...\"` on its own line)")
                lines[line - 1] = replace_value(lines[line - 1], key, to_trainer(resolve_image_dir(layout, value)))
    return "".join(lines)


def container_paths(layout: Layout, data_root: str = "/data/flux_data") -> Callable[[Path], str]:
    """Host folder under flux_data/ -> the same folder under `data_root` (the docker mount)."""

    def convert(folder: Path) -> str:
        try:
            rel = folder.relative_to(layout.flux_data)
        except ValueError:
            raise DatasetError(f"{folder} is outside {layout.flux_data}: the training container cannot see it",
                               hint="move the concept folder into flux_data/ and run `dataset sync`") from None
        return f"{data_root.rstrip('/')}/{rel.as_posix()}"

    return convert
