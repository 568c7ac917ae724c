"""sd-scripts output -> typed events (pure: no I/O).

Feed the trainer's output one line at a time (already split on `\\r` and `\\n`) to a `LogParser`;
it returns the events each line produces. The formats are those of sd-scripts' `flux_train_network.py`
(rich log lines on stderr, `accelerator.print` lines on stdout, tqdm bars redrawn with `\\r`).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

PHASES = ("starting", "loading", "caching latents", "caching text", "training", "sampling")


@dataclass(frozen=True)
class PhaseChanged:
    """The trainer moved to another phase (one of PHASES)."""

    phase: str


@dataclass(frozen=True)
class TrainingInfo:
    """The `running training / 学習開始` block: the trainer's own step arithmetic."""

    images: int | None = None
    reg_images: int | None = None
    batches_per_epoch: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    total_steps: int | None = None


@dataclass(frozen=True)
class EpochStarted:
    """`epoch i/N` (1-based)."""

    epoch: int
    epochs: int


@dataclass(frozen=True)
class StepProgress:
    """The main `steps:` bar: optimizer step / bar total, average loss, seconds per step, ETA."""

    step: int
    total: int
    loss: float | None
    seconds_per_step: float | None
    eta: float | None
    elapsed: float | None


@dataclass(frozen=True)
class CacheProgress:
    """A bar without description during a caching phase (latents / text-encoder outputs)."""

    phase: str
    done: int
    total: int
    eta: float | None


@dataclass(frozen=True)
class CheckpointSaved:
    """`saving checkpoint: PATH` (trainer-side path; the file is complete once later output arrives)."""

    path: str


@dataclass(frozen=True)
class StateSaved:
    """A resumable state dir was saved ('epoch 25', 'step 100' or 'last')."""

    label: str


@dataclass(frozen=True)
class SampleStarted:
    """`generating sample images at step / ...: N`."""

    step: int


@dataclass(frozen=True)
class Finished:
    """`model saved.`: the final LoRA was written."""


@dataclass(frozen=True)
class TrainerError:
    """A recognised failure signature: kind is one of ERROR_KINDS."""

    kind: str
    message: str


Event = Union[PhaseChanged, TrainingInfo, EpochStarted, StepProgress, CacheProgress, CheckpointSaved,
              StateSaved, SampleStarted, Finished, TrainerError]

# most specific first: what `failure_cause` prefers when several signatures appear
ERROR_KINDS = ("cuda_oom", "host_oom", "argparse", "config", "assertion", "no_data", "exception", "child_failed")

_BREAK = re.compile(r"\r\n|\r|\n")
_BAR = re.compile(
    r"^(?:(?P<desc>[^|]*?):)?\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+),\s*(?P<rate>[\d.]+|\?)\s*(?P<unit>s/it|it/s)"
    r"(?:,\s*(?P<postfix>[^\]]*))?\]")
_EPOCH = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$")
_SAVE = re.compile(r"saving checkpoint: (\S.*?)\s*$")
_STATE = re.compile(r"saving state at (epoch|step) (\d+)")
_SAMPLE = re.compile(r"generating sample images at step[^:]*:\s*(\d+)")
_LOSS = re.compile(r"(?:^|[\s,])(?:avr_loss|loss)=([-+\d.eE]+|nan|inf)")
_INFO_KEYS = {
    "num train images * repeats": "images",
    "num reg images": "reg_images",
    "num batches per epoch": "batches_per_epoch",
    "num epochs": "epochs",
    "batch size per device": "batch_size",
    "gradient accumulation steps": "grad_accum",
    "total optimization steps": "total_steps",
}
_INFO = re.compile(r"^\s*(" + "|".join(re.escape(k) for k in _INFO_KEYS) + r")\b.*?[:=]\s*(\d+)\s*$")
# any other "  key / translation: N" line of the same block, which must not end it
_INFO_OTHER = re.compile(r"^\s+[a-z][\w *]+ / .*[:=]\s*\d+\s*$")
_SOURCE = re.compile(r"\s{2,}[\w./-]+\.py:\d+\s*$")   # rich's "file.py:123" column at the right
_EXC = re.compile(r"^(?:[\w.]+\.)?(?P<name>[A-Z]\w*(?:Error|Exception|Invalid))(?::\s*(?P<msg>.*))?$")
_LOADING = ("Building Flux model", "Loaded Flux", "Building CLIP", "Loading state dict", "Loaded CLIP",
            "Loaded T5", "Building AutoEncoder", "Loaded AE", "load_target_model", "Loading", "loading model")


