"""GPU selection (`--gpus` grammar, devices, processes, workers, checks), the learning-rate statement and
the GPU probe's parsers and fallback order."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError
from orchestrator.gpuprobe import from_docker_info, from_nvidia_smi, parse_smi, probe_gpus, require_gpus
from orchestrator.gpus import (GpuInventory, GpuSelection, check_selection, fit_hint, lr_scaling, main_process_port,
                               parse_gpus, parse_option, parse_visible, trainer_launch, worker_layout)
from tests.gpu_fakes import fake_nvidia_smi

H200 = GpuInventory(2, "nvml", ("NVIDIA H200", "NVIDIA H200"))


@pytest.mark.parametrize("text, kind, count, ids, engine", [
    ("all", "all", None, (), "all"),
    ("none", "none", None, (), None),
    ("2", "count", 2, (), "2"),
    ("0,1", "ids", None, ("0", "1"), "0,1"),
    (" 2, 3 ", "ids", None, ("2", "3"), "2,3"),
    ("device=1", "ids", None, ("1",), "1,"),
    ("device=0,2", "ids", None, ("0", "2"), "0,2"),
    ("1,", "ids", None, ("1",), "1,"),
    ("GPU-8f2a", "ids", None, ("GPU-8f2a",), "GPU-8f2a,"),
    ("MIG-5c1e,MIG-77aa", "ids", None, ("MIG-5c1e", "MIG-77aa"), "MIG-5c1e,MIG-77aa"),
])
def test_grammar(text, kind, count, ids, engine):
    sel = parse_gpus(text)
    assert (sel.kind, sel.count, sel.ids, sel.engine_value) == (kind, count, ids, engine)
    assert parse_gpus(sel.text) == sel            # the normalised text parses back to the same selection


@pytest.mark.parametrize("bad", ["0", "-1", "", "two", "0,x", "0,0", "device=", "1.5", "GPU-"])
def test_bad_selections_name_the_option(bad):
    with pytest.raises(ValueError, match="invalid GPU selection"):
        parse_gpus(bad)
    with pytest.raises(UsageError) as e:
        parse_option(bad, option="--gpus")
    assert e.value.message.startswith(f"--gpus {bad!r} is not a GPU selection: ") and "--gpus" in (e.value.hint or "")


def test_default_is_one_gpu_for_training():
    assert parse_gpus(None) == GpuSelection(count=1)
    assert parse_gpus(None, default="all").kind == "all"


def test_devices_and_processes():
    assert parse_gpus("2").devices(4) == ("0", "1")                   # a count: the first N
    assert parse_gpus("2,3").devices(4) == ("2", "3")                  # ids: those
    assert parse_gpus("all").devices(3) == ("0", "1", "2") and parse_gpus("all").processes(3) == 3
    assert parse_gpus("all").devices(None) is None and parse_gpus("all").processes(None) == 1
    assert parse_gpus("2").devices(None) == ("0", "1")
    # a scheduler's allocation (CUDA_VISIBLE_DEVICES=4,5,6): counts and `all` choose from it
    inherited = parse_visible("4,5,6")
    assert parse_gpus("2").devices(8, inherited) == ("4", "5")
    assert parse_gpus("all").devices(8, inherited) == ("4", "5", "6")
    assert parse_gpus("none").processes(8) == 1 and parse_gpus("none").devices(8) == ()
    assert parse_visible(None) is None and parse_visible("") == () and parse_visible(" 0, 1") == ("0", "1")


def test_checks_against_the_host():
    assert check_selection(parse_gpus("2"), H200) is None
    assert check_selection(parse_gpus("2"), GpuInventory(None)) is None     # uncounted: the run finds out
    msg = check_selection(parse_gpus("3"), H200)
    assert msg == "--gpus 3: 3 GPU(s) needed, 2 GPUs (nvml): NVIDIA H200, NVIDIA H200"
    assert fit_hint(parse_gpus("3"), H200) == "use --gpus 2 or fewer (`nvidia-smi -L` lists the GPUs)"
    msg = check_selection(parse_gpus("0,2"), H200)
    assert msg is not None and "no GPU 2 on this host" in msg and "ids are 0..1" in msg
    assert "between 0 and 1" in fit_hint(parse_gpus("0,2"), H200)
    assert "no GPU" in str(check_selection(parse_gpus("1"), GpuInventory(0, "nvidia-smi")))
    assert check_selection(parse_gpus("all"), H200, needed=3) is not None     # e.g. three workers
    assert check_selection(parse_gpus("none"), GpuInventory(0, "nvml")) is None
    inherited = ("4", "5")
    msg = check_selection(parse_gpus("3"), H200, inherited=inherited)
    assert msg is not None and "CUDA_VISIBLE_DEVICES='4,5' allows 2" in msg
    assert check_selection(parse_gpus("device=4"), H200, inherited=inherited) is None


def test_worker_layout_one_gpu_each():
    ws = worker_layout(parse_gpus("all"), 2, 8188)
    assert [(w.index, w.port, w.device, w.cuda_visible_devices) for w in ws] == [(0, 8188, "0", "0"),
                                                                                (1, 8189, "1", "1")]
    assert [w.device for w in worker_layout(parse_gpus("2,5"), 2, 9000)] == ["2", "5"]
    assert [w.port for w in worker_layout(parse_gpus("4"), 4, 9000)] == [9000, 9001, 9002, 9003]
    [one] = worker_layout(parse_gpus("all"), 1, 8188)
    assert (one.device, one.cuda_visible_devices) == ("all", None)
    [one] = worker_layout(parse_gpus("0,1"), 1, 8188)
    assert (one.device, one.cuda_visible_devices) == ("0,1", "0,1")
    assert [w.cuda_visible_devices for w in worker_layout(parse_gpus("none"), 2, 8188)] == ["", ""]
    mine = ("4", "5", "6")                                       # CUDA_VISIBLE_DEVICES=4,5,6 (a local process)
    assert [w.device for w in worker_layout(parse_gpus("all"), 2, 8188, mine)] == ["4", "5"]
    assert [w.device for w in worker_layout(parse_gpus("3"), 3, 8188, mine)] == ["4", "5", "6"]
    assert worker_layout(parse_gpus("all"), 1, 8188, mine)[0].cuda_visible_devices is None   # inherits them all
    with pytest.raises(UsageError, match="--workers 2 needs 2 GPUs"):
        worker_layout(parse_gpus("0,1,2"), 2, 8188)


def test_trainer_launch():
    two = trainer_launch(parse_gpus("2,3"), container=True, run_id="r", visible=4)
    assert (two.processes, two.devices, two.gpu_ids, two.main_process_port, two.cuda_visible_devices) == \
        (2, ("2", "3"), "0,1", 29500, None)                      # inside the container: 0..N-1, own network
    two = trainer_launch(parse_gpus("2,3"), container=False, run_id="r", visible=4)
    assert (two.gpu_ids, two.cuda_visible_devices) == ("2,3", "2,3")    # the host ids, the same in both
    assert two.main_process_port == main_process_port("r", shared_host=True)
    one = trainer_launch(parse_gpus(None), container=False, run_id="r", visible=4, inherited=("6", "7"))
    assert (one.processes, one.gpu_ids, one.main_process_port, one.cuda_visible_devices) == (1, None, None, "6")
    cpu = trainer_launch(parse_gpus("none"), container=False, run_id="r", visible=4)
    assert cpu.cuda_visible_devices == "" and cpu.processes == 1
    every = trainer_launch(parse_gpus("all"), container=False, run_id="r", visible=None)
    assert every.processes == 1 and every.devices is None and every.cuda_visible_devices is None


def test_rendezvous_port():
    assert main_process_port("run-a", shared_host=False) == 29500           # a container has its own network
    a, b = main_process_port("20261126-071500-a", shared_host=True), main_process_port("20261126-071501-a",
                                                                                      shared_host=True)
    assert 29500 <= a < 30500 and 29500 <= b < 30500 and a != b
    assert a == main_process_port("20261126-071500-a", shared_host=True)    # stable: --resume keeps it


def test_learning_rate_statement():
    prodigy = lr_scaling("Prodigy", 1.0, 2)
    assert prodigy.rule == "none" and prodigy.suggested is None and "estimates its own step size" in prodigy.note
    adamw = lr_scaling("AdamW8bit", 1e-4, 4, batch_size=1)
    assert adamw.rule == "sqrt" and adamw.suggested == pytest.approx(2e-4)
    assert "not scaled" in adamw.note and "--set learning_rate=0.0002" in adamw.note and "to 4" in adamw.note
    assert lr_scaling("SGDNesterov", 0.01, 2).suggested == pytest.approx(0.02)
    assert lr_scaling("AdamW", 1e-4, 1).rule == "none"


def test_nvidia_smi_output_and_docker_info():
    inv = parse_smi("0, NVIDIA H200, 143771\n1, NVIDIA H200, 143771\n")
    assert (inv.count, inv.source, inv.names, inv.memory_mib) == (2, "nvidia-smi", ("NVIDIA H200",) * 2, (143771,) * 2)
    assert parse_smi("").count == 0
    cdi = {"DiscoveredDevices": [{"Source": "cdi", "ID": f"nvidia.com/gpu={i}"} for i in ("0", "1", "all")]}
    assert from_docker_info(cdi) == GpuInventory(2, "docker info")
    swarm = {"GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 4}}]}
    assert from_docker_info(swarm) == GpuInventory(4, "docker info")
    assert from_docker_info({"Runtimes": {"runc": {}}}) is None


def test_probe_order():
    smi = GpuInventory(1, "nvidia-smi")
    assert probe_gpus(nvml=lambda: H200, smi=lambda: smi, docker_info=lambda: None) == H200
    assert probe_gpus(nvml=lambda: None, smi=lambda: smi, docker_info=lambda: None) == smi
    info = {"DiscoveredDevices": [{"ID": "nvidia.com/gpu=0"}]}
    assert probe_gpus(nvml=lambda: None, smi=lambda: None, docker_info=lambda: info).source == "docker info"
    assert probe_gpus(nvml=lambda: None, smi=lambda: None, docker_info=lambda: None) == GpuInventory(None)


def test_a_real_nvidia_smi_executable_is_asked(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path / "bin", ["NVIDIA H200", "NVIDIA H100 80GB HBM3"], monkeypatch)
    inv = from_nvidia_smi()
    assert inv is not None and inv.names == ("NVIDIA H200", "NVIDIA H100 80GB HBM3")
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert from_nvidia_smi() is None
    assert probe_gpus(nvml=lambda: None, docker_info=lambda: None).count is None


def test_require_gpus_for_workers():
    two = GpuInventory(2, "nvml")
    require_gpus("all", 2, inventory=two)
    require_gpus("all", 1, inventory=GpuInventory(0, "nvml"))          # one worker on `all`: nothing to count
    with pytest.raises(UsageError) as e:
        require_gpus("all", 3, inventory=two)
    assert e.value.message == "--workers 3 (one GPU each): 3 GPU(s) needed, 2 GPUs (nvml)"
    assert e.value.hint == "use --workers 2 or fewer (`nvidia-smi -L` lists the GPUs)"
    with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES='5' allows 1"):
        require_gpus("all", 2, inventory=two, inherited=("5",))
