"""Typed ComfyUI websocket events, parsed from text (JSON) and binary frames.

    event = parse_text('{"type": "progress", "data": {"value": 3, "max": 28, ...}}')
    event = parse_binary(frame)       # Preview (types 1 and 4) or ProgressText (type 3)

Every event that belongs to a prompt has `prompt_id` (None when the server did not say, e.g.
type-1 previews). Unknown message types become `Unknown` rather than errors: servers with custom
nodes send their own.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class OutputImage:
    """A file a node produced, as `/view` wants it."""

    filename: str
    subfolder: str = ""
    type: str = "output"   # output | temp | input

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "OutputImage":
        return cls(str(obj.get("filename", "")), str(obj.get("subfolder") or ""), str(obj.get("type") or "output"))


@dataclass(frozen=True)
class Status:
    """Queue size (broadcast to every socket); `sid` only in the first message after connecting."""

    queue_remaining: int
    sid: str | None = None
    prompt_id: str | None = None


@dataclass(frozen=True)
class FeatureFlags:
    """The server's answer to our feature_flags message."""

    flags: Mapping[str, Any]
    prompt_id: str | None = None


@dataclass(frozen=True)
class ExecutionStart:
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True)
class ExecutionCached:
    """Nodes whose outputs come from the cache (they get no `executing`)."""

    prompt_id: str
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Executing:
    """A node starts; `node is None` means the prompt is done (success, error or interrupt)."""

    prompt_id: str | None
    node: str | None
    display_node: str | None = None


@dataclass(frozen=True)
class Progress:
    """One sampling step of `node`: value of max."""

    prompt_id: str | None
    node: str | None
    value: int
    max: int


@dataclass(frozen=True)
class NodeState:
    node_id: str
    state: str          # running | finished
    value: float
    max: float


@dataclass(frozen=True)
class ProgressState:
    """The state of every node touched so far in the prompt."""

    prompt_id: str | None
    nodes: Mapping[str, NodeState] = field(default_factory=dict)


@dataclass(frozen=True)
class Executed:
    """An output node finished (or was cached): its UI output, e.g. the saved images."""

    prompt_id: str | None
    node: str
    output: Mapping[str, Any] = field(default_factory=dict)
    display_node: str | None = None

    @property
    def images(self) -> tuple[OutputImage, ...]:
        return tuple(OutputImage.from_json(i) for i in self.output.get("images") or () if isinstance(i, Mapping))


@dataclass(frozen=True)
class ExecutionSuccess:
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True)
class ExecutionError:
    """A node raised while executing."""

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_message: str
    exception_type: str = ""
    traceback: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()
    current_inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    executed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preview:
    """A binary preview frame: type 1 (no metadata) or 4 (with node and prompt ids)."""

    event_type: int
    mime: str
    image: bytes
    prompt_id: str | None = None
    node_id: str | None = None


@dataclass(frozen=True)
class ProgressText:
    """Binary type 3: a text a node reports (progress_text)."""

    node_id: str
    text: str
    prompt_id: str | None = None


@dataclass(frozen=True)
class Unknown:
    """A message type we do not interpret (custom nodes, `logs`, `notification`, ...)."""

    type: str
    data: Any = None
    prompt_id: str | None = None


Event = Union[Status, FeatureFlags, ExecutionStart, ExecutionCached, Executing, Progress, ProgressState, Executed,
              ExecutionSuccess, ExecutionError, ExecutionInterrupted, Preview, ProgressText, Unknown]

IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _num(value: Any, default: float = 0) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def parse_message(msg: Mapping[str, Any]) -> Event:
    """A decoded `{"type", "data"}` message as a typed event."""
    type_ = str(msg.get("type", ""))
    raw = msg.get("data")
    d: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    pid = _str(d.get("prompt_id"))
    if type_ == "status":
        info = (d.get("status") or {}).get("exec_info") or {}
        return Status(int(_num(info.get("queue_remaining"))), _str(d.get("sid")))
    if type_ == "feature_flags":
        return FeatureFlags(dict(d))
    if pid is not None or type_ in ("executing", "progress", "progress_state", "executed"):
        if type_ == "execution_start" and pid:
            return ExecutionStart(pid, d.get("timestamp"))
        if type_ == "execution_cached" and pid:
            return ExecutionCached(pid, _ids(d.get("nodes")))
        if type_ == "executing":
            return Executing(pid, _str(d.get("node")), _str(d.get("display_node")))
        if type_ == "progress":
            return Progress(pid, _str(d.get("node")), int(_num(d.get("value"))), int(_num(d.get("max"), 1)))
        if type_ == "progress_state":
            nodes = {str(k): NodeState(str(k), str(v.get("state", "")), _num(v.get("value")), _num(v.get("max"), 1))
                     for k, v in (d.get("nodes") or {}).items() if isinstance(v, Mapping)}
            return ProgressState(pid, nodes)
        if type_ == "executed" and d.get("node") is not None:
            out = d.get("output")
            return Executed(pid, str(d["node"]), out if isinstance(out, Mapping) else {}, _str(d.get("display_node")))
        if type_ == "execution_success" and pid:
            return ExecutionSuccess(pid, d.get("timestamp"))
        if type_ == "execution_error" and pid:
            tb = d.get("traceback")
            return ExecutionError(pid, _str(d.get("node_id")), _str(d.get("node_type")),
                                  str(d.get("exception_message") or "").strip(), str(d.get("exception_type") or ""),
                                  tuple(str(x) for x in tb) if isinstance(tb, list) else (), _ids(d.get("executed")),
                                  dict(d.get("current_inputs") or {}))
        if type_ == "execution_interrupted" and pid:
            return ExecutionInterrupted(pid, _str(d.get("node_id")), _str(d.get("node_type")),
                                        _ids(d.get("executed")))
    return Unknown(type_, raw, pid)


def parse_text(text: str | bytes) -> Event:
    """A text frame as a typed event (`Unknown("invalid")` when it is not a JSON message)."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return Unknown("invalid", text)
    return parse_message(msg) if isinstance(msg, Mapping) else Unknown("invalid", msg)


def parse_binary(frame: bytes) -> Event:
    """A binary frame: 4-byte big-endian type, then type 1 (format + image), 4 (JSON metadata + image), 3 (text)."""
    if len(frame) < 4:
        return Unknown("binary", frame)
    (kind,) = struct.unpack(">I", frame[:4])
    body = frame[4:]
    try:
        if kind == 1 and len(body) >= 4:
            (fmt,) = struct.unpack(">I", body[:4])
            return Preview(1, IMAGE_FORMATS.get(fmt, "application/octet-stream"), body[4:])
        if kind == 4 and len(body) >= 4:
            (n,) = struct.unpack(">I", body[:4])
            meta = json.loads(body[4:4 + n])
            return Preview(4, str(meta.get("image_type") or "image/jpeg"), body[4 + n:], _str(meta.get("prompt_id")),
                           _str(meta.get("node_id")))
        if kind == 3 and len(body) >= 4:
            (n,) = struct.unpack(">I", body[:4])
            return ProgressText(body[4:4 + n].decode("utf-8", "replace"), body[4 + n:].decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        pass
    return Unknown(f"binary:{kind}", frame)
