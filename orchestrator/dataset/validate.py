"""data.toml against sd-scripts' schema and cross rules (rules.py), each problem with file:line."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.dataset import rules as R
from orchestrator.dataset.buckets import BucketSettings
from orchestrator.dataset.report import ERROR, WARNING, Problem
from orchestrator.dataset.toml import Scope, TomlFile


@dataclass
class Model:
    """The parts of a data.toml that passed the schema: general, datasets and their subsets."""

    general: dict[str, Any] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    subsets: list[list[dict[str, Any]]] = field(default_factory=list)
    rejected: set[tuple[Scope, str]] = field(default_factory=set)   # keys given with a wrong value (reported)


class Resolver:
    """Effective settings: subset -> dataset -> general -> trainer flag -> built-in default."""

    def __init__(self, model: Model, flags: Mapping[str, Any] | None) -> None:
        self.model = model
        self.flags = flags or {}

    def get(self, key: str, d: int, s: int | None = None) -> tuple[Any, Scope | None]:
        """The value and the scope that set it (None: from a flag or the default)."""
        levels: list[tuple[Scope, dict[str, Any]]] = []
        if s is not None:
            levels.append((("subset", d, s), self.model.subsets[d][s]))
        levels += [(("dataset", d), self.model.datasets[d]), (("general",), self.model.general)]
        for scope, table in levels:
            if table.get(key) is not None:
                return table[key], scope
        rule = R.KEYS[key]
        if rule.cli and self.flags.get(rule.cli) is not None:
            return self.flags[rule.cli], None
        return rule.default, None


def check_toml(tf: TomlFile, flags: Mapping[str, Any] | None) -> tuple[list[Problem], Model]:
    """Schema problems (unknown keys, wrong types, wrong levels, missing image_dir) and the model."""
    out: list[Problem] = []
    model = Model()
    data = tf.data

    def err(code: str, msg: str, scope: Scope, key: str | None = None, hint: str | None = None,
            severity: str = ERROR) -> None:
        out.append(Problem(severity, code, msg, tf.path, tf.index.line_of(scope, key), hint))

    for key, value in data.items():
        if key == "general":
            if isinstance(value, dict):
                model.general = _check_table(value, R.GENERAL, ("general",), err, model.rejected)
            else:
                err("toml-structure", "`general` must be a table: [general]", ("root",), key)
        elif key == "datasets":
            if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                err("toml-structure", "`datasets` must be an array of tables: [[datasets]]", ("root",), key)
                continue
            for d, ds in enumerate(value):
                subs = ds.get("subsets", [])
                model.datasets.append(_check_table({k: v for k, v in ds.items() if k != "subsets"},
                                                   R.DATASET, ("dataset", d), err, model.rejected))
                if not (isinstance(subs, list) and all(isinstance(v, dict) for v in subs)):
                    err("toml-structure", "`subsets` must be an array of tables: [[datasets.subsets]]",
                        ("dataset", d), "subsets")
                    subs = []
                model.subsets.append([_check_table(sub, R.SUBSET, ("subset", d, s), err, model.rejected)
                                      for s, sub in enumerate(subs)])
        else:
            _unknown(key, "the top level", ("root",), err)
    if not model.datasets:
        err("no-datasets", "data.toml has no [[datasets]] table", ("root",),
            hint="run `python -m orchestrator dataset init` (or add [[datasets]] with resolution = 1024)")
    for d, subs in enumerate(model.subsets):
        if not subs:
            err("no-subsets", f"dataset {d + 1} has no [[datasets.subsets]]: nothing to train on",
                ("dataset", d), hint="put photos in flux_data/<concept>/ and run `python -m orchestrator dataset sync`")
        styles = {"finetune" if "metadata_file" in sub else "dreambooth" for sub in subs}
        if len(styles) > 1:
            err("mixed-styles", f"dataset {d + 1} mixes image_dir subsets with metadata_file subsets",
                ("dataset", d), hint="sd-scripts needs all subsets of one dataset in the same style")
        for s, sub in enumerate(subs):
            if "image_dir" not in sub and "metadata_file" not in sub \
                    and not {(("subset", d, s), "image_dir"), (("subset", d, s), "metadata_file")} & model.rejected:
                err("image-dir-missing", "subset has no image_dir", ("subset", d, s),
                    hint='add image_dir = "flux_data/<concept>"')
            elif "metadata_file" in sub:
                err("finetune-subset", "fine-tuning style subset (metadata_file): its images are not checked",
                    ("subset", d, s), "metadata_file", severity=WARNING)
    out += _cross_rules(tf, model, flags, err)
    return out, model


def _check_table(table: dict[str, Any], level: str, scope: Scope, err,
                 rejected: set[tuple[Scope, str]]) -> dict[str, Any]:
    """Keep the valid keys of one table; report the rest (and remember which were given but refused)."""
    kept: dict[str, Any] = {}
    where = {R.GENERAL: "[general]", R.DATASET: "[[datasets]]", R.SUBSET: "[[datasets.subsets]]"}[level]
    for key, value in table.items():
        rule = R.KEYS.get(key)
        if rule is None:
            _unknown(key, where, scope, err)
            continue
        if level not in rule.levels:
            allowed = " or ".join({R.GENERAL: "[general]", R.DATASET: "[[datasets]]",
                                   R.SUBSET: "[[datasets.subsets]]"}[lv]
                                  for lv in (R.GENERAL, R.DATASET, R.SUBSET) if lv in rule.levels)
            err("wrong-level", f"`{key}` is not allowed in {where}: sd-scripts rejects it there", scope, key,
                hint=f"move it to {allowed}")
            continue
        if not R.kind_ok(rule.kind, value):
            fix = R.suggest_literal(rule.kind, value)
            err("wrong-type", f"`{key}` must be {R.KIND_TEXT[rule.kind]}, not {_show(value)}", scope, key,
                hint=f"write {key} = {fix}" if fix else None)
            rejected.add((scope, key))
            continue
        if rule.choices and value not in rule.choices:
            err("bad-value", f"`{key}` = {_show(value)} is not one of: {', '.join(rule.choices)}", scope, key)
            rejected.add((scope, key))
            continue
        problem = R.range_problem(rule, value)
        if problem:
            example = _EXAMPLES.get(key, rule.default)
            err("bad-value", f"`{key}` = {_show(value)} {problem}", scope, key,
                hint=f"write e.g. {key} = {_literal(example)}" if example is not None else None)
            rejected.add((scope, key))
            continue
        kept[key] = value
    return kept


def _unknown(key: str, where: str, scope: Scope, err) -> None:
    if key in R.REJECTED_KEYS:
        err("unknown-key", f"`{key}` in {where} is rejected by sd-scripts: {R.REJECTED_KEYS[key]}", scope, key)
        return
    if key in R.KEYS and where == "the top level":
        err("wrong-level", f"`{key}` at the top level is rejected by sd-scripts", scope, key,
            hint="put it under [general] or [[datasets]]")
        return
    close = difflib.get_close_matches(key, list(R.KEYS), n=1, cutoff=0.75)
    err("unknown-key", f"unknown key `{key}` in {where}: sd-scripts aborts on it", scope, key,
        hint=f"did you mean `{close[0]}`?" if close else "remove it (see sd-scripts' config_README)")


_EXAMPLES = {"caption_extension": ".txt", "resolution": 1024, "image_dir": "flux_data/<concept>",
             "validation_seed": 42}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return "the string " + repr(text).replace("'", '"') if not text.isprintable() else f'the string "{text}"'
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value}"
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return type(value).__name__


def parse_resolution(value: Any) -> tuple[int, int] | None:
    """1024, "1024", "1024,768", [1024, 768] -> (w, h); None when not understood."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, str):
        parts = [p.strip() for p in value.lower().replace("x", ",").split(",")]
        if all(p.isdigit() for p in parts) and len(parts) in (1, 2):
            return (int(parts[0]), int(parts[-1]))
    return None


