"""Fan a batch of jobs out over ComfyUI servers, keeping each server's queue fed to depth K.

How jobs are followed, and why: the truth is HTTP. One worker thread per server polls that
server's `GET /queue` (one small request) and reads `GET /history/{id}` only for our ids that
have left the queue. Between polls the worker waits on the server's websocket, used only as a
doorbell (`executing{node: null}` for one of our prompts wakes it at once, a dead server closes
it; see comfy_server): while it is up we poll every `quiet` s (1 s), else every `poll` s.
We do not follow jobs *through* the websocket: ComfyUI sends job messages only to the socket of
the client_id that submitted, a dropped socket loses messages that must be recovered from
/history anyway, and jobs queued by a previous run (resume) have no socket at all. With depth
>= 2 the next job already waits on the server, so how fast we notice a finished job never idles
the GPU; it only delays the refill, which has a whole image's time to happen. So a drop costs
nothing but latency, and one mechanism covers live runs, drops, restarts and resume.

Placement: a worker takes a new job from the shared queue only when its server has a free slot
(fewer than `depth` of our jobs outstanding), so each job goes to the server that frees up first.
A server that stops answering is marked down, its jobs go back to the front of the shared queue
for the others, and the worker keeps probing it; when it comes back, stale copies of those jobs
are deleted from its queue. A job missing from both /queue and /history twice in a row (server
restarted and forgot it) is re-queued. Every transition is in the manifest before we act on it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.batch.jobs import Job
from orchestrator.batch.manifest import Manifest
from orchestrator.batch.protocol import ImageRef, Outcome, Payload, Server, ServerState, Settings, Snapshot
from orchestrator.errors import ComfyError, ComfyRejected, ComfyUnavailable, ConfigError, OrchestratorError

__all__ = ["FailFast", "ImageRef", "Outcome", "Payload", "Scheduler", "Server", "ServerState", "Snapshot",
           "Settings", "Verifier"]


Saver = Callable[[Job, Server, str, Outcome], list[str]]
Builder = Callable[[Job], Payload]
Verifier = Callable[[Job, Server, Outcome], "str | None"]   # a finished job's problem (it then fails), or None


@dataclass
class _Slot:
    server: Server
    outstanding: dict[str, Job] = field(default_factory=dict)   # prompt_id -> job
    missing: set[str] = field(default_factory=set)                # seen missing once
    stale: set[str] = field(default_factory=set)                  # ids to delete when it is back
    adopted: set[str] = field(default_factory=set)                # ids queued by an earlier run
    up: bool = True
    down_since: float | None = None
    done: int = 0
    error: str | None = None


class FailFast(OrchestratorError):
    """A job failed and --fail-fast was given."""


class Scheduler:
    """Runs jobs over servers; `run()` returns when every job is done or failed."""

    def __init__(self, servers: Sequence[Server], manifest: Manifest, build: Builder, save: Saver,
                 settings: Settings = Settings(), *, clock: Callable[[], float] = time.monotonic,
                 verify: Verifier | None = None) -> None:
        if not servers:
            raise ConfigError("no ComfyUI server to run the batch on", hint="pass --server URL")
        self.slots = [_Slot(s) for s in servers]
        self.manifest, self.build, self.save, self.settings, self.clock = manifest, build, save, settings, clock
        self.verify = verify
        self.todo: deque[Job] = deque()
        self.cond = threading.Condition()
        self.stop_submit = False
        self.stop_all = False
        self.failed = 0
        self.done = 0
        self.skipped = 0
        self.total = 0
        self.fatal: Exception | None = None
        self.started = clock()
        self.busy = 0.0
        self.cpu = 0.0
        self.notes: list[str] = []   # milestones from the workers, printed by the main thread
        self.made: list[tuple[str, tuple[str, ...]]] = []   # (job name, files) collected, reported by the main thread

    # ---- setup -------------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """A job to submit."""
        self.todo.append(job)
        self.total += 1

    def adopt(self, job: Job, url: str, prompt_id: str) -> bool:
        """Follow a job a previous run queued on `url`; False when that server is not ours."""
        for slot in self.slots:
            if slot.server.url == url:
                slot.outstanding[prompt_id] = job
                slot.adopted.add(prompt_id)
                self.total += 1
                return True
        return False

    def failed_before(self, n: int = 1) -> None:
        """Count jobs that failed while being re-collected from an earlier run."""
        self.failed += n
        self.total += n

    def skip(self, n: int = 1) -> None:
        """Count jobs already done by an earlier run."""
        self.skipped += n
        self.total += n

    # ---- running -----------------------------------------------------------------------
    def run(self, on_progress: Callable[[Snapshot], None] | None = None,
            on_note: Callable[[str], None] | None = None,
            on_image: Callable[[str, tuple[str, ...]], None] | None = None) -> Snapshot:
        """Run to completion. On KeyboardInterrupt (also from on_progress): cancel, record, re-raise.

        `on_note` gets milestones (a failed job, a server down or back) and `on_image` each collected job
        (name, files), in the calling thread.
        """
        self.started = self.clock()
        workers = [threading.Thread(target=self._work, args=(s,), name=f"batch-{i}", daemon=True)
                   for i, s in enumerate(self.slots)]
        for w in workers:
            w.start()
        try:
            while any(w.is_alive() for w in workers):
                with self.cond:
                    self.cond.wait(0.2)
                    notes, self.notes = self.notes, []
                    made, self.made = self.made, []
                _report(notes, made, on_note, on_image)
                if on_progress is not None:
                    on_progress(self.snapshot())
                if self.fatal is not None:
                    break
        except BaseException as e:  # Ctrl+C, or a failing progress callback: stop cleanly either way
            self._shutdown(workers)
            self._cancel_pending()
            self.manifest.event("interrupted" if isinstance(e, KeyboardInterrupt) else "stopped",
                                **self._counts())
            raise
        self._shutdown(workers)
        notes, self.notes = self.notes, []
        made, self.made = self.made, []
        _report(notes, made, on_note, on_image)
        if self.fatal is not None:
            self._cancel_pending()
            raise self.fatal
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """The current counts and per-server states."""
        with self.cond:
            return Snapshot(total=self.total, done=self.done, failed=self.failed, skipped=self.skipped,
                            elapsed=self.clock() - self.started, busy=self.busy, cpu=self.cpu,
                            servers=tuple(ServerState(s.server.url, s.up, len(s.outstanding), s.done, s.error)
                                          for s in self.slots))

    def _counts(self) -> dict[str, int]:
        return {"done": self.done, "failed": self.failed, "skipped": self.skipped, "total": self.total}

    def _shutdown(self, workers: list[threading.Thread]) -> None:
        with self.cond:
            self.stop_submit = self.stop_all = True
            self.cond.notify_all()
        for w in workers:
            w.join()

    def _cancel_pending(self) -> None:
        """Ctrl+C / fail-fast: drop our waiting jobs from each queue; running ones stay `queued`."""
        for slot in self.slots:
            ids = list(slot.outstanding)
            if not ids or not slot.up:
                continue
            try:
                slot.server.delete_pending(ids)
                running, pending = slot.server.queue_ids()
            except ComfyError:
                continue  # unreachable: the jobs stay `queued`; the next run asks /history again
            for pid in ids:
                if pid in running or pid in pending:
                    continue  # started before the delete landed: collected by the next run
                try:
                    finished = slot.server.result(pid) is not None
                except ComfyError:
                    finished = True  # unknown: leave it `queued` and let the next run look
                if not finished:
                    job = slot.outstanding.pop(pid)
                    self.manifest.record(job.key, "pending", reason="cancelled")

    def _work(self, slot: _Slot) -> None:
        """One server's loop; an unexpected error stops the batch (re-raised by run) instead of hanging it."""
        try:
            self._loop(slot)
        except Exception as e:  # a bug or a broken seam: stop everything, keep the manifest consistent
            with self.cond:
                if self.fatal is None:
                    self.fatal = e
                self.stop_submit = True
                self.cond.notify_all()

    def _loop(self, slot: _Slot) -> None:
        """One server's loop: probe if down, fill to depth, poll, collect."""
        s = self.settings
        while True:
            with self.cond:
                if self.stop_all:
                    return
                if not self.todo and not slot.outstanding and self._nothing_in_flight():
                    self.cond.notify_all()
                    return
            if not slot.up:
                self._probe(slot)
                continue
            t0, c0 = time.perf_counter(), time.thread_time()
            self._fill(slot)
            finished = self._poll(slot)
            if finished:
                self._fill(slot)  # refill first: saving images must not keep the GPU waiting
            for pid, job, outcome in finished:
                self._collect(slot, pid, job, outcome)
            with self.cond:
                self.busy += time.perf_counter() - t0
                self.cpu += time.thread_time() - c0
                if self.stop_all:
                    return
                if not slot.outstanding:
                    if not self.todo and self._nothing_in_flight():
                        self.cond.notify_all()
                        return
                    self.cond.wait(min(0.5, s.poll * 5))  # woken by re-queued jobs and completions
                    continue
            idle = getattr(slot.server, "idle", None)
            if idle is not None:
                # jobs adopted from an earlier run ring no bell (another client_id), nor does a job
                # we are about to declare lost: poll at the short interval for those
                hurry = bool(slot.missing) or any(pid in slot.adopted for pid in slot.outstanding)
                idle(s.poll, s.poll if hurry else s.quiet)  # returns early when one of our prompts ends
            else:
                with self.cond:
                    if not self.stop_all:
                        self.cond.wait(s.poll)

    def _nothing_in_flight(self) -> bool:
        return all(not other.outstanding for other in self.slots)

    def _take(self) -> Job | None:
        with self.cond:
            if self.stop_submit or not self.todo:
                return None
            return self.todo.popleft()

    def _fill(self, slot: _Slot) -> None:
        while len(slot.outstanding) < self.settings.depth:
            job = self._take()
            if job is None:
                return
            try:
                payload = self.build(job)
            except ConfigError as e:
                self._fail(slot, job, None, _one_line(e))
                continue
            pid = str(uuid.uuid4())
            self.manifest.record(job.key, "queued", name=job.name, server=slot.server.url, prompt_id=pid)
            try:
                slot.server.submit(payload, pid)
            except ComfyRejected as e:
                self._fail(slot, job, pid, _one_line(e))
                continue
            except ComfyError as e:
                slot.stale.add(pid)  # it may have landed (a timeout): deleted there when the server is back
                self._requeue(job, f"{slot.server.url}: {e.message}")
                self._mark_down(slot, e)
                return
            slot.outstanding[pid] = job

    def _poll(self, slot: _Slot) -> list[tuple[str, Job, Outcome]]:
        """Ask the server about our outstanding jobs; returns (and un-tracks) the finished ones."""
        finished: list[tuple[str, Job, Outcome]] = []
        if not slot.outstanding:
            return finished
        try:
            running, pending = slot.server.queue_ids()
        except ComfyError as e:
            self._mark_down(slot, e)
            return finished
        for pid, job in list(slot.outstanding.items()):
            if pid in running or pid in pending:
                slot.missing.discard(pid)
                continue
            try:
                outcome = slot.server.result(pid)
            except ComfyError as e:
                self._mark_down(slot, e, finished)
                return []
            if outcome is None:
                if pid not in slot.missing:
                    slot.missing.add(pid)  # one more look before calling it lost
                    continue
                slot.missing.discard(pid)
                del slot.outstanding[pid]
                self._requeue(job, f"{slot.server.url} forgot the job (restarted?)")
                with self.cond:
                    self.notes.append(f"{slot.server.url} forgot {job.name} (restarted?): queued again")
                continue
            slot.missing.discard(pid)
            del slot.outstanding[pid]
            finished.append((pid, job, outcome))
        return finished

    def _collect(self, slot: _Slot, pid: str, job: Job, outcome: Outcome) -> None:
        if not outcome.ok:
            self._fail(slot, job, pid, outcome.error or "failed on the server")
            return
        problem = self.verify(job, slot.server, outcome) if self.verify is not None else None
        if problem is not None:
            self._fail(slot, job, pid, problem)
            return
        try:
            files = self.save(job, slot.server, pid, outcome)
        except ComfyError as e:
            self._requeue(job, f"{slot.server.url}: cannot fetch the image: {e.message}")
            self._mark_down(slot, e)
            return
        except OSError as e:
            self._fail(slot, job, pid, f"cannot write the image: {e}")
            return
        self.manifest.record(job.key, "done", server=slot.server.url, prompt_id=pid, files=files)
        with self.cond:
            self.done += 1
            slot.done += 1
            self.made.append((job.name, tuple(files)))
            self.cond.notify_all()

    def _fail(self, slot: _Slot, job: Job, pid: str | None, error: str) -> None:
        self.manifest.record(job.key, "failed", server=slot.server.url, prompt_id=pid, error=error)
        with self.cond:
            self.failed += 1
            self.notes.append(f"failed: {job.name}: {error}")
            if self.settings.fail_fast and self.fatal is None:
                self.fatal = FailFast(f"job {job.name} failed: {error}",
                                      hint="fix it and rerun the same command: finished jobs are skipped")
                self.stop_submit = True
            self.cond.notify_all()

    def _requeue(self, job: Job, reason: str) -> None:
        rec = self.manifest.get(job.key)
        if rec is not None and rec.attempts >= self.settings.max_attempts:
            self.manifest.record(job.key, "failed", error=f"lost {rec.attempts} times; last: {reason}")
            with self.cond:
                self.failed += 1
            return
        self.manifest.record(job.key, "pending", reason=reason)
        with self.cond:
            self.todo.appendleft(job)
            self.cond.notify_all()

    def _mark_down(self, slot: _Slot, err: ComfyError, finished: Sequence[tuple[str, Job, Outcome]] = ()) -> None:
        """The server stopped answering: give its jobs to the others and start probing it."""
        now = self.clock()
        with self.cond:
            n = len(slot.outstanding) + len(finished)
            self.notes.append(f"{slot.server.url} is down ({err.message})" +
                              (f": {n} job{'s' if n != 1 else ''} handed to the other servers" if n else ""))
        slot.up, slot.error = False, err.message
        slot.down_since = slot.down_since or now
        lost = [(pid, job) for pid, job, _ in finished] + list(slot.outstanding.items())
        for pid, job in lost:
            slot.stale.add(pid)
            self._requeue(job, f"{slot.server.url} is down: {err.message}")
        slot.outstanding.clear()
        slot.missing.clear()

    def _probe(self, slot: _Slot) -> None:
        with self.cond:
            if self.stop_all:
                return
            self.cond.wait(self.settings.retry_down)
            if self.stop_all or (not self.todo and self._nothing_in_flight()):
                return
        try:
            if slot.stale:
                slot.server.delete_pending(sorted(slot.stale))
            slot.server.queue_ids()
        except ComfyError as e:
            slot.error = e.message
            if all(not x.up and x.down_since is not None and self.clock() - x.down_since > self.settings.down_timeout
                   for x in self.slots):
                with self.cond:
                    if self.fatal is None:
                        self.fatal = ComfyUnavailable(
                            "every ComfyUI server has been unreachable for "
                            f"{self.settings.down_timeout:.0f}s", details=[f"{x.server.url}: {x.error}" for x in self.slots],
                            hint="start the servers (`comfyui up`) and rerun: finished jobs are skipped")
                    self.stop_all = True
                    self.cond.notify_all()
            return
        slot.stale.clear()
        slot.up, slot.error, slot.down_since = True, None, None
        with self.cond:
            self.notes.append(f"{slot.server.url} is back")


def _report(notes: list[str], made: list[tuple[str, tuple[str, ...]]], on_note: Callable[[str], None] | None,
            on_image: Callable[[str, tuple[str, ...]], None] | None) -> None:
    if on_note is not None:
        for note in notes:
            on_note(note)
    if on_image is not None:
        for name, files in made:
            on_image(name, files)


def _one_line(e: OrchestratorError) -> str:
    return "; ".join([e.message, *e.details])[:2000]
