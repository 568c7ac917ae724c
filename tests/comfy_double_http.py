"""HTTP routes (and the websocket upgrade) of the ComfyUI test double, as recorded from ComfyUI 0.8.0."""

from __future__ import annotations

import email.utils
import json
import mimetypes
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.comfy_ws import OP_TEXT, WsConnection, accept_key

CRASH = b"500 Internal Server Error\n\nServer got itself in trouble"
FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600,
            "extension": {"manager": {"supports_v4": True}}}


class Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive like aiohttp."""

    protocol_version = "HTTP/1.1"
    server_version = "Python/3.11 aiohttp/3.14.5"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # like aiohttp
        self.server.double.track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.double.track(self.connection, False)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ----------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes = b"", content_type: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._reply(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _text(self, text: str, status: int) -> None:
        self._reply(status, text.encode(), "text/plain; charset=utf-8")

    def _dispatch(self, method: str) -> None:
        double = self.server.double  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path = parts.path[4:] if parts.path.startswith("/api/") else parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        double.requests.append((method, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        double.slow_wait()
        if path == "/ws" and method == "GET":
            return self._websocket(double, query)
        if parts.path.startswith("/api/internal/"):   # a sub-app mounted at /internal only: no /api twin
            return self._reply(404, b"404: Not Found", "text/plain; charset=utf-8")
        if double.take_500():
            return self._reply(500, CRASH, "text/plain; charset=utf-8")
        try:
            self._route(double, method, path, query, body)
        except Exception:   # like aiohttp: an unhandled exception is a plain-text 500
            self._reply(500, CRASH, "text/plain; charset=utf-8")

    # -- routes ------------------------------------------------------------------------------
    def _route(self, double: Any, method: str, path: str, q: dict[str, str], body: bytes) -> None:
        if path == "/prompt" and method == "POST":
            double.log("got prompt\n")      # server.py post_prompt logs it first, before reading the body
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            double.posted.append(data)
            status, answer = double.submit(data)
            return self._json(answer, status)
        if path == "/prompt":
            with double.lock:
                return self._json({"exec_info": {"queue_remaining": double.queue_remaining()}})
        if path == "/queue" and method == "GET":
            with double.lock:
                running = [double.running.queue_entry()] if double.running else []
                return self._json({"queue_running": running,
                                   "queue_pending": [j.queue_entry() for j in double.pending]})
        if path == "/queue" and method == "POST":
            data = json.loads(body or b"{}")
            if data.get("clear"):
                double.delete_pending(None)
            if "delete" in data:
                double.delete_pending([str(i) for i in data["delete"]])
            return self._reply(200)
        if path == "/interrupt" and method == "POST":
            data = json.loads(body) if body.strip() else {}
            double.interrupt(data.get("prompt_id"))
            return self._reply(200)
        if path == "/free" and method == "POST":
            return self._reply(200)
        if path == "/history" and method == "GET":
            with double.lock:
                jobs = list(double.history.values())[::-1]
                offset = int(q.get("offset") or 0)
                if "max_items" in q:
                    jobs = jobs[offset:offset + int(q["max_items"])]
                return self._json({j.prompt_id: double.history_entry(j) for j in jobs})
        if path.startswith("/history/") and method == "GET":
            with double.lock:
                job = double.history.get(unquote(path[len("/history/"):]))
                return self._json({job.prompt_id: double.history_entry(job)} if job else {})
        if path == "/view":
            return self._view(double, q)
        if path == "/object_info":
            return self._json(double.object_info())
        if path.startswith("/object_info/"):
            info = double.object_info()
            cls = unquote(path[len("/object_info/"):])
            return self._json({cls: info[cls]} if cls in info else {})
        if path == "/models":
            from tests.comfy_double import MODEL_FOLDERS
            return self._json(MODEL_FOLDERS + [f for f in double.models if f not in MODEL_FOLDERS])
        if path.startswith("/models/"):
            folder = unquote(path[len("/models/"):])
            if folder not in double.models:
                return self._reply(404)
            from tests.comfy_double import listed
            return self._json(listed(double.models[folder]))
        if path == "/internal/logs" and method == "GET":
            with double.lock:
                return self._json("".join(e["t"] + " - " + e["m"] for e in double.logs))
        if path == "/internal/logs/raw" and method == "GET":
            with double.lock:
                return self._json({"entries": list(double.logs), "size": {"cols": 80, "rows": 24}})
        if path == "/embeddings":
            return self._json([])
        if path == "/features":
            return self._json(FEATURES)
        if path == "/system_stats":
            return self._json(_system_stats(double))
        if path == "/upload/image" and method == "POST":
            return self._upload(double, body)
        if path == "/userdata" and method == "GET":
            return self._userdata_list(double, q)
        if path.startswith("/userdata/"):
            return self._userdata_file(double, method, unquote(path[len("/userdata/"):]), q, body)
        self._reply(404, b"404: Not Found", "text/plain; charset=utf-8")

    def _view(self, double: Any, q: dict[str, str]) -> None:
        kind = q.get("type") or "output"
        base = (double.root / kind).resolve()
        target = (base / q.get("subfolder", "") / q.get("filename", "")).resolve()
        if kind not in ("output", "input", "temp") or base not in target.parents or not target.is_file():
            return self._reply(404)
        stat = target.stat()
        headers = {"Content-Disposition": f'filename="{target.name}"',
                   "ETag": f'"{int(stat.st_mtime_ns):x}-{stat.st_size:x}"',
                   "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True)}
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._reply(200, target.read_bytes(), ctype, headers)

    def _upload(self, double: Any, body: bytes) -> None:
        fields = _multipart(self.headers.get("Content-Type", ""), body)
        if "image" not in fields or fields["image"][0] is None:
            return self._reply(400)
        filename, data = fields["image"][0] or "image.png", fields["image"][1]
        kind = (fields.get("type", (None, b"input"))[1].decode() or "input")
        sub = fields.get("subfolder", (None, b""))[1].decode()
        overwrite = fields.get("overwrite", (None, b""))[1].decode() in ("true", "1")
        folder = double.root / kind / sub
        folder.mkdir(parents=True, exist_ok=True)
        name, stem, suffix, i = Path(filename).name, Path(filename).stem, Path(filename).suffix, 1
        while not overwrite and (folder / name).exists() and (folder / name).read_bytes() != data:
            name, i = f"{stem} ({i}){suffix}", i + 1
        (folder / name).write_bytes(data)
        self._json({"name": name, "subfolder": sub, "type": kind})

    def _userdata_list(self, double: Any, q: dict[str, str]) -> None:
        folder = double.root / "user" / "default" / q.get("dir", "")
        if not folder.is_dir():
            return self._text("Directory not found", 404)
        files = sorted(p for p in (folder.rglob("*") if q.get("recurse") == "true" else folder.iterdir())
                       if p.is_file())
        rel = [p.relative_to(folder).as_posix() for p in files]
        if q.get("full_info") == "true":
            return self._json([{"path": r, "size": p.stat().st_size, "modified": p.stat().st_mtime,
                                "created": p.stat().st_ctime} for r, p in zip(rel, files)])
        self._json(rel)

    def _userdata_file(self, double: Any, method: str, rel: str, q: dict[str, str], body: bytes) -> None:
        base = (double.root / "user" / "default").resolve()
        target = (base / rel).resolve()
        if base not in target.parents:
            return self._reply(400)
        if method == "GET":
            if not target.is_file():
                return self._reply(404)
            return self._reply(200, target.read_bytes(), "application/json")
        if method == "DELETE":
            target.unlink(missing_ok=True)
            return self._reply(204)
        if target.exists() and q.get("overwrite") == "false":
            return self._text("File already exists", 409)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        st = target.stat()
        self._json({"path": rel, "size": st.st_size, "modified": st.st_mtime, "created": st.st_ctime})

    # -- websocket ---------------------------------------------------------------------------
    def _websocket(self, double: Any, q: dict[str, str]) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if not key or "websocket" not in (self.headers.get("Upgrade") or "").lower():
            return self._reply(400, b"expected a websocket upgrade", "text/plain; charset=utf-8")
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.wfile.flush()
        import uuid
        ws = WsConnection(self.connection, self.rfile, q.get("clientId") or uuid.uuid4().hex)
        double.register_socket(ws)
        try:
            for opcode, payload in ws.messages():
                if opcode != OP_TEXT:
                    continue
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("type") == "feature_flags":
                    ws.supports_preview_metadata = bool((msg.get("data") or {}).get("supports_preview_metadata"))
                    ws.send_text(json.dumps({"type": "feature_flags", "data": FEATURES}))
        finally:
            double.unregister_socket(ws)
            self.close_connection = True


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename or None, bytes) of a multipart/form-data body."""
    marker = "boundary="
    if marker not in content_type:
        return {}
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        disposition = next((ln for ln in head.decode("utf-8", "replace").split("\r\n")
                            if ln.lower().startswith("content-disposition")), "")
        params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:] if "=" in p)
        name = params.get("name", "").strip('"')
        filename = params["filename"].strip('"') if "filename" in params else None
        fields[name] = (filename, data[:-2] if data.endswith(b"\r\n") else data)
    return fields


def _system_stats(double: Any) -> dict[str, Any]:
    return {"system": {"os": "linux", "ram_total": 25276063744, "ram_free": 21415460864,
                       "comfyui_version": "0.8.0", "required_frontend_version": "1.35.9",
                       "python_version": "3.11.7", "pytorch_version": "2.13.0+cpu", "embedded_python": False,
                       "argv": ["main.py", "--listen", "127.0.0.1", "--port", str(double.port)]},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 25276063744,
                         "vram_free": 21415460864, "torch_vram_total": 25276063744,
                         "torch_vram_free": 21415460864}]}
