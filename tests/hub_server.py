"""A local stand-in for the Hugging Face Hub, speaking the file protocol huggingface_hub uses.

Routes (what huggingface_hub 2.x sends, answered the way huggingface.co answers):
- `HEAD|GET /{org}/{repo}/resolve/{revision}/{path}`
  - small (git) files: 200 with `ETag: "<git blob sha1>"`, `X-Repo-Commit`, `Content-Length`;
  - LFS files: 302 to a CDN URL on another origin (`localhost` instead of `127.0.0.1`) with
    `X-Linked-Etag: "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit`, `Location`;
  - errors with `X-Error-Code` / `X-Error-Message`: 401 `GatedRepo` without a token, 403 `GatedRepo`
    for a valid token whose account was not granted access, 401 `RepoNotFound` for an unknown repo,
    404 `EntryNotFound` for an unknown file, 401 `Invalid credentials in Authorization header`
    for an unknown token.
- `HEAD|GET /cdn/{sha256}`: the bytes, honouring `Range: bytes=N-` (206 + `Content-Range`).
- `GET /api/whoami-v2`: the account of a valid token, 401 otherwise.

Every request is recorded (method, path, headers) so tests can check Range and Authorization.
Misbehaviour on demand: `throttle` (seconds per 64 KiB chunk), `cut_after` (drop the connection
after N body bytes, once per path), `pause_after` (stop after N body bytes until an event is set,
once per path), `corrupt` (serve wrong bytes for a path), `fail_status`
(answer every resolve with e.g. 503), `before_body` hook, `echo_credentials` (put a refused token
into the error message, as a careless mirror might).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
BLOCK = 64 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]   # lower-case names


@dataclass
class HubServer:
    """Context manager: `with HubServer() as hub: hub.add(...); hub.url`."""

    repos: dict[str, dict[str, tuple[bytes, bool]]] = field(default_factory=dict)   # repo -> file -> (data, lfs)
    gated: set[str] = field(default_factory=set)
    tokens: dict[str, tuple[str, set[str]]] = field(default_factory=dict)    # token -> (user, granted repos)
    requests: list[Recorded] = field(default_factory=list)
    throttle: float = 0.0
    cut_after: dict[str, int] = field(default_factory=dict)      # path (file name) -> bytes before a drop
    pause_after: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)  # name -> (bytes, go on)
    corrupt: set[str] = field(default_factory=set)               # file names served with wrong bytes
    before_body: Callable[[str], None] | None = None
    fail_status: int | None = None                               # answer every resolve with this status
    echo_credentials: bool = False                               # a careless mirror: echo a refused token back

    def add(self, repo: str, filename: str, data: bytes, *, lfs: bool = False) -> None:
        self.repos.setdefault(repo, {})[filename] = (data, lfs)

    def grant(self, token: str, user: str, *repos: str) -> None:
        self.tokens[token] = (user, set(repos))

    def lfs_paths(self) -> dict[str, tuple[bytes, str]]:
        return {hashlib.sha256(d).hexdigest(): (d, f) for files in self.repos.values()
                for f, (d, lfs) in files.items() if lfs}

    def gets(self, prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(prefix)]

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "HubServer":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        return f"http://localhost:{self.port}"


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        # -- routing ---------------------------------------------------------------------------
        def _route(self, body: bool) -> None:
            hub.requests.append(Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            try:
                if self.path.startswith("/api/whoami-v2"):
                    return self._whoami()
                if self.path.startswith("/cdn/"):
                    return self._cdn(self.path[5:], body)
                m = _RESOLVE.match(self.path.split("?")[0])
                if m:
                    return self._resolve(m["repo"], m["path"], body)
                self._error(404, None, "Not found")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[7:].strip() if auth.lower().startswith("bearer ") else None

        def _resolve(self, repo: str, path: str, body: bool) -> None:
            if hub.fail_status:
                return self._error(hub.fail_status, None, "Internal Error - We're working hard to fix this")
            token = self._token()
            if token is not None and token not in hub.tokens:
                return self._error(401, None, INVALID_CREDENTIALS + (f" ({token})" if hub.echo_credentials else ""))
            if repo not in hub.repos:
                return self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            if repo in hub.gated:
                if token is None:
                    return self._error(401, "GatedRepo",
                                       f"Access to model {repo} is restricted. You must have access to it and be "
                                       "authenticated to access it. Please log in.")
                if repo not in hub.tokens[token][1]:
                    return self._error(403, "GatedRepo",
                                       f"Access to model {repo} is restricted and you are not in the authorized "
                                       f"list. Visit https://huggingface.co/{repo} to ask for access.")
            files = hub.repos[repo]
            if path not in files:
                return self._error(404, "EntryNotFound", "Entry not found")
            data, lfs = files[path]
            if lfs:
                sha = hashlib.sha256(data).hexdigest()
                self.send_response(302)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{git_blob_sha1(b"pointer " + sha.encode())}"')
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Location", f"{hub.cdn}/cdn/{sha}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_bytes(path, data, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_sha1(data)}"'})

        def _cdn(self, sha: str, body: bool) -> None:
            found = hub.lfs_paths().get(sha)
            if found is None:
                return self._error(404, None, "no such object")
            data, filename = found
            self._send_bytes(filename, data, body, {"ETag": f'"{sha}"'})

        def _whoami(self) -> None:
            token = self._token()
            if token is None or token not in hub.tokens:
                payload = json.dumps({"error": INVALID_CREDENTIALS}).encode()
                self.send_response(401)
                self.send_header("X-Error-Message", INVALID_CREDENTIALS)
            else:
                payload = json.dumps({"type": "user", "name": hub.tokens[token][0],
                                      "auth": {"accessToken": {"role": "read"}}}).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        # -- bodies ----------------------------------------------------------------------------
        def _send_bytes(self, name: str, data: bytes, body: bool, extra: dict[str, str]) -> None:
            if name in hub.corrupt:
                data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
            start, end = 0, len(data) - 1
            rng = self.headers.get("Range")
            if rng:
                m = re.match(r"bytes=(\d+)-(\d*)$", rng.strip())
                if not m or int(m[1]) >= len(data):
                    return self._error(416, None, "Range Not Satisfiable")
                start, end = int(m[1]), int(m[2]) if m[2] else len(data) - 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if not body:
                return
            if hub.before_body:
                hub.before_body(name)
            cut = hub.cut_after.pop(name, None)
            pause = hub.pause_after.pop(name, None)
            sent, pos = 0, start
            while pos <= end:
                if pause is not None and sent >= pause[0]:
                    pause[1].wait(60)
                    pause = None
                chunk = data[pos: min(pos + BLOCK, end + 1)]
                if cut is not None and sent + len(chunk) > cut:
                    self.wfile.write(chunk[: cut - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # a dropped connection mid-body
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                pos += len(chunk)
                if hub.throttle:
                    time.sleep(hub.throttle)

        def _error(self, status: int, code: str | None, message: str) -> None:
            payload = json.dumps({"error": message}).encode() if self.command != "HEAD" else b""
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

    return Handler