def parse_clock(text: str) -> float | None:
    """tqdm's `12:31` / `1:52:40` -> seconds; `?` -> None."""
    if not text or "?" in text:
        return None
    seconds = 0.0
    for part in text.split(":"):
        if not part.isdigit():
            return None
        seconds = seconds * 60 + int(part)
    return seconds


def parse_bar(line: str) -> dict[str, object] | None:
    """A tqdm bar line -> its fields (desc, n, total, elapsed, eta, seconds_per_it, postfix), else None."""
    m = _BAR.search(line)
    if not m:
        return None
    rate: float | None = None
    if m.group("rate") != "?":
        value = float(m.group("rate"))
        rate = value if m.group("unit") == "s/it" else (1.0 / value if value > 0 else None)
    return {
        "desc": (m.group("desc") or "").strip(),
        "n": int(m.group("n")),
        "total": int(m.group("total")),
        "elapsed": parse_clock(m.group("elapsed")),
        "eta": parse_clock(m.group("remaining")),
        "seconds_per_it": rate,
        "postfix": m.group("postfix") or "",
        "rest": line[m.end():],
    }


class LogParser:
    """Stateful line parser: tracks the phase and the training block; `feed(line)` -> events."""

    def __init__(self) -> None:
        self.phase = "starting"
        self._info: dict[str, int] = {}
        self._in_info = False
        self._in_traceback = False

    def feed(self, line: str) -> list[Event]:
        """Events produced by one output line."""
        events: list[Event] = []
        text = line.rstrip()
        if not text.strip():
            return self._flush_info(events)
        bar = parse_bar(text)
        if bar is not None:
            return self._bar(bar, events)
        text = _SOURCE.sub("", text)
        if self._in_info:
            m = _INFO.match(text)
            if m:
                self._info[_INFO_KEYS[m.group(1)]] = int(m.group(2))
                if m.group(1) == "total optimization steps":  # the block's last line
                    self._flush_info(events)
                return events
            if _INFO_OTHER.match(text):  # e.g. "num validation images * repeats" (newer sd-scripts)
                return events
            self._flush_info(events)
        if "running training" in text:
            self._set_phase("training", events)
            self._in_info, self._info = True, {}
            return events
        if self._milestone(text, events):
            return events
        error = self._error(text)
        if error is not None:
            events.append(error)
            return events
        self._phase_from(text, events)
        return events

    def _bar(self, bar: dict[str, object], events: list[Event]) -> list[Event]:
        """A tqdm bar: training steps, or a cache's progress; text glued after it is parsed too."""
        self._flush_info(events)
        desc = str(bar["desc"])
        if desc == "steps":
            self._set_phase("training", events)
            loss = _LOSS.search(str(bar["postfix"]))
            events.append(StepProgress(
                step=int(bar["n"]), total=int(bar["total"]),  # type: ignore[call-overload]
                loss=float(loss.group(1)) if loss else None,
                seconds_per_step=bar["seconds_per_it"], eta=bar["eta"],  # type: ignore[arg-type]
                elapsed=bar["elapsed"]))  # type: ignore[arg-type]
        elif not desc and self.phase in ("caching latents", "caching text"):
            events.append(CacheProgress(self.phase, int(bar["n"]), int(bar["total"]),  # type: ignore[call-overload]
                                        bar["eta"]))  # type: ignore[arg-type]
        rest = str(bar["rest"])
        if rest.strip():  # a log line written right after a redrawn bar, without a line break
            events.extend(self.feed(rest))
        return events

    def _milestone(self, text: str, events: list[Event]) -> bool:
        """Epoch, save, state, sample and end lines; True when `text` was one."""
        m = _EPOCH.match(text)
        if m:
            self._end_sampling(events)
            events.append(EpochStarted(int(m.group(1)), int(m.group(2))))
            return True
        m = _SAVE.search(text)
        if m:
            self._end_sampling(events)
            events.append(CheckpointSaved(m.group(1)))
            return True
        m = _STATE.search(text)
        if m:
            events.append(StateSaved(f"{m.group(1)} {m.group(2)}"))
            return True
        if "saving last state" in text:
            events.append(StateSaved("last"))
            return True
        m = _SAMPLE.search(text)
        if m:
            self._set_phase("sampling", events)
            events.append(SampleStarted(int(m.group(1))))
            return True
        if re.search(r"(^|\s)model saved\.$", text.strip()):
            events.append(Finished())
            return True
        return False

    def _phase_from(self, text: str, events: list[Event]) -> None:
        """Phase changes told by plain log lines (caching, loading models)."""
        if "caching latents" in text:
            self._set_phase("caching latents", events)
        elif "caching Text Encoder outputs" in text or "cache Text Encoder outputs" in text \
                or "caching text encoder outputs" in text.lower():
            self._set_phase("caching text", events)
        elif self.phase in ("starting",) and any(k in text for k in _LOADING):
            self._set_phase("loading", events)
        elif self.phase in ("caching latents", "caching text") and any(k in text for k in _LOADING):
            self._set_phase("loading", events)

    def _error(self, text: str) -> TrainerError | None:
        s = text.strip()
        if "CUDA out of memory" in s or "OutOfMemoryError" in s:
            return TrainerError("cuda_oom", s)
        if "Signals.SIGKILL" in s or "SIGKILL" in s and "died" in s:
            return TrainerError("host_oom", s)
        if re.search(r"\.py: error: ", s) or s.startswith("error: unrecognized arguments") \
                or re.search(r"error: argument --\S+: ", s):
            return TrainerError("argparse", s)
        if "MultipleInvalid" in s or "Invalid user config" in s or "extra keys not allowed" in s:
            return TrainerError("config", s)
        if s.startswith("No data found") or " No data found" in s:
            return TrainerError("no_data", s)
        if "ChildFailedError" in s:
            return TrainerError("child_failed", s)
        if s.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return None
        m = _EXC.match(s)
        if m and not s.startswith(("subprocess.CalledProcessError", "CalledProcessError")):
            if m.group("name") == "AssertionError":
                return TrainerError("assertion", m.group("msg") or s)
            if self._in_traceback:
                self._in_traceback = False
                return TrainerError("exception", s)
        return None

    def _end_sampling(self, events: list[Event]) -> None:
        if self.phase == "sampling":  # sampling ends when the training loop prints again
            self._set_phase("training", events)

    def _set_phase(self, phase: str, events: list[Event]) -> None:
        if phase != self.phase:
            self.phase = phase
            events.append(PhaseChanged(phase))

    def _flush_info(self, events: list[Event]) -> list[Event]:
        if self._in_info and self._info:
            events.append(TrainingInfo(**self._info))
            self._in_info, self._info = False, {}
        return events


