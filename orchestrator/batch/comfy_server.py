"""The scheduler's `Server` on top of ComfyClient: HTTP for the truth, the websocket as a doorbell.

The client opens a websocket under our client_id when we submit, and ComfyUI then pushes every
message of our prompts to it. Left unread, that socket would fill up and ComfyUI's single
message loop would block on it (stalling its browser UI too), so `idle()` drains it while the
worker waits, and returns early when one of our prompts ends (`executing{node: null}`): the
worker polls /queue + /history right away instead of at the next tick. A dropped socket is
simply closed; polling every tick goes on and the next submit reconnects.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from orchestrator.batch.scheduler import ImageRef, Outcome, Payload
from orchestrator.comfy.pipeline import effective_values
from orchestrator.comfy.serverlog import cached_nodes, job_window
from orchestrator.errors import ComfyError, ComfyUnavailable


class ComfyServer:
    """One ComfyUI server as the scheduler sees it (used by one worker thread at a time)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.url = client.url.rstrip("/")

    @classmethod
    def connect(cls, url: str, *, timeout: float = 30.0) -> "ComfyServer":
        """A ComfyServer for `url` (no request made yet)."""
        from orchestrator.comfy.client import ComfyClient

        return cls(ComfyClient(url, timeout=timeout, connect_timeout=min(5.0, timeout)))

    def submit(self, payload: Payload, prompt_id: str) -> None:
        self.client.submit(payload.prompt, prompt_id=prompt_id, workflow=payload.workflow)

    def queue_ids(self) -> tuple[set[str], set[str]]:
        q = self.client.queue()
        return ({str(item[1]) for item in q.get("queue_running") or [] if len(item) > 1},
                {str(item[1]) for item in q.get("queue_pending") or [] if len(item) > 1})

    def result(self, prompt_id: str) -> Outcome | None:
        entry = self.client.history(prompt_id)
        if not entry:
            return None
        self.client.forget(prompt_id)  # the client keeps each submitted prompt until it is waited for
        return outcome_from_history(entry)

    def fetch(self, ref: ImageRef) -> bytes:
        from orchestrator.comfy.events import OutputImage

        return self.client.view(OutputImage(ref.filename, ref.subfolder, ref.type))

    def server_log(self) -> Any:
        """The server's recent log lines (/internal/logs/raw), None when it has no such route."""
        return self.client.server_log()

    def delete_pending(self, prompt_ids: Sequence[str]) -> None:
        """POST /queue {"delete": ids}: pending ones go, a running one is left to finish."""
        self.client.delete_pending(list(prompt_ids))

    def idle(self, poll: float, quiet: float | None = None) -> None:
        """Wait, draining our websocket: up to `quiet` s while it is up (its bell rings when one of our
        prompts ends, and a dead server closes it), else `poll` s."""
        from orchestrator.comfy.events import Executing, ExecutionError, ExecutionInterrupted

        if not self.client.connected:
            time.sleep(poll)
            return
        deadline = time.monotonic() + max(poll, quiet or poll)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event = self.client.next_event(left)  # None on timeout, or when the socket dropped
            if event is None or isinstance(event, (ExecutionError, ExecutionInterrupted)) or (
                    isinstance(event, Executing) and event.node is None):
                return

    def close(self) -> None:
        self.client.close()


def outcome_from_history(entry: dict[str, Any]) -> Outcome:
    """A /history/{id} entry -> Outcome: images of every output node, or the error ComfyUI recorded."""
    status = entry.get("status") or {}
    if status.get("status_str") != "success":
        for kind, data in status.get("messages") or []:
            if kind == "execution_error":
                message = str(data.get("exception_message", "")).strip().splitlines()
                return Outcome(ok=False, error=f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                                               f"{data.get('exception_type', 'error')}: {message[0] if message else ''}")
            if kind == "execution_interrupted":
                return Outcome(ok=False, error=f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")
        return Outcome(ok=False, error=f"ComfyUI reported status {status.get('status_str')!r} without details")
    images = []
    for node_out in (entry.get("outputs") or {}).values():
        for img in (node_out or {}).get("images") or []:
            if img.get("type", "output") == "output":
                images.append(ImageRef(str(img["filename"]), str(img.get("subfolder") or ""), "output"))
    if not images:
        return Outcome(ok=False, error="the prompt finished without saving an image (no SaveImage output)")
    queued = entry.get("prompt")
    prompt = queued[2] if isinstance(queued, list) and len(queued) > 2 and isinstance(queued[2], dict) else {}
    return Outcome(ok=True, images=tuple(images), window=job_window(entry), cached=tuple(sorted(cached_nodes(entry))),
                   values=effective_values(prompt))


def connect_servers(urls: Sequence[str], *, timeout: float = 30.0) -> list[ComfyServer]:
    """ComfyServers for the URLs; at least one must answer now (the others may come up later)."""
    servers = [ComfyServer.connect(u, timeout=timeout) for u in urls]
    errors = []
    for s in servers:
        try:
            s.queue_ids()
            return servers
        except ComfyError as e:
            errors.append(f"{s.url}: {e.message}")
    for s in servers:
        s.close()
    raise ComfyUnavailable("no ComfyUI server answers", details=errors,
                           hint="start one with `comfyui up` (or `comfyui up --workers N`), or pass --server URL")
