"""data.toml as text: read with tomlkit, locate tables and keys by line, edit lines, write atomically.

Edits are splices of the original text (a changed value line, an inserted or removed subset
block), so everything the user wrote outside the changed lines survives byte for byte; the
result is re-parsed with tomlkit before it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

from orchestrator.errors import DatasetError
from orchestrator.layout import atomic_write_text

Scope = tuple  # ("general",) | ("dataset", d) | ("subset", d, s) | ("table", name)

_HEADER = re.compile(r"^\s*\[")
_SUBSET = re.compile(r"^\s*\[\[\s*datasets\s*\.\s*subsets\s*\]\]")
_DATASET = re.compile(r"^\s*\[\[\s*datasets\s*\]\]")
_GENERAL = re.compile(r"^\s*\[\s*general\s*\]")
_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_\-]+))\s*=""")


@dataclass(frozen=True)
class Header:
    """A table header line: which table it opens."""

    line: int          # 1-based
    scope: Scope


@dataclass
class LineIndex:
    """Where each table and key of a data.toml sits (1-based line numbers)."""

    lines: list[str]
    headers: list[Header] = field(default_factory=list)
    keys: dict[tuple[Scope, str], int] = field(default_factory=dict)
    duplicates: list[tuple[Scope, str, int]] = field(default_factory=list)

    @classmethod
    def build(cls, text: str) -> "LineIndex":
        """Scan the text once; tolerant of anything tomlkit accepts in the common layouts."""
        idx = cls(text.splitlines(keepends=True))
        scope: Scope = ("root",)
        d = s = -1
        in_string = False
        for n, raw in enumerate(idx.lines, start=1):
            if in_string:
                if raw.count('"""') % 2 or raw.count("'''") % 2:
                    in_string = False
                continue
            if _SUBSET.match(raw):
                s += 1
                scope = ("subset", d, s)
            elif _DATASET.match(raw):
                d, s = d + 1, -1
                scope = ("dataset", d)
            elif _GENERAL.match(raw):
                scope = ("general",)
            elif _HEADER.match(raw):
                scope = ("table", raw.strip())
            else:
                m = _KEY.match(raw)
                if m:
                    key = (scope, m.group(1) or m.group(2) or m.group(3))
                    if key in idx.keys:
                        idx.duplicates.append((*key, n))
                    idx.keys.setdefault(key, n)
                if raw.count('"""') % 2 or raw.count("'''") % 2:
                    in_string = True
                continue
            idx.headers.append(Header(n, scope))
        return idx

    def line_of(self, scope: Scope, key: str | None = None) -> int | None:
        """The line of `key` in `scope`, else of the scope's header."""
        if key is not None and (scope, key) in self.keys:
            return self.keys[(scope, key)]
        for h in self.headers:
            if h.scope == scope:
                return h.line
        return None

    def block_end(self, header_line: int) -> int:
        """Last line (1-based) of the table opened at `header_line`: before the next header."""
        later = [h.line for h in self.headers if h.line > header_line]
        return (later[0] - 1) if later else len(self.lines)

    def content_end(self, start: int, end: int) -> int:
        """Last line in [start, end] that is neither blank nor a comment (start when none)."""
        for n in range(end, start - 1, -1):
            stripped = self.lines[n - 1].strip()
            if stripped and not stripped.startswith("#"):
                return n
        return start

    def subset_headers(self, dataset: int) -> list[Header]:
        """The `[[datasets.subsets]]` headers of one dataset, in order."""
        return [h for h in self.headers if h.scope[0] == "subset" and h.scope[1] == dataset]


@dataclass
class TomlFile:
    """A data.toml as read: text, the tomlkit document (None when it does not parse), its lines."""

    path: Path
    text: str
    doc: Any | None
    data: dict[str, Any]
    index: LineIndex
    error: tuple[str, int | None] | None = None   # (message, line) of a syntax error


def parse_toml(path: Path, text: str) -> TomlFile:
    """Parse `text` (the content of `path`); a syntax error is kept, not raised."""

    index = LineIndex.build(text)
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as e:  # ParseError has line/col; KeyAlreadyPresent (a repeated key) has none
        msg = re.sub(r"\s+at line \d+ col \d+$", "", str(e))
        if "'\\x00'" in msg:  # tomlkit's end-of-text marker
            msg = "the file ends in the middle of a value (an unclosed [, { or quote?)"
        line = getattr(e, "line", None) or (index.duplicates[0][2] if index.duplicates else None)
        return TomlFile(path, text, None, {}, index, (msg, line))
    return TomlFile(path, text, doc, doc.unwrap(), index)


def read_toml(path: Path) -> TomlFile:
    """Read and parse a data.toml; DatasetError when it cannot be read as UTF-8 text."""
    try:
        text = path.read_text(encoding="utf-8-sig")   # a BOM (Windows editors) is not part of the TOML
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist",
                           hint="create it with `python -m orchestrator dataset init`") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})",
                           hint="save it as UTF-8") from None
    return parse_toml(path, text)


def literal(value: Any) -> str:
    """The TOML literal for a plain value, as tomlkit writes it."""

    return tomlkit.item(value).as_string()


def render_table(header: str, values: dict[str, Any], indent: str, comments: dict[str, str] | None = None) -> str:
    """`header` then `key = value` lines, each indented, with optional trailing comments."""
    out = [f"{indent}{header}\n"]
    for k, v in values.items():
        note = (comments or {}).get(k)
        out.append(f"{indent}{k} = {literal(v)}" + (f"  # {note}" if note else "") + "\n")
    return "".join(out)


def replace_value(line: str, key: str, value: Any) -> str:
    """`line` (a `key = old  # comment` line) with the value replaced, indent and comment kept."""

    doc = tomlkit.parse(line if line.endswith("\n") else line + "\n")
    doc[key] = value
    new = tomlkit.dumps(doc)
    return new if line.endswith("\n") else new.rstrip("\n")


def write_toml(path: Path, text: str) -> None:
    """Check that `text` parses, then write it atomically (never half-written)."""

    try:
        tomlkit.parse(text)
    except ParseError as e:  # a bug in our edit, never the user's file: refuse to write
        raise DatasetError(f"refusing to write {path}: the edited text does not parse ({e})",
                           hint="this is a bug; your file was not changed") from None
    atomic_write_text(path, text)
