"""Planning a batch: every check `batch run` makes before it queues anything, in one function.

`batch plan` and `batch run` both call `plan_batch`, so a plan that passes is a run that starts, and a
bad job file fails both the same way. The one difference is where the node schemas come from: `run`
(and `plan --server`) ask the first server's /object_info, `plan` alone uses the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.batch.jobs import Job, JobFile, load_job_file
from orchestrator.batch.manifest import MANIFEST_NAME, JobRecord, read_manifest
from orchestrator.batch.prompts import PromptBuilder
from orchestrator.errors import ComfyError, ConfigError, UsageError
from orchestrator.layout import Layout


@dataclass(frozen=True)
class BatchPlan:
    """A checked job file: its jobs, where they go, what earlier runs there made, the prompt builder."""

    job_file: JobFile
    out: Path
    earlier: Mapping[str, JobRecord]
    builder: PromptBuilder
    servers: tuple[Any, ...] = ()

    @property
    def jobs(self) -> tuple[Job, ...]:
        return self.job_file.jobs


def plan_batch(layout: Layout, file: Path, *, out: str | None = None,
               servers: Callable[[], Sequence[Any]] | None = None) -> BatchPlan:
    """Load and check a job file (format, output folder, earlier runs, every job's prompt); raises the
    error `batch run` would stop with. `servers` connects the servers whose schemas to check against
    (called after the file checks; when none answers, the prompts are checked offline first, so a bad file
    fails the same way with or without a server)."""
    jf = load_job_file(Path(file))
    folder = Path(out).expanduser().resolve() if out else _project_path(layout, jf.out)
    if folder.exists() and not folder.is_dir():
        where = "--out" if out else f"{file}: out:"
        raise UsageError(f"{where} {folder} is a file, not a folder", hint="give a folder for the images")
    earlier, _ = read_manifest(folder / MANIFEST_NAME)
    check_conflicts(jf.jobs, earlier, folder)
    try:
        connected = tuple(servers()) if servers is not None else ()
    except ComfyError:
        PromptBuilder(layout).check(jf.jobs)   # a bad job file is still reported as `plan` reports it
        raise
    builder = PromptBuilder(layout, connected[0].client.object_info, where=f"ComfyUI at {connected[0].url}",
                            check_models=connected[0].client.check_models) if connected else PromptBuilder(layout)
    try:
        builder.check(jf.jobs)
    except BaseException:
        for s in connected:
            s.close()
        raise
    return BatchPlan(jf, folder, earlier, builder, connected)


def check_conflicts(jobs: Sequence[Job], earlier: Mapping[str, JobRecord], out_dir: Path) -> None:
    """Refuse to overwrite images an earlier, different version of the job file made under the same name."""
    keys = {j.key for j in jobs}
    names = {j.name for j in jobs}
    clashes = [f"{rec.name}: made with other settings ({', '.join(rec.files) or 'no files'})"
               for rec in earlier.values()
               if rec.state == "done" and rec.key not in keys and rec.name in names]
    if clashes:
        raise ConfigError(f"{len(clashes)} output name(s) in {out_dir} belong to a different version of "
                          "this job file", details=clashes[:10],
                          hint="use a new --out folder, or change the `name` template, so nothing is overwritten")


def _project_path(layout: Layout, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else layout.root / p
