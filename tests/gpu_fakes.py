"""A stand-in `nvidia-smi` on PATH (a real executable answering the query the GPU probe makes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.gpuprobe import from_nvml


def fake_nvidia_smi(folder: Path, names: list[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put an `nvidia-smi` that lists `names` (80 GB each) first on PATH; skip when NVML sees real GPUs
    (the probe asks NVML first, so a stand-in would not be consulted)."""
    if from_nvml() is not None:
        pytest.skip("NVML answers on this machine: the nvidia-smi stand-in would not be asked")
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"echo '{i}, {name}, 81559'\n" for i, name in enumerate(names))
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\ncase \"$*\" in *--query-gpu=index,name,memory.total*) ;; *) exit 9 ;; esac\n" + lines)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{Path('/usr/bin')}:{Path('/bin')}")
    return exe
