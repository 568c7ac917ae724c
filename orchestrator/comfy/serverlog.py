"""ComfyUI's own log over HTTP, and the "lora key not loaded" check done with it (pure code).

ComfyUI 0.8.0 keeps its last 300 writes to stdout/stderr (`app/logger.py`: a deque of
`{"t": datetime.now().isoformat(), "m": <text written>}`) and serves them at
`GET /internal/logs/raw` -> `{"entries": [{"t", "m"}, ...], "size": {"cols", "rows"}}` (also
`GET /internal/logs`: one string; neither route has an /api/ twin). When a LoRA key matches
nothing in the model, `comfy/lora.py` logs `lora key not loaded: <key>` while the LoraLoader runs:
the LoRA is then (partly) not applied, yet the prompt succeeds.

Which lines belong to a job: the ones logged between its `execution_start` and its
`execution_success` / `execution_error` (epoch milliseconds in /history). Entries carry the server's
*local* time without a zone, so the zone offset is found first: the newest entry is compared with
the response's `Date` header (the server's clock, UTC) and the difference rounded to 15 minutes
(every time zone is a multiple of that). A LoraLoader that ComfyUI serves from its cache logs
nothing; callers keep the verdict of the job that loaded it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

LORA_KEY_MARK = "lora key not loaded:"
LOG_CAPACITY = 300            # app/logger.py setup_logger(capacity=300): older writes are dropped
ZONE_STEP_MS = 15 * 60 * 1000


@dataclass(frozen=True)
class LogEntry:
    """One write to the server's stdout/stderr: its local time (ISO, no zone) and the text."""

    t: str
    m: str


@dataclass(frozen=True)
class ServerLog:
    """What /internal/logs/raw gave, and the server's clock (epoch ms, from the Date header) when it did."""

    entries: tuple[LogEntry, ...]
    server_time_ms: float | None = None


@dataclass(frozen=True)
class LoraWarnings:
    """`lora key not loaded` lines of one job: how many, and whether the log still held the whole job."""

    count: int
    complete: bool = True
    sample: tuple[str, ...] = ()        # the first keys, for the error message


def parse_raw_logs(body: Any, server_time_ms: float | None = None) -> ServerLog:
    """The JSON of /internal/logs/raw as a ServerLog (entries that are not {t, m} strings are skipped)."""
    entries = body.get("entries") if isinstance(body, Mapping) else None
    good = tuple(LogEntry(str(e["t"]), str(e["m"])) for e in entries or ()
                 if isinstance(e, Mapping) and isinstance(e.get("t"), str) and isinstance(e.get("m"), str))
    return ServerLog(good, server_time_ms)


def _naive_ms(t: str) -> float | None:
    """Local ISO time as if it were UTC, in epoch ms."""
    try:
        stamp = datetime.fromisoformat(t)
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp() * 1000


def zone_offset_ms(log: ServerLog) -> float:
    """The server's local-time offset from UTC in ms (0 when it cannot be told)."""
    stamps = [ms for ms in (_naive_ms(e.t) for e in log.entries) if ms is not None]
    if not stamps or log.server_time_ms is None:
        return 0.0
    return round((max(stamps) - log.server_time_ms) / ZONE_STEP_MS) * ZONE_STEP_MS


def job_window(history_entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """(start, end) epoch ms of a finished job from its /history messages; None when not recorded."""
    messages = ((history_entry or {}).get("status") or {}).get("messages") or []
    start = end = None
    for item in messages:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], Mapping):
            continue
        kind, data = item
        stamp = data.get("timestamp")
        if not isinstance(stamp, (int, float)):
            continue
        if kind == "execution_start":
            start = stamp
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            end = stamp
    return (start, end) if start is not None and end is not None else None


def cached_nodes(history_entry: Mapping[str, Any]) -> set[str]:
    """Node ids ComfyUI served from its cache in this job (execution_cached)."""
    for item in ((history_entry or {}).get("status") or {}).get("messages") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and item[0] == "execution_cached":
            return {str(n) for n in (item[1] or {}).get("nodes") or ()}
    return set()


def lora_warnings(log: ServerLog, window: tuple[float, float]) -> LoraWarnings:
    """The `lora key not loaded` lines logged within `window` (epoch ms, both ends with 1 ms of slack)."""
    offset = zone_offset_ms(log)
    start, end = window[0] - 1, window[1] + 1
    keys: list[str] = []
    stamps = []
    for entry in log.entries:
        ms = _naive_ms(entry.t)
        if ms is None:
            continue
        stamps.append(ms - offset)
        if start <= ms - offset <= end:
            keys += [line.split(LORA_KEY_MARK, 1)[1].strip() for line in entry.m.splitlines()
                     if LORA_KEY_MARK in line]
    # lines may be missing only when the buffer is full and its oldest entry is already inside the job
    complete = len(log.entries) < LOG_CAPACITY or (bool(stamps) and min(stamps) < start)
    return LoraWarnings(len(keys), complete, tuple(keys[:3]))


def lora_problem(lora: str, found: LoraWarnings) -> str:
    """The one-line error of a job whose LoRA did not fully apply."""
    many = f"{'at least ' if not found.complete else ''}{found.count}"
    keys = f" (e.g. {', '.join(found.sample)})" if found.sample else ""
    return (f"LoRA {lora} did not apply: ComfyUI logged 'lora key not loaded' for {many} of its keys{keys}; "
            "it was trained for another model or saved in a format this ComfyUI does not read")



def lora_verdict(loads: Sequence[tuple[str, str]], cached: Collection[str], window: tuple[float, float] | None,
                 fetch_log: Callable[[], ServerLog | None], verdicts: dict[str, LoraWarnings]) -> str | None:
    """The problem of a finished job whose LoRA logged `lora key not loaded` (lora_problem), else None.

    `loads`: (node id, LoRA) the job applies; `cached`: node ids served from the cache (those log
    nothing, so the verdict of the job that loaded the LoRA, kept in `verdicts`, counts); `fetch_log`
    is called only when a loader really ran. ComfyUI does not say which loader logged a line, so with
    several LoRAs in one prompt each fresh one gets the job's count.
    """
    fresh = [name for nid, name in loads if nid not in cached]
    log = fetch_log() if fresh and window is not None else None
    if log is not None and window is not None:
        found = lora_warnings(log, window)
        for name in fresh:
            verdicts[name] = found
    for _, name in loads:
        found = verdicts.get(name)
        if found is not None and found.count:
            return lora_problem(name, found)
    return None
