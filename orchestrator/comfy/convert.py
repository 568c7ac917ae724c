"""The `workflow convert | check | init` use cases: a browser-saved workflow -> the API prompt the
browser would queue, every problem a server would report, our workflows into a project.

Callable from Python (see the README's "Use from Python"); the CLI only parses, calls and renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.comfy.builtin import FILES, ensure_builtin_workflows
from orchestrator.comfy.patch import PromptParams, parse_set, patch_prompt, required_models
from orchestrator.comfy.resolve import resolve_workflow
from orchestrator.comfy.schema import load_builtin_schema, schemas_from_object_info
from orchestrator.comfy.validate import validate_prompt
from orchestrator.comfy.workflow import Workflow, to_api_prompt
from orchestrator.layout import Layout


class SchemaSource(Protocol):
    """What conversion needs from a running ComfyUI (a `ComfyClient`)."""

    def object_info(self) -> dict[str, Any]:
        """The server's node schemas."""

    def models(self, folder: str) -> list[str]:
        """The model files the server lists in `folder`."""


@dataclass(frozen=True)
class ConvertOptions:
    """Which workflow, changed how, checked against what."""

    file: str                              # a path, a name in workflows/, an API prompt or a ComfyUI PNG
    sets: tuple[str, ...] = ()             # "NODE.INPUT=VALUE" changes, applied after conversion
    server: str | None = None              # the URL `client` talks to (for messages)


@dataclass(frozen=True)
class Converted:
    """A workflow and its API prompt."""

    workflow: Workflow
    prompt: dict[str, Any]
    schema: Mapping[str, Any]
    shipped: bool                          # the project has no copy: our shipped workflow was used
    source: str                            # "the server at URL" | "the shipped schema, offline"

    @property
    def name(self) -> str:
        """How to call the workflow in messages."""
        return str(self.workflow.path) if self.workflow.path else "the workflow"


@dataclass(frozen=True)
class CheckReport:
    """What `check` found: the server's would-be complaints, and model files missing locally."""

    converted: Converted
    problems: tuple[str, ...]
    missing_locally: tuple[str, ...] = ()  # offline only: model files not in models/ yet

    @property
    def ok(self) -> bool:
        """True when the server would accept the prompt."""
        return not self.problems


@dataclass(frozen=True)
class InitResult:
    """What `init` wrote, and which of our workflows it kept because the project has its own."""

    written: tuple[Path, ...]
    kept: tuple[str, ...]


def convert(layout: Layout, options: ConvertOptions, client: SchemaSource | None = None) -> Converted:
    """The API prompt of the workflow (schemas from `client`, else the shipped schema), --set applied."""
    # Path(): FILE relative to the current folder, and named in messages as typed
    resolved = resolve_workflow(options.file, layout, relative_to=Path())
    wf = resolved.workflow
    if client is not None:
        schema = schemas_from_object_info(client.object_info(), source=options.server)
        source = f"the server at {options.server}"
    else:
        schema = load_builtin_schema()
        source = "the shipped schema, offline"
    prompt = to_api_prompt(wf, schema)
    if options.sets:
        prompt = patch_prompt(prompt, PromptParams(sets=tuple(parse_set(s) for s in options.sets)))
    return Converted(wf, prompt, schema, resolved.shipped, source)


def check(layout: Layout, options: ConvertOptions, client: SchemaSource | None = None) -> CheckReport:
    """Convert, then list every problem the server would report (with `client`: also models it lacks)."""
    converted = convert(layout, options, client)
    problems = validate_prompt(converted.prompt, converted.schema)
    if client is not None:
        return CheckReport(converted, tuple(problems + _model_problems(converted.prompt, client, problems)))
    missing = [f"{folder}/{name}" for folder, names in required_models(converted.prompt).items() for name in names
               if not (layout.models / folder / name).exists()]
    return CheckReport(converted, tuple(problems), tuple(missing))


def init_workflows(layout: Layout, *, force: bool = False) -> InitResult:
    """Write our workflows into workflows/ where missing (`force`: overwrite the project's copies)."""
    written = ensure_builtin_workflows(layout.workflows, force=force)
    kept = tuple(name for name in FILES.values() if layout.workflows / name not in written)
    return InitResult(tuple(written), kept)


def _model_problems(prompt: dict[str, Any], client: SchemaSource, problems: list[str]) -> list[str]:
    """Model files the server does not list (unless validation already said so)."""
    found = []
    for folder, names in required_models(prompt).items():
        if not names:
            continue
        available = list(client.models(folder))
        for name in names:
            if name not in available and not any(f"{name!r} not in list" in p for p in problems):
                shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "") or "none"
                found.append(f"{folder}: {name!r} not found on the server; available: {shown}")
    return found
