"""A check is data: what was looked at, whether it passed, and what to do about it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.errors import ConfigError

OK, WARN, ERROR = "ok", "warn", "error"


@dataclass(frozen=True)
class Check:
    """One preflight or argument check. `error` blocks the run; `warn` is shown and allowed."""

    name: str
    status: str
    message: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def errors(checks: Iterable[Check]) -> list[Check]:
    """The checks that block a run."""
    return [c for c in checks if c.status == ERROR]


def warnings(checks: Iterable[Check]) -> list[Check]:
    """The checks that are shown but allowed."""
    return [c for c in checks if c.status == WARN]


def blocking_error(checks: Iterable[Check]) -> ConfigError | None:
    """The error `train` refuses to start with, and `train --plan` ends with, when a check failed."""
    blocking = errors(checks)
    if not blocking:
        return None
    return ConfigError(f"the training run would fail: {len(blocking)} check(s) failed",
                       details=[f"{c.name}: {c.message}" + (f" ({c.hint})" if c.hint else "") for c in blocking],
                       hint="fix them; `train --plan` shows the whole plan")
