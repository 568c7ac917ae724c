"""Turning a Job into the API prompt to queue, through the image pipeline `generate` uses too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.batch.jobs import Job
from orchestrator.batch.scheduler import Payload
from orchestrator.comfy.patch import required_models
from orchestrator.comfy.pipeline import ImagePipeline, ImageSpec, lora_loads
from orchestrator.comfy.schema import load_builtin_schema, schemas_from_object_info
from orchestrator.comfy.serverlog import LoraWarnings, lora_verdict
from orchestrator.errors import ComfyError, ConfigError
from orchestrator.layout import Layout

def job_spec(job: Job, *, own_prefix: bool) -> ImageSpec:
    """The knobs of a job (the SaveImage prefix is the job's name unless its `set` gives one)."""
    sets = tuple((*_split(k), v) for k, v in job.sets)
    return ImageSpec(prompt=job.prompt, seed=job.seed, lora=job.lora, strength=job.strength,
                     strength_clip=job.strength_clip, width=job.width, height=job.height, steps=job.steps,
                     guidance=job.guidance, sampler=job.sampler, scheduler=job.scheduler,
                     filename_prefix=None if own_prefix else f"batch/{job.name}", sets=sets)


class PromptBuilder:
    """Loads each workflow once (schemas from the server's /object_info when it answers) and patches it per job."""

    def __init__(self, layout: Layout, object_info: Callable[[], dict] | None = None, *,
                 where: str = "the server", check_models: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        self.layout = layout
        self._object_info = object_info
        self._check_models = check_models
        self.where = where
        self._pipe: ImagePipeline | None = None
        self.schema_source = "builtin"

    @property
    def pipeline(self) -> ImagePipeline:
        """The image pipeline, with the server's node schemas (and LoRA list) when it answers."""
        if self._pipe is None:
            schema = None
            if self._object_info is not None:
                try:
                    schema = schemas_from_object_info(self._object_info())
                    self.schema_source = "server"
                except ComfyError:
                    schema = None
            self._pipe = ImagePipeline(self.layout, schema if schema is not None else load_builtin_schema(),
                                       where=self.where, relative_to=self.layout.root, seeded=True)
        return self._pipe

    def build(self, job: Job, *, with_ui: bool = True) -> Payload:
        """The patched prompt for one job; ConfigError when the workflow cannot take a setting.
        `with_ui=False` skips copying the browser workflow (what `check` needs: it is per-job work)."""
        try:
            base = self.pipeline.base(job.workflow, lora=False)   # the shipped one until the project has its own
            own_prefix = any(k.rpartition(".")[2] == "filename_prefix" for k, _ in job.sets)
            prompt, ui = self.pipeline.build(base, job_spec(job, own_prefix=own_prefix), with_ui=with_ui)
        except ConfigError as e:
            raise ConfigError(f"job {job.name} (line {job.line}): {e.message}", hint=e.hint, details=e.details) from None
        return Payload(prompt=prompt, workflow=ui)

    def loras(self, job: Job) -> list[tuple[str, str]]:
        """(node id, exact LoRA name) of the LoRA loaders this job's prompt applies."""
        if job.lora is None:   # strength 0: ComfyUI does not load the workflow's own LoRA either
            return []
        return lora_loads(self.build(job, with_ui=False).prompt)

    def check(self, jobs: Sequence[Job]) -> None:
        """Build every job before anything is queued: a workflow that cannot take the settings fails now,
        and (with a server) every model file the prompts load is on it.

        Jobs that differ only in seed, size, strength and name are built once, when that one builds: whether
        a patch fails depends on the graph and on string values, and these are numbers the job file already
        checked (whole seeds and sizes, finite strengths) and a name that goes where a text goes; the models a
        prompt loads depend on the workflow and the LoRA, which are part of the kind. Jobs of a kind that
        fails are each built, so every problem line is the one a per-job build gives."""
        problems: list[str] = []
        seen: set[str] = set()
        models: dict[str, Mapping[str, Any]] = {}
        passed: set[tuple] = set()
        for job in jobs:
            kind: tuple | None = (job.workflow, job.prompt, job.lora, job.steps, job.guidance, job.sampler,
                                  job.scheduler, job.sets)
            try:
                if kind in passed:
                    continue
            except TypeError:   # an unhashable `set:` value (a list): no short cut
                kind = None
            try:
                payload = self.build(job, with_ui=False)
            except ConfigError as e:
                line = e.message if not e.details else f"{e.message} ({'; '.join(e.details[:3])})"
                if line not in seen:
                    seen.add(line)
                    problems.append(line)
                continue
            if kind is not None:
                passed.add(kind)
            models.setdefault(repr(sorted(required_models(payload.prompt).items())), payload.prompt)
        if problems:
            raise ConfigError(f"{len(problems)} job(s) cannot be turned into a ComfyUI prompt", details=problems[:20],
                              hint="fix the job file or the workflow; `batch plan FILE` shows the jobs")
        if self._check_models is not None:
            for prompt in models.values():
                self._check_models(prompt)


def make_lora_check(builder: PromptBuilder) -> Callable[[Job, Any, Any], str | None]:
    """The scheduler's verifier: a job whose LoRA made ComfyUI log `lora key not loaded` fails
    (comfy/serverlog.py); servers without the log route, or unreachable, are not checked."""
    verdicts: dict[str, LoraWarnings] = {}

    def verify(job: Job, server: Any, outcome: Any) -> str | None:
        loads = builder.loras(job)
        reader = getattr(server, "server_log", None)
        if not loads or reader is None:
            return None

        def fetch() -> Any:
            try:
                return reader()
            except ComfyError:
                return None

        return lora_verdict(loads, set(outcome.cached), outcome.window, fetch, verdicts)

    return verify


def _split(ref: str) -> tuple[str, str]:
    node, _, input_name = ref.rpartition(".")
    return node, input_name
