"""Where a data.toml `image_dir` value points on this machine, and how we write new ones."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from orchestrator.layout import Layout


def resolve_image_dir(layout: Layout, value: str) -> Path:
    """data.toml image_dir value -> host folder.

    Relative values are relative to the project folder (what `dataset sync` writes). Absolute
    values that exist are used as they are; absolute values that do not exist here but end in
    `flux_data/<concept>` (container paths such as the seed's `/workspace/flux_data/tjtoy`) map
    onto this project's `flux_data/<concept>`.
    """
    p = Path(value)
    if not p.is_absolute():
        return layout.root / p
    if p.exists():
        return p
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if len(parts) >= 2 and parts[-2] == "flux_data":
        return layout.flux_data / parts[-1]
    return p


def image_dir_value(layout: Layout, folder: Path) -> str:
    """The image_dir we write for a concept folder: relative to the project, POSIX separators."""
    try:
        return folder.relative_to(layout.root).as_posix()
    except ValueError:
        return folder.as_posix()


def concept_folders(layout: Layout) -> list[Path]:
    """Folders directly under flux_data/ (dot- and underscore-folders are ours or hidden)."""
    if not layout.flux_data.is_dir():
        return []
    return sorted(p for p in layout.flux_data.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")))
