"""ComfyUI HTTP + websocket client: the only module importing requests / websocket-client.

    from orchestrator.comfy.client import ComfyClient
    with ComfyClient("http://127.0.0.1:8188") as comfy:
        comfy.check_models(prompt)                      # "LoRA 'x' not found; available: ..."
        prompt_id = comfy.submit(prompt, workflow=ui_workflow)
        result = comfy.wait(prompt_id, on_event=print)  # typed events from orchestrator.comfy.events
        paths = comfy.fetch_outputs(result, Path("outputs"))

The websocket (`/ws?clientId=<ours>`) is connected before anything is submitted, so no message is
missed; job messages reach only that socket. A job is done on `executing{node: null}` for its
prompt_id and confirmed with `/history/<id>`. A dropped websocket is reconnected and the job's fate
read from /history; a silent socket is checked against /history and /queue every `idle_check`
seconds; every HTTP call has a timeout. Failures raise ComfyUnavailable (with the URL),
ComfyRejected (one line per node error), ComfyFailed or ComfyInterrupted. Not thread-safe: use one
client per thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.comfy import events as ev
from orchestrator.comfy.jobs import JobResult, JobTracker
from orchestrator.comfy.problems import missing_models_error, rejected_error
from orchestrator.errors import ComfyError, ComfyUnavailable, UsageError
from orchestrator.layout import atomic_write_bytes

if TYPE_CHECKING:
    from orchestrator.comfy.serverlog import ServerLog

DEFAULT_URL = "http://127.0.0.1:8188"
START_HINT = "start one with `python -m orchestrator comfyui up`, or pass --server URL of a running one"


class _Dropped(Exception):
    """The websocket closed under us."""


def _why(err: BaseException) -> str:
    """A short reason for a connection failure instead of urllib3's nested repr."""
    text = str(err)
    for needle, reason in (("Connection refused", "connection refused: nothing listens on that port"),
                           ("Name or service not known", "unknown host name"),
                           ("nodename nor servname", "unknown host name"),
                           ("timed out", "timed out"), ("No route to host", "no route to host"),
                           ("Connection reset", "connection reset by the server")):
        if needle in text:
            return reason
    return f"{type(err).__name__}: {text[:200]}"


def normalize_url(value: str, source: str = "--server") -> str:
    """A user's server URL as http(s)://host[:port][/path] ('gpu2:8188' gets http://); UsageError naming
    `source` for another scheme, no host or a bad port."""
    from urllib.parse import urlsplit

    url = value.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    example = "e.g. http://127.0.0.1:8188 or gpu-box:8188"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise UsageError(f"{source} {value!r}: ComfyUI answers on http:// or https://, not {parts.scheme}://",
                         hint=example)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0:
        what = "no host name" if not parts.hostname else "the port must be a number from 1 to 65535"
        raise UsageError(f"{source} {value!r}: not a server URL ({what})", hint=example)
    return url


def ws_url(url: str) -> str:
    """http(s)://host:port/... -> ws(s)://host:port/..."""
    return "ws" + url[4:] if url.startswith("http") else url


