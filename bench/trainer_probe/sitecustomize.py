"""Measurement probe for the sd-scripts trainer process (bench only; the product never loads it).

`bench/train_gpu.py` puts this folder first on the trainer's PYTHONPATH. It does nothing unless
FLUXO_PROBE_DIR is set and this process runs sd-scripts' `*train_network.py`. Then it records:
- the wall-clock time of every optimizer step (a global optimizer step post-hook: no extra sync),
- the time spent inside a few sd-scripts functions (model loading, hashing, caching, prepare),
- peak CUDA memory at exit,
- with FLUXO_PROBE_PROFILE="START:COUNT", a torch.profiler trace (CPU + CUDA) of COUNT steps from
  step START and a Python sampling profile of the main thread over the same steps,
- with FLUXO_PROBE_MEM_GB=G, the card is capped to G GiB (torch.cuda.set_per_process_memory_fraction)
  to check that a memory preset fits a smaller card.
Everything goes to FLUXO_PROBE_DIR/probe-<pid>.json (+ profile text files).
"""
from __future__ import annotations

import atexit
import collections
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
import time

_DIR = os.environ.get("FLUXO_PROBE_DIR")


def _cmdline() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return " ".join(sys.argv)


_ACTIVE = bool(_DIR) and "train_network.py" in _cmdline()

# module -> attribute path -> phase name; wrapped when the module is imported
_TIMED = {
    "library.flux_utils": {"load_flow_model": "load_flux", "load_ae": "load_ae",
                           "load_clip_l": "load_clip_l", "load_t5xxl": "load_t5xxl"},
    "library.train_util": {"calculate_sha256": "hash_sha256", "model_hash": "hash_model",
                           "DatasetGroup.new_cache_latents": "cache_latents",
                           "DatasetGroup.new_cache_text_encoder_outputs": "cache_text_encoder"},
    "accelerate.accelerator": {"Accelerator.prepare": "accelerate_prepare"},
    "networks.lora_flux": {"create_network": "network_build", "LoRANetwork.save_weights": "save_lora"},
    "library.flux_train_utils": {"sample_images": "sample_round"},
}
_TIMED["accelerate.accelerator"]["Accelerator.save_state"] = "save_state"

# FLUXO_PROBE_SKIP_GRAD_NORMS=1: make LoRANetwork.update_grad_norms a no-op (it builds a dense
# weight-sized matrix per module every step; only GGPO reads the result) to measure its cost.
_SKIP_NORMS = os.environ.get("FLUXO_PROBE_SKIP_GRAD_NORMS") == "1"


class _State:
    def __init__(self) -> None:
        self.t0 = time.time()
        self.steps: list[float] = []
        self.phases: list[tuple[str, float, float]] = []
        self.prof = None
        self.sampler: _Sampler | None = None
        self.profile_window = None
        spec = os.environ.get("FLUXO_PROBE_PROFILE", "")
        if spec:
            start, count = (int(x) for x in spec.split(":"))
            self.profile_window = (start, start + count)


class _Sampler(threading.Thread):
    """A poor man's py-spy: samples the main thread's Python stack every 2 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.main_id = threading.main_thread().ident
        self.stop_flag = threading.Event()
        self.self_counts: collections.Counter[str] = collections.Counter()
        self.total_counts: collections.Counter[str] = collections.Counter()
        self.samples = 0

    def run(self) -> None:
        while not self.stop_flag.wait(0.002):
            frame = sys._current_frames().get(self.main_id)
            if frame is None:
                continue
            self.samples += 1
            seen = set()
            first = True
            while frame is not None:
                code = frame.f_code
                key = f"{os.path.basename(code.co_filename)}:{code.co_name}:{code.co_firstlineno}"
                if first:
                    self.self_counts[key] += 1
                    first = False
                if key not in seen:
                    self.total_counts[key] += 1
                    seen.add(key)
                frame = frame.f_back


_S = _State() if _ACTIVE else None


def _wrap(owner, attr: str, phase: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is None or getattr(fn, "_fluxo_probe", False):
        return

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            _S.phases.append((phase, start - _S.t0, time.time() - _S.t0))

    timed._fluxo_probe = True
    setattr(owner, attr, timed)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the timed functions of a module right after it is executed."""

    def find_spec(self, name, path, target=None):
        if name not in _TIMED:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                loader = spec.loader
                exec_module = loader.exec_module

                def exec_and_wrap(module, _exec=exec_module, _name=name):
                    _exec(module)
                    for dotted, phase in _TIMED[_name].items():
                        *owners, attr = dotted.split(".")
                        owner = module
                        for o in owners:
                            owner = getattr(owner, o, None)
                        if owner is not None:
                            _wrap(owner, attr, phase)
                    if _name == "networks.lora_flux" and _SKIP_NORMS:
                        module.LoRANetwork.update_grad_norms = lambda self: None

                loader.exec_module = exec_and_wrap
                return spec
        return None


