"""A real Ray cluster on this machine for the `ray` tests: a head node and worker nodes, each its own
`ray start --block` process tree with its own temp dir and free ports.

Why `--block`: the `ray start` process then stays the parent of its raylet (and, through it, of the
actors' worker processes and the ComfyUI processes they start), so "the node dies" is one kill of that
process tree, and stopping the cluster leaves nothing behind. Memory is kept small (2 cores and 24 GB
shared with other test runs): no dashboard, a 80 MB object store, one or two CPUs per node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBJECT_STORE = 80 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class Node:
    """One `ray start --block` process (its own session, so its whole tree can be killed)."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path

    def tree(self) -> list[int]:
        """Pids of the `ray start` process and all its descendants (raylet, workers, their children)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read().decode(errors="replace")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def kill(self) -> None:
        """The node dies: SIGKILL every process of its tree at once (like a machine losing power)."""
        pids = self.tree()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    """A head node and worker nodes started with `ray start`; `stop()` removes everything."""

    root: Path
    address: str = ""
    nodes: list[Node] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path, *, workers: int = 1, cpus: int = 2) -> "Cluster":
        root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
        cluster = cls(root, env=env)
        try:
            gcs = free_port()
            cluster.address = f"127.0.0.1:{gcs}"
            cluster._start_node("head", ["--head", "--port", str(gcs), "--include-dashboard", "false"], cpus)
            cluster.wait_for_nodes(1)
            for i in range(workers):
                cluster._start_node(f"node{i + 1}", ["--address", cluster.address], cpus)
            cluster.wait_for_nodes(1 + workers)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start_node(self, name: str, args: list[str], cpus: int) -> Node:
        # a short temp dir: Ray's socket paths must stay under the 107-byte AF_UNIX limit
        temp = Path(tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp"))
        log = self.root / f"{name}.log"
        argv = [_ray(), "start", "--block", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
                "--num-gpus", "0", "--object-store-memory", str(OBJECT_STORE), "--disable-usage-stats", "--temp-dir", str(temp),
                "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--resources", json.dumps({f"node:{name}": 1})]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, start_new_session=True)
        node = Node(name, proc, temp, log)
        self.nodes.append(node)
        return node

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def alive_nodes(self) -> list[dict]:
        """The cluster's alive nodes as `ray list nodes`-ish dicts, asked of the GCS by a fresh process."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
                "print(json.dumps([n for n in ray.nodes() if n['Alive']]))" % self.address)
        r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"cannot list the nodes: {r.stderr[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dead = [x for x in self.nodes if not x.alive]
            if dead:
                raise RuntimeError(f"`ray start` for {dead[0].name} exited: " + dead[0].log.read_text()[-3000:])
            try:
                if len(self.alive_nodes()) >= n:
                    return
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster did not reach {n} nodes in {timeout:.0f}s")
            time.sleep(1)

    def stop(self) -> list[int]:
        """Stop every node (SIGTERM, then SIGKILL what is left of its tree); returns the pids of those trees
        still running afterwards (none, unless something escaped).

        Not `ray stop`: that kills every Ray process on the machine by name, other test runs' included.
        """
        trees = {node.name: node.tree() for node in self.nodes if node.alive}  # before orphans are re-parented
        for node in reversed(self.nodes):
            if node.alive:
                try:
                    os.killpg(node.proc.pid, signal.SIGTERM)  # `ray start --block` stops its processes in order
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3  # it takes ~20 s to stop politely: not worth it for a test cluster
        for node in self.nodes:
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        left = [pid for pids in trees.values() for pid in pids if _alive(pid)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.wait(timeout=30)
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        deadline = time.monotonic() + 10
        while True:
            running = [pid for pids in trees.values() for pid in pids if _alive(pid)]
            if not running or time.monotonic() > deadline:
                return running
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie, dead but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode(errors="replace").rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


DOUBLE_MAIN = r'''"""Stand-in ComfyUI main.py for the ray tests: serves the ComfyUI double (tests/comfy_double.py)."""
import argparse, signal, sys, threading
sys.path.insert(0, %(repo)r)
from tests.comfy_double import ComfyDouble
from tests.comfy_double_http import Handler

Handler.disable_nagle_algorithm = True  # like real ComfyUI (aiohttp): no 40 ms Nagle/delayed-ACK stall per reply

p = argparse.ArgumentParser()
p.add_argument("--listen"); p.add_argument("--port", type=int)
args, _ = p.parse_known_args()
double = ComfyDouble(step_time=%(step_time)r, steps=%(steps)r, port=args.port).start()
print("To see the GUI go to: http://%%s:%%d" %% (args.listen, args.port), flush=True)
stop = threading.Event()
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
stop.wait()
double.close()
print("Stopped server", flush=True)
'''


def double_checkout(root: Path, *, seconds_per_image: float = 1.0, steps: int = 4) -> Path:
    """A ComfyUI 'checkout' whose main.py runs the ComfyUI double, each image taking about `seconds_per_image`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(DOUBLE_MAIN % {"repo": str(REPO), "step_time": seconds_per_image / steps,
                                                 "steps": steps})
    return root
