"""A ComfyUI test double: the HTTP routes and websocket messages of ComfyUI 0.8.0, as recorded.

    with ComfyDouble(step_time=0.01, steps=4) as comfy:
        client = ComfyClient(comfy.url)

HTTP and websocket share one port on 127.0.0.1 (a free one, or the same one after `restart()`).
Every route also answers under `/api/`. Prompts are validated against the double's node schema
(tests/comfy_double_nodes.py) with the real server's 400 bodies, then "executed" one at a time by a
worker thread: the real message order (status, execution_start, execution_cached, progress_state,
executing, progress + binary previews, executed, execution_success, status, executing{node:null}),
sent only to the socket named by the prompt's client_id. SaveImage writes small real PNGs that
/view serves. Node outputs are cached by inputs (ComfyUI's classic cache keeps the last prompt's
nodes), so a re-run reports cached nodes and re-sends `executed` with the old files.

The server log (`GET /internal/logs` and `/internal/logs/raw`, app/logger.py's last 300 writes with
the server's local time): "got prompt", "invalid prompt: ...", "Prompt executed in ...", and one
`lora key not loaded: <key>` per key for LoRAs named in `lora_mismatch` ({file: number of keys that
match nothing}) each time a LoraLoader really runs (not when cached), as comfy/lora.py does.
`log_utc_offset` puts the log in another time zone than this machine's, like a remote server.

Misbehaviour on demand: `fail_next("error" | "interrupt", ...)`, `drop_websocket_after(n)`,
`slow_responses(seconds)`, `http_500_next(n)`, `stop()` / `start()` / `restart()` (same port,
history and queue lost). `hold_node(id | "*")` keeps a node running until an interrupt or the returned
event, so tests act while a job is certainly in flight instead of betting on timings.
The websocket server is our own (tests/comfy_ws.py, stdlib only).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.comfy_double_http import Handler
from tests.comfy_double_nodes import object_info, validate
from tests.comfy_ws import WsConnection

DEFAULT_MODELS = {
    "checkpoints": ["flux1-dev.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "vae": ["ae.safetensors"],
    "loras": ["flux_dreambooth.safetensors"],
    "diffusion_models": [],
}
MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}  # supported_pt_extensions
LOG_CAPACITY = 300   # app/logger.py setup_logger(capacity=300)
MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "upscale_models"]


def listed(names: list[str]) -> list[str]:
    """A model folder as ComfyUI lists it (folder_paths.get_filename_list): relative paths with sub-folders,
    only the model extensions (any case), sorted."""
    return sorted({n for n in names if os.path.splitext(n)[1].lower() in MODEL_EXTENSIONS})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    status_str: str = ""

    def queue_entry(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


class _Abort(Exception):
    """The server is stopping: abandon the job silently."""


class ComfyDouble:
    """A ComfyUI stand-in on 127.0.0.1 (see module docstring); a context manager."""

    def __init__(self, *, models: dict[str, list[str]] | None = None, step_time: float = 0.0,
                 node_time: float = 0.0, steps: int | None = None, preview_method: str = "none",
                 port: int = 0, lora_mismatch: dict[str, int] | None = None,
                 log_utc_offset: timedelta | None = None) -> None:
        self.models = {k: list(v) for k, v in (models if models is not None else DEFAULT_MODELS).items()}
        self.step_time = step_time
        self.node_time = node_time
        self.steps = steps
        self.preview_method = preview_method
        self.port = port
        self.lora_mismatch = dict(lora_mismatch or {})
        self.log_utc_offset = log_utc_offset
        self.root = Path(tempfile.mkdtemp(prefix="comfy-double-"))
        for sub in ("output", "input", "temp", "user/default/workflows"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.requests: list[tuple[str, str]] = []       # (method, path) of every HTTP request
        self.posted: list[dict[str, Any]] = []          # POST /prompt bodies that parsed
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self.sockets: list[WsConnection] = []
        self._reset_state()
        self._fail: list[dict[str, Any]] = []
        self._drop_after: int | None = None
        self._holds: dict[str, threading.Event] = {}
        self.slow = 0.0
        self._slow_over = threading.Event()
        self._http_500 = 0
        self._preview_jpeg: bytes | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.number = 0
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.history: dict[str, Job] = {}
        self.cache: dict[str, Any] = {}
        self.interrupt_flag = False
        self.running_flag = False
        self.logs: deque[dict[str, str]] = deque(maxlen=LOG_CAPACITY)   # a new process: a new log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ComfyDouble":
        """Listen on the port (a free one the first time) and start the worker."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.double = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self.running_flag = True
        self._slow_over = threading.Event()
        self._threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
                         threading.Thread(target=self._worker, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Go away like a killed server: close the port and every connection, forget jobs."""
        with self.lock:
            if not self.running_flag:
                return
            self.running_flag = False
            self.wake.notify_all()
            self._slow_over.set()
            conns, socks = list(self._conns), list(self.sockets)
            self._conns.clear()
            self.sockets.clear()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        for ws in socks:
            ws.drop()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        with self.lock:
            self._reset_state()

    def restart(self) -> None:
        """stop() then start() on the same port: queue, history and cache are lost, files stay."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ComfyDouble":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- misbehaviour ------------------------------------------------------------------------
    def fail_next(self, kind: str = "error", *, node_type: str | None = None,
                  message: str = "Error while deserializing header: header too large\n",
                  exception_type: str = "safetensors._safetensors_rust.SafetensorError") -> None:
        """The next job fails (`error`: execution_error) or is interrupted (`interrupt`) at a node.

        The node is the first of `node_type` to run, else the sampler, else the last node.
        """
        kind = {"execution_error": "error", "interrupted": "interrupt", "execution_interrupted": "interrupt"
                }.get(kind, kind)
        if kind not in ("error", "interrupt"):
            raise ValueError(f"fail_next: unknown kind {kind!r} (error | interrupt)")
        self._fail.append({"kind": kind, "node_type": node_type, "message": message,
                           "exception_type": exception_type})

    def drop_websocket_after(self, n_messages: int) -> None:
        """Cut every websocket (no close frame) after `n_messages` more job messages; jobs go on."""
        self._drop_after = n_messages

    def hold_node(self, node_id: str) -> threading.Event:
        """Node `node_id` (`*`: any node) of the next jobs runs until an interrupt arrives or the event is set.

        Lets a test act while a node is certainly running, without betting on `node_time` being long
        enough under load; the messages are the same as for a node that takes that long.
        """
        release = threading.Event()
        self._holds[node_id] = release
        return release

    def slow_responses(self, seconds: float) -> None:
        """Delay every HTTP answer (and websocket handshake) by `seconds`; 0 also ends the delays under way."""
        self._slow_over.set()
        self._slow_over = threading.Event()
        self.slow = seconds

    def slow_wait(self) -> None:
        """The delay of one HTTP answer (cut short by slow_responses(0) or stop())."""
        if self.slow:
            self._slow_over.wait(self.slow)

    def http_500_next(self, n: int = 1) -> None:
        """The next `n` HTTP requests answer 500 text/plain like an aiohttp crash."""
        self._http_500 = n

    def take_500(self) -> bool:
        with self.lock:
            if self._http_500 > 0:
                self._http_500 -= 1
                return True
            return False

    # -- the server log ------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """One write to stdout/stderr as app/logger.py keeps it: {t: local ISO time, m: text}; a write
        starting with \\r replaces the last entry when that one did not end its line (progress bars)."""
        now = (datetime.now(timezone.utc) + self.log_utc_offset).replace(tzinfo=None) \
            if self.log_utc_offset is not None else datetime.now()
        with self.lock:
            if text.startswith("\r") and self.logs and not self.logs[-1]["m"].endswith("\n"):
                self.logs.pop()
            self.logs.append({"t": now.isoformat(), "m": text})

    # -- state used by the HTTP handler -----------------------------------------------------
    def object_info(self) -> dict[str, Any]:
        files = [p.name for p in (self.root / "input").iterdir() if p.is_file()]
        return object_info({k: listed(v) for k, v in self.models.items()}, files)

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def status_message(self, sid: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        if sid is not None:
            data["sid"] = sid
        return {"type": "status", "data": data}

    def register_socket(self, ws: WsConnection) -> None:
        with self.lock:
            self.sockets.append(ws)
        ws.send_text(json.dumps(self.status_message(ws.sid)))

    def unregister_socket(self, ws: WsConnection) -> None:
        with self.lock:
            if ws in self.sockets:
                self.sockets.remove(ws)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self.lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /prompt: validate, queue; (status, JSON body)."""
        with self.lock:
            number = self.number
            self.number += 1
            if "prompt" not in body:
                err = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                       "extra_info": {}}
                return 400, {"error": err, "node_errors": {}}
            if body.get("front"):
                number = -number
            elif "number" in body:
                number = int(body["number"])
            prompt = body["prompt"]
            if not isinstance(prompt, dict):   # ComfyUI crashes in validation: a plain 500
                raise ValueError("prompt is not an object")
            status, result, good = validate(prompt, self.object_info())
            if status != 200:
                self.log(f"invalid prompt: {result.get('error')}\n")
                return status, result
            prompt_id = str(body.get("prompt_id") or uuid.uuid4())
            extra = dict(body.get("extra_data") or {})
            for secret in ("auth_token_comfy_org", "api_key_comfy_org"):
                extra.pop(secret, None)
            if body.get("client_id") is not None:
                extra["client_id"] = body["client_id"]
            extra["create_time"] = now_ms()
            job = Job(number, prompt_id, prompt, extra, good, body.get("client_id"))
            self.pending.append(job)
            self.pending.sort(key=lambda j: j.number)
            # ComfyUI's PromptQueue.put queues this status under its mutex, before the worker can pick
            # the prompt up: sent outside the lock it raced the worker's own status + execution_start.
            self.broadcast(self.status_message())
            self.wake.notify_all()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": result}

    def delete_pending(self, ids: list[str] | None) -> None:
        with self.lock:
            self.pending = [] if ids is None else [j for j in self.pending if j.prompt_id not in ids]
        self.broadcast(self.status_message())

    def interrupt(self, prompt_id: str | None) -> None:
        with self.lock:
            if self.running and (prompt_id is None or self.running.prompt_id == prompt_id):
                self.interrupt_flag = True

    def history_entry(self, job: Job) -> dict[str, Any]:
        return {"prompt": job.queue_entry(), "outputs": job.outputs,
                "status": {"status_str": job.status_str, "completed": job.status_str == "success",
                           "messages": job.messages},
                "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                         for n in job.outputs}}

    # -- websocket sends ---------------------------------------------------------------------
    def broadcast(self, msg: dict[str, Any]) -> None:
        text = json.dumps(msg)
        for ws in list(self.sockets):
            ws.send_text(text)

    def _targets(self, job: Job, type_: str = "") -> list[WsConnection]:
        """The prompt's client socket(s); a prompt without client_id broadcasts only its progress."""
        if job.client_id is None:
            return list(self.sockets) if type_ in ("progress_state", "progress", "preview") else []
        return [ws for ws in list(self.sockets) if ws.sid == job.client_id]

    def _count_and_maybe_drop(self) -> None:
        if self._drop_after is None:
            return
        self._drop_after -= 1
        if self._drop_after <= 0:
            self._drop_after = None
            with self.lock:
                socks = list(self.sockets)
                self.sockets.clear()
            for ws in socks:
                ws.drop()

    def send(self, job: Job, type_: str, data: dict[str, Any], *, record: bool = False) -> None:
        """A job message to the prompt's client socket(s) only (history keeps the `record`ed ones)."""
        if not self.running_flag:
            raise _Abort
        if record:
            job.messages.append([type_, data])
        text = json.dumps({"type": type_, "data": data})
        for ws in self._targets(job, type_):
            ws.send_text(text)
        self._count_and_maybe_drop()

    # -- execution ---------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self.lock:
                while self.running_flag and not self.pending:
                    self.wake.wait(0.1)
                if not self.running_flag:
                    return
                job = self.pending.pop(0)
                self.running = job
                self.interrupt_flag = False
            try:
                from tests.comfy_double_exec import execute
                execute(self, job)
            except _Abort:
                return
            with self.lock:
                if self.running is job:
                    self.running = None
                    self.history[job.prompt_id] = job

    def preview_jpeg(self) -> bytes:
        if self._preview_jpeg is None:
            from PIL import Image
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (90, 120, 200)).save(buf, "JPEG", quality=70)
            self._preview_jpeg = buf.getvalue()
        return self._preview_jpeg

    def hold(self, node_id: str) -> None:
        """Block while `node_id` is held (see hold_node) and no interrupt arrived."""
        release = self._holds.get(node_id) or self._holds.get("*")
        while release is not None and not release.is_set() and not self.interrupt_flag:
            if not self.running_flag:
                raise _Abort
            release.wait(0.01)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while seconds > 0 and time.monotonic() < end:
            if not self.running_flag:
                raise _Abort
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))