def bucket_settings(res: Resolver, d: int) -> BucketSettings | None:
    """The bucket settings of dataset `d`, or None when no resolution is known."""
    resolution = parse_resolution(res.get("resolution", d)[0])
    if resolution is None:
        return None
    return BucketSettings(resolution, bool(res.get("enable_bucket", d)[0]), int(res.get("min_bucket_reso", d)[0]),
                          int(res.get("max_bucket_reso", d)[0]), int(res.get("bucket_reso_steps", d)[0]),
                          bool(res.get("bucket_no_upscale", d)[0]))


def _cross_rules(tf: TomlFile, model: Model, flags: Mapping[str, Any] | None, err) -> list[Problem]:
    res = Resolver(model, flags)
    known = flags is not None
    f = flags or {}
    te_cache = next((k for k in R.TE_CACHE_FLAGS if f.get(k)), None)
    latent_cache = next((k for k in R.LATENT_CACHE_FLAGS if f.get(k)), None)
    for d in range(len(model.datasets)):
        _dataset_rules(res, model, d, known, f, err)
        _subset_rules(res, model, d, known, f, te_cache, latent_cache, err)
    return []


def _dataset_rules(res: Resolver, model: Model, d: int, known: bool, f: Mapping[str, Any], err) -> None:
    """Resolution, batch size, buckets and validation split of dataset `d`."""
    value, scope = res.get("resolution", d)
    resolution = parse_resolution(value)
    given_bad = any((sc, "resolution") in model.rejected for sc in (("dataset", d), ("general",)))
    if resolution is None and given_bad:
        pass  # already reported with its line
    elif resolution is None:
        if known:
            err("no-resolution", "no resolution in data.toml and none from the training config",
                ("dataset", d), hint="add resolution = 1024 to [[datasets]]")
        else:
            err("no-resolution", "no resolution in data.toml: the trainer's --resolution must supply it",
                ("dataset", d), hint="add resolution = 1024 to [[datasets]]", severity=WARNING)
    elif scope is not None and known and f.get("resolution") is not None \
            and parse_resolution(f["resolution"]) not in (None, resolution):
        err("toml-overrides-flag", f"data.toml's resolution {value} wins over the training config's "
            f"{f['resolution']}", scope, "resolution", hint="keep one of them", severity=WARNING)
    if resolution is not None and not bool(res.get("enable_bucket", d)[0]) \
            and any(side % R.SIDE_MULTIPLE for side in resolution):
        err("resolution-multiple", f"resolution {resolution[0]}x{resolution[1]} is not a multiple of "
            f"{R.SIDE_MULTIPLE}: without enable_bucket every image is cropped to exactly that size, and FLUX "
            f"needs sides in multiples of {R.SIDE_MULTIPLE} (the trainer crashes at its first step)",
            scope or ("dataset", d), "resolution",
            hint="use e.g. resolution = 1024 (or [1024, 768]), or set enable_bucket = true")
    bs, bscope = res.get("batch_size", d)
    if bscope is not None and known and f.get("train_batch_size") not in (None, bs):
        err("toml-overrides-flag", f"data.toml's batch_size = {bs} wins over the training config's "
            f"batch size {f['train_batch_size']}", bscope, "batch_size",
            hint="remove batch_size from data.toml to let the training config decide", severity=WARNING)
    step, sscope = res.get("bucket_reso_steps", d)
    if step % R.BUCKET_STEP_MULTIPLE:
        err("bucket-steps", f"bucket_reso_steps = {step} is not a multiple of 64: sd-scripts aborts",
            sscope or ("dataset", d), "bucket_reso_steps", hint="use 64")
    settings = bucket_settings(res, d)
    if settings and settings.enable_bucket and step > 0:
        adj = settings.adjusted()
        if min(settings.resolution) < adj.min_bucket_reso:
            err("bucket-range", f"min_bucket_reso {adj.min_bucket_reso} is above the resolution "
                f"{settings.resolution[0]}x{settings.resolution[1]}: sd-scripts aborts",
                res.get("min_bucket_reso", d)[1] or ("dataset", d), "min_bucket_reso")
        if max(settings.resolution) > adj.max_bucket_reso:
            err("bucket-range", f"max_bucket_reso {adj.max_bucket_reso} is below the resolution "
                f"{settings.resolution[0]}x{settings.resolution[1]}: sd-scripts aborts",
                res.get("max_bucket_reso", d)[1] or ("dataset", d), "max_bucket_reso")
    vs, vscope = res.get("validation_split", d)
    if not 0.0 <= float(vs) < 1.0:
        err("bad-value", f"validation_split = {vs} must be at least 0.0 and below 1.0", vscope or ("dataset", d),
            "validation_split")


