"""One `--gpus` grammar: `train`, `comfyui up` and the engine's device requests accept and refuse the
same values (they used to disagree: MIG- ids, device=N, lone ids)."""

from __future__ import annotations

import pytest

from orchestrator.comfy.serverspec import ServerOptions
from orchestrator.containers import gpu_request
from orchestrator.errors import UsageError
from orchestrator.gpus import parse_gpus
from orchestrator.train.plan import parse_gpus as train_gpus

GOOD = {"all": "all", "2": "2", "0,1": "0,1", "device=1": "1,", "1,": "1,", "GPU-1a2b": "GPU-1a2b,",
        "MIG-3c4d,MIG-5e6f": "MIG-3c4d,MIG-5e6f", "device=0,2": "0,2"}
BAD = ["0", "-1", "two", "", ",", "0,x", "gpu0,gpu1", "device="]


def accepted_by_train(value: str) -> bool:
    try:
        train_gpus(value, 4)
    except UsageError:
        return False
    return True


def accepted_by_comfyui(value: str) -> bool:
    try:
        ServerOptions(gpus=value).validate()
    except UsageError:
        return False
    return True


def accepted_by_engine(value: str) -> bool:
    try:
        gpu_request(value)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("value", [*GOOD, *BAD])
def test_every_consumer_agrees(value):
    expected = value in GOOD
    assert (accepted_by_train(value), accepted_by_comfyui(value), accepted_by_engine(value)) == (expected,) * 3


@pytest.mark.parametrize("value,engine", GOOD.items())
def test_the_engine_value_keeps_a_lone_id_a_device(value, engine):
    assert parse_gpus(value).engine_value == engine == train_gpus(value, 4).spec


def test_none_is_no_gpu_everywhere():
    assert train_gpus("none", 4).spec is None and ServerOptions(gpus="none").worker_gpus() == [None]
    with pytest.raises(ValueError):
        gpu_request("none")          # no device request at all, rather than an empty one
