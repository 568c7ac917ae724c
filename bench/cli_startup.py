"""Start-up time of the CLI: `python -m orchestrator --help` (goal < 0.3 s), `download --help`, `doctor --help`.

Usage: python bench/cli_startup.py [--runs N]
Each command runs N times in a fresh interpreter (round-robin); prints the median and the fastest run, and the
interpreter's own start-up (`python -c pass`) for reference. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.3
COMMANDS = {
    "python -c pass (interpreter only)": ["-c", "pass"],
    "python -m orchestrator --help": ["-m", "orchestrator", "--help"],
    "python -m orchestrator download --help": ["-m", "orchestrator", "download", "--help"],
    "python -m orchestrator doctor --help": ["-m", "orchestrator", "doctor", "--help"],
}


def time_once(args: list[str]) -> float:
    """Wall-clock seconds of one fresh `python ARGS` run from the repo root."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per command (default 9)")
    args = parser.parse_args()
    time_once(COMMANDS["python -m orchestrator --help"])  # warm the bytecode cache
    times_of: dict[str, list[float]] = {label: [] for label in COMMANDS}
    for _ in range(args.runs):  # round-robin, so a busy moment of the machine hits every command alike
        for label, argv in COMMANDS.items():
            times_of[label].append(time_once(argv))
    print(f"{'command':<42} {'median':>8} {'fastest':>8}  goal")
    for label, times in times_of.items():
        median = statistics.median(times)
        verdict = "" if "orchestrator" not in label else ("ok" if median < GOAL else f"SLOW (> {GOAL} s)")
        print(f"{label:<42} {median:>7.3f}s {min(times):>7.3f}s  {verdict}")
    print(f"({args.runs} runs each, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
