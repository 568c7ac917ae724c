"""Where the tests' static busybox comes from (stdlib only: `./setup.sh` runs it before anything is installed).

The tests' Docker images are built FROM scratch around one static busybox binary (nothing is pulled), so it
must be statically linked. Looked for, in order: `$FLUX_TEST_BUSYBOX`, `.test-tools/busybox` in this checkout
(where `./setup.sh` puts the one it downloads without root), then Debian's `busybox-static` in /bin or
/usr/bin (skipped with FLUX_TEST_BUSYBOX_SYSTEM=ignore, to try setup.sh's download on a machine that has
it). `python3 -m tests.busybox` prints the one found, or says why none is usable and exits 1.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ENV = "FLUX_TEST_BUSYBOX"
LOCAL = Path(__file__).resolve().parents[1] / ".test-tools" / "busybox"
SYSTEM = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
PT_INTERP = 3


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked, static-pie too)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                return False
            bits64, little = head[4] == 2, head[5] == 1
            end = "<" if little else ">"
            if bits64:
                phoff, = struct.unpack_from(end + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(end + "I", head, 28)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    if len(table) < phentsize * phnum:
        return False
    return all(struct.unpack_from(end + "I", table, i * phentsize)[0] != PT_INTERP for i in range(phnum))


def candidates() -> list[Path]:
    """Places looked at, in order."""
    env = os.environ.get(ENV)
    system = [] if os.environ.get("FLUX_TEST_BUSYBOX_SYSTEM") == "ignore" else list(SYSTEM)
    return ([Path(env)] if env else []) + [LOCAL, *system]


def find_static_busybox() -> tuple[Path | None, list[str]]:
    """The first usable static busybox, and why each earlier candidate was not."""
    notes = []
    for p in candidates():
        if not p.exists():
            if str(p) == os.environ.get(ENV):
                notes.append(f"{ENV}={p}: no such file")
            continue
        if not os.access(p, os.X_OK):
            notes.append(f"{p}: not executable")
        elif not is_static_elf(p):
            notes.append(f"{p}: not statically linked (Debian's `busybox` package; the tests need `busybox-static`)")
        else:
            return p, notes
    return None, notes


def missing_message(notes: list[str]) -> str:
    """One screen: what is missing and the ways to get it."""
    lines = ["no static busybox for the tests' Docker images", *[f"  {n}" for n in notes],
             "fix: run ./setup.sh (as root it installs busybox-static with apt-get; as a normal user it uses sudo -n,",
             "     or downloads the package without root into .test-tools/), or set "
             f"{ENV}=/path/to/a/static/busybox,",
             "     or skip the Docker tests: python3 -m pytest -m 'not docker'"]
    return "\n".join(lines)


if __name__ == "__main__":
    found, why = find_static_busybox()
    if found is None:
        print(missing_message(why), file=sys.stderr)
        sys.exit(1)
    print(found)
