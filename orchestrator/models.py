"""The model files we need: where they come from on the Hub and where they go under models/.

Pure data plus a cheap local status check (sizes only). The Hub seam lives in `hub.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.layout import Layout

FLUX_REPO = "black-forest-labs/FLUX.1-dev"
TEXT_ENCODERS_REPO = "comfyanonymous/flux_text_encoders"

# Written by `download` next to the models: {relative path: {"size": int, "sha256": str|None, ...}}.
MANIFEST_NAME = ".download-manifest.json"


@dataclass(frozen=True)
class ModelFile:
    """One weight file: `name` is what users type (`--only flux1-dev`)."""

    name: str
    repo: str
    filename: str           # path inside the Hub repo
    folder: str             # models/<folder>/ (ComfyUI's folder name)
    role: str               # flux | ae | clip_l | t5xxl (sd-scripts argument it feeds)
    gated: bool
    approx_size: int        # bytes, for plans and disk checks before the Hub is asked

    def path(self, layout: Layout) -> Path:
        return layout.models / self.folder / Path(self.filename).name


FLUX_DEV = ModelFile("flux1-dev", FLUX_REPO, "flux1-dev.safetensors", "checkpoints", "flux", True, 23_802_932_552)
AE = ModelFile("ae", FLUX_REPO, "ae.safetensors", "vae", "ae", True, 335_304_388)
CLIP_L = ModelFile("clip_l", TEXT_ENCODERS_REPO, "clip_l.safetensors", "text_encoders", "clip_l", False,
                   246_144_152)
T5XXL_FP16 = ModelFile("t5xxl_fp16", TEXT_ENCODERS_REPO, "t5xxl_fp16.safetensors", "text_encoders", "t5xxl",
                       False, 9_787_841_024)
T5XXL_FP8 = ModelFile("t5xxl_fp8", TEXT_ENCODERS_REPO, "t5xxl_fp8_e4m3fn.safetensors", "text_encoders", "t5xxl",
                      False, 4_893_934_904)

ALL_MODELS = (FLUX_DEV, AE, CLIP_L, T5XXL_FP16, T5XXL_FP8)
VARIANTS = ("fp16", "fp8")


def model_set(variant: str = "fp16") -> tuple[ModelFile, ...]:
    """The four files of a FLUX.1-dev setup; `fp8` swaps in the smaller T5-XXL."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return (FLUX_DEV, AE, CLIP_L, T5XXL_FP8 if variant == "fp8" else T5XXL_FP16)


def by_name(name: str) -> ModelFile:
    """Find a model by its short name or file name."""
    for m in ALL_MODELS:
        if name in (m.name, m.filename, Path(m.filename).stem):
            return m
    raise KeyError(name)


def read_manifest(layout: Layout) -> dict[str, dict]:
    """What `download` recorded about the files it completed ({} when nothing was recorded)."""
    try:
        return json.loads((layout.models / MANIFEST_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return {}


@dataclass(frozen=True)
class LocalStatus:
    """What is on disk for one model file."""

    model: ModelFile
    path: Path
    size: int | None        # None: missing
    expected: int | None    # the Hub's size recorded at download time, or None when never recorded

    @property
    def present(self) -> bool:
        return self.size is not None

    @property
    def recorded(self) -> bool:
        """`download` recorded the Hub's size for this file (so `complete` is a real check)."""
        return self.expected is not None

    @property
    def complete(self) -> bool:
        """Present and of the Hub's recorded size; a file we never recorded (copied in by hand)
        counts as complete when non-empty, and `recorded` tells the caller it was not verified."""
        if not self.size:
            return False
        return self.size == self.expected if self.expected is not None else True


def local_status(layout: Layout, model: ModelFile, manifest: dict[str, dict] | None = None) -> LocalStatus:
    """Size check of one model file against the download manifest (no hashing, no network)."""
    manifest = read_manifest(layout) if manifest is None else manifest
    path = model.path(layout)
    rel = str(path.relative_to(layout.models))
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    recorded = manifest.get(rel, {}).get("size")
    return LocalStatus(model, path, size, int(recorded) if recorded is not None else None)


# -- tokenizers for sd-scripts' --tokenizer_cache_dir ----------------------------------------------
# sd-scripts loads `<dir>/<repo id with / replaced by _>` with `from_pretrained(local dir)` and only
# goes to the Hub when that folder is missing, so these few files make training work offline.


@dataclass(frozen=True)
class TokenizerFiles:
    """The tokenizer files of one Hub repo that `from_pretrained(local folder)` reads."""

    name: str                                   # what users type (`--only clip_l-tokenizer`)
    repo: str
    files: tuple[tuple[str, int], ...]          # (file name, approximate size) the tokenizer cannot load without
    optional: tuple[tuple[str, int], ...] = ()  # config and special-token files, fetched when the repo has them

    @property
    def folder_name(self) -> str:
        """The folder name sd-scripts uses under --tokenizer_cache_dir."""
        return self.repo.replace("/", "_")

    def folder(self, layout: Layout) -> Path:
        return layout.tokenizers / self.folder_name

    @property
    def approx_size(self) -> int:
        return sum(size for _, size in self.files + self.optional)


# What `from_pretrained(repo id)` itself fetches for CLIPTokenizer / T5TokenizerFast, so the local
# folder behaves exactly like the Hub. Only the vocabularies are required: a repo that drops a
# config file upstream must not stop a download.
CLIP_L_TOKENIZER = TokenizerFiles(
    "clip_l-tokenizer", "openai/clip-vit-large-patch14",
    (("vocab.json", 961_143), ("merges.txt", 524_619)),
    optional=(("tokenizer.json", 2_224_003), ("tokenizer_config.json", 905), ("special_tokens_map.json", 389),
              ("config.json", 4_519), ("added_tokens.json", 0)),
)
T5XXL_TOKENIZER = TokenizerFiles(
    "t5xxl-tokenizer", "google/t5-v1_1-xxl",
    (("spiece.model", 791_656),),
    optional=(("tokenizer_config.json", 1_857), ("special_tokens_map.json", 1_786), ("config.json", 605),
              ("tokenizer.json", 0), ("added_tokens.json", 0)),
)
TOKENIZERS = (CLIP_L_TOKENIZER, T5XXL_TOKENIZER)


@dataclass(frozen=True)
class TokenizerStatus:
    """Which required files of one tokenizer are on disk (sizes checked against the manifest)."""

    tokenizer: TokenizerFiles
    folder: Path
    missing: tuple[str, ...]        # required files absent (or empty)
    incomplete: tuple[str, ...]     # present but not of the size `download` recorded

    @property
    def complete(self) -> bool:
        return not self.missing and not self.incomplete


def tokenizer_status(layout: Layout, tokenizer: TokenizerFiles,
                     manifest: dict[str, dict] | None = None) -> TokenizerStatus:
    """Presence and recorded-size check of one tokenizer folder (no network)."""
    manifest = read_manifest(layout) if manifest is None else manifest
    folder = tokenizer.folder(layout)
    missing: list[str] = []
    incomplete: list[str] = []
    for filename, _ in tokenizer.files:
        path = folder / filename
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if not size:
            missing.append(filename)
            continue
        recorded = manifest.get(str(path.relative_to(layout.models)), {}).get("size")
        if recorded is not None and int(recorded) != size:
            incomplete.append(filename)
    return TokenizerStatus(tokenizer, folder, tuple(missing), tuple(incomplete))
