"""An in-memory ComfyUI stand-in for scheduler tests: a queue worked off by a thread in real time."""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from PIL import Image  # imported here so the first fetch does not stall a worker for 50 ms

from orchestrator.batch.scheduler import ImageRef, Outcome, Payload
from orchestrator.errors import ComfyRejected, ComfyUnavailable


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    """A solid-colour PNG."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def color_for(seed: int, strength: float) -> tuple[int, int, int]:
    """The colour the fake paints for a (seed, strength): lets sheet tests find each image."""
    return (40 + (seed * 53) % 200, 40 + int(strength * 150) % 200, 90)


class FakeServer:
    """Runs one prompt at a time for `duration` seconds; can die, restart and reject."""

    def __init__(self, url: str, duration: float = 0.02,
                 reject: Callable[[dict], str | None] | None = None,
                 fail: Callable[[dict], str | None] | None = None,
                 die_after: int | None = None, hold_after: int | None = None,
                 restart_after: int | None = None) -> None:
        self.url, self.duration, self.reject, self.fail = url, duration, reject, fail
        self.die_after = die_after      # kill() itself right after completing this many jobs
        self.hold_after = hold_after    # after this many jobs, the next one runs until release()
        self.restart_after = restart_after  # restart() right after completing this many jobs
        self.lock = threading.Condition()
        self.pending: deque[tuple[str, dict]] = deque()
        self.running: str | None = None
        self.history: dict[str, Outcome] = {}
        self.prompts: dict[str, dict] = {}
        self.alive = True
        self.submitted: list[str] = []
        self.completed: list[str] = []
        self.starved = 0           # times the server ran dry and later got more work
        self.ran_dry = False
        self.max_queue = 0
        self.fetches: list[str] = []
        self._closed = False
        self.thread = threading.Thread(target=self._gpu, daemon=True)
        self.thread.start()

    # --- the Server protocol ---
    def _check(self) -> None:
        if not self.alive:
            raise ComfyUnavailable(f"no ComfyUI server answers at {self.url}")

    def submit(self, payload: Payload, prompt_id: str) -> None:
        prompt = payload.prompt
        with self.lock:
            self._check()
            why = self.reject(prompt) if self.reject else None
            if why:
                raise ComfyRejected(f"ComfyUI rejected the prompt: {why}")
            if self.ran_dry and self.running is None and not self.pending and self.completed:
                self.starved += 1  # the GPU sat idle and then got more work: it waited on us
            self.ran_dry = False
            self.pending.append((prompt_id, prompt))
            self.prompts[prompt_id] = prompt
            self.submitted.append(prompt_id)
            self.max_queue = max(self.max_queue, len(self.pending) + (self.running is not None))
            self.lock.notify_all()

    def queue_ids(self) -> tuple[set[str], set[str]]:
        with self.lock:
            self._check()
            return ({self.running} if self.running else set()), {p for p, _ in self.pending}

    def result(self, prompt_id: str) -> Outcome | None:
        with self.lock:
            self._check()
            return self.history.get(prompt_id)

    def fetch(self, ref: ImageRef) -> bytes:
        with self.lock:
            self._check()
            self.fetches.append(ref.filename)
            prompt = self.prompts[ref.filename.split(".")[0]]
        return png(color_for(prompt["seed"], prompt["strength"]))

    def delete_pending(self, prompt_ids: Sequence[str]) -> None:
        with self.lock:
            self._check()
            drop = set(prompt_ids)
            self.pending = deque((p, x) for p, x in self.pending if p not in drop)

    # --- misbehaviour ---
    def kill(self) -> None:
        """The server goes away (requests fail) and forgets everything."""
        with self.lock:
            self.alive = False
            self.pending.clear()
            self.running = None
            self.history.clear()

    def restart(self) -> None:
        """Back up, empty (a real ComfyUI forgets its queue and history on restart)."""
        with self.lock:
            self.kill()
            self.alive = True

    def release(self) -> None:
        """Let a held server work again."""
        with self.lock:
            self.hold_after = None
            self.lock.notify_all()

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self.lock.notify_all()

    def _gpu(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self._closed:
                    self.lock.wait(0.05)
                if self._closed:
                    return
                pid, prompt = self.pending.popleft()
                self.running = pid
                while self.hold_after is not None and len(self.completed) >= self.hold_after and not self._closed:
                    self.lock.wait(0.05)  # held: this job stays running until release()
            time.sleep(self.duration)
            with self.lock:
                if self.running != pid:
                    continue  # killed meanwhile
                self.running = None
                why = self.fail(prompt) if self.fail else None
                self.history[pid] = (Outcome(ok=False, error=why) if why else
                                     Outcome(ok=True, images=(ImageRef(f"{pid}.png", "batch"),)))
                self.completed.append(pid)
                self.ran_dry = not self.pending
                if self.restart_after is not None and len(self.completed) == self.restart_after:
                    self.pending.clear()  # like restart(): up again at once, queue and history gone
                    self.history.clear()
                if self.die_after is not None and len(self.completed) >= self.die_after:
                    self.alive = False  # like kill(): it forgets everything, including this job
                    self.pending.clear()
                    self.history.clear()
