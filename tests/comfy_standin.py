"""Stand-ins for a real ComfyUI server, for `comfyui up/down/status/logs` tests.

- Docker: images FROM the busybox base whose `python` is a shell script: it records the argv it
  was started with, the uid:gid it runs as, and what it can write, then serves static
  `/system_stats` and `/queue` JSON with busybox httpd on the `--port` it was given. Variants:
  `ok` (optional start-up delay), `never` (keeps running, never answers), `crash` (exits at once).
- Local runtime: a fake ComfyUI checkout whose main.py (stdlib http.server) does the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.engine import Engine
from tests.images import build_on_busybox, run_tag

STANDIN_REPO = "flux-orch-test/comfyserver-standin"

SYSTEM_STATS = {
    "system": {"os": "posix", "comfyui_version": "0.8.0", "python_version": "3.12.3", "pytorch_version": "2.9.0",
               "embedded_python": False, "argv": ["main.py"], "ram_total": 1, "ram_free": 1},
    "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 1, "vram_free": 1,
                 "torch_vram_total": 1, "torch_vram_free": 1}],
}
QUEUE = {"queue_running": [[1, "a", {}, {}, ["9"]]], "queue_pending": [[2, "b", {}, {}, ["9"]],
                                                                       [3, "c", {}, {}, ["9"]]]}

FAKE_PYTHON = r"""#!/bin/sh
# stand-in for `python main.py ARGS` (busybox sh): record, then serve static JSON.
echo "$@" > /comfy/user/standin-argv
echo "$(id -u):$(id -g)" > /comfy/user/standin-id
touch /comfy/user/comfyui.db && echo ok > /comfy/user/standin-db
ls /comfy/user/default/workflows > /comfy/user/standin-workflows 2>&1
if touch /comfy/models/loras/.standin-write 2>/dev/null; then echo rw; else echo ro; fi > /comfy/user/standin-models
if touch /comfy/output/.standin-write 2>/dev/null; then echo rw; else echo ro; fi > /comfy/user/standin-output
port=8188
while [ $# -gt 0 ]; do
  case "$1" in --port) port="$2"; shift ;; esac
  shift
done
echo "Total VRAM 1 MB, total RAM 1 MB"
case "$STANDIN_MODE" in
  crash)
    echo "Traceback (most recent call last):"
    echo "RuntimeError: standin boom"
    exit 3 ;;
  never)
    echo "loading custom nodes forever"
    trap 'exit 0' INT TERM
    while true; do sleep 0.1; done ;;
esac
sleep "${STANDIN_DELAY:-0}"
echo "To see the GUI go to: http://0.0.0.0:$port"
httpd -f -v -p "0.0.0.0:$port" -h /srv &
pid=$!
trap 'echo "Stopped server"; kill $pid; exit 0' INT TERM
wait $pid
"""


def standin_image(engine: Engine, mode: str = "ok", delay: float = 0.0) -> str:
    """Tag of a stand-in ComfyUI image in `mode` ('ok', 'never', 'crash') with a start-up delay."""
    tag = run_tag(STANDIN_REPO, f"{mode}-{str(delay).replace('.', '_')}")
    files = {"python": FAKE_PYTHON, "srv/system_stats": json.dumps(SYSTEM_STATS), "srv/queue": json.dumps(QUEUE)}
    tail = (
        "COPY python /usr/bin/python\n"
        "COPY srv /srv\n"
        'RUN ["/bin/busybox", "mkdir", "-p", "/opt/ComfyUI", "/comfy/home"]\n'
        'RUN ["/bin/busybox", "chmod", "-R", "a+rX", "/srv"]\n'
        f"ENV STANDIN_MODE={mode} STANDIN_DELAY={delay}\n"
        "WORKDIR /opt/ComfyUI\n"
    )
    return build_on_busybox(engine, tag, files, tail)


FAKE_MAIN = r'''"""Stand-in ComfyUI main.py for the local runtime: records argv, serves /system_stats and /queue."""
import argparse, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("--listen"); p.add_argument("--port", type=int); p.add_argument("--user-directory")
args, _ = p.parse_known_args()
os.makedirs(args.user_directory, exist_ok=True)
with open(os.path.join(args.user_directory, "standin-argv.json"), "w") as f:
    json.dump(sys.argv, f)
with open(os.path.join(args.user_directory, "standin-workflows.json"), "w") as f:
    json.dump(sorted(os.listdir(os.path.join(args.user_directory, "default", "workflows"))), f)
print("starting stand-in", flush=True)
mode = os.environ.get("STANDIN_MODE", "ok")
if mode == "crash":
    print("RuntimeError: local standin boom", flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("STANDIN_DELAY", "0")))
BODIES = {"/system_stats": %(stats)s, "/queue": %(queue)s}

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = BODIES.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())
    def log_message(self, *a):
        print("request", self.path, flush=True)

print("To see the GUI go to: http://%%s:%%d" %% (args.listen, args.port), flush=True)
try:
    ThreadingHTTPServer((args.listen, args.port), H).serve_forever()
except KeyboardInterrupt:
    print("Stopped server", flush=True)
'''


def fake_checkout(root: Path) -> Path:
    """A folder that looks like a ComfyUI checkout (main.py only)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(FAKE_MAIN % {"stats": repr(SYSTEM_STATS), "queue": repr(QUEUE)})
    return root
