"""The training config: an embedded preset, then an optional YAML file, then `--set key=value`.

Every value is typed and validated against `schema.FIELDS`; unknown keys are errors with a
"did you mean"; YAML mistakes name the file and line. The result is a frozen `TrainConfig`.
Cross-option rules (what sd-scripts would refuse or ignore) live in `kohya.py`, not here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from orchestrator.errors import ConfigError
from orchestrator.train import schema
from orchestrator.train.schema import BOOL, CHOICE, FLOAT, INT, INT_OR_FLOAT, LIST, MAP, STR, Field

DEFAULT_PRESET = "default"
_META_KEYS = ("preset", "extends")   # `preset:` in a user file, `extends:` in a preset file
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TrainConfig:
    """The resolved config: `values[key]` for every schema key, and where each value came from."""

    preset: str
    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able copy (mappings as dicts, lists as lists)."""
        return {k: _plain(v) for k, v in self.values.items()}

    def replace(self, changes: Mapping[str, Any], source: str) -> "TrainConfig":
        """A copy with `changes` applied (already validated values), e.g. resolved `auto` values."""
        values = dict(self.values)
        values.update(changes)
        sources = dict(self.sources)
        sources.update({k: source for k in changes})
        return TrainConfig(self.preset, MappingProxyType(values), MappingProxyType(sources))


def preset_names() -> list[str]:
    """Names of the presets embedded in the package."""
    folder = resources.files("orchestrator").joinpath("presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of an embedded preset (ConfigError with a suggestion when unknown)."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}", hint=_suggest(name, names, "presets"))
    return resources.files("orchestrator").joinpath(f"presets/{name}.yaml").read_text(encoding="utf-8")


def load_config(preset: str | None = None, config_file: Path | None = None,
                sets: Sequence[str] = ()) -> TrainConfig:
    """Resolve preset < config file < `--set` into a validated TrainConfig."""
    file_values: dict[str, Any] = {}
    file_lines: dict[str, int] = {}
    if config_file is not None:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist",
                              hint="give an existing YAML file to --config") from None
        except UnicodeDecodeError as e:
            line = e.object[:e.start].count(b"\n") + 1
            raise ConfigError(f"{config_file}:{line}: not UTF-8 text", hint="save the config file as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {config_file}: {e.strerror or e}") from None
        file_values, file_lines = parse_yaml(text, str(config_file))
        file_preset = file_values.pop("preset", None)
        if "extends" in file_values:
            raise ConfigError(f"{config_file}:{file_lines['extends']}: `extends` is for presets; "
                              "use `preset: NAME` in a config file")
        if preset is None and file_preset is not None:
            if not isinstance(file_preset, str):
                raise ConfigError(f"{config_file}:{file_lines['preset']}: preset: expected a preset name",
                                  hint="one of " + ", ".join(preset_names()))
            preset = file_preset
    preset = preset or DEFAULT_PRESET
    values, sources = _resolve_preset(preset, ())
    where = str(config_file)
    for key, raw in file_values.items():
        loc = f"{where}:{file_lines.get(key, '?')}"
        values[key] = coerce(_field(key, loc), raw, loc)
        sources[key] = loc
    for item in sets:
        key, raw = parse_set(item)
        top, _, sub = key.partition(".")
        f = _field(top, f"--set {item}")
        if sub:
            if f.kind != MAP:
                raise ConfigError(f"--set {item}: {top} is not a mapping, so {key} means nothing",
                                  hint=f"use --set {top}=VALUE")
            merged = dict(values.get(top) or {})
            if raw is None:
                merged.pop(sub, None)
            else:
                merged[sub] = raw
            values[top] = coerce(f, merged, f"--set {item}")
        else:
            values[top] = coerce(f, raw, f"--set {item}")
        sources[top] = "--set"
    samples_off(values, sources)
    return TrainConfig(preset, MappingProxyType(values), MappingProxyType(sources))


SAMPLE_SCHEDULE = ("sample_every_n_epochs", "sample_every_n_steps", "sample_at_first")


def samples_off(values: dict[str, Any], sources: dict[str, str]) -> None:
    """sample_prompts turned off (none/null/false/off) also turns off a schedule that came from a preset;
    a schedule the user set in the same breath is left for the rules to point out."""
    if values.get("sample_prompts") is not None:
        return
    for key in SAMPLE_SCHEDULE:
        src = sources.get(key, "built-in")
        if values.get(key) not in (None, False) and (src == "built-in" or src.startswith("preset ")
                                                      or src.startswith("run ")):
            values[key] = False if schema.BY_NAME[key].kind == BOOL else None
            sources[key] = "off with sample_prompts"