class ComfyClient:
    """One ComfyUI server: HTTP calls with timeouts, a websocket that follows our prompts."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 30, client_id: str | None = None,
                 connect_timeout: float | None = None, idle_check: float = 10.0,
                 reconnect_window: float | None = None, session: Any = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.connect_timeout = connect_timeout if connect_timeout is not None else min(5.0, timeout)
        self.idle_check = idle_check
        self.reconnect_window = reconnect_window if reconnect_window is not None else min(15.0, timeout)
        self._session = session if session is not None else requests.Session()
        self._ws: Any = None
        self._submitted: dict[str, float] = {}
        self._prompts: dict[str, Mapping[str, Any]] = {}
        self._backlog: dict[str, list[ev.Event]] = {}
        self._running: str | None = None

    # -- plumbing ----------------------------------------------------------------------------
    def _unavailable(self, what: str, err: BaseException | None = None) -> ComfyUnavailable:
        detail = [_why(err)] if err is not None else []
        return ComfyUnavailable(f"no ComfyUI server answers at {self.url} ({what})", hint=START_HINT, details=detail)

    def _request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                 ok: tuple[int, ...] = (200,)) -> Any:
        import requests

        try:
            r = self._session.request(method, self.url + path, json=json, params=params,
                                      timeout=(self.connect_timeout, self.timeout))
        except requests.exceptions.ConnectTimeout as e:
            raise self._unavailable(f"{method} {path}: no connection within {self.connect_timeout:g}s", e) from None
        except requests.exceptions.Timeout:
            raise ComfyUnavailable(f"ComfyUI at {self.url} did not answer {method} {path} within {self.timeout:g}s",
                                   hint="the server is stuck or overloaded: check `python -m orchestrator comfyui "
                                        "logs`, or allow more time with --timeout") from None
        except requests.exceptions.RequestException as e:
            raise self._unavailable(f"{method} {path}", e) from None
        if r.status_code == 404 and path in ("/system_stats", "/object_info", "/queue"):
            raise ComfyError(f"{self.url} does not look like ComfyUI: HTTP 404 for {method} {path}, a route "
                             "every ComfyUI server has", hint="check the server URL and port: another program "
                             "answers there")
        if r.status_code not in ok:
            text = r.text.strip().splitlines()[:5]
            raise ComfyError(f"ComfyUI at {self.url} answered HTTP {r.status_code} to {method} {path}",
                             hint="see the server's log: `python -m orchestrator comfyui logs`", details=text)
        return r

    def _get_json(self, path: str, **params: Any) -> Any:
        r = self._request("GET", path, params=params or None)
        try:
            return r.json()
        except ValueError:
            raise ComfyError(f"{self.url}{path} did not answer JSON: is this a ComfyUI server?",
                             details=[r.text[:200]]) from None

    # -- plain calls -------------------------------------------------------------------------
    def system_stats(self) -> dict[str, Any]:
        """GET /system_stats (also the cheapest "is a server there?" probe)."""
        return self._get_json("/system_stats")

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: every node class's schema."""
        return self._get_json("/object_info")

    def models(self, folder: str) -> list[str]:
        """File names in one model folder (checkpoints, text_encoders, vae, loras, ...)."""
        r = self._request("GET", f"/models/{folder}", ok=(200, 404))
        if r.status_code == 404:
            raise ComfyError(f"ComfyUI at {self.url} has no model folder {folder!r}")
        return [str(x) for x in r.json()]

    def server_log(self) -> "ServerLog | None":
        """The server's recent log lines (GET /internal/logs/raw) with its clock; None when it has no such route."""
        import email.utils

        from orchestrator.comfy.serverlog import parse_raw_logs

        r = self._request("GET", "/internal/logs/raw", ok=(200, 404))
        if r.status_code == 404:
            return None
        try:
            body = r.json()
        except ValueError:
            return None
        try:
            date = email.utils.parsedate_to_datetime(r.headers.get("Date", ""))
            server_ms = date.timestamp() * 1000
        except (TypeError, ValueError):
            server_ms = None
        return parse_raw_logs(body, server_ms)

    def queue(self) -> dict[str, Any]:
        """GET /queue: {"queue_running": [...], "queue_pending": [...]}."""
        return self._get_json("/queue")

    def history(self, prompt_id: str) -> dict[str, Any]:
        """The /history entry of one prompt, {} until it is done (or when the server does not know it)."""
        return (self._get_json(f"/history/{prompt_id}") or {}).get(prompt_id) or {}

    def view(self, image: ev.OutputImage) -> bytes:
        """The bytes of one output file (GET /view)."""
        r = self._request("GET", "/view", params={"filename": image.filename, "subfolder": image.subfolder,
                                                 "type": image.type}, ok=(200, 404))
        if r.status_code == 404:
            raise ComfyError(f"ComfyUI at {self.url} has no {image.type} file {image.subfolder + '/' if image.subfolder else ''}"
                             f"{image.filename}", hint="temp files are wiped when the server restarts")
        return r.content

    def delete_pending(self, prompt_ids: list[str]) -> None:
        """POST /queue {"delete": ids}: pending prompts go, a running one is left to finish."""
        self._request("POST", "/queue", json={"delete": list(prompt_ids)})

    def cancel(self, prompt_ids: list[str]) -> None:
        """Best effort: delete pending prompts from the queue and interrupt them if running."""
        try:
            self.delete_pending(prompt_ids)
            for pid in prompt_ids:
                self._request("POST", "/interrupt", json={"prompt_id": pid})
        except ComfyError:
            pass

    def check_models(self, prompt: Mapping[str, Any]) -> None:
        """ComfyRejected naming every model file the prompt loads that the server does not list."""
        from orchestrator.comfy.patch import required_models

        missing: list[tuple[str, str, list[str]]] = []
        for folder, names in required_models(prompt).items():
            if not names:
                continue
            try:
                available = self.models(folder)
            except ComfyUnavailable:
                raise
            except ComfyError:
                continue
            missing += [(folder, name, available) for name in names if name not in available]
        if missing:
            raise missing_models_error(self.url, missing)

    # -- websocket ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the websocket (done by submit/wait; call it early to not miss anything)."""
        if self._ws is not None:
            return
        import websocket

        url = f"{ws_url(self.url)}/ws?clientId={self.client_id}"
        try:
            # JSON parsing rejects bad UTF-8 anyway; the library's pure-Python check costs ~10 ms a job
            ws = websocket.create_connection(url, timeout=self.timeout, skip_utf8_validation=True)
            ws.send('{"type": "feature_flags", "data": {"supports_preview_metadata": true}}')
        except (websocket.WebSocketException, OSError) as e:
            raise self._unavailable("websocket /ws", e) from None
        self._ws = ws

    def _drop_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except Exception:   # already broken: nothing to close cleanly
                pass

    def _recv(self, wait: float) -> ev.Event | None:
        import websocket

        self._ws.settimeout(max(0.001, wait))
        try:
            opcode, data = self._ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError) as e:
            raise _Dropped() from e
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return ev.parse_text(data)
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return ev.parse_binary(data)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise _Dropped()
        return None

    def _reconnect(self, prompt_id: str) -> None:
        self._drop_ws()
        deadline, delay = time.monotonic() + self.reconnect_window, 0.05
        while True:
            try:
                self.connect()
                return
            except ComfyUnavailable as e:
                if time.monotonic() + delay > deadline:
                    raise ComfyUnavailable(
                        f"lost ComfyUI at {self.url} while waiting for prompt {prompt_id}",
                        hint="the server stopped or crashed: `python -m orchestrator comfyui status` and `... logs`",
                        details=e.details) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- jobs --------------------------------------------------------------------------------
    def submit(self, prompt: Mapping[str, Any], *, prompt_id: str | None = None,
               workflow: Mapping[str, Any] | None = None, preview_method: str | None = None,
               front: bool = False, allow_partial: bool = False) -> str:
        """Queue an API prompt under our client_id; returns its prompt_id (ours unless given).

        `workflow` (UI JSON) goes to extra_data.extra_pnginfo so the PNGs carry it for the browser.
        A prompt of which only some outputs validate is cancelled and rejected unless `allow_partial`.
        """
        self.connect()
        pid = prompt_id or str(uuid.uuid4())
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id, "prompt_id": pid}
        extra: dict[str, Any] = {}
        if workflow is not None:
            extra["extra_pnginfo"] = {"workflow": workflow}
        if preview_method:
            extra["preview_method"] = preview_method
        if extra:
            body["extra_data"] = extra
        if front:
            body["front"] = True
        r = self._request("POST", "/prompt", json=body, ok=(200, 400))
        try:
            answer = r.json()
        except ValueError:
            answer = {}
        if r.status_code == 400:
            raise rejected_error(self.url, answer, prompt)
        pid = str(answer.get("prompt_id") or pid)
        self._submitted[pid] = time.monotonic()
        self._prompts[pid] = prompt
        self._backlog.setdefault(pid, [])
        if answer.get("node_errors") and not allow_partial:
            self.cancel([pid])
            err = rejected_error(self.url, {"node_errors": answer["node_errors"]}, prompt)
            err.message = err.message.replace("rejected the prompt", "rejected part of the prompt")
            raise err
        return pid

    def wait(self, prompt_id: str, *, on_event: Callable[[ev.Event], None] | None = None,
             timeout: float | None = None) -> JobResult:
        """Follow a prompt until it is done; its events (ours only) go to `on_event`."""
        track = JobTracker(self.url, prompt_id, self._prompts.get(prompt_id), self._submitted.get(prompt_id))
        try:
            return self._follow(track, on_event, timeout)
        finally:
            self.forget(prompt_id)

    def forget(self, prompt_id: str) -> None:
        """Stop keeping a submitted prompt (and its buffered events) when its result is read another way."""
        self._backlog.pop(prompt_id, None)
        self._submitted.pop(prompt_id, None)
        self._prompts.pop(prompt_id, None)
        if self._running == prompt_id:
            self._running = None

    _forget = forget   # the name the batch helper first used

    @property
    def connected(self) -> bool:
        """Whether our websocket is open (submit and wait open it)."""
        return self._ws is not None

    def next_event(self, timeout: float) -> ev.Event | None:
        """The next message on our websocket (any prompt of ours), None after `timeout` or when not connected.

        For callers that track prompts through /queue and /history and only need the socket drained
        (ComfyUI blocks on a full socket) and a doorbell; a dropped socket is closed and None returned.
        """
        if self._ws is None:
            return None
        try:
            return self._recv(timeout)
        except _Dropped:
            self._drop_ws()
            return None

    def _follow(self, track: JobTracker, on_event: Callable[[ev.Event], None] | None,
                timeout: float | None) -> JobResult:
        pid = track.prompt_id
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = self._backlog.get(pid, [])
        self._backlog[pid] = []
        if track.submitted is None and (done := self._probe(track)) is not None:
            return done
        self.connect()
        last = time.monotonic()
        while True:
            if pending:
                event: ev.Event = pending.pop(0)
            else:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise ComfyError(f"prompt {pid} is still running on {self.url} after {timeout:g}s",
                                     hint="it keeps running on the server; cancel it in the browser if needed")
                wait = self.idle_check - (now - last)
                if deadline is not None:
                    wait = min(wait, deadline - now)
                try:
                    got = self._recv(wait) if wait > 0 else None
                except _Dropped:
                    self._reconnect(pid)
                    if (done := self._probe(track)) is not None:
                        return done
                    last = time.monotonic()
                    continue
                if got is None:
                    if time.monotonic() - last >= self.idle_check:
                        if (done := self._probe(track)) is not None:
                            return done
                        last = time.monotonic()
                    continue
                event, last = got, time.monotonic()
            owner = self._owner(event)
            if owner != pid:
                if owner in self._backlog:
                    self._backlog[owner].append(event)   # another prompt of ours: keep for its wait()
                continue
            if on_event is not None:
                on_event(event)
            if track.apply(event):
                entry: dict[str, Any] = {}
                for attempt in range(5):
                    entry = self.history(pid)
                    if entry:
                        break
                    time.sleep(0.05 * (attempt + 1))
                return track.result(entry)

    def run(self, prompt: Mapping[str, Any], *, workflow: Mapping[str, Any] | None = None,
            on_event: Callable[[ev.Event], None] | None = None, timeout: float | None = None) -> JobResult:
        """submit + wait."""
        return self.wait(self.submit(prompt, workflow=workflow), on_event=on_event, timeout=timeout)

    def _owner(self, event: ev.Event) -> str | None:
        pid = getattr(event, "prompt_id", None)
        if isinstance(event, ev.Executing) and pid in self._submitted:
            self._running = pid if event.node is not None else None
        if pid is None and isinstance(event, (ev.Preview, ev.ProgressText, ev.Progress)):
            return self._running   # type-1 previews carry no prompt id: the prompt that runs now
        return pid

    def _probe(self, track: JobTracker) -> JobResult | None:
        """Ask /history and /queue what became of the prompt; None while it is queued or running."""
        entry = self.history(track.prompt_id)
        if entry:
            return track.result(entry)
        q = self.queue()
        if any(len(item) > 1 and item[1] == track.prompt_id
               for item in (q.get("queue_running") or []) + (q.get("queue_pending") or [])):
            return None
        entry = self.history(track.prompt_id)
        if entry:
            return track.result(entry)
        raise ComfyError(f"ComfyUI at {self.url} no longer knows prompt {track.prompt_id}",
                         hint="the server restarted or the prompt was deleted from the queue; queue it again")

    def fetch_outputs(self, result: JobResult, dest_dir: Path, *,
                      name: Callable[[ev.OutputImage, int], str] | None = None,
                      types: tuple[str, ...] = ("output",)) -> list[Path]:
        """Download the result's images (of `types`) into dest_dir, atomically; `name(image, i)` picks names."""
        paths = []
        for i, image in enumerate(img for img in result.images if img.type in types):
            data = self.view(image)
            path = Path(dest_dir) / (name(image, i) if name else Path(image.filename).name)
            atomic_write_bytes(path, data)
            paths.append(path)
        return paths

    def close(self) -> None:
        """Close the websocket and the HTTP session."""
        self._drop_ws()
        self._session.close()

    def __enter__(self) -> "ComfyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