def _subset_rules(res: Resolver, model: Model, d: int, known: bool, f: Mapping[str, Any], te_cache: str | None,
                  latent_cache: str | None, err) -> None:
    """Repeats, duplicate folders, masked-loss inputs and caching conflicts of dataset `d`'s subsets."""
    seen_dirs: dict[str, int] = {}
    for s, sub in enumerate(model.subsets[d]):
        sc: Scope = ("subset", d, s)
        reps, rscope = res.get("num_repeats", d, s)
        if reps < 1:
            err("num-repeats", f"num_repeats = {reps}: sd-scripts skips this subset", rscope or sc,
                "num_repeats", hint="use 1 or more")
        image_dir = sub.get("image_dir")
        if image_dir is not None:
            if image_dir in seen_dirs:
                err("duplicate-image-dir", f'image_dir "{image_dir}" appears twice in dataset {d + 1}: '
                    "sd-scripts skips the second", sc, "image_dir", hint="remove one of the two subsets")
            seen_dirs.setdefault(image_dir, s)
        if "conditioning_data_dir" in sub and known and not f.get("masked_loss"):
            err("needs-masked-loss", "conditioning_data_dir is accepted only with masked loss", sc,
                "conditioning_data_dir", hint="enable masked_loss in the training config, or remove the key")
        if te_cache:
            for key, what in R.TE_CACHE_CONFLICTS:
                v, vsc = res.get(key, d, s)
                if (v is True) if key == "shuffle_caption" else (isinstance(v, (int, float)) and v > 0):
                    err("te-cache-conflict", f"{key} {what} but the text-encoder outputs are cached "
                        f"({te_cache}): sd-scripts aborts", vsc or sc, key,
                        hint=f"set {key} = {'false' if key == 'shuffle_caption' else 0} or turn off "
                        "text-encoder output caching")
            v, vsc = res.get("caption_dropout_every_n_epochs", d, s)
            if v and v > 0:
                err("te-cache-noop", "caption_dropout_every_n_epochs has no effect while text-encoder "
                    "outputs are cached", vsc or sc, "caption_dropout_every_n_epochs", severity=WARNING)
        if latent_cache:
            for key in R.LATENT_CACHE_CONFLICTS:
                v, vsc = res.get(key, d, s)
                if v is True:
                    err("latent-cache-conflict", f"{key} is true but latents are cached ({latent_cache}): "
                        "sd-scripts aborts", vsc or sc, key,
                        hint=f"set {key} = false or turn off latent caching")
