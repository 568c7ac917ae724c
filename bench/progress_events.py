"""Benchmark: the cost of one progress event in each renderer (what every parsed trainer line,
downloaded chunk and batch snapshot pays).

    python bench/progress_events.py [--events 200000]

Prints events/s for: building an Event, the plain log (live events dropped), the terminal line
(tqdm, throttled to 10 draws/s), JSON lines (live events throttled to 4/s, milestones always) and
a webhook with its endpoint unreachable (only the key phases are queued; the queue is bounded).
A training run emits a few events a second and a download one per 10 MB chunk, so anything above
~10^4 events/s is invisible next to the work.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.cli.render import JsonLines, LiveLine, PlainLog  # noqa: E402
from orchestrator.notify import Webhook  # noqa: E402
from orchestrator.progress import Event  # noqa: E402


def events(n: int) -> list[Event]:
    """Mostly live steps, a milestone every 100, a checkpoint every 1000 (a training run's mix)."""
    out = []
    for i in range(n):
        if i % 1000 == 999:
            out.append(Event("train", "checkpoint", f"saved lora-{i}.safetensors", files=(f"/m/lora-{i}.safetensors",)))
        elif i % 100 == 99:
            out.append(Event("train", "training", f"epoch {i // 100}/{n // 100} · step {i}/{n}"))
        else:
            out.append(Event("train", "training", f"training · step {i}/{n} · loss 0.1234 · 1.05 s/it · ETA 3m",
                             step=i, total=n, unit="step", rate=0.95, eta=180.0, live=True))
    return out


def rate(label: str, n: int, seconds: float) -> None:
    print(f"{label:<34} {n / seconds:>12,.0f} events/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    n = ap.parse_args().events
    t0 = time.perf_counter()
    evs = events(n)
    rate("build Event", n, time.perf_counter() - t0)
    hook = Webhook("http://127.0.0.1:9/unreachable", timeout=0.05, queue_size=64, secrets=())
    for label, sink in (("plain log", PlainLog(io.StringIO())), ("terminal line (tqdm)", LiveLine(io.StringIO())),
                        ("JSON lines", JsonLines(io.StringIO())), ("webhook (unreachable)", hook)):
        t0 = time.perf_counter()
        for e in evs:
            sink.emit(e)
        rate(label, n, time.perf_counter() - t0)
    hook.close(grace=0.2)
    print(f"webhook: {hook.sent} sent, {hook.failed} failed, {hook.dropped} dropped (queue of 64, never waited for)")


if __name__ == "__main__":
    main()
