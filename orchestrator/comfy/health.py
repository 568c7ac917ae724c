"""Is a ComfyUI server up? Tiny stdlib (urllib) probes of /system_stats and /queue, and the start-up wait.

Kept free of requests/websocket so starting a server does not depend on the full client.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from orchestrator.errors import OrchestratorError


class NotReady(Exception):
    """The server did not answer (yet)."""


# Our servers are on this machine or the LAN: never route the probe through an HTTP(S)_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, path: str, *, timeout: float = 2.0) -> Any:
    """GET url+path and decode JSON; NotReady on any connection, HTTP or JSON failure."""
    try:
        with _OPENER.open(url.rstrip("/") + path, timeout=timeout) as resp:
            body = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise NotReady(str(getattr(e, "reason", e))) from e
    try:
        return json.loads(body)
    except ValueError as e:
        raise NotReady(f"{path} did not answer JSON") from e


def system_stats(url: str, *, timeout: float = 2.0) -> dict[str, Any]:
    """GET /system_stats (a dict with 'system' and 'devices')."""
    data = get_json(url, "/system_stats", timeout=timeout)
    if not isinstance(data, dict):
        raise NotReady("/system_stats did not answer an object")
    return data


def queue_length(url: str, *, timeout: float = 2.0) -> tuple[int, int]:
    """(running, pending) job counts from GET /queue."""
    data = get_json(url, "/queue", timeout=timeout)
    if not isinstance(data, dict):
        raise NotReady("/queue did not answer an object")
    return len(data.get("queue_running") or []), len(data.get("queue_pending") or [])


def device_names(stats: dict[str, Any]) -> list[str]:
    """GPU / CPU device names from a /system_stats answer (e.g. 'cuda:0 NVIDIA GB10 : cudaMallocAsync')."""
    return [str(d.get("name") or d.get("type") or "?") for d in stats.get("devices") or [] if isinstance(d, dict)]


def wait_until_ready(url: str, *, timeout: float, alive: Callable[[], bool], evidence: Callable[[], list[str]],
                     on_wait: Callable[[float], None] | None = None, interval: float = 0.25,
                     what: str = "ComfyUI") -> dict[str, Any]:
    """Poll /system_stats until it answers; a clear error (with `evidence()` lines) when the
    process dies (`alive()` turns False) or `timeout` seconds pass."""
    start = time.monotonic()
    last = "no answer yet"
    while True:
        try:
            return system_stats(url, timeout=min(2.0, max(0.2, timeout)))
        except NotReady as e:
            last = str(e)
        elapsed = time.monotonic() - start
        if not alive():
            lines = evidence()
            raise OrchestratorError(
                f"{what} exited while starting (it never answered {url}/system_stats)",
                details=["last log lines:", *lines] if lines else ["(no log output)"],
                hint="read the log lines above; `comfyui logs` shows everything, "
                     "`comfyui up -v` streams it while starting",
            )
        if elapsed >= timeout:
            lines = evidence()
            raise OrchestratorError(
                f"{what} did not answer {url}/system_stats within {timeout:.0f}s (last: {last})",
                details=["last log lines:", *lines] if lines else ["(no log output)"],
                hint="it may still be loading: raise --timeout, check `comfyui logs -f`, "
                     "or stop it with `comfyui down`",
            )
        if on_wait:
            on_wait(elapsed)
        time.sleep(interval)


def port_in_use(host: str, port: int) -> bool:
    """True when something on this machine already holds `host:port` (we cannot bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
