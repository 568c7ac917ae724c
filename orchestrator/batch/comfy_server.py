"""The scheduler's `Server` on top of the ComfyUI client (HTTP only: /prompt, /queue, /history, /view)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.batch.scheduler import ImageRef, Outcome, Payload
from orchestrator.errors import ComfyError


class ComfyServer:
    """One ComfyUI server as the scheduler sees it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.url = client.url.rstrip("/")

    @classmethod
    def connect(cls, url: str, *, timeout: float = 30.0) -> "ComfyServer":
        """A ComfyServer for `url` (no request made yet)."""
        from orchestrator.comfy.client import ComfyClient

        return cls(ComfyClient(url, timeout=timeout))

    def submit(self, payload: Payload, prompt_id: str) -> None:
        self.client.submit(payload.prompt, prompt_id=prompt_id, workflow=payload.workflow)

    def queue_ids(self) -> tuple[set[str], set[str]]:
        q = self.client.queue()
        return ({str(item[1]) for item in q.get("queue_running", [])},
                {str(item[1]) for item in q.get("queue_pending", [])})

    def result(self, prompt_id: str) -> Outcome | None:
        entry = (self.client.history(prompt_id) or {}).get(prompt_id)
        if not entry:
            return None
        return outcome_from_history(entry)

    def fetch(self, ref: ImageRef) -> bytes:
        return self.client.view(ref.filename, subfolder=ref.subfolder, type=ref.type)

    def delete_pending(self, prompt_ids: Sequence[str]) -> None:
        self.client.delete_queued(list(prompt_ids))

    def close(self) -> None:
        self.client.close()


def outcome_from_history(entry: dict[str, Any]) -> Outcome:
    """A /history/{id} entry -> Outcome: images of every output node, or the error ComfyUI recorded."""
    status = entry.get("status") or {}
    messages = status.get("messages") or []
    if status.get("status_str") == "error" or status.get("completed") is False:
        for kind, data in messages:
            if kind == "execution_error":
                node = f"node {data.get('node_id')} ({data.get('node_type')})"
                return Outcome(ok=False, error=f"{node}: {data.get('exception_type', 'error')}: "
                                               f"{str(data.get('exception_message', '')).strip()}")
            if kind == "execution_interrupted":
                return Outcome(ok=False, error=f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")
        return Outcome(ok=False, error="ComfyUI reported an error without details")
    images = []
    for node_out in (entry.get("outputs") or {}).values():
        for img in node_out.get("images") or []:
            if img.get("type", "output") == "output":
                images.append(ImageRef(img["filename"], img.get("subfolder", ""), img.get("type", "output")))
    if not images:
        return Outcome(ok=False, error="the prompt finished without saving an image (no SaveImage output)")
    return Outcome(ok=True, images=tuple(images))


def connect_servers(urls: Sequence[str], *, timeout: float = 30.0) -> list[ComfyServer]:
    """ComfyServers for the URLs; the first one must answer (the others may come up later)."""
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
    from orchestrator.errors import ComfyUnavailable

    raise ComfyUnavailable("no ComfyUI server answers", details=errors,
                           hint="start one with `comfyui up` (or `comfyui up --workers N`), or pass --server URL")
