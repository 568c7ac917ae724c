"""The `batch run` use case: resume from the manifest, schedule, then sheets, index and summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.batch.jobs import Job, JobFile, order_for_the_gpu
from orchestrator.batch.manifest import MANIFEST_NAME, Manifest
from orchestrator.batch.outputs import make_saver
from orchestrator.batch.plan import check_conflicts
from orchestrator.batch.scheduler import Builder, Scheduler, Server, Settings, Snapshot, Verifier
from orchestrator.batch.sheets import Sheet, make_sheets, write_index
from orchestrator.errors import ComfyError, ConfigError
from orchestrator.progress import Event, NullSink, Sink


@dataclass(frozen=True)
class ServerSummary:
    """What one server did in this run."""

    url: str
    done: int
    per_minute: float


@dataclass(frozen=True)
class BatchSummary:
    """The end of a batch run, for the summary lines and --json."""

    total: int
    done: int                     # made in this run
    skipped: int                  # already done by an earlier run
    failed: int
    pending: int                  # not finished (interrupted / servers gone)
    wall: float
    servers: tuple[ServerSummary, ...]
    out_dir: Path
    manifest: Path
    index: Path | None
    sheets: tuple[Path, ...]
    failures: tuple[tuple[str, str], ...]   # (job name, error)


def prepare(scheduler: Scheduler, jobs: Sequence[Job], manifest: Manifest, out_dir: Path,
            save, connect: Callable[[str], Server] | None, log: Callable[[str], None],
            verify: Verifier | None = None) -> None:
    """Resume: skip done jobs, follow or re-collect queued ones, queue the rest (grouped for the GPU:
    order_for_the_gpu)."""
    for job in order_for_the_gpu(jobs):
        rec = manifest.get(job.key)
        if rec is None:
            manifest.record(job.key, "pending", name=job.name, settings=job.settings())
        elif rec.state == "done":
            if rec.files and all((out_dir / f).exists() for f in rec.files):
                scheduler.skip()
                continue
            manifest.record(job.key, "pending", reason="output files missing")
        elif rec.state == "failed":
            manifest.record(job.key, "pending", reason="retry after failure")
        elif rec.state == "queued" and rec.server and rec.prompt_id:
            if scheduler.adopt(job, rec.server, rec.prompt_id):
                continue
            got = _recollect(job, rec.server, rec.prompt_id, manifest, save, connect, log, verify) \
                if connect is not None else None
            if got == "done":
                scheduler.skip()
                continue
            if got == "failed":
                scheduler.failed_before()
                continue
            manifest.record(job.key, "pending", reason=f"was queued on {rec.server}, not part of this run")
        scheduler.add(job)


def _recollect(job: Job, url: str, pid: str, manifest: Manifest, save, connect, log,
               verify: Verifier | None = None) -> str | None:
    """A job queued by an earlier run and finished since: "done" (saved now), "failed" (its LoRA did not
    apply), or None (not finished / unreachable: it runs again)."""
    try:
        server = connect(url)
        outcome = server.result(pid)
        if outcome is None or not outcome.ok:
            return None
        problem = verify(job, server, outcome) if verify is not None else None
        if problem is not None:
            manifest.record(job.key, "failed", server=url, prompt_id=pid, error=problem)
            log(f"failed: {job.name}: {problem}")
            return "failed"
        files = save(job, server, pid, outcome)
    except ComfyError:
        return None
    manifest.record(job.key, "done", server=url, prompt_id=pid, files=files)
    log(f"re-collected {job.name} from {url}")
    return "done"


def run_batch(job_file: JobFile, out_dir: Path, servers: Sequence[Server], build: Builder,
              settings: Settings = Settings(), *, connect: Callable[[str], Server] | None = None,
              on_progress: Callable[[Snapshot], None] | None = None,
              log: Callable[[str], None] = lambda _: None, verify: Verifier | None = None,
              sink: Sink | None = None) -> BatchSummary:
    """Run (or resume) a batch; KeyboardInterrupt leaves a consistent manifest and an index, then re-raises.

    `sink` gets `start`, one `image` per collected job (its files, relative to `out_dir`) and `end`."""
    sink = sink or NullSink()
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = job_file.jobs
    with Manifest(out_dir / MANIFEST_NAME) as manifest:
        check_conflicts(jobs, manifest.jobs, out_dir)   # again, under the manifest's lock
        save = make_saver(out_dir, job_file.path)
        scheduler = Scheduler(servers, manifest, build, save, settings, verify=verify)
        with manifest.deferred_sync():
            prepare(scheduler, jobs, manifest, out_dir, save, connect, log, verify)
        manifest.event("run", job_file=str(job_file.path), total=len(jobs), skipped=scheduler.skipped,
                       servers=[s.url for s in servers], depth=settings.depth)
        progress: Snapshot | None = None
        # no lines: the CLI says what starts and prints the summary; scripts get counts and files
        sink.emit(Event("batch", "start", step=scheduler.skipped, total=len(jobs), unit="image"))
        made = [scheduler.skipped]

        def on_image(name: str, files: tuple[str, ...]) -> None:
            made[0] += 1
            sink.emit(Event("batch", "image", step=made[0], total=len(jobs), unit="image",
                            files=tuple(str(out_dir / f) for f in files)))

        try:
            progress = scheduler.run(on_progress, log, on_image)
        finally:
            final = progress or scheduler.snapshot()
            index, sheets = _finish(job_file, jobs, manifest, out_dir)
            summary = _summary(jobs, manifest, final, out_dir, index, sheets)
            manifest.event("end", done=summary.done, skipped=summary.skipped, failed=summary.failed,
                           pending=summary.pending, wall=round(summary.wall, 3))
    sink.emit(Event("batch", "end", step=summary.done + summary.skipped, total=summary.total, unit="image",
                    files=tuple(str(p) for p in (summary.index, *summary.sheets) if p is not None)))
    return summary


def _finish(job_file: JobFile, jobs: Sequence[Job], manifest: Manifest, out_dir: Path) -> tuple[Path, list[Sheet]]:
    images = {}
    for job in jobs:
        rec = manifest.get(job.key)
        if rec is not None and rec.state == "done" and rec.files:
            images[job.key] = out_dir / rec.files[0]
    sheets = make_sheets(jobs, images, out_dir)
    states = {k: (r.state, r.server, r.error) for k, r in manifest.jobs.items()}
    index = write_index(out_dir, f"batch {job_file.path.name}", jobs, images, states, sheets)
    return index, sheets


def _summary(jobs: Sequence[Job], manifest: Manifest, p: Snapshot, out_dir: Path, index: Path | None,
             sheets: Sequence[Sheet]) -> BatchSummary:
    states = [manifest.get(j.key) for j in jobs]
    failures = tuple((r.name, r.error or "?") for r in states if r is not None and r.state == "failed")
    pending = sum(1 for r in states if r is None or r.state in ("pending", "queued"))
    minutes = p.elapsed / 60 if p.elapsed > 0 else 0
    return BatchSummary(
        total=len(jobs), done=p.done, skipped=p.skipped, failed=len(failures), pending=pending, wall=p.elapsed,
        servers=tuple(ServerSummary(s.url, s.done, s.done / minutes if minutes else 0.0) for s in p.servers),
        out_dir=out_dir, manifest=manifest.path, index=index, sheets=tuple(s.path for s in sheets), failures=failures)
