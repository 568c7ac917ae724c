"""Benchmark: parsing trainer output (what `train` does per line while a run is going).

    python bench/train_logparse.py [--steps 5000]

Generates a playbook-like log (tqdm redraws per micro-batch with `\\r`, epoch and save lines) for
`--steps` optimizer steps x 4 micro-batches and prints lines/s for split_lines + LogParser.feed.
A real run prints ~2-3 lines/s, so anything above ~10^4 lines/s is invisible next to training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.train.logparse import LogParser, split_lines  # noqa: E402


def make_log(steps: int, per_epoch: int = 5) -> bytes:
    out = ["running training / 学習開始", "  total optimization steps / 学習ステップ数: %d" % steps]
    for s in range(1, steps + 1):
        if (s - 1) % per_epoch == 0:
            out.append(f"\nepoch {(s - 1) // per_epoch + 1}/{steps // per_epoch}\n")
        for _ in range(4):  # the postfix is redrawn every micro-batch
            out.append(f"\rsteps: {100 * s // steps:3d}%|#         | {s}/{steps} [01:00<02:00,  2.71s/it, "
                       f"avr_loss={0.5 / (1 + s / 100):.4f}]")
        if s % 125 == 0:
            out.append(f"\n\nsaving checkpoint: /run/output/flux-{s // per_epoch:06d}.safetensors\n")
    return "".join(out).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    steps = ap.parse_args().steps
    data = make_log(steps)
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    start = time.perf_counter()
    parser, lines, events = LogParser(), 0, 0
    for line in split_lines(chunks):
        lines += 1
        events += len(parser.feed(line))
    took = time.perf_counter() - start
    print(f"{lines} lines ({len(data) / 1e6:.1f} MB), {events} events in {took:.3f} s: {lines / took:,.0f} lines/s")


if __name__ == "__main__":
    main()