def _on_step(optimizer, args, kwargs) -> None:
    now = time.time()
    _S.steps.append(now - _S.t0)
    n = len(_S.steps)
    w = _S.profile_window
    if w is None:
        return
    if n == w[0]:
        import torch
        acts = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        _S.prof = torch.profiler.profile(activities=acts)
        _S.prof.__enter__()
        _S.sampler = _Sampler()
        _S.sampler.start()
    elif n == w[1] and _S.prof is not None:
        _finish_profile()


def _finish_profile() -> None:
    import torch
    torch.cuda.synchronize()
    _S.prof.__exit__(None, None, None)
    _S.sampler.stop_flag.set()
    _S.sampler.join(2)
    ka = _S.prof.key_averages()
    pid = os.getpid()
    with open(os.path.join(_DIR, f"profile-cuda-{pid}.txt"), "w") as f:
        f.write(ka.table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=70))
    with open(os.path.join(_DIR, f"profile-cpu-{pid}.txt"), "w") as f:
        f.write(ka.table(sort_by="self_cpu_time_total", row_limit=45, max_name_column_width=70))
    busy_us = sum(e.self_device_time_total for e in ka if getattr(e, "self_device_time_total", 0))
    s = _S.sampler
    with open(os.path.join(_DIR, f"pysample-{pid}.txt"), "w") as f:
        f.write(f"# {s.samples} samples of the main thread every 2 ms over profiled steps\n")
        f.write("## self (innermost frame)\n")
        for k, v in s.self_counts.most_common(40):
            f.write(f"{v / max(s.samples, 1):6.1%}  {k}\n")
        f.write("## total (anywhere on the stack)\n")
        for k, v in s.total_counts.most_common(60):
            f.write(f"{v / max(s.samples, 1):6.1%}  {k}\n")
    w = _S.profile_window
    steps = _S.steps
    wall = steps[w[1] - 1] - steps[w[0] - 1] if len(steps) >= w[1] else None
    _S.profile_summary = {"steps": [w[0], w[1]], "wall_s": wall, "cuda_kernel_s": busy_us / 1e6}
    _S.prof = None


def _write() -> None:
    if _S.prof is not None:  # the run ended inside the profiled window: close it cleanly
        try:
            _finish_profile()
        except Exception as e:
            _S.profile_summary = {"error": repr(e)}
    out = {"pid": os.getpid(), "t0_unix": _S.t0, "step_times_s": _S.steps, "phases": _S.phases,
           "profile": getattr(_S, "profile_summary", None)}
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            out["cuda_max_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
            out["torch"] = torch.__version__
            out["device"] = torch.cuda.get_device_name()
    except Exception as e:  # the probe must never turn a good run into a failed one
        out["error"] = repr(e)
    with open(os.path.join(_DIR, f"probe-{os.getpid()}.json"), "w") as f:
        json.dump(out, f)


if _ACTIVE:
    os.makedirs(_DIR, exist_ok=True)
    sys.meta_path.insert(0, _Finder())
    import torch  # the trainer imports it anyway; the hook needs it now
    from torch.optim.optimizer import register_optimizer_step_post_hook
    register_optimizer_step_post_hook(_on_step)
    cap = os.environ.get("FLUXO_PROBE_MEM_GB")
    if cap and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap) * 2**30 / total))
    atexit.register(_write)
