"""The browser's client-side rewriting of widget values when it queues a prompt.

ComfyUI's frontend (1.35.9) changes some values on their way into the API prompt, so a converter
that wants identical prompts must do the same:
- STRING widgets with `dynamicPrompts` lose `//` and `/* */` comments (even inside URLs) and
  every `{a|b|c}` group is replaced by one option picked at random (nesting allowed; `\\{ \\} \\|`
  are escapes).
- `filename_prefix` of save nodes expands `%date:yyyy-MM-dd%` and `%<node>.<widget>%`.
- JS numbers: `1.0` is sent as `1`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Save nodes whose filename_prefix the browser expands (its SaveImageExtraOutput extension).
SAVE_NODE_TYPES = frozenset({
    "SaveImage", "SaveVideo", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB", "SaveAnimatedPNG",
    "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLatent",
})

# JS `.` stops at any line terminator, Python's only at \n.
_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//[^\n\r\u2028\u2029]*")
_UNESCAPE = re.compile(r"\\([{}|])")


def strip_comments(text: str) -> str:
    """Remove `//...` line comments and `/*...*/` block comments, as the browser does (URLs too)."""
    return _COMMENTS.sub("", text)


def process_dynamic_prompt(text: str, rng: random.Random | None = None) -> str:
    """Strip comments, replace each `{a|b|c}` by one option (nested groups too), unescape `\\{ \\} \\|`."""
    rng = rng or random.Random()
    src = strip_comments(text)
    out: list[str] = []
    i = 0
    while i < len(src):
        ch = src[i]
        i += 1
        if ch == "\\":
            out.append("\\" + src[i] if i < len(src) else "\\")
            i += 1
        elif ch == "{":
            chosen, i = _parse_choice(src, i, rng)
            out.append(process_dynamic_prompt(chosen, rng))
        else:
            out.append(ch)
    return _UNESCAPE.sub(r"\1", "".join(out))


def _parse_choice(src: str, i: int, rng: random.Random) -> tuple[str, int]:
    """Read the options of a `{...}` group starting after its `{`; return the chosen one and the new index."""
    options: list[str] = []
    current: list[str] = []
    depth = 0
    while i < len(src):
        ch = src[i]
        i += 1
        if ch == "\\":
            current.append("\\" + src[i] if i < len(src) else "\\")
            i += 1
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "|" and depth == 0:
            options.append("".join(current))
            current = []
            continue
        current.append(ch)
    options.append("".join(current))
    # Same arithmetic as the browser's Math.floor(Math.random() * n), so a seeded rng is reproducible.
    return options[int(rng.random() * len(options))], i


_DATE_TOKENS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")


def format_date(fmt: str, now: datetime) -> str:
    """The browser's `%date:FORMAT%` formatter: yyyy yy MM M dd d hh h mm m ss s (24-hour hours)."""
    parts: dict[str, int] = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "yy":
            return str(now.year)[2:]
        if token == "yyyy":
            return str(now.year)
        if token[0] in parts:
            return str(parts[token[0]]).rjust(len(token), "0")
        return token

    return _DATE_TOKENS.sub(repl, fmt)


def js_string(value: Any) -> str:
    """How JavaScript turns a widget value into text (`'' + value`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(js_string(v) for v in value)
    return str(value)


def js_number(value: Any) -> Any:
    """A float with an integral value becomes an int (JSON.stringify writes 1.0 as 1)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


@dataclass(frozen=True)
class NodeRef:
    """What `%Node.widget%` can see of one node of the root graph."""

    s_and_r: str | None        # properties["Node name for S&R"] (the class name by default)
    title: str
    widget: Callable[[str], tuple[bool, Any]]   # name -> (found, value)


_PATTERN = re.compile(r"%([^%]+)%")


def apply_text_replacements(text: str, nodes: Sequence[NodeRef], now: datetime) -> str:
    """Expand `%date:FMT%` and `%<S&R name or title>.<widget>%`; unknown patterns are left as they are."""

    def repl(m: re.Match[str]) -> str:
        inner = m.group(1)
        split = inner.split(".")
        if len(split) != 2:
            if split[0].startswith("date:"):
                return format_date(split[0][5:], now)
            return m.group(0)
        name, widget = split
        matches = [n for n in nodes if n.s_and_r == name] or [n for n in nodes if n.title == name]
        if not matches:
            return m.group(0)
        found, value = matches[0].widget(widget)
        if not found:
            return m.group(0)
        return re.sub(r"[/\\]", "_", js_string(value))

    return _PATTERN.sub(repl, text)


def widget_lookup(values: Mapping[str, Any]) -> Callable[[str], tuple[bool, Any]]:
    """A `NodeRef.widget` function over a name -> value mapping."""
    return lambda name: (name in values, values.get(name))