def parse_lines(lines: list[str] | tuple[str, ...]) -> list[Event]:
    """All events of a captured log (convenience for tests and re-parsing a raw log)."""
    parser = LogParser()
    events: list[Event] = []
    for line in lines:
        events.extend(parser.feed(line))
    return events


def split_output(text: str) -> list[str]:
    """Split captured output the way runners do: on `\\r`, `\\n` and `\\r\\n`."""
    return re.split(r"\r\n|\r|\n", text)


def failure_cause(errors: list[TrainerError]) -> TrainerError | None:
    """The most telling error of a failed run (CUDA OOM beats the wrapper's CalledProcessError, ...)."""
    for kind in ERROR_KINDS:
        for e in errors:
            if e.kind == kind:
                return e
    return None


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode byte chunks (UTF-8, multibyte-safe) into lines split on \\r, \\n and \\r\\n."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    buf = ""
    pending_cr = False  # the previous chunk ended with "\r": a leading "\n" completes "\r\n"
    for chunk in chunks:
        text = decoder.decode(chunk)
        if not text:
            continue
        if pending_cr and text[0] == "\n":
            text = text[1:]
        pending_cr = text.endswith("\r")
        buf += text
        parts = _BREAK.split(buf)
        buf = parts.pop()
        yield from parts
    buf += decoder.decode(b"", final=True)
    if buf:
        yield from _BREAK.split(buf)