def _resolve_preset(name: str, seen: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    if name in seen:
        raise ConfigError(f"preset {name!r} extends itself (through {' -> '.join(seen)})")
    data, lines = parse_yaml(preset_text(name), f"preset {name}")
    parent = data.pop("extends", None)
    if parent is not None:
        values, sources = _resolve_preset(str(parent), seen + (name,))
    else:
        values, sources = dict(schema.BASE), {k: "built-in" for k in schema.BASE}
    if "preset" in data:
        raise ConfigError(f"preset {name}: use `extends:` to build on another preset")
    for key, raw in data.items():
        loc = f"preset {name}:{lines.get(key, '?')}"
        values[key] = coerce(_field(key, loc), raw, loc)
        sources[key] = f"preset {name}"
    return values, sources


def parse_yaml(text: str, where: str) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML mapping and the line of each top-level key; syntax errors and duplicates name the line."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise ConfigError(f"{where}{line}: YAML syntax error: {problem}",
                          hint="fix the line (indent with spaces, `key: value`, quote text containing ': ' or '#')"
                          ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: YAML error: {e}") from None
    if node is None:
        return {}, {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{where}:{node.start_mark.line + 1}: expected `key: value` lines, got a "
                          f"{'list' if isinstance(node, yaml.SequenceNode) else 'single value'}")
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        key = str(key_node.value)
        if key in lines:
            raise ConfigError(f"{where}:{key_node.start_mark.line + 1}: {key} is set twice "
                              f"(first on line {lines[key]})", hint="keep one of them")
        lines[key] = key_node.start_mark.line + 1
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as e:   # e.g. a !!python/... tag: the safe loader refuses to build it
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise ConfigError(f"{where}{line}: {problem}", hint="write plain values (numbers, text, lists, mappings); "
                          "YAML tags such as !!python/... are not allowed") from None
    except RecursionError:
        raise ConfigError(f"{where}: an alias refers to itself (&a ... *a)", hint="write the value out") from None
    return {str(k): v for k, v in data.items()}, lines


def parse_set(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, YAML-typed value): `network_dim=32` -> 32, `seed=null` -> None."""
    key, eq, raw = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set network_dim=32")
    if any(ord(c) < 32 or ord(c) == 127 for c in item):
        raise ConfigError(f"--set {item!r}: contains a control character (a tab or line break?)",
                          hint="give the value on one line, without control characters")
    if not raw.strip():
        raise ConfigError(f"--set {key}=: the value is empty",
                          hint=f"give a value; `--unset {key}` (or `--set {key}=null`) unsets it, and none/off "
                               "turn an optional feature off")
    try:
        value = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text
    return key, value


OFF_WORDS = ("none", "null", "false", "off")


def _field(key: str, where: str) -> Field:
    try:
        return schema.BY_NAME[key]
    except KeyError:
        pass
    if key in _META_KEYS:
        raise ConfigError(f"{where}: {key} is not allowed here")
    raise ConfigError(f"{where}: unknown key {key!r}", hint=_suggest(key, list(schema.BY_NAME), "keys"))


def _suggest(word: str, choices: Iterable[str], what: str) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if len(choices) <= 12:
        return f"{what}: " + ", ".join(choices)
    return "`train --plan` lists every key with its value"


def coerce(f: Field, value: Any, where: str) -> Any:
    """A validated, canonical value for field `f`, or ConfigError naming `where`."""
    off = value is None or value is False or (isinstance(value, str) and value.strip().lower() in OFF_WORDS)
    if f.kind == BOOL and off:
        return False
    if off and f.nullable:
        return None   # none / null / false / off: the optional feature is off (not given to sd-scripts)
    if value is None:
        raise _bad(f, value, where, "a value (null is not allowed here)")
    if f.auto and value == "auto":
        return "auto"
    return _COERCE[f.kind](f, value, where)


def _bad(f: Field, value: Any, where: str, expected: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{where}: {f.name}: expected {expected}, got {value!r}", hint=hint or f"{f.name}: {f.doc}")


def _bool(f: Field, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(f, value, where, "true or false")
    return value


def _int(f: Field, value: Any, where: str) -> int:
    expected = "an integer" + (" or auto" if f.auto else "")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad(f, value, where, expected)
    try:
        out = int(value)
    except ValueError:
        raise _bad(f, value, where, expected) from None
    return _check_min(f, out, where)


def _float(f: Field, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(f, value, where, "a number")
    try:
        out = float(value)
    except ValueError:
        raise _bad(f, value, where, "a number") from None
    if not math.isfinite(out):
        raise _bad(f, value, where, "a finite number")
    return _check_min(f, out, where)


def _choice(f: Field, value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in f.choices:
        close = difflib.get_close_matches(str(value), f.choices, n=1, cutoff=0.5)
        raise _bad(f, value, where, "one of " + ", ".join(f.choices),
                   hint=f"did you mean {close[0]!r}?" if close else None)
    return value


def _str(f: Field, value: Any, where: str) -> str:
    if f.name == "resolution" and isinstance(value, list) and len(value) == 2 \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = f"{value[0]},{value[1]}"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(f, value, where, "text")
    text = str(value)
    if f.name == "output_name" and not _NAME_RE.match(text):
        raise _bad(f, value, where, "a file stem of letters, digits, '.', '_' or '-'", hint="e.g. tjtoy_v2")
    if f.name == "output_name" and text.lower().endswith(".safetensors"):
        raise _bad(f, value, where, "the name without .safetensors (the trainer adds it)",
                   hint=f"e.g. {text[:-12] or 'tjtoy_v2'}")
    if f.name == "resolution" and not re.fullmatch(r"\d+(,\d+)?", text):
        raise _bad(f, value, where, "WIDTH or WIDTH,HEIGHT in pixels", hint="e.g. 1024 or 1024,768")
    if f.name == "resolution" and not all(schema.MIN_SIDE <= int(side) <= schema.MAX_SIDE
                                          for side in text.split(",")):
        raise _bad(f, value, where, f"sides of {schema.MIN_SIDE} to {schema.MAX_SIDE} pixels",
                   hint="e.g. 1024 or 1024,768")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise _bad(f, value, where, "text without control characters (tabs, line breaks, NUL)")
    return text


def _list(f: Field, value: Any, where: str) -> str | tuple[str, ...] | None:
    if isinstance(value, str):
        return value   # a prompts file (checked by a rule)
    if isinstance(value, list) and not value:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() and "\n" not in v.strip()
                                              for v in value):
        raise _bad(f, value, where, "a list of one-line prompts, a .txt/.toml/.json file or auto")
    return tuple(v.strip() for v in value)


def _check_min(f: Field, value: float, where: str) -> Any:
    """The accepted range of a number (INT fields stop at schema.MAX_INT when the schema names no maximum)."""
    maximum = f.maximum if f.maximum is not None else (schema.MAX_INT if f.kind == INT else None)
    if (f.minimum is not None and value < f.minimum) or (maximum is not None and value > maximum):
        shown = value if abs(value) < 1e15 else f"{value:.3g}"
        if f.minimum is not None and maximum is not None:
            accepted = f"must be {_num(f.minimum)} to {_num(maximum)}"
        else:
            accepted = f"must be at least {_num(f.minimum)}" if f.minimum is not None else \
                f"must be at most {_num(maximum)}"
        raise ConfigError(f"{where}: {f.name}: {accepted}, got {shown}", hint=f"{f.name}: {f.doc}")
    return value


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _int_or_float(f: Field, value: Any, where: str) -> int | float | str:
    """sd-scripts' int_or_float: an integer >= 0, a ratio < 1, or 'N%'; 1.5 is rejected."""
    def bad() -> ConfigError:
        return ConfigError(f"{where}: {f.name}: expected a step count (100), a ratio below 1 (0.05) or a "
                           f"percentage ('5%'), got {value!r}", hint="sd-scripts rejects other values")

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                raise bad() from None
            if not 0 <= pct <= 100:
                raise bad()
            return text
        try:
            value = int(text) if re.fullmatch(r"\d+", text) else float(text)
        except ValueError:
            raise bad() from None
    if isinstance(value, int):
        if value < 0:
            raise bad()
        return value
    if isinstance(value, float):
        if value.is_integer() and value >= 1:
            return int(value)
        if 0 <= value < 1:
            return value
    raise bad()


def _mapping(f: Field, value: Any, where: str) -> Mapping[str, Any]:
    """`{k: v}` or sd-scripts' list form `["k=v", ...]` -> a read-only mapping (values as written)."""
    if isinstance(value, Mapping):
        items = {str(k): v for k, v in value.items()}
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = {}
        for word in value:
            k, eq, v = word.partition("=")
            if not eq or not k:
                raise ConfigError(f"{where}: {f.name}: {word!r} is not key=value",
                                  hint=f"write {f.name} as a mapping, e.g. `{f.name}: {{key: value}}`")
            items[k.strip()] = v
    else:
        raise ConfigError(f"{where}: {f.name}: expected a mapping of key: value, got {value!r}",
                          hint=f"e.g. `{f.name}: {{key: value}}`")
    for k, v in items.items():
        if isinstance(v, Mapping):
            raise ConfigError(f"{where}: {f.name}.{k}: nested mappings are not allowed")
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in items.items()})


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


_COERCE = {BOOL: _bool, INT: _int, FLOAT: _float, INT_OR_FLOAT: _int_or_float,
           CHOICE: _choice, STR: _str, LIST: _list, MAP: _mapping}
