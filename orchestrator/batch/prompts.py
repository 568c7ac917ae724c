"""Turning a Job into the API prompt to queue: our workflow files, converted once, patched per job."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.batch.jobs import Job
from orchestrator.batch.scheduler import Payload
from orchestrator.errors import ComfyError, ConfigError
from orchestrator.layout import Layout


class PromptBuilder:
    """Loads each workflow once (schemas from the server's /object_info when it answers) and patches it per job."""

    def __init__(self, layout: Layout, object_info: Callable[[], dict] | None = None) -> None:
        self.layout = layout
        self._object_info = object_info
        self._schema = None
        self._bases: dict[str, _Base] = {}
        self.schema_source = "builtin"

    def _schemas(self):
        from orchestrator.comfy.schema import load_builtin_schema, schemas_from_object_info

        if self._schema is None:
            if self._object_info is not None:
                try:
                    self._schema = schemas_from_object_info(self._object_info())
                    self.schema_source = "server"
                except ComfyError:
                    self._schema = None
            if self._schema is None:
                self._schema = load_builtin_schema()
        return self._schema

    def _base(self, workflow: str) -> "_Base":
        from orchestrator.comfy.patch import PromptTemplate
        from orchestrator.comfy.workflow import load_workflow, to_api_prompt

        if workflow not in self._bases:
            path = Path(workflow).expanduser()
            path = path if path.is_absolute() else self.layout.root / path
            if not path.exists():
                raise ConfigError(f"workflow {workflow} not found (looked at {path})",
                                  hint="workflow paths in a job file are relative to the project folder")
            wf = load_workflow(path)
            prompt = to_api_prompt(wf, self._schemas() if wf.kind == "ui" else None, rng=random.Random(0))
            types = frozenset(n.get("class_type") for n in prompt.values())
            self._bases[workflow] = _Base(prompt, wf.data if wf.kind == "ui" else None, PromptTemplate(prompt), types)
        return self._bases[workflow]

    def build(self, job: Job, *, with_ui: bool = True) -> Payload:
        """The patched prompt for one job; ConfigError when the workflow cannot take a setting.
        `with_ui=False` (what `check` needs) skips the browser workflow and shares the template's unpatched
        nodes instead of copying them: the prompt is for reading only then."""
        from orchestrator.comfy.patch import PromptParams

        b = self._base(job.workflow)
        base, ui, types = b.prompt, b.ui, b.types
        has_lora = bool(types & {"LoraLoader", "LoraLoaderModelOnly"})
        if job.lora is not None and not has_lora:
            raise ConfigError(f"job {job.name}: LoRA {job.lora} given but {job.workflow} has no LoraLoader",
                              hint="use workflows/finetuned_flux.json, or `lora: none`")
        sets = tuple((*_split(k), v) for k, v in job.sets)
        own_prefix = any(i == "filename_prefix" for _, i, _ in sets)
        params = PromptParams(
            text=job.prompt, seed=job.seed, lora_name=job.lora,
            strength_model=job.strength if has_lora else None,
            strength_clip=job.strength if "LoraLoader" in types else None,
            width=job.width, height=job.height, steps=job.steps, guidance=job.guidance,
            sampler=job.sampler, scheduler=job.scheduler,
            filename_prefix=None if own_prefix or "SaveImage" not in types else f"batch/{job.name}",
            sets=sets)
        try:
            prompt = b.template.patch(params, share=not with_ui)
        except ConfigError as e:
            raise ConfigError(f"job {job.name} (line {job.line}): {e.message}", hint=e.hint, details=e.details) from None
        if ui is not None and with_ui:  # the PNG's workflow reopens in the browser with this image's values
            from orchestrator.comfy.uivalues import reflect_in_ui

            ui = reflect_in_ui(ui, base, prompt, self._schemas())
        return Payload(prompt=prompt, workflow=ui)

    def check(self, jobs: Sequence[Job]) -> None:
        """Build every job before anything is queued: a workflow that cannot take the settings fails now.

        Jobs that differ only in seed, size, strength and name are built once, when that one builds: whether
        a patch fails depends on the graph and on string values, and these are numbers the job file already
        checked (whole seeds and sizes, finite strengths) and a name that goes where a text goes. Jobs of a
        kind that fails are each built, so every problem line is the one a per-job build gives."""
        problems: list[str] = []
        seen: set[str] = set()
        passed: set[tuple] = set()
        for job in jobs:
            kind = (job.workflow, job.prompt, job.lora, job.steps, job.guidance, job.sampler, job.scheduler, job.sets)
            try:
                if kind in passed:
                    continue
            except TypeError:   # an unhashable `set:` value (a list): no short cut
                kind = None
            try:
                self.build(job, with_ui=False)
                if kind is not None:
                    passed.add(kind)
            except ConfigError as e:
                line = e.message if not e.details else f"{e.message} ({'; '.join(e.details[:3])})"
                if line not in seen:
                    seen.add(line)
                    problems.append(line)
        if problems:
            raise ConfigError(f"{len(problems)} job(s) cannot be turned into a ComfyUI prompt", details=problems[:20],
                              hint="fix the job file or the workflow; `batch plan FILE` shows the jobs")


@dataclass(frozen=True)
class _Base:
    """A workflow converted once: its API prompt, browser workflow, patch template and node types."""

    prompt: dict[str, Any]
    ui: dict[str, Any] | None
    template: Any
    types: frozenset


def _split(ref: str) -> tuple[str, str]:
    node, _, input_name = ref.rpartition(".")
    return node, input_name
